#!/usr/bin/env bash
# Cluster-mode scale benchmark: a real etcd + kube-apiserver (the test harness's,
# built by fixtures/kube/build.sh) loaded with SERVICES Services and PODS Running,
# Ready Pods (pod IPs in 10.244.0.0/16, never connected to) over NAMESPACES
# namespaces, a ServiceAccount per service and a VirtualService for every VS_EVERY-th;
# then a release `trellis control-plane --kubeconfig` against it, and PROXIES
# simulated sidecars, each proving its Pod's service-account token by TokenReview for
# its certificate and ACKing pushes over gRPC/TLS.
#
# Reports: the load time (not a measured figure), the control plane's time to ready
# and resident memory after sync, CHANGES VirtualService changes from the write to
# the API server (kube client, through the validating webhook) to every proxy's ACK
# (p50, p99, max over proxies), and an API server restart (every watch broken): what
# was relisted, pushes sent, the control plane's CPU. Loopback only; everything it
# starts is stopped when it ends. A benchmark: it never runs in CI.
#
#   bench/cluster-scale.sh                                   # 1000 services, 5000 pods, 200 proxies
#   PROXIES=1000 bench/cluster-scale.sh
#   SERVICES=100 PODS=500 PROXIES=50 CHANGES=5 bench/cluster-scale.sh   # a quick look
set -euo pipefail
cd "$(dirname "$0")/.."

SERVICES=${SERVICES:-1000}
PODS=${PODS:-5000}
NAMESPACES=${NAMESPACES:-10}
PROXIES=${PROXIES:-200}
CHANGES=${CHANGES:-10}
VS_EVERY=${VS_EVERY:-10}
CONCURRENCY=${CONCURRENCY:-32}

echo "==> building (release)"
cargo build --release --locked -q -p trellis
cargo build --release --locked -q -p trellis-kube --features testing --example cluster_scale

# The harness takes the API server's binaries from $TRELLIS_KUBE_FIXTURES, or builds
# them with fixtures/kube/build.sh (Go; minutes, once). Istio's CRDs come from the
# corpus beside the checkout (../shared/corpus/istio, or $TRELLIS_ISTIO_CORPUS).
target/release/examples/cluster_scale --trellis target/release/trellis \
  --services "$SERVICES" --pods "$PODS" --namespaces "$NAMESPACES" --proxies "$PROXIES" \
  --changes "$CHANGES" --vs-every "$VS_EVERY" --concurrency "$CONCURRENCY"
