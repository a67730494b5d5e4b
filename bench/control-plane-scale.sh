#!/usr/bin/env bash
# Control-plane scale benchmark: a real `trellis control-plane` serving SERVICES
# Services with ENDPOINTS endpoints (WorkloadEntries), PROXIES simulated proxies
# connected over gRPC (real streams, one connection each, ACKing every push), and
# CHANGES changes of each kind applied through the HTTP API: a VirtualService weight
# (a route change) and a WorkloadEntry address (an endpoint move).
#
# Reports: initial sync time, per change the time from the apply to each proxy's push
# (p50, p99, max over proxies), bytes pushed per change, the control plane's resident
# memory and CPU per change, and the time to rebuild one sidecar's config.
#
#   bench/control-plane-scale.sh                      # 1000 proxies, 5000 services, 20000 endpoints
#   PROXIES=200 SERVICES=1000 ENDPOINTS=4000 bench/control-plane-scale.sh
set -euo pipefail
cd "$(dirname "$0")/.."

PROXIES=${PROXIES:-1000}
NAMESPACES=${NAMESPACES:-10}
SERVICES=${SERVICES:-5000}
ENDPOINTS=${ENDPOINTS:-20000}
CHANGES=${CHANGES:-10}
GRPC=${GRPC:-127.0.0.1:25012}
API=${API:-127.0.0.1:25014}

echo "==> building (release)"
cargo build --release --locked -q -p trellis
cargo build --release --locked -q -p trellis-control --examples

dir=$(mktemp -d /tmp/trellis-scale.XXXXXX)
state=$(mktemp -d /tmp/trellis-scale-state.XXXXXX)
cp_pid=
cleanup() {
  [ -n "$cp_pid" ] && kill "$cp_pid" 2>/dev/null || true
  rm -rf "$dir" "$state"
}
trap cleanup EXIT

echo "==> generating $SERVICES services, $ENDPOINTS endpoints in $dir"
target/release/examples/gen "$dir" "$SERVICES" "$ENDPOINTS"

echo "==> time to rebuild one sidecar's config (whole, from scratch)"
target/release/examples/compile_one "$dir"

echo "==> control plane"
start=$(date +%s.%N)
target/release/trellis control-plane --config "$dir" --grpc "$GRPC" --http "$API" --state-dir "$state" >"$state/cp.log" 2>&1 &
cp_pid=$!
for _ in $(seq 1 300); do
  curl -fs "http://$API/ready" >/dev/null 2>&1 && break
  sleep 0.1
done
printf "  loaded and serving in %.2fs; RSS %s MiB\n" "$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN {print b - a}')" \
  "$(awk '/VmRSS/ {printf "%d", $2/1024}' /proc/$cp_pid/status)"

echo "==> $PROXIES simulated proxies in $NAMESPACES namespaces, $CHANGES changes of each kind"
target/release/examples/scale --grpc "$GRPC" --api "$API" --pid "$cp_pid" --state-dir "$state" \
  --proxies "$PROXIES" --namespaces "$NAMESPACES" --changes "$CHANGES" --services "$SERVICES"
echo
curl -fs "http://$API/metrics" | grep -E '^trellis_control_(pushes_total|push_bytes_total|nacks_total|connected_proxies|compile_seconds_(sum|count))' || true
