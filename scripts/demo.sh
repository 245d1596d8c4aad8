#!/usr/bin/env bash
# encapd demo: build, bring up a two-node topology in network namespaces,
# run encapd on both nodes, ping and iperf3 between the containers, print
# the counters, tear everything down. About half a minute; run as root.
#
#   ctrA 100.96.1.2 ── nodeA [encapd] 198.18.0.1 ══ UDP 8285 ══ 198.18.0.2 [encapd] nodeB ── ctrB 100.96.2.3
#
# Usage: scripts/demo.sh [--io uring|mmsg|classic] [--workers N] [--no-build]
set -euo pipefail

# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

IO=uring
WORKERS=2
BUILD=1
while (($#)); do
    case $1 in
        --io) IO=${2:?--io needs a value}; shift 2 ;;
        --io=*) IO=${1#*=}; shift ;;
        --workers) WORKERS=${2:?--workers needs a number}; shift 2 ;;
        --workers=*) WORKERS=${1#*=}; shift ;;
        --no-build) BUILD=0; shift ;;
        -h | --help) sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; exit 0 ;;
        *) ed_die "unknown argument: $1 (see --help)" ;;
    esac
done
case $IO in uring | mmsg | classic) ;; *) ed_die "--io must be uring, mmsg or classic" ;; esac
[[ $WORKERS =~ ^[1-9][0-9]*$ ]] || ed_die "--workers must be a positive integer"

if [[ -t 1 ]]; then
    section() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
else
    section() { printf '\n== %s\n' "$*"; }
fi

ed_require_root
section "prerequisites"
if ((BUILD)); then ed_need_pkgs @build @run; else ed_need_pkgs @run; fi
echo "Debian packages: ok ($(iperf3 --version 2>&1 | head -n1))"

if ((BUILD)); then
    section "cargo build --release"
    ed_build
fi
BIN=$(ed_encapd_bin)
[[ -x $BIN ]] || ed_die "no encapd binary at $BIN"

ed_install_traps
ed_mktemp_dir
DIR=$ED_TMP
ED_TOPO_PREFIX=$(ed_rand_prefix)

section "topology (namespaces ${ED_TOPO_PREFIX}{ctrA,nodeA,nodeB,ctrB})"
ed_topo_up "$ED_TOPO_PREFIX"
ed_ns_names "$ED_TOPO_PREFIX"
# Containers get the backend MTU, as flannel's CNI does (underlay 1500 - 28).
ed_topo_set_ctr_mtu "$ED_TOPO_PREFIX" $((ED_UL_MTU - 28))
echo "ctrA $ED_CTRA_IP $ED_CTRA_IP6 -- nodeA $ED_A_UL == underlay == $ED_B_UL nodeB -- ctrB $ED_CTRB_IP $ED_CTRB_IP6"

section "encapd (io = $IO, workers = $WORKERS) on nodeA and nodeB"
encapd_write_configs "$DIR" "$IO" "$WORKERS"
echo "--- $DIR/a.toml"
cat "$DIR/a.toml"
echo "--- $DIR/peers-a.toml"
cat "$DIR/peers-a.toml"
encapd_check "$DIR" || ed_die "encapd check rejected the configuration"
if ! encapd_start "$DIR"; then
    ed_die "encapd did not come up (logs above)"
fi
echo "encapd running: nodeA pid $ENCAPD_PID_A, nodeB pid $ENCAPD_PID_B"
ip -n "$NS_NODEA" -br addr show dev "$ED_TUN" | sed 's/^/nodeA: /'
ip -n "$NS_NODEA" route show dev "$ED_TUN" | sed 's/^/nodeA route: /'
ip -n "$NS_NODEA" -6 route show dev "$ED_TUN" | grep -v '^fe80' | sed 's/^/nodeA route: /' || true

show_logs() {
    local side
    for side in a b; do
        echo "--- node ${side^^} encapd log (tail)"
        tail -n "${1:-15}" "$DIR/$side.log" || true
    done
}

section "ping ctrA -> ctrB (IPv4)"
ping_rc=0
ip netns exec "$NS_CTRA" timeout 20 ping -n -c 5 -W 2 "$ED_CTRB_IP" | tee "$DIR/ping4.txt" || ping_rc=$?
if ((ping_rc)); then
    show_logs 30
    ed_die "IPv4 ping through encapd failed"
fi

section "ping ctrA -> ctrB (IPv6)"
ip netns exec "$NS_CTRA" timeout 15 ping -6 -n -c 3 -W 2 "$ED_CTRB_IP6" | tee "$DIR/ping6.txt" || ping_rc=$?
if ((ping_rc)); then
    show_logs 30
    ed_die "IPv6 ping through encapd failed"
fi

section "iperf3 TCP ctrA -> ctrB, 10 s"
ip netns exec "$NS_CTRB" timeout 40 iperf3 -s -1 -B "$ED_CTRB_IP" >"$DIR/iperf3-server.log" 2>&1 &
ed_track "$!"
ed_wait_port "$NS_CTRB" 5201 5 || ed_die "iperf3 server did not start in ctrB"
iperf_rc=0
ip netns exec "$NS_CTRA" timeout 30 iperf3 -c "$ED_CTRB_IP" -t 10 --connect-timeout 3000 | tee "$DIR/iperf3.txt" || iperf_rc=$?

section "counters (SIGUSR1)"
encapd_counters
show_logs 15

section "summary"
rtt4=$(awk -F' = ' '/^rtt/ {print $2}' "$DIR/ping4.txt")
rtt6=$(awk -F' = ' '/^rtt/ {print $2}' "$DIR/ping6.txt")
tput=$(awk '/receiver/ {for (i = 1; i <= NF; i++) if ($i ~ /bits\/sec$/) print $(i - 1), $i}' "$DIR/iperf3.txt" | tail -n1)
retr=$(awk '/sender/ && NF >= 10 {print $(NF - 1)}' "$DIR/iperf3.txt" | tail -n1)
echo "IPv4 ping rtt min/avg/max/mdev: ${rtt4:-n/a}"
echo "IPv6 ping rtt min/avg/max/mdev: ${rtt6:-n/a}"
echo "iperf3 TCP throughput (receiver): ${tput:-n/a} (retransmits: ${retr:-n/a})"

section "teardown"
stop_rc=0
encapd_stop || stop_rc=$?
echo "encapd stopped (clean exit: $([[ $stop_rc -eq 0 ]] && echo yes || echo no))"
ed_cleanup
echo "namespaces removed"
((iperf_rc == 0)) || ed_die "iperf3 failed (status $iperf_rc)"
((stop_rc == 0)) || ed_die "encapd did not exit cleanly on SIGTERM"
