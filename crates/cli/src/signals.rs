//! Ctrl-C and SIGTERM as a flag that long-running commands poll, so they can stop
//! their children cleanly instead of dying with them running.

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
