#!/usr/bin/env bash
# Where does the time go under bulk TCP? Brings up the two-node topology
# (scripts/lib.sh) with encapd on both nodes (or, with --mode vxlan, kernel
# VXLAN as flannel's vxlan backend sets it up), drives one iperf3 TCP stream
# ctrA -> ctrB and records a call-graph profile of the whole machine
# (`perf record -a -g`) while it runs. Prints:
#   - the throughput and the CPU the forwarding path used (samples of
#     encapd, iperf3, softirq and kernel worker threads, in cores, and cores
#     per Gbit/s; samples of anything else on the machine are left out);
#   - samples by thread, and the top symbols of the sending encapd (nodeA)
#     and the receiving one (nodeB), or of the whole path for vxlan;
# and keeps perf.data and the reports in the output directory.
#
# Usage: bench/profile.sh [--mode encapd|vxlan] [--io uring|mmsg]
#                         [--offload auto|off] [--seconds N] [--out DIR]
#                         [--no-build]
#
# Sampling is by cpu-clock (a VM has no PMU): kernel samples are skewed
# towards the places where interrupts are re-enabled, so read kernel
# symbols as "roughly here"; user-space symbols are accurate.
#
# The profile is system-wide because most of the cost of a packet is kernel
# work done in the worker threads' syscalls (TUN write up to TCP, UDP send
# down through the veth); a per-process profile would hide the softirq part.
set -euo pipefail

# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/../scripts/lib.sh"

MODE=encapd
IO=uring
OFFLOAD=auto
SECONDS_LOAD=10
OUT=""
BUILD=1
while (($#)); do
    case $1 in
        --mode) MODE=${2:?}; shift 2 ;;
        --io) IO=${2:?}; shift 2 ;;
        --offload) OFFLOAD=${2:?}; shift 2 ;;
        --seconds) SECONDS_LOAD=${2:?}; shift 2 ;;
        --out) OUT=${2:?}; shift 2 ;;
        --no-build) BUILD=0; shift ;;
        -h | --help) ed_script_help "$0"; exit 0 ;;
        *) ed_die "unknown argument: $1 (see --help)" ;;
    esac
done
case $MODE in encapd | vxlan) ;; *) ed_die "--mode must be encapd or vxlan" ;; esac
case $IO in uring | mmsg) ;; *) ed_die "--io must be uring or mmsg" ;; esac
case $OFFLOAD in auto | off) ;; *) ed_die "--offload must be auto or off" ;; esac
[[ $SECONDS_LOAD =~ ^[1-9][0-9]*$ && $SECONDS_LOAD -le 120 ]] || ed_die "--seconds must be 1..120"

ed_require_root
if [[ $MODE == encapd ]] && ((BUILD)); then ed_need_pkgs @build; fi
ed_need_pkgs @run @profile
if [[ $MODE == encapd ]] && ((BUILD)); then ed_build; fi
label=$MODE
[[ $MODE == encapd ]] && label=$IO-offload-$OFFLOAD
OUT=${OUT:-$ED_ROOT/bench/runs/$(date -u +%Y-%m-%d-%H%M)-profile-$label}
mkdir -p "$OUT"

ed_install_traps
ED_TOPO_PREFIX=$(ed_rand_prefix)
ed_topo_up "$ED_TOPO_PREFIX"
ed_ns_names "$ED_TOPO_PREFIX"
if [[ $MODE == vxlan ]]; then
    ed_topo_set_ctr_mtu "$ED_TOPO_PREFIX" "$ED_VX_MTU"
    ed_topo_vxlan "$ED_TOPO_PREFIX"
else
    ed_topo_set_ctr_mtu "$ED_TOPO_PREFIX" $((ED_UL_MTU - 28))
    encapd_write_configs "$OUT" "$IO" 2
    for side in a b; do
        sed -i "s/^io .*/&\noffload = \"$OFFLOAD\"/" "$OUT/$side.toml"
    done
    encapd_start "$OUT" || ed_die "encapd did not start"
fi
ed_ping_ok "$NS_CTRA" "$ED_CTRB_IP" || ed_die "no ping through the $MODE path"

ip netns exec "$NS_CTRB" timeout $((SECONDS_LOAD + 20)) iperf3 -s -1 -B "$ED_CTRB_IP" >/dev/null 2>&1 &
ed_track "$!"
ed_wait_port "$NS_CTRB" 5201 || ed_die "iperf3 server did not start"
ip netns exec "$NS_CTRA" timeout $((SECONDS_LOAD + 15)) iperf3 -c "$ED_CTRB_IP" -t "$SECONDS_LOAD" -O 1 -J >"$OUT/iperf3.json" &
client=$!
ed_track "$client"
sleep 1.5
# Thread IDs of our two daemons: the encapd threads that belong to this run.
ours=""
if [[ $MODE == encapd ]]; then
    for task in "/proc/$ENCAPD_PID_A"/task/* "/proc/$ENCAPD_PID_B"/task/*; do
        [[ -e $task ]] && ours+="${task##*/},"
    done
fi
RECORD=$((SECONDS_LOAD - 2))
ed_log "recording $RECORD s system-wide"
perf record -q -a -g -F 999 -o "$OUT/perf.data" -- sleep "$RECORD" 2>"$OUT/perf.log" || ed_die "perf record failed (see $OUT/perf.log)"
wait "$client" || ed_warn "iperf3 client exited non-zero"
ed_untrack "$client"
gbits=$(python3 -c 'import json,sys; print("%.3f" % (json.load(open(sys.argv[1]))["end"]["sum_received"]["bits_per_second"]/1e9))' "$OUT/iperf3.json")
pid_a=$ENCAPD_PID_A
pid_b=$ENCAPD_PID_B
if [[ $MODE == encapd ]]; then
    encapd_stop || true # prints the counters into $OUT/a.log and b.log
fi

# CPU of the forwarding path: samples at 999 Hz per CPU, by thread name.
perf report -i "$OUT/perf.data" --no-children -g none --sort comm,pid -F sample,comm,pid --stdio 2>/dev/null |
    python3 -c '
import re, sys
rec, gbits = float(sys.argv[1]), float(sys.argv[2])
ours = {t for t in sys.argv[3].split(",") if t}
path = other = 0
for line in sys.stdin:
    m = re.match(r"\s*(\d+)\s+(\S+)\s+(\d+):", line)
    if not m:
        continue
    n, comm, tid = int(m.group(1)), m.group(2), m.group(3)
    if comm == "swapper":
        continue
    if (comm.startswith("encapd") and tid in ours) or re.match(r"(iperf3|ksoftirqd|kworker|irq/|rcu)", comm):
        path += n
    else:
        other += n
cores = path / 999 / rec
print(f"throughput {gbits:.2f} Gbit/s; forwarding path {cores:.2f} cores busy, {cores / gbits:.3f} cores per Gbit/s; other load on the machine {other / 999 / rec:.2f} cores")
'  "$RECORD" "$gbits" "$ours" | tee "$OUT/summary.txt"

# report FILE SORT [perf report options...]: a flat profile, samples
# attributed to the function they were taken in.
report() {
    perf report -i "$OUT/perf.data" --no-children -g none --percentage relative --percent-limit 0.7 --sort "$2" --stdio "${@:3}" 2>/dev/null |
        grep -v -e '^$' -e '^#' | head -n 40 >"$OUT/$1"
}
report by-thread.txt comm,pid
report all-symbols.txt sym
ed_log "by thread (% of all samples on both cores):"
head -n 15 "$OUT/by-thread.txt"
if [[ $MODE == encapd ]]; then
    report sender-symbols.txt sym --pid "$pid_a"
    report receiver-symbols.txt sym --pid "$pid_b"
    ed_log "sending encapd (nodeA, pid $pid_a), top symbols (% of its samples):"
    head -n 25 "$OUT/sender-symbols.txt"
    ed_log "receiving encapd (nodeB, pid $pid_b), top symbols (% of its samples):"
    head -n 25 "$OUT/receiver-symbols.txt"
else
    ed_log "top symbols, whole machine:"
    head -n 25 "$OUT/all-symbols.txt"
fi
cat "$OUT/summary.txt"
ed_log "results in $OUT"
