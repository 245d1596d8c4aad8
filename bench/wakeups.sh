#!/usr/bin/env bash
# Where does a request wait on its way through encapd? Brings up the
# two-node topology (scripts/lib.sh), runs a sockperf UDP ping-pong
# (64-byte messages, back to back) ctrA -> ctrB through each mode, and
# records the scheduler's view of the whole machine meanwhile
# (`perf sched record -a`). Prints per mode:
#   - the ping-pong RTT p50 / p99 and round trips completed;
#   - encapd's worker threads: context switches and wakeups per round
#     trip, their mean and maximum wakeup-to-run delay (`perf sched
#     latency`), their CPU time per round trip.
# A request crosses two gateways on its way and two on its way back; each
# crossing by a thread that sleeps costs one wakeup on the critical path.
#
# Usage: bench/wakeups.sh [--modes LIST] [--seconds N] [--out DIR] [--no-build]
#   --modes LIST   comma-separated: uring, uring-nocoop, uring-busypoll,
#                  mmsg, classic, vxlan-kernel (default: vxlan-kernel,classic,uring)
#   --seconds N    ping-pong length per mode (default 5)
#   --out DIR      keep perf data and reports here (default: a temp dir, removed)
#
# An experiment tool: it writes nothing under bench/runs/. Run as root;
# everything runs inside namespaces this script creates and removes.
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/../scripts/lib.sh"

MODES=vxlan-kernel,classic,uring
SECS=5
OUT=""
BUILD=1
ed_sockperf_experiment_args 60 "$@"
ed_sockperf_experiment_up

# measure MODE [PID...]: one ping-pong under perf sched; prints the summary
# line, counting the worker threads of the encapd PIDs given (the record is
# machine-wide: other encapd processes on the machine are left out).
measure() {
    local mode=$1 port=11111 spid data=$OUT/$1.sched.data tids
    shift
    tids=$(for pid in "$@"; do ls "/proc/$pid/task"; done | tr '\n' ' ')
    ip netns exec "$NS_CTRB" timeout $((SECS + 30)) sockperf server -i "$ED_CTRB_IP" -p $port >/dev/null 2>&1 &
    spid=$!
    ed_track "$spid"
    ed_wait_port "$NS_CTRB" $port 5 udp || ed_die "$mode: sockperf server did not start"
    perf sched record -a -o "$data" -- \
        ip netns exec "$NS_CTRA" timeout $((SECS + 20)) sockperf ping-pong -i "$ED_CTRB_IP" -p $port -t "$SECS" -m 64 --full-rtt \
        >"$OUT/$mode.sockperf.txt" 2>"$OUT/$mode.perf.err"
    ed_kill_pid "$spid" 1
    ed_untrack "$spid"
    perf sched latency -p -i "$data" >"$OUT/$mode.latency.txt" 2>/dev/null || true
    python3 - "$mode" "$OUT/$mode.sockperf.txt" "$OUT/$mode.latency.txt" "$tids" <<'PY'
import re, sys
mode, sp, lat, tids = sys.argv[1:]
tids = set(tids.split())
text = open(sp).read()
def pct(p):
    m = re.search(r"percentile %s\s*=\s*([\d.]+)" % re.escape(p), text)
    return float(m.group(1)) if m else float("nan")
m = re.search(r"ReceivedMessages=(\d+)", text)
trips = int(m.group(1)) if m else 0
# --full-rtt: sockperf's percentiles are whole round trips.
p50, p99 = pct("50.000"), pct("99.000")
runtime = switches = 0.0
delays = []
worst = 0.0
for line in open(lat):
    m = re.match(r"\s*(encapd-w\d+):(\d+)\s*\|\s*([\d.]+) ms\s*\|\s*(\d+)\s*\|\s*avg:\s*([\d.]+) ms\s*\|\s*max:\s*([\d.]+) ms", line)
    if not m or m.group(2) not in tids:
        continue
    runtime += float(m.group(3)); n = int(m.group(4)); switches += n
    delays.append((float(m.group(5)), n)); worst = max(worst, float(m.group(6)))
if switches:
    mean = sum(d * n for d, n in delays) / switches * 1000
    per = switches / trips if trips else float("nan")
    cpu = runtime * 1000 / trips if trips else float("nan")
    print(f"{mode:15} rtt p50 {p50:7.1f} us  p99 {p99:7.1f} us  trips {trips:7d} | workers: {per:4.2f} switches/trip, "
          f"wakeup delay mean {mean:5.1f} us max {worst*1000:7.1f} us, {cpu:5.1f} us CPU/trip")
else:
    print(f"{mode:15} rtt p50 {p50:7.1f} us  p99 {p99:7.1f} us  trips {trips:7d} | no encapd threads")
PY
}

IFS=, read -r -a mode_list <<<"$MODES"
for mode in "${mode_list[@]}"; do
    extra=""
    case $mode in
        vxlan-kernel)
            ed_topo_vxlan "$ED_TOPO_PREFIX"
            measure "$mode"
            ed_topo_unvxlan "$ED_TOPO_PREFIX"
            continue
            ;;
        uring) io=uring ;;
        uring-nocoop) io=uring extra='uring_disable = ["coop_taskrun"]' ;;
        uring-busypoll) io=uring extra='busy_poll_us = 200' ;;
        mmsg | classic) io=$mode ;;
        *) ed_die "unknown mode $mode" ;;
    esac
    ED_DATAPLANE_EXTRA=$extra encapd_write_configs "$WORK/$mode" "$io" 2
    encapd_start "$WORK/$mode" || ed_die "$mode: encapd did not start"
    ed_ping_ok "$NS_CTRA" "$ED_CTRB_IP" || ed_warn "$mode: ping failed"
    measure "$mode" "$ENCAPD_PID_A" "$ENCAPD_PID_B"
    encapd_stop
done
ed_log "perf data and reports in $OUT"
