//! Compile failures: every compile step of a recompute (the mesh, each sidecar group,
//! each proxy's own resources) runs under [`catching`], so a panic becomes a
//! [`CompileError`] that is counted, logged and shown in the proxies' status instead
//! of unwinding through the push loop. What happens to the proxies it concerns (they
//! keep what they run) is decided in `push.rs`.

use std::any::Any;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::Ordering;

use super::ControlPlane;
use super::units::GroupKey;

/// A compile step that did not finish; its proxies keep the configuration they run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CompileError {
    /// Building the mesh panicked: no proxy can be compiled for.
    #[error("building the mesh panicked: {message}")]
    Mesh { message: String },
    /// A sidecar group's outbound resources panicked.
    #[error("the outbound config of sidecar group {group} panicked: {message}")]
    Group { group: String, message: String },
    /// A compile thread ended before it compiled this group.
    #[error("the outbound config of sidecar group {group} was not compiled: its thread died")]
    GroupUnfinished { group: String },
    /// A proxy's own resources (listeners, inbound, a gateway's routes) panicked.
    #[error("the config of proxy {proxy} panicked: {message}")]
    Own { proxy: String, message: String },
}

/// Runs one compile step; a panic becomes its message.
///
/// Asserting unwind safety is sound here: a step only reads the mesh and specs, and
/// whatever it owned (a group's unit cache) is dropped with the panic, so the next
/// recompute starts that step from scratch. Encodings it interned stay valid (that
/// lock is taken poison-tolerant).
pub(super) fn catching<T>(step: impl FnOnce() -> T) -> Result<T, String> {
    std::panic::catch_unwind(AssertUnwindSafe(step)).map_err(|payload| panic_message(&*payload))
}

/// What `panic!` was given, when it was text.
fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(a panic without a message)".into()
    }
}

/// `shop`, or `shop{app=reviews,version=v1}` for a group split by labels.
pub(super) fn group_name((namespace, labels): &GroupKey) -> String {
    if labels.is_empty() {
        return namespace.clone();
    }
    let labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!("{namespace}{{{}}}", labels.join(","))
}

impl ControlPlane {
    /// Counts and logs one failed compile step.
    pub(super) fn compile_failed(&self, error: &CompileError) {
        self.inner
            .metrics
            .compile_errors
            .fetch_add(1, Ordering::Relaxed);
        tracing::error!(%error, "compile failed; the proxies it concerns keep their configuration");
    }
}

/// A test's view of the compile steps, to make one fail (feature `testing`).
#[cfg(any(test, feature = "testing"))]
pub mod testing {
    use std::sync::Arc;

    use crate::node::ProxySpec;
    use crate::plane::{ControlPlane, Inner};

    /// The compile step about to run.
    #[derive(Debug, Clone, Copy)]
    pub enum Compiling<'a> {
        /// Building the mesh from the resources and the announced workloads.
        Mesh,
        /// The outbound resources of the sidecar group this proxy stands for.
        Group(&'a ProxySpec),
        /// This proxy's own resources.
        Own(&'a ProxySpec),
    }

    /// Called before every compile step, on the thread that runs it; a panic in it is
    /// a panic of that step.
    pub type CompileHook = Arc<dyn Fn(Compiling<'_>) + Send + Sync>;

    impl ControlPlane {
        /// An empty control plane that calls `hook` before each compile step.
        pub fn with_compile_hook(hook: impl Fn(Compiling<'_>) + Send + Sync + 'static) -> Self {
            ControlPlane {
                inner: Arc::new(Inner {
                    compile_hook: Some(Arc::new(hook)),
                    ..Default::default()
                }),
            }
        }

        pub(in crate::plane) fn before_compile(&self, step: Compiling<'_>) {
            if let Some(hook) = &self.inner.compile_hook {
                hook(step);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use trellis_compile::ProxyIdentity;
    use trellis_model::Role;

    use crate::node::ProxySpec;
    use crate::plane::{Compiling, ControlPlane};

    fn proxy(id: &str, role: Role) -> ProxySpec {
        ProxySpec {
            id: id.into(),
            role,
            identity: ProxyIdentity {
                name: id.into(),
                namespace: "shop".into(),
                labels: BTreeMap::new(),
                service_account: "default".into(),
                bind_ip: None,
            },
            pod_ip: None,
            outbound: "127.0.0.1:15001".parse().expect("addr"),
            inbound: vec![],
            port_map: BTreeMap::new(),
            named_ports: BTreeMap::new(),
            admin: None,
            capture: false,
            capture_ipv6: false,
        }
    }

    /// A control plane whose compile step `fails` picks panics while `broken` is set.
    fn breakable(fails: fn(&Compiling<'_>) -> bool) -> (ControlPlane, Arc<AtomicBool>) {
        let broken = Arc::new(AtomicBool::new(true));
        let control = ControlPlane::with_compile_hook({
            let broken = broken.clone();
            move |step| {
                if broken.load(Ordering::Acquire) && fails(&step) {
                    panic!("broken by the test");
                }
            }
        });
        (control, broken)
    }

    fn compile_errors(control: &ControlPlane) -> u64 {
        control.metrics().compile_errors.load(Ordering::Relaxed)
    }

    #[test]
    fn a_panicking_mesh_build_pushes_nothing_and_every_proxy_says_why() {
        let (control, broken) = breakable(|step| matches!(step, Compiling::Mesh));
        let (tx, mut sidecar) = tokio::sync::mpsc::unbounded_channel();
        control.connect(proxy("page-0", Role::Sidecar), 0, tx);
        let (tx, mut gateway) = tokio::sync::mpsc::unbounded_channel();
        control.connect(proxy("gateway", Role::Gateway), 0, tx);

        assert_eq!(control.recompute(), 0);
        assert!(sidecar.try_recv().is_err() && gateway.try_recv().is_err());
        assert_eq!(compile_errors(&control), 1);
        for status in control.status() {
            assert_eq!(status.state, "NOT SENT");
            let error = status.compile_error.expect("the error");
            assert!(error.contains("building the mesh panicked: broken by the test"));
        }

        broken.store(false, Ordering::Release);
        assert_eq!(control.recompute(), 2);
        assert!(sidecar.try_recv().is_ok() && gateway.try_recv().is_ok());
        assert!(control.status().iter().all(|s| s.compile_error.is_none()));
    }

    #[test]
    fn a_panicking_proxy_compile_leaves_only_that_proxy_without_a_push() {
        let (control, broken) =
            breakable(|step| matches!(step, Compiling::Own(p) if p.id == "gateway"));
        let (tx, mut sidecar) = tokio::sync::mpsc::unbounded_channel();
        control.connect(proxy("page-0", Role::Sidecar), 0, tx);
        let (tx, mut gateway) = tokio::sync::mpsc::unbounded_channel();
        control.connect(proxy("gateway", Role::Gateway), 0, tx);

        assert_eq!(control.recompute(), 1, "the sidecar is pushed");
        assert!(sidecar.try_recv().is_ok());
        assert!(gateway.try_recv().is_err());
        assert_eq!(compile_errors(&control), 1);
        let status = control.status();
        let gw = status.iter().find(|s| s.id == "gateway").expect("gateway");
        let error = gw.compile_error.as_deref().expect("the error");
        assert!(
            error.contains("proxy gateway panicked: broken by the test"),
            "{error}"
        );

        broken.store(false, Ordering::Release);
        assert_eq!(control.recompute(), 1, "now the gateway is");
        assert!(gateway.try_recv().is_ok());
        assert!(control.status().iter().all(|s| s.compile_error.is_none()));
    }
}
