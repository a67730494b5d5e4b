#!/usr/bin/env bash
# Two builds of trellis side by side, each behind bench/proxy-vs-envoy.sh with Envoy in
# every run as the yardstick, alternated on the same machine: before, after, before,
# after (ROUNDS pairs). Prints each run's Trellis/Envoy ratios, then the tables.
#   bench/before-after.sh BEFORE_BIN AFTER_BIN
#   ROUNDS=2 REPS=3 bench/before-after.sh /tmp/old/trellis target/release/trellis
set -euo pipefail
cd "$(dirname "$0")/.."
before=$(realpath "$1") after=$(realpath "$2")
rounds=${ROUNDS:-2}
out=$(mktemp -d)
export TARGETS=${TARGETS:-"direct envoy"}
for round in $(seq "$rounds"); do
  for which in before after; do
    bin=$before; [ "$which" = after ] && bin=$after
    dir="$out/$round-$which"
    mkdir -p "$dir"
    echo "== round $round: $which ($bin)" >&2
    TRELLIS_BIN=$bin EXTRA_NAME="trellis-$which" RESULTS_DIR=$dir \
      bash bench/proxy-vs-envoy.sh > "$dir/stdout.md" 2> "$dir/stderr.log" || {
        echo "run failed: see $dir/stderr.log" >&2; exit 1; }
  done
done
python3 - "$out" <<'PY'
import csv, glob, os, statistics, sys
out = sys.argv[1]
rows = []
for d in sorted(glob.glob(os.path.join(out, "*-*"))):
    runs = list(csv.DictReader(open(os.path.join(d, "runs.csv"))))
    name = os.path.basename(d)
    def med(target, phase, field):
        vals = [float(r[field]) for r in runs if r.get("target") == target and r.get("phase") == phase and r.get(field) not in ("", None, "n/a")]
        return statistics.median(vals) if vals else float("nan")
    extra = [r["target"] for r in runs if r["target"].startswith("trellis")][0]
    cells = [name]
    for phase, field in [("h1lat", "p50_us"), ("h1lat", "p99_us"), ("h2lat", "p50_us"), ("h2lat", "p99_us")]:
        d0, e, t = med("direct", phase, field), med("envoy", phase, field), med(extra, phase, field)
        cells.append(f"{(t - d0) / (e - d0):.2f}")
    for phase in ["h1tput", "h2tput"]:
        e, t = med("envoy", phase, "proxy_cpu_us_per_req"), med(extra, phase, "proxy_cpu_us_per_req")
        cells.append(f"{t:.1f} / {e:.1f} = {t / e:.2f}")
    rows.append(cells)
print("| run | added HTTP/1.1 p50 | added HTTP/1.1 p99 | added h2c p50 | added h2c p99 | CPU µs/req HTTP/1.1 (Trellis / Envoy) | CPU µs/req h2c |")
print("|---|---|---|---|---|---|---|")
for r in rows:
    print("| " + " | ".join(r) + " |")
print(f"\n(added latency = (proxy - direct) / (Envoy - direct); medians over repetitions; raw runs in {out})")
PY
