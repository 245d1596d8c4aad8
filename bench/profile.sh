#!/usr/bin/env bash
# Where does encapd spend its time under bulk TCP? Brings up the two-node
# topology (scripts/lib.sh), runs encapd on both nodes, drives one iperf3
# TCP stream ctrA -> ctrB and records a call-graph profile of the whole
# machine (`perf record -a -g`) while it runs. Prints the top symbols of
# each encapd worker side (sender nodeA, receiver nodeB) and of everything
# else, and keeps perf.data and the reports in the output directory.
#
# Usage: bench/profile.sh [--io uring|mmsg] [--offload auto|off]
#                         [--seconds N] [--out DIR] [--no-build]
#
# The profile is system-wide because most of the cost of a packet is kernel
# work done in the worker threads' syscalls (TUN write up to TCP, UDP send
# down through the veth); a per-process profile would hide the softirq part.
set -euo pipefail

# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/../scripts/lib.sh"

IO=uring
OFFLOAD=auto
SECONDS_LOAD=10
OUT=""
BUILD=1
while (($#)); do
    case $1 in
        --io) IO=${2:?}; shift 2 ;;
        --offload) OFFLOAD=${2:?}; shift 2 ;;
        --seconds) SECONDS_LOAD=${2:?}; shift 2 ;;
        --out) OUT=${2:?}; shift 2 ;;
        --no-build) BUILD=0; shift ;;
        -h | --help) sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; exit 0 ;;
        *) ed_die "unknown argument: $1 (see --help)" ;;
    esac
done
case $IO in uring | mmsg) ;; *) ed_die "--io must be uring or mmsg" ;; esac
case $OFFLOAD in auto | off) ;; *) ed_die "--offload must be auto or off" ;; esac
[[ $SECONDS_LOAD =~ ^[1-9][0-9]*$ && $SECONDS_LOAD -le 120 ]] || ed_die "--seconds must be 1..120"

ed_require_root
ed_ensure_pkgs ip:iproute2 iperf3:iperf3 perf:linux-perf timeout:coreutils
((BUILD)) && ed_build
OUT=${OUT:-$ED_ROOT/bench/runs/$(date -u +%Y-%m-%d-%H%M)-profile-$IO-$OFFLOAD}
mkdir -p "$OUT"

ed_install_traps
ED_TOPO_PREFIX=$(ed_rand_prefix)
ed_topo_up "$ED_TOPO_PREFIX"
ed_ns_names "$ED_TOPO_PREFIX"
ed_topo_set_ctr_mtu "$ED_TOPO_PREFIX" $((ED_UL_MTU - 28))
encapd_write_configs "$OUT" "$IO" 2
for side in a b; do
    sed -i "s/^io .*/&\noffload = \"$OFFLOAD\"/" "$OUT/$side.toml"
done
encapd_start "$OUT" || ed_die "encapd did not start"
ed_ping_ok "$NS_CTRA" "$ED_CTRB_IP" || ed_die "no ping through encapd"

ip netns exec "$NS_CTRB" timeout $((SECONDS_LOAD + 20)) iperf3 -s -1 -B "$ED_CTRB_IP" >/dev/null 2>&1 &
ed_track "$!"
ed_wait_port "$NS_CTRB" 5201 || ed_die "iperf3 server did not start"
ip netns exec "$NS_CTRA" timeout $((SECONDS_LOAD + 15)) iperf3 -c "$ED_CTRB_IP" -t "$SECONDS_LOAD" -O 1 -J >"$OUT/iperf3.json" &
client=$!
ed_track "$client"
sleep 1.5
ed_log "recording $((SECONDS_LOAD - 2)) s system-wide"
perf record -q -a -g -o "$OUT/perf.data" -- sleep $((SECONDS_LOAD - 2)) 2>"$OUT/perf.log" || ed_die "perf record failed (see $OUT/perf.log)"
wait "$client" || ed_warn "iperf3 client exited non-zero"
ed_untrack "$client"
python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print("throughput %.2f Gbit/s" % (d["end"]["sum_received"]["bits_per_second"]/1e9))' "$OUT/iperf3.json" | tee "$OUT/throughput.txt"
pid_a=$ENCAPD_PID_A
pid_b=$ENCAPD_PID_B
encapd_stop || true

# report FILE SORT [perf report options...]: a flat profile, samples
# attributed to the function they were taken in.
report() {
    perf report -i "$OUT/perf.data" --no-children -g none --percent-limit 0.5 --sort "$2" --stdio "${@:3}" 2>/dev/null |
        grep -v -e '^$' -e '^#' | head -n 40 >"$OUT/$1"
}
report by-thread.txt comm,pid
report sender-symbols.txt sym --pid "$pid_a"
report receiver-symbols.txt sym --pid "$pid_b"
report all-symbols.txt sym
ed_log "by thread (% of all samples on both cores):"
head -n 15 "$OUT/by-thread.txt"
ed_log "sending encapd (nodeA, pid $pid_a), top symbols:"
head -n 25 "$OUT/sender-symbols.txt"
ed_log "receiving encapd (nodeB, pid $pid_b), top symbols:"
head -n 25 "$OUT/receiver-symbols.txt"
ed_log "results in $OUT"
