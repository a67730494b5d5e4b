//! Test support (feature `testing`): a real etcd, kube-apiserver and
//! controller-manager on loopback ([`Cluster`]), the kubelet's part played by the
//! test ([`Kubelet`]: the test's own processes, or the Pod spec run as written, each
//! Pod in a network namespace, by [`runtime::ContainerRuntime`]), and Istio's CRDs from the corpus ([`install_istio_crds`]).
//! Never part of what users run.

mod cluster;
pub mod corpus;
mod crds;
mod kubelet;
mod netns;
pub mod runtime;

pub use cluster::{
    ADMIN_TOKEN, Cluster, ClusterOptions, Fixtures, base64, fixtures_or_skip, write_kubeconfig,
    write_unreachable_kubeconfig,
};
pub use crds::{install_istio_crds, istio_crds_file};
pub use kubelet::{Kubelet, NODE, PodInfo, PodRunner, Runner, pod_token, token};
pub use netns::{POD_CIDR, isolate};
