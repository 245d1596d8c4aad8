#!/usr/bin/env bash
# Where does one request/response wait? Brings up the two-node topology
# (scripts/lib.sh), sends sparse UDP ping-pongs (64 bytes, one round trip in
# flight, 100 per second) ctrA -> ctrB -> ctrA through each mode, and
# records kernel tracepoints of the whole machine meanwhile (`perf record
# -a`): device transmits and receives (net:net_dev_xmit, netif_rx,
# netif_receive_skb), wakeups and context switches (sched), io_uring
# submissions and completions, and the system calls of the client, the
# server and encapd's workers. Each round trip is cut out of the record
# (from the client's send to its next one) and its events put on one time
# line, labelled by who did what: "nodeA worker: io_uring completion",
# "xmit ul0 #1" (the first transmit on a device named ul0 in that round
# trip: nodeA's underlay on the way out), ... Prints per mode:
#   - every stage with the share of round trips that had it, the median
#     time since the client's send, and the median time since the
#     previous stage of the same round trip;
#   - the full time line of the round trip with the median RTT.
#
# Usage: bench/trace_rtt.sh [--modes LIST] [--seconds N] [--out DIR] [--no-build]
#   --modes LIST   comma-separated: uring, mmsg, classic, vxlan-kernel
#                  (default: vxlan-kernel,classic,uring)
#   --seconds N    ping-pong length per mode (default 3)
#   --out DIR      keep perf data and the time lines here (default: a temp
#                  dir, removed)
#
# Sparse round trips let every thread fall asleep in between, as in an
# idle request/response; tracing adds a few microseconds per event, so
# read the stages relative to each other, not as absolute RTTs (those come
# from bench/run.sh). An experiment tool: it writes nothing under
# bench/runs/. Run as root; everything runs inside namespaces this script
# creates and removes.
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/../scripts/lib.sh"

MODES=vxlan-kernel,classic,uring
SECS=3
OUT=""
BUILD=1
ed_sockperf_experiment_args 30 "$@"
ed_sockperf_experiment_up

EVENTS=(
    net:net_dev_xmit net:netif_rx net:netif_receive_skb
    sched:sched_wakeup sched:sched_switch
    io_uring:io_uring_submit_req io_uring:io_uring_complete io_uring:io_uring_task_add
    syscalls:sys_enter_sendto syscalls:sys_exit_recvfrom
    syscalls:sys_enter_sendmsg syscalls:sys_exit_recvmsg syscalls:sys_exit_recvmmsg
    syscalls:sys_exit_read syscalls:sys_enter_write syscalls:sys_enter_writev
    syscalls:sys_enter_io_uring_enter syscalls:sys_exit_io_uring_enter
    syscalls:sys_exit_epoll_wait syscalls:sys_exit_epoll_pwait
)

# tids_of PID...: every thread id of the given processes, space-separated.
tids_of() { for pid in "$@"; do ls "/proc/$pid/task"; done | tr '\n' ' '; }

# trace MODE [ENCAPD_PID_A ENCAPD_PID_B]: one sparse ping-pong under perf
# record; prints the stage table and the median round trip's time line.
trace() {
    local mode=$1 port=11112 spid cpid data=$OUT/$1.perf.data roles=() events=() e
    shift
    if (($# == 2)); then roles=("nodeA-worker=$(tids_of "$1" | tr ' ' ,)" "nodeB-worker=$(tids_of "$2" | tr ' ' ,)"); fi
    for e in "${EVENTS[@]}"; do events+=(-e "$e"); done
    ip netns exec "$NS_CTRB" timeout $((SECS + 30)) sockperf server -i "$ED_CTRB_IP" -p $port >/dev/null 2>&1 &
    spid=$!
    ed_track "$spid"
    ed_wait_port "$NS_CTRB" $port 5 udp || ed_die "$mode: sockperf server did not start"
    # `timeout` runs sockperf as its child: the server is that child. The
    # client starts under perf, so its pid is known only from the record: the
    # sockperf process in it that is not the server.
    local server
    server=$(pgrep -P "$spid" -x sockperf | head -n1 || true)
    [[ -n $server ]] || ed_die "$mode: no sockperf server process under pid $spid"
    perf record -q -a -o "$data" "${events[@]}" -- \
        ip netns exec "$NS_CTRA" timeout $((SECS + 20)) sockperf ping-pong -i "$ED_CTRB_IP" -p $port -t "$SECS" -m 64 --mps 100 \
        >"$OUT/$mode.sockperf.txt" 2>"$OUT/$mode.perf.err" || ed_warn "$mode: perf record failed (see $OUT/$mode.perf.err)"
    cpid=$(perf script -i "$data" -F comm,pid 2>/dev/null | awk -v s="$server" '$1 == "sockperf" && $2 != s && !c {c = $2} END {print c}')
    ed_kill_pid "$spid" 1
    ed_untrack "$spid"
    perf script --ns -i "$data" -F comm,pid,tid,cpu,time,event,trace >"$OUT/$mode.script.txt" 2>/dev/null
    python3 "$ED_ROOT/bench/trace_rtt.py" "$mode" "$OUT/$mode.script.txt" "client=${cpid:-0}" "server=$server" "${roles[@]}" \
        | tee "$OUT/$mode.timeline.txt"
}

IFS=, read -r -a mode_list <<<"$MODES"
for mode in "${mode_list[@]}"; do
    case $mode in
        vxlan-kernel)
            ed_topo_vxlan "$ED_TOPO_PREFIX"
            trace "$mode"
            ed_topo_unvxlan "$ED_TOPO_PREFIX"
            continue
            ;;
        uring | mmsg | classic) ;;
        *) ed_die "unknown mode $mode" ;;
    esac
    encapd_write_configs "$WORK/$mode" "$mode" 2
    encapd_start "$WORK/$mode" || ed_die "$mode: encapd did not start"
    ed_ping_ok "$NS_CTRA" "$ED_CTRB_IP" || ed_warn "$mode: ping failed"
    trace "$mode" "$ENCAPD_PID_A" "$ENCAPD_PID_B"
    encapd_stop
done
ed_log "perf data and time lines in $OUT"
