#!/usr/bin/env bash
# The cost of transparent capture (issue 11): a captured hop pair beside the explicit
# HTTP_PROXY mode, side by side in one run, with a direct baseline.
#
# Two "pods", network namespaces this script creates (unique names, joined by a veth
# pair), as in the capture test (crates/cli/tests/capture.rs, capture/pods.rs): a
# client pod where the load generator (wrk) runs and a server pod where the app
# (`trellis echo`) runs. Each sidecar is `trellis proxy --standalone DIR` as uid 1337,
# both reading the same YAML (a Service with a cluster IP, the server's Pod):
#   direct    wrk → the app at the server's pod IP; no sidecar, no iptables
#   explicit  wrk → the client sidecar's HTTP-proxy listener (127.0.0.1:15001, what
#             local mode's HTTP_PROXY points at; origin-form, Host: server:8080) →
#             server sidecar's inbound listener on POD_IP:8080 → app on 127.0.0.1:8080
#   capture   `trellis proxy init` in both pods, sidecars with --capture; wrk →
#             the Service's cluster IP:8080, redirected to the client sidecar (15001),
#             then to the server pod, redirected to the server sidecar (15006) → app
# Plaintext between the sidecars in both meshed modes by default; MTLS=1 gives both
# sidecars identities from files (bench/mtls/pki.sh: SPIFFE ids ns/bench/sa/client and
# ns/bench/sa/backend), adds STRICT PeerAuthentication and an ISTIO_MUTUAL
# DestinationRule, so both meshed modes speak mutual TLS between the pods. Every mode
# gets fresh namespaces (so no nat table or conntrack state lingers from a captured
# mode into an uncaptured one), started and torn down within its turn.
#
# Measured per mode, modes alternated within each repetition (direct, explicit,
# capture, then again; REPS times), the shared harness's methods
# (../shared/bench/README.md):
#   latency     wrk -t1 -c10 at a constant RATE (1000 req/s, a Lua delay() schedule of
#               evenly spaced send slots) for LAT_S s: p50/p99/p99.9, µs. SCHED=fifo
#               (default) runs wrk, the app and the sidecars SCHED_FIFO 10 here.
#   throughput  wrk -t1 -c32 for TPUT_S s under the normal scheduler: req/s, and CPU
#               µs per request of both sidecars together (utime+stime from
#               /proc/PID/stat before and after) and of the whole machine (/proc/stat,
#               irq and softirq included: the kernel's netfilter work of capture shows
#               up there when it is not charged to a process).
# Layout (2 cores): wrk on CPU 0 (LOAD_CPU); the app and both sidecars on CPU 1
# (SERVER_CPUS). bg% is the CPU used by anything else during a run (% of a core);
# runs where it or the hypervisor's steal was above QUIET_BG_PCT count as noisy.
#
#   sudo bench/capture-vs-http-proxy.sh                 # REPS=3, about 3.5 minutes
#   REPS=1 LAT_S=3 TPUT_S=3 sudo bench/capture-vs-http-proxy.sh
# Needs root (network namespaces, iptables, setpriv, chrt). Installs wrk with apt-get
# when missing (NO_INSTALL=1: don't). TRELLIS_BIN runs a given binary instead of
# building this checkout's (cargo build --release --locked -p trellis).
set -euo pipefail
cd "$(dirname "$0")/.."

REPS=${REPS:-3} RATE=${RATE:-1000} LAT_S=${LAT_S:-10} TPUT_S=${TPUT_S:-8}
LAT_CONNS=${LAT_CONNS:-10} TPUT_CONNS=${TPUT_CONNS:-32}
LOAD_CPU=${LOAD_CPU:-0} SERVER_CPUS=${SERVER_CPUS:-1}
SCHED=${SCHED:-fifo} SCHED_PRIO=${SCHED_PRIO:-10} QUIET_BG_PCT=${QUIET_BG_PCT:-10}
MODES=${MODES:-"direct explicit capture"}
MAX_TOTAL_S=${MAX_TOTAL_S:-900}
MTLS=${MTLS:-0}
READY_S=${READY_S:-20}

CLIENT_IP=10.77.1.1 SERVER_IP=10.77.1.2 CLUSTER_IP=10.96.77.10 PORT=8080
REQ_PATH=/bytes/100   # a fixed 100-byte body, like the shared harness's upstream
HOST_HEADER="server:$PORT"

log() { echo "[$(date -u +%H:%M:%S)] $*" >&2; }
die() { log "$*"; exit 1; }

[ "$(id -u)" = 0 ] || die "needs root: network namespaces, iptables, setpriv, chrt"
for tool in ip iptables setpriv chrt taskset curl python3; do
  command -v "$tool" >/dev/null || die "missing: $tool"
done
if ! command -v wrk >/dev/null; then
  [ "${NO_INSTALL:-0}" = 1 ] && die "wrk is missing (apt-get install wrk)"
  log "installing wrk"
  DEBIAN_FRONTEND=noninteractive timeout 300 apt-get install -y -q wrk >/dev/null
fi
if [ -z "${TRELLIS_BIN:-}" ]; then
  timeout 3600 cargo build --release --locked -p trellis
  TRELLIS_BIN=$PWD/target/release/trellis
fi
[ -x "$TRELLIS_BIN" ] || die "no trellis binary at $TRELLIS_BIN"
if [ "$SCHED" = fifo ] && ! chrt -f "$SCHED_PRIO" true 2>/dev/null; then
  log "chrt -f failed; running without SCHED_FIFO"; SCHED=none
fi

T_START=$(date +%s)
CLK=$(getconf CLK_TCK)
OUT=${RESULTS_DIR:-$(mktemp -d /tmp/capture-bench.XXXXXX)}
mkdir -p "$OUT"
chmod 755 "$OUT"
TAG="cvh$$"
PIDS=()          # processes this script started (each one execs down to its program)
NAMESPACES=()    # namespaces this script created

stop_pids() {
  local pid
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  # A sidecar drains for --drain-duration (0s here); anything still there after 5 s
  # is killed.
  local end=$((SECONDS + 5))
  for pid in "${PIDS[@]}"; do
    while kill -0 "$pid" 2>/dev/null && [ $SECONDS -lt $end ]; do sleep 0.05; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  PIDS=()
}
del_namespaces() {
  local ns
  for ns in "${NAMESPACES[@]}"; do ip netns del "$ns" 2>/dev/null || true; done
  NAMESPACES=()
}
cleanup() { stop_pids; del_namespaces; }
trap cleanup EXIT
trap 'log "interrupted"; exit 3' INT TERM

# ------------------------------------------------------------------ mesh and load
MESH=$OUT/mesh
mkdir -p "$MESH"
cat > "$MESH/mesh.yaml" <<YAML
apiVersion: v1
kind: Service
metadata: {name: server, namespace: bench}
spec:
  clusterIP: $CLUSTER_IP
  selector: {app: server}
  ports:
  - {name: http, port: $PORT, targetPort: $PORT}
---
apiVersion: v1
kind: Pod
metadata: {name: server-1, namespace: bench, labels: {app: server}}
spec:
  serviceAccountName: backend
  containers: [{name: app, image: echo}]
status: {podIP: $SERVER_IP}
YAML
IDENTITY_client=() IDENTITY_backend=()
if [ "$MTLS" = 1 ]; then
  cat >> "$MESH/mesh.yaml" <<YAML
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: bench}
spec: {mtls: {mode: STRICT}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: server, namespace: bench}
spec:
  host: server.bench.svc.cluster.local
  trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}
YAML
  bash bench/mtls/pki.sh "$OUT/pki" >/dev/null
  chown -R 1337:1337 "$OUT/pki"; chmod 755 "$OUT/pki"
  for who in client backend; do
    eval "IDENTITY_$who=(--identity-cert $OUT/pki/$who.pem --identity-key $OUT/pki/$who.key --identity-roots $OUT/pki/root.pem)"
  done
fi
chmod 755 "$MESH"; chmod 644 "$MESH/mesh.yaml"

# Constant rate for wrk -t1: one schedule of send slots 1/RATE apart, shared by the
# connections; each request waits for the next free slot. Latency is wrk's own (request
# written → response read), in µs.
cat > "$OUT/paced.lua" <<'LUA'
local ffi = require("ffi")
ffi.cdef[[
typedef struct { long sec; long nsec; } cvh_ts;
int clock_gettime(int clock, cvh_ts *t);
]]
local now = ffi.new("cvh_ts")
local function ms()
  ffi.C.clock_gettime(1, now)   -- CLOCK_MONOTONIC
  return tonumber(now.sec) * 1e3 + tonumber(now.nsec) / 1e6
end
local step = 1000 / tonumber(os.getenv("CVH_RATE"))
local slot
function delay()
  local t = ms()
  slot = slot and slot + step or t
  local wait = slot - t
  if wait <= 0 then return 0 end
  return math.floor(wait + 0.5)
end
LUA
cat > "$OUT/report.lua" <<'LUA'
function done(s, lat, req)
  local e = s.errors
  io.write(string.format("CVH requests=%d seconds=%.3f p50=%d p90=%d p99=%d p999=%d errors=%d\n",
    s.requests, s.duration / 1e6, lat:percentile(50), lat:percentile(90),
    lat:percentile(99), lat:percentile(99.9),
    e.connect + e.read + e.write + e.status + e.timeout))
end
LUA
cat "$OUT/report.lua" >> "$OUT/paced.lua"
chmod 644 "$OUT"/*.lua

# ------------------------------------------------------------------ pods
CLIENT_NS= SERVER_NS=
make_pods() { # name suffix
  CLIENT_NS="$TAG-$1-client" SERVER_NS="$TAG-$1-server"
  local ns
  for ns in "$CLIENT_NS" "$SERVER_NS"; do
    ip netns add "$ns"
    NAMESPACES+=("$ns")
    ip -n "$ns" link set lo up
  done
  # Made inside the client's namespace, the peer moved straight into the server's:
  # nothing is named in the host's.
  ip -n "$CLIENT_NS" link add eth0 type veth peer name eth0 netns "$SERVER_NS"
  ip -n "$CLIENT_NS" addr add "$CLIENT_IP/24" dev eth0
  ip -n "$SERVER_NS" addr add "$SERVER_IP/24" dev eth0
  for ns in "$CLIENT_NS" "$SERVER_NS"; do
    ip -n "$ns" link set eth0 up
    # Everything off-pod (the cluster IP included) leaves by eth0.
    ip -n "$ns" route add default dev eth0
  done
}

# start NAME NS USER(proxy|root) ARGS...: runs a program in a pod on SERVER_CPUS.
# ip netns exec, setpriv and taskset each exec the next, so $! is the program itself.
start() {
  local name=$1 ns=$2 user=$3; shift 3
  local as=()
  [ "$user" = proxy ] && as=(setpriv --reuid 1337 --regid 1337 --clear-groups)
  NO_COLOR=1 taskset -c "$SERVER_CPUS" ip netns exec "$ns" "${as[@]}" "$@" \
    > "$RUN_DIR/$name.log" 2>&1 < /dev/null &
  PIDS+=("$!")
  eval "PID_$name=$!"
}

# wait_log FILE TEXT PID: until FILE has TEXT (bounded by READY_S).
wait_log() {
  local end=$((SECONDS + READY_S))
  while ! grep -q "$2" "$1" 2>/dev/null; do
    kill -0 "$3" 2>/dev/null || { log "exited early: $(tail -3 "$1")"; return 1; }
    [ $SECONDS -lt $end ] || { log "not ready in ${READY_S}s: $1"; return 1; }
    sleep 0.05
  done
}

proxy_args() { # app service-account
  local id="IDENTITY_$2[@]"
  echo --standalone "$MESH" --namespace bench --name "$1" --labels "app=$1" \
    --service-account "$2" --admin 127.0.0.1:15000 --stats 127.0.0.1:15020 \
    --drain-duration 0s "${!id}"
}

# up MODE: the pods, the app, the sidecars for MODE; sets URL and SIDECARS.
URL= SIDECARS=
up() {
  local mode=$1
  make_pods "$mode-$REP"
  SIDECARS=""
  case $mode in
    direct)
      start app "$SERVER_NS" root "$TRELLIS_BIN" echo --listen "0.0.0.0:$PORT" --name server
      URL="http://$SERVER_IP:$PORT$REQ_PATH" ;;
    explicit)
      start app "$SERVER_NS" root "$TRELLIS_BIN" echo --listen "127.0.0.1:$PORT" --name server
      # shellcheck disable=SC2046
      start server_proxy "$SERVER_NS" proxy "$TRELLIS_BIN" proxy $(proxy_args server backend) \
        --inbound "$SERVER_IP:$PORT=127.0.0.1:$PORT"
      # shellcheck disable=SC2046
      start client_proxy "$CLIENT_NS" proxy "$TRELLIS_BIN" proxy $(proxy_args client client) \
        --listen 127.0.0.1:15001
      SIDECARS="$PID_server_proxy $PID_client_proxy"
      URL="http://127.0.0.1:15001$REQ_PATH" ;;
    capture)
      # What an injected pod's init container does, before anything starts.
      ip netns exec "$CLIENT_NS" "$TRELLIS_BIN" proxy init --proxy-uid 1337 > "$RUN_DIR/init-client.log" 2>&1 \
        || { log "proxy init failed: $(cat "$RUN_DIR/init-client.log")"; return 1; }
      ip netns exec "$SERVER_NS" "$TRELLIS_BIN" proxy init --proxy-uid 1337 > "$RUN_DIR/init-server.log" 2>&1 \
        || { log "proxy init failed: $(cat "$RUN_DIR/init-server.log")"; return 1; }
      start app "$SERVER_NS" root "$TRELLIS_BIN" echo --listen "127.0.0.1:$PORT" --name server
      # shellcheck disable=SC2046
      start server_proxy "$SERVER_NS" proxy "$TRELLIS_BIN" proxy $(proxy_args server backend) --capture
      # shellcheck disable=SC2046
      start client_proxy "$CLIENT_NS" proxy "$TRELLIS_BIN" proxy $(proxy_args client client) --capture
      SIDECARS="$PID_server_proxy $PID_client_proxy"
      URL="http://$CLUSTER_IP:$PORT$REQ_PATH" ;;
  esac
  wait_log "$RUN_DIR/app.log" "listening on" "$PID_app" || return 1
  if [ -n "$SIDECARS" ]; then
    wait_log "$RUN_DIR/server_proxy.log" "admin:" "$PID_server_proxy" || return 1
    wait_log "$RUN_DIR/client_proxy.log" "admin:" "$PID_client_proxy" || return 1
  fi
  # Served end to end, from the client pod (bounded).
  local end=$((SECONDS + READY_S)) code=
  while :; do
    code=$(ip netns exec "$CLIENT_NS" curl -s -o /dev/null -w '%{http_code}' -m 2 \
             -H "Host: $HOST_HEADER" "$URL" || true)
    [ "$code" = 200 ] && break
    [ $SECONDS -lt $end ] || { log "$mode: $URL never answered 200 (last: $code)"; return 1; }
    sleep 0.1
  done
}

down() { stop_pids; del_namespaces; }

# ------------------------------------------------------------------ measuring
ticks() { # utime+stime of the given pids, summed
  local pid sum=0 s rest
  for pid in "$@"; do
    s=$(cat "/proc/$pid/stat" 2>/dev/null) || continue
    rest=${s##*) }
    # shellcheck disable=SC2086
    set -- $rest
    sum=$((sum + ${12} + ${13}))
  done
  echo "$sum"
}
busy() { # machine busy ticks (user nice system irq softirq) and steal
  read -r _ u n s _ _ irq sirq st _ < /proc/stat
  echo "$((u + n + s + irq + sirq)) $st"
}
sched() { # fifo|other: every thread of every process this script started
  [ "$SCHED" = fifo ] || return 0
  local pid
  for pid in "${PIDS[@]}"; do
    if [ "$1" = fifo ]; then chrt -a -f -p "$SCHED_PRIO" "$pid" >/dev/null 2>&1 || true
    else chrt -a -o -p 0 "$pid" >/dev/null 2>&1 || true; fi
  done
}

# measure MODE PHASE: one wrk run; appends a row to runs.tsv.
measure() {
  local mode=$1 phase=$2 args prio=()
  if [ "$phase" = lat ]; then
    args=(-c"$LAT_CONNS" -d"${LAT_S}s" -s "$OUT/paced.lua")
    [ "$SCHED" = fifo ] && prio=(chrt -f "$SCHED_PRIO")
    sched fifo
  else
    args=(-c"$TPUT_CONNS" -d"${TPUT_S}s" -s "$OUT/report.lua")
  fi
  local dur=${LAT_S}; [ "$phase" = tput ] && dur=$TPUT_S
  # shellcheck disable=SC2086
  local s0 e0 b0 st0 w0 res
  s0=$(ticks $SIDECARS); e0=$(ticks "$PID_app"); read -r b0 st0 < <(busy); w0=$(date +%s.%N)
  # In a subshell, so that its reaped-children times (cutime+cstime) are wrk's CPU.
  res=$( (CVH_RATE=$RATE timeout $((dur + 30)) "${prio[@]}" taskset -c "$LOAD_CPU" \
            ip netns exec "$CLIENT_NS" wrk -t1 "${args[@]}" --timeout 5s \
            -H "Host: $HOST_HEADER" "$URL" > "$RUN_DIR/wrk-$phase.out" 2>&1 || true
          me=$BASHPID; s=$(cat "/proc/$me/stat"); r=${s##*) }
          # shellcheck disable=SC2086
          set -- $r; echo "wrk_ticks=$((${14} + ${15}))"
          grep -h '^CVH ' "$RUN_DIR/wrk-$phase.out" || true) )
  local w1 s1 e1 b1 st1
  w1=$(date +%s.%N); s1=$(ticks $SIDECARS); e1=$(ticks "$PID_app"); read -r b1 st1 < <(busy)
  [ "$phase" = lat ] && sched other
  if ! grep -q '^CVH ' <<<"$res"; then
    log "  $mode $phase: wrk gave no result: $(tail -2 "$RUN_DIR/wrk-$phase.out")"
    printf '%s\t%s\t%s\tfailed\n' "$REP" "$mode" "$phase" >> "$OUT/runs.tsv"
    return
  fi
  python3 - "$REP" "$mode" "$phase" "$res" "$CLK" "$w0" "$w1" "$s0" "$s1" "$e0" "$e1" \
      "$b0" "$b1" "$st0" "$st1" "${SIDECARS:+1}" >> "$OUT/runs.tsv" <<'PY'
import sys
rep, mode, phase, res, clk, w0, w1, s0, s1, e0, e1, b0, b1, st0, st1, meshed = sys.argv[1:]
kv = dict(x.split("=") for l in res.splitlines() for x in l.replace("CVH ", "").split())
clk = float(clk); wall = float(w1) - float(w0)
req = int(kv["requests"]); rps = req / float(kv["seconds"])
pct = lambda t: t / clk / wall * 100
side = pct(int(s1) - int(s0)) if meshed else None
app = pct(int(e1) - int(e0)); load = pct(int(kv["wrk_ticks"])); total = pct(int(b1) - int(b0))
bg = max(0.0, total - (side or 0) - app - load)
side_us = (int(s1) - int(s0)) / clk / req * 1e6 if meshed else None
machine_us = (int(b1) - int(b0)) / clk / req * 1e6
f = lambda v, d=1: "" if v is None else f"{v:.{d}f}"
print("\t".join([rep, mode, phase, f(rps), kv["p50"], kv["p90"], kv["p99"], kv["p999"], kv["errors"],
                 f(side_us, 2), f(machine_us, 2), f(side), f(app), f(load), f(bg), f(pct(int(st1) - int(st0)))]))
PY
  log "  $mode $phase: $(tail -1 "$OUT/runs.tsv" | cut -f4-11 | tr '\t' ' ')"
}

# The server sidecar's count of requests it served (reporter=destination), and of
# those over mutual TLS, or "-".
served() {
  [ -n "$SIDECARS" ] || { echo -; return; }
  ip netns exec "$SERVER_NS" curl -s -m 2 http://127.0.0.1:15020/stats/prometheus \
    | awk '/^istio_requests_total\{/ && /reporter="destination"/ {n += $NF
             if (/connection_security_policy="mutual_tls"/) m += $NF}
           END {printf "served=%d mutual_tls=%d\n", n, m}'
}

# ------------------------------------------------------------------ the run
printf 'rep\tmode\tphase\trps\tp50_us\tp90_us\tp99_us\tp999_us\terrors\tsidecars_cpu_us_per_req\tmachine_cpu_us_per_req\tsidecars_cpu_pct\tapp_cpu_pct\twrk_cpu_pct\tbg_pct\tsteal_pct\n' > "$OUT/runs.tsv"
per_mode=$((LAT_S + TPUT_S + 8))
n_modes=$(wc -w <<<"$MODES")
log "binary: $TRELLIS_BIN; mTLS between sidecars: $MTLS; modes: $MODES; reps: $REPS; rate $RATE/s for ${LAT_S}s, max throughput ${TPUT_S}s; sched: $SCHED; results: $OUT"
log "estimated: $((REPS * n_modes * per_mode))s (budget MAX_TOTAL_S=${MAX_TOTAL_S}s)"
read -r bb0 _ < <(busy); sleep 1; read -r bb1 _ < <(busy)
BG_BEFORE=$(( (bb1 - bb0) * 100 / CLK ))
log "CPU busy before start: ${BG_BEFORE}% of a core"
for REP in $(seq "$REPS"); do
  for mode in $MODES; do
    if [ $(( $(date +%s) - T_START + per_mode )) -gt "$MAX_TOTAL_S" ]; then
      log "rep $REP $mode: skipped, past MAX_TOTAL_S"; continue
    fi
    RUN_DIR=$OUT/$REP-$mode
    mkdir -p "$RUN_DIR"
    log "rep $REP: $mode"
    if up "$mode"; then
      # Warm-up: connections and the sidecars' upstream pools, not recorded.
      timeout 20 taskset -c "$LOAD_CPU" ip netns exec "$CLIENT_NS" wrk -t1 -c"$TPUT_CONNS" -d1s \
        -H "Host: $HOST_HEADER" "$URL" > "$RUN_DIR/warmup.out" 2>&1 || true
      measure "$mode" lat
      measure "$mode" tput
      echo "$REP $mode $(served)" >> "$OUT/served.txt"
    else
      printf '%s\t%s\tlat\tfailed\n%s\t%s\ttput\tfailed\n' "$REP" "$mode" "$REP" "$mode" >> "$OUT/runs.tsv"
    fi
    down
  done
done

# ------------------------------------------------------------------ the table
python3 - "$OUT/runs.tsv" "$QUIET_BG_PCT" <<'PY'
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
quiet = float(sys.argv[2])
ok = [r for r in rows if r.get("rps") not in (None, "", "failed")]
modes = list(dict.fromkeys(r["mode"] for r in rows))
def get(mode, phase, field, rep=None):
    return [float(r[field]) for r in ok if r["mode"] == mode and r["phase"] == phase
            and r[field] not in ("", None) and (rep is None or r["rep"] == rep)]
def cell(v, d=0):
    if not v: return "n/a"
    m = statistics.median(v)
    return f"{m:.{d}f} ({min(v):.{d}f}-{max(v):.{d}f})" if len(v) > 1 else f"{m:.{d}f}"
def added(mode, field, base="direct"):
    out = []
    for rep in sorted({r["rep"] for r in ok}):
        a, b = get(mode, "lat", field, rep), get(base, "lat", field, rep)
        if a and b: out.append(a[0] - b[0])
    return out
print("| mode | p50 (µs) | p99 (µs) | p99.9 (µs) | added p50 vs direct | added p99 vs direct | CPU µs/request, both sidecars | CPU µs/request, whole machine | max req/s | errors | noisy runs |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
for m in modes:
    mine = [r for r in ok if r["mode"] == m]
    noisy = sum(1 for r in mine if max(float(r["bg_pct"] or 0), float(r["steal_pct"] or 0)) > quiet)
    failed = sum(1 for r in rows if r["mode"] == m and r.get("rps") == "failed")
    errors = sum(int(r["errors"]) for r in mine)
    print(f"| {m} | {cell(get(m, 'lat', 'p50_us'))} | {cell(get(m, 'lat', 'p99_us'))} | {cell(get(m, 'lat', 'p999_us'))} "
          f"| {cell(added(m, 'p50_us')) if m != 'direct' else '—'} | {cell(added(m, 'p99_us')) if m != 'direct' else '—'} "
          f"| {cell(get(m, 'tput', 'sidecars_cpu_us_per_req'), 1) if m != 'direct' else '—'} "
          f"| {cell(get(m, 'tput', 'machine_cpu_us_per_req'), 1)} | {cell(get(m, 'tput', 'rps'))} | {errors} "
          f"| {noisy} of {len(mine)}{f', {failed} failed' if failed else ''} |")
if "explicit" in modes and "capture" in modes:
    p50, p99 = added("capture", "p50_us", "explicit"), added("capture", "p99_us", "explicit")
    cpu = []
    for rep in sorted({r["rep"] for r in ok}):
        a, b = get("capture", "tput", "sidecars_cpu_us_per_req", rep), get("explicit", "tput", "sidecars_cpu_us_per_req", rep)
        if a and b: cpu.append(a[0] - b[0])
    mach = []
    for rep in sorted({r["rep"] for r in ok}):
        a, b = get("capture", "tput", "machine_cpu_us_per_req", rep), get("explicit", "tput", "machine_cpu_us_per_req", rep)
        if a and b: mach.append(a[0] - b[0])
    print()
    print(f"capture − explicit, same repetition: p50 {cell(p50)} µs, p99 {cell(p99)} µs, "
          f"sidecars' CPU {cell(cpu, 1)} µs/request, whole machine {cell(mach, 1)} µs/request")
print()
print("Cells: median (min-max) over repetitions; added = mode − direct in the same repetition.")
print(f"Noisy: runs whose background CPU (bg%) or hypervisor steal was above {quiet:g} % of a core (runs.tsv has both).")
PY
if [ -s "$OUT/served.txt" ]; then
  echo
  echo "Requests the server's sidecar counted (reporter=destination), per run of a mode (warm-up, latency and throughput together):"
  grep -v ' -$' "$OUT/served.txt" | sed 's/^\([0-9]*\) \([a-z]*\) /- rep \1, \2: /' || true
fi
log "runs: $OUT/runs.tsv; what the server sidecars counted: $OUT/served.txt; logs under $OUT"
