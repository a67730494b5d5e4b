//! Ctrl-C and SIGTERM as a flag that long-running commands poll, so they can stop
//! their children cleanly instead of dying with them running; for the proxy, the first
//! one as a request to drain and a second one as an order to exit now.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Set with every flag [`stop_flag`] hands out: the process is stopping.
static STOPPING: AtomicBool = AtomicBool::new(false);

/// True once SIGINT or SIGTERM has arrived (after [`stop_flag`] was called). A Ctrl-C
/// at a terminal reaches the whole process group, so children die at the same moment;
/// supervisors and traffic loops ask this before calling that a failure.
pub fn stopping() -> bool {
    STOPPING.load(Ordering::Acquire)
}

/// A flag set once SIGINT or SIGTERM arrives. Returns once the handlers are in place,
/// so a signal that comes after this call never kills the process outright.
pub fn stop_flag() -> Arc<AtomicBool> {
    let flag = Arc::new(AtomicBool::new(false));
    let set = flag.clone();
    let (installed, wait) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        rt.block_on(async {
            use tokio::signal::unix::{SignalKind, signal};
            let (Ok(mut term), Ok(mut int)) = (
                signal(SignalKind::terminate()),
                signal(SignalKind::interrupt()),
            ) else {
                return;
            };
            let _ = installed.send(());
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
        });
        STOPPING.store(true, Ordering::Release);
        set.store(true, Ordering::Release);
    });
    let _ = wait.recv_timeout(std::time::Duration::from_secs(2));
    flag
}

/// The signal that asked a draining process to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    Terminate,
    Interrupt,
}

impl Stop {
    /// The signal's name.
    pub fn name(self) -> &'static str {
        match self {
            Stop::Terminate => "SIGTERM",
            Stop::Interrupt => "SIGINT",
        }
    }
}

/// For a process that drains before it exits (`trellis proxy`): the first SIGTERM or
/// SIGINT arrives on the returned channel; a second one ends the process at once, with
/// the status a shell gives a process killed by it (128 + its number). Returns once
/// the handlers are in place. If they cannot be installed, the channel closes and the
/// signals keep their default effect.
pub fn drain_signals() -> std::sync::mpsc::Receiver<Stop> {
    let (tx, rx) = std::sync::mpsc::channel();
    let (installed, wait) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        rt.block_on(async {
            use tokio::signal::unix::{SignalKind, signal};
            let (Ok(mut term), Ok(mut int)) = (
                signal(SignalKind::terminate()),
                signal(SignalKind::interrupt()),
            ) else {
                return;
            };
            let _ = installed.send(());
            let mut next = async || {
                tokio::select! {
                    _ = int.recv() => Stop::Interrupt,
                    _ = term.recv() => Stop::Terminate,
                }
            };
            let first = next().await;
            STOPPING.store(true, Ordering::Release);
            let _ = tx.send(first);
            let second = next().await;
            tracing::warn!("{}: exiting without finishing the drain", second.name());
            std::process::exit(match second {
                Stop::Interrupt => 128 + 2,
                Stop::Terminate => 128 + 15,
            });
        });
    });
    let _ = wait.recv_timeout(std::time::Duration::from_secs(2));
    rx
}
