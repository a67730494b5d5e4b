//! Ctrl-C and SIGTERM as a flag that long-running commands poll, so they can stop
//! their children cleanly instead of dying with them running.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

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
        set.store(true, Ordering::Release);
    });
    let _ = wait.recv_timeout(std::time::Duration::from_secs(2));
    flag
}
