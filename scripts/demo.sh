#!/usr/bin/env bash
# encapd demo: build, bring up two nodes in network namespaces, run encapd
# on both, attach a pod to each node as a Kubernetes node does (flannel's
# subnet.env -> CNI bridge + host-local), ping and iperf3 between the pods,
# print the counters, tear everything down. About half a minute; as root.
#
#   podA ── cni0 nodeA [encapd] 198.18.0.1 ══ UDP 8285 (udp) / 8472 (vxlan) ══ 198.18.0.2 [encapd] nodeB cni0 ── podB
#
# Usage: scripts/demo.sh [--backend udp|vxlan] [--io uring|mmsg|classic] [--workers N] [--no-build]
set -euo pipefail

# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

IO=uring
BACKEND=udp
WORKERS=2
BUILD=1
while (($#)); do
    case $1 in
        --io) IO=${2:?--io needs a value}; shift 2 ;;
        --io=*) IO=${1#*=}; shift ;;
        --backend) BACKEND=${2:?--backend needs a value}; shift 2 ;;
        --backend=*) BACKEND=${1#*=}; shift ;;
        --workers) WORKERS=${2:?--workers needs a number}; shift 2 ;;
        --workers=*) WORKERS=${1#*=}; shift ;;
        --no-build) BUILD=0; shift ;;
        -h | --help) ed_script_help "$0"; exit 0 ;;
        *) ed_die "unknown argument: $1 (see --help)" ;;
    esac
done
case $IO in uring | mmsg | classic) ;; *) ed_die "--io must be uring, mmsg or classic" ;; esac
case $BACKEND in udp | vxlan) ;; *) ed_die "--backend must be udp or vxlan" ;; esac
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

section "topology (namespaces ${ED_TOPO_PREFIX}{nodeA,nodeB,podA,podB})"
ed_topo_nodes_up "$ED_TOPO_PREFIX"
ed_ns_names "$ED_TOPO_PREFIX"
echo "nodeA $ED_A_UL == underlay == $ED_B_UL nodeB"

section "encapd (backend = $BACKEND, io = $IO, workers = $WORKERS) on nodeA and nodeB"
encapd_write_configs "$DIR" "$IO" "$WORKERS" "$BACKEND"
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

section "pods, attached with the CNI bridge plugin from encapd's subnet.env"
echo "--- $DIR/subnet-a.env (written by encapd on nodeA)"
cat "$DIR/subnet-a.env"
POD_A=${ED_TOPO_PREFIX}podA
POD_B=${ED_TOPO_PREFIX}podB
mkdir -p "$DIR/cni-a" "$DIR/cni-b"
IP_A=$(ed_cni_add "$NS_NODEA" "$POD_A" "$DIR/subnet-a.env" "$DIR/cni-a")
IP_B=$(ed_cni_add "$NS_NODEB" "$POD_B" "$DIR/subnet-b.env" "$DIR/cni-b")
echo "podA $IP_A on nodeA (cni0 $(ip -n "$NS_NODEA" -br -4 addr show dev cni0 | awk '{print $3}')), podB $IP_B on nodeB"
ip -n "$POD_A" route | sed 's/^/podA route: /'

show_logs() {
    local side
    for side in a b; do
        echo "--- node ${side^^} encapd log (tail)"
        tail -n "${1:-15}" "$DIR/$side.log" || true
    done
}

section "ping podA -> podB (IPv4)"
ping_rc=0
ip netns exec "$POD_A" timeout 20 ping -n -c 5 -W 2 "$IP_B" | tee "$DIR/ping4.txt" || ping_rc=$?
if ((ping_rc)); then
    show_logs 30
    ed_die "IPv4 ping through encapd failed"
fi

section "ping podA -> podB (IPv6)"
IP6_B=$(ip -n "$POD_B" -6 -br addr show dev eth0 scope global | awk '{sub(/\/.*/, "", $3); print $3}')
ip netns exec "$POD_A" timeout 15 ping -6 -n -c 3 -W 2 "$IP6_B" | tee "$DIR/ping6.txt" || ping_rc=$?
if ((ping_rc)); then
    show_logs 30
    ed_die "IPv6 ping through encapd failed"
fi

section "iperf3 TCP podA -> podB, 10 s"
ip netns exec "$POD_B" timeout 40 iperf3 -s -1 -B "$IP_B" >"$DIR/iperf3-server.log" 2>&1 &
ed_track "$!"
ed_wait_port "$POD_B" 5201 5 || ed_die "iperf3 server did not start in podB"
iperf_rc=0
ip netns exec "$POD_A" timeout 30 iperf3 -c "$IP_B" -t 10 --connect-timeout 3000 | tee "$DIR/iperf3.txt" || iperf_rc=$?

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
ed_cni_del "$NS_NODEA" "$POD_A" "$DIR/subnet-a.env" "$DIR/cni-a"
ed_cni_del "$NS_NODEB" "$POD_B" "$DIR/subnet-b.env" "$DIR/cni-b"
echo "pods deleted (CNI DEL)"
stop_rc=0
encapd_stop || stop_rc=$?
echo "encapd stopped (clean exit: $([[ $stop_rc -eq 0 ]] && echo yes || echo no))"
ed_cleanup
echo "namespaces removed"
((iperf_rc == 0)) || ed_die "iperf3 failed (status $iperf_rc)"
((stop_rc == 0)) || ed_die "encapd did not exit cleanly on SIGTERM"
