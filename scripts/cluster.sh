#!/usr/bin/env bash
# A simulated fleet: N encapd nodes on one bridged underlay sharing a
# 3-member etcd cluster (flannel's lease store), a pod on every node, and the
# measurements made on it. As root; everything lives in network namespaces
# this script creates (names "cl<4 hex>-*", unique per run) and removes on
# every exit path; nothing is configured in the root namespace.
#
#   pod p1 ── cni0 [n1: encapd] ul 198.18.0.1 ─┐
#   pod p2 ── cni0 [n2: encapd] ul 198.18.0.2 ─┼─ br0 [ul: etcd m0 m1 m2 on 198.18.0.254]
#   ...                                         │
#   pod pN ── cni0 [nN: encapd] ul 198.18.0.N ─┘
#
# Node i: underlay 198.18.0.i/24, subnet 100.96.i.0/24 (claimed in etcd at
# /coreos.com/network/subnets/100.96.i.0-24), encapd with one worker (udp
# backend, uring), its pod attached with the CNI bridge plugin from the
# subnet.env encapd writes: the conventions of tests/testbed/src/fleet.rs.
#
# Usage: scripts/cluster.sh [OPTIONS] COMMAND...
#
# Commands (run in the order given, on one fleet brought up once):
#   up               bring the fleet up, check it, print its namespaces and
#                    wait for Ctrl-C (for looking around)
#   check            full-mesh reachability: ICMP echo from every pod to
#                    every other pod
#   join-leave       ROUNDS times: stop a node's encapd and delete its lease
#                    (time until every other node's table drops it), start it
#                    again (time from its lease put until every other node
#                    routes to it), ping to and from it; then once: stop a
#                    node whose lease has a short TTL and time from the
#                    lease's expiry until every other node dropped it
#   rolling-upgrade  every node in turn: `encapd run --config F --takeover`
#                    while counted UDP streams (STREAMS per pod) and TCP
#                    transfers run; counts lost datagrams (must be 0)
#   resources        RSS, threads and fds of every encapd (and etcd)
#   all              check join-leave rolling-upgrade resources
#
# Options:
#   --nodes N          fleet size (default 16; 2 to 200)
#   --rounds R         join/leave rounds (default 3)
#   --lease-ttl S      lease TTL of the node whose lease expires (default 15)
#   --streams K        UDP streams sent by every pod (default 2)
#   --udp-rate R       datagrams/s per stream (default 100)
#   --tcp T            TCP transfers during the upgrade (default 3)
#   --tcp-rate B       bytes/s per TCP transfer (default 2000000)
#   --upgrade-bin P    the binary nodes are upgraded to (default: the same one)
#   --out DIR          also write figures.txt, env.txt (provenance) and the
#                      logs there; under bench/runs/ only from a clean
#                      checkout with encapd built from HEAD
#   --build            cargo build --release first
#
# Binary: $ENCAPD, else target/release/encapd.
#
# Output: progress on stderr; figures on stdout as "FIGURE key=value" lines
# (the same key=value lines go to DIR/figures.txt), and a last line
# "RESULT pass" or "RESULT fail: <what failed>". Exit status 0 on pass, 1 on
# fail or when it cannot run, 2 on bad usage.
set -euo pipefail

# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

NODES=16
ROUNDS=3
LEASE_TTL=15
STREAMS=2
UDP_RATE=100
TCP=3
TCP_RATE=2000000
UPGRADE_BIN=""
OUT=""
BUILD=0
COMMANDS=()
INVOCATION="scripts/cluster.sh $*"
TOOL="$ED_ROOT/scripts/cluster_tool.py"

usage() {
    ed_script_help "${BASH_SOURCE[0]}" >&2
    exit "${1:-2}"
}
usage_error() { echo "scripts/cluster.sh: $*" >&2; exit 2; }

while (($#)); do
    case $1 in
        --nodes) NODES=${2:?--nodes needs a number}; shift 2 ;;
        --nodes=*) NODES=${1#*=}; shift ;;
        --rounds) ROUNDS=${2:?--rounds needs a number}; shift 2 ;;
        --rounds=*) ROUNDS=${1#*=}; shift ;;
        --lease-ttl) LEASE_TTL=${2:?--lease-ttl needs seconds}; shift 2 ;;
        --lease-ttl=*) LEASE_TTL=${1#*=}; shift ;;
        --streams) STREAMS=${2:?--streams needs a number}; shift 2 ;;
        --streams=*) STREAMS=${1#*=}; shift ;;
        --udp-rate) UDP_RATE=${2:?--udp-rate needs a number}; shift 2 ;;
        --udp-rate=*) UDP_RATE=${1#*=}; shift ;;
        --tcp) TCP=${2:?--tcp needs a number}; shift 2 ;;
        --tcp=*) TCP=${1#*=}; shift ;;
        --tcp-rate) TCP_RATE=${2:?--tcp-rate needs a number}; shift 2 ;;
        --tcp-rate=*) TCP_RATE=${1#*=}; shift ;;
        --upgrade-bin) UPGRADE_BIN=${2:?--upgrade-bin needs a path}; shift 2 ;;
        --upgrade-bin=*) UPGRADE_BIN=${1#*=}; shift ;;
        --out) OUT=${2:?--out needs a directory}; shift 2 ;;
        --out=*) OUT=${1#*=}; shift ;;
        --build) BUILD=1; shift ;;
        -h | --help) usage 0 ;;
        up | check | join-leave | rolling-upgrade | resources) COMMANDS+=("$1"); shift ;;
        all) COMMANDS+=(check join-leave rolling-upgrade resources); shift ;;
        *) usage_error "unknown argument: $1 (see --help)" ;;
    esac
done
((${#COMMANDS[@]})) || usage_error "no command given (see --help)"
if ! [[ $NODES =~ ^[0-9]+$ ]] || ((NODES < 2 || NODES > 200)); then usage_error "--nodes must be 2 to 200"; fi
if ! [[ $ROUNDS =~ ^[0-9]+$ ]] || ((ROUNDS > NODES - 1)); then usage_error "--rounds must be 0 to nodes - 1"; fi
if ! [[ $LEASE_TTL =~ ^[0-9]+$ ]] || ((LEASE_TTL < 10)); then usage_error "--lease-ttl must be at least 10 (encapd's minimum)"; fi
[[ $STREAMS =~ ^[1-9][0-9]*$ ]] || usage_error "--streams must be a positive integer"
[[ $UDP_RATE =~ ^[1-9][0-9]*$ ]] || usage_error "--udp-rate must be a positive integer"
[[ $TCP =~ ^[0-9]+$ ]] || usage_error "--tcp must be a number"
[[ $TCP_RATE =~ ^[1-9][0-9]*$ ]] || usage_error "--tcp-rate must be a positive integer"

ed_require_root
pkgs=(@run etcd-server etcd-client)
((BUILD)) && pkgs+=(@build)
ed_need_pkgs "${pkgs[@]}"
((BUILD)) && ed_build
BIN=$(ed_encapd_bin)
[[ -x $BIN ]] || ed_die "no encapd binary at $BIN (cargo build --release, or set ENCAPD)"
BIN=$(realpath "$BIN")
UPGRADE_BIN=$(realpath "${UPGRADE_BIN:-$BIN}")
[[ -x $UPGRADE_BIN ]] || ed_die "--upgrade-bin $UPGRADE_BIN is not executable"
# A binary that knows --takeover gets a control socket per node (beside its
# config: every node shares this file system).
TAKEOVER=0
if "$BIN" run --help 2>/dev/null | grep -q -- --takeover; then TAKEOVER=1; fi

if [[ -n $OUT ]]; then
    bins=(encapd="$BIN")
    [[ $UPGRADE_BIN == "$BIN" ]] || bins+=(encapd_upgrade="$UPGRADE_BIN")
    if ed_under_runs "$OUT"; then ed_require_provenance "${bins[@]#*=}"; fi
    PROVENANCE=$(ed_provenance_env "${bins[@]}")
    mkdir -p "$OUT"
    OUT=$(cd "$OUT" && pwd)
    : >"$OUT/figures.txt"
fi

# ---------------------------------------------------------------------------
# Figures and verdict

FAILURES=()
fig() {
    local kv
    for kv in "$@"; do
        echo "FIGURE $kv"
        if [[ -n $OUT ]]; then echo "$kv" >>"$OUT/figures.txt"; fi
    done
}
fail() {
    ed_warn "FAIL: $*"
    FAILURES+=("$*")
}
# figs_from TAG LINE PREFIX: each key=value of a tool's "TAG k=v ..." line,
# as figure PREFIX_k.
figs_from() {
    local tag=$1 line=$2 prefix=$3 kv
    [[ $line == "$tag "* ]] || return 0
    for kv in ${line#"$tag "}; do fig "${prefix}_$kv"; done
}
# field LINE KEY: the value of KEY in a "k=v k=v" line.
field() { tr ' ' '\n' <<<"$2" | awk -F= -v k="$1" '$1 == k {print $2; exit}'; }
tool() { python3 "$TOOL" "$@"; }

# ---------------------------------------------------------------------------
# The fleet

P="cl$(od -An -N2 -tx1 /dev/urandom | tr -d ' \n')-"
UL="${P}ul"
ETCD_HOST=198.18.0.254
ETCD_PREFIX=/coreos.com/network
NETWORK=100.96.0.0/16
ETCD_CLIENT_PORTS=(2379 22379 32379)
ETCD_PEER_PORTS=(2380 22380 32380)
ETCD_PIDS=()
NODE_PID=()
NODE_GEN=()
POD_NS=()
POD_IP=()

node_ns() { printf '%s\n' "${P}n$1"; }
node_ip() { printf '198.18.0.%d\n' "$1"; }
# The MAC of node I's underlay interface (and br0's, I = 254).
node_mac() { printf '02:00:c6:12:01:%02x\n' "$1"; }
node_subnet() { printf '100.96.%d.0/24\n' "$1"; }
node_key() { printf '%s/subnets/100.96.%d.0-24\n' "$ETCD_PREFIX" "$1"; }
node_dir() { printf '%s\n' "$WORK/n$1"; }
# node_log I [GEN]: the log of node I's encapd of generation GEN (default:
# the current one); every start is a new generation.
node_log() { printf '%s/encapd-%s.log\n' "$(node_dir "$1")" "${2:-${NODE_GEN[$1]}}"; }
etcd_endpoints() {
    local p eps=()
    for p in "${ETCD_CLIENT_PORTS[@]}"; do eps+=("http://$ETCD_HOST:$p"); done
    local IFS=,
    printf '%s\n' "${eps[*]}"
}
etcdctl_ul() { ip netns exec "$UL" etcdctl --endpoints "$(etcd_endpoints)" --command-timeout=5s "$@"; }
all_nodes() { seq 1 "$NODES"; }
nodes_but() {
    local i list=()
    for i in $(all_nodes); do [[ $i == "$1" ]] || list+=("$(node_ns "$i")"); done
    local IFS=,
    printf '%s\n' "${list[*]}"
}
pods_arg() {
    local i list=()
    for i in $(all_nodes); do list+=("${POD_NS[$i]}=${POD_IP[$i]}"); done
    local IFS=,
    printf '%s\n' "${list[*]}"
}

cluster_cleanup() {
    local rc=$? i
    set +e
    # Stop every encapd at once (tracked PIDs get SIGTERM together in
    # ed_cleanup too; this keeps their logs' last words).
    for i in "${!NODE_PID[@]}"; do [[ -n ${NODE_PID[$i]} ]] && kill -TERM "${NODE_PID[$i]}" 2>/dev/null; done
    if [[ -n $OUT && -n ${WORK:-} && -d ${WORK:-} ]]; then
        sleep 1
        mkdir -p "$OUT/logs"
        local f
        for i in $(all_nodes); do
            for f in "$WORK/n$i"/encapd-*.log; do [[ -f $f ]] && cp "$f" "$OUT/logs/n$i-${f##*/}"; done
        done
        cp "$WORK/n1/encapd.toml" "$OUT/logs/n1-encapd.toml" 2>/dev/null
        cp "$WORK/n$NODES/encapd.toml" "$OUT/logs/n$NODES-encapd.toml" 2>/dev/null
        cp "$WORK"/etcd*.log "$OUT/logs/" 2>/dev/null
    fi
    # etcd last, once its clients are gone, with time to exit on SIGTERM.
    for i in "${!NODE_PID[@]}"; do [[ -n ${NODE_PID[$i]} ]] && ed_kill_pid "${NODE_PID[$i]}" 5; done
    for i in "${ETCD_PIDS[@]}"; do kill -TERM "$i" 2>/dev/null; done
    for i in "${ETCD_PIDS[@]}"; do ed_kill_pid "$i" 10; wait "$i" 2>/dev/null; done
    ed_cleanup
    ed_log "fleet ${P}* removed"
    return "$rc"
}
trap cluster_cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

ed_mktemp_dir
WORK=$ED_TMP
ED_TOPO_PREFIX=$P

ns_new() {
    local ns=$1
    ed_ns_exists "$ns" && ed_die "namespace $ns already exists"
    ip netns add "$ns"
    ip -n "$ns" link set lo up
}

etcd_up() {
    local i initial=() peer client
    for i in 0 1 2; do initial+=("m$i=http://$ETCD_HOST:${ETCD_PEER_PORTS[$i]}"); done
    local IFS=,
    local cluster="${initial[*]}"
    unset IFS
    for i in 0 1 2; do
        client="http://$ETCD_HOST:${ETCD_CLIENT_PORTS[$i]}"
        peer="http://$ETCD_HOST:${ETCD_PEER_PORTS[$i]}"
        ip netns exec "$UL" etcd --name "m$i" --data-dir "$WORK/etcd$i" \
            --listen-client-urls "$client" --advertise-client-urls "$client" \
            --listen-peer-urls "$peer" --initial-advertise-peer-urls "$peer" \
            --initial-cluster "$cluster" --initial-cluster-state new --initial-cluster-token "encapd-$P" \
            --heartbeat-interval 100 --election-timeout 1000 --logger zap --log-level warn \
            >"$WORK/etcd$i.log" 2>&1 </dev/null &
        ETCD_PIDS+=("$!")
        ed_track "$!"
    done
    local t
    for ((t = 0; t < 60; t++)); do
        if etcdctl_ul endpoint health >/dev/null 2>&1; then break; fi
        sleep 0.5
    done
    etcdctl_ul endpoint health >/dev/null 2>&1 || { tail -n 20 "$WORK"/etcd*.log >&2; ed_die "etcd not healthy within 30 s"; }
    etcdctl_ul put "$ETCD_PREFIX/config" "{\"Network\":\"$NETWORK\",\"Backend\":{\"Type\":\"udp\"}}" >/dev/null
}

# node_config I: encapd.toml of node I (fleet.rs's shape, etcd source).
node_config() {
    local i=$1 eps=() p extra=""
    for p in "${ETCD_CLIENT_PORTS[@]}"; do eps+=("\"http://$ETCD_HOST:$p\""); done
    # The last node's lease is short, so that it can be seen expire.
    if ((i == NODES)); then extra="lease_ttl = $LEASE_TTL
renew_margin = $((LEASE_TTL / 3))
"; fi
    local IFS=,
    cat <<EOF
[node]
public_ip = "$(node_ip "$i")"
subnet = "$(node_subnet "$i")"

[network]
cidr = "$NETWORK"
backend = "udp"

[dataplane]
workers = 1
io = "uring"

[control]
source = "etcd"
endpoints = [${eps[*]}]
state_dir = "state"
subnet_env = "subnet.env"
$extra
EOF
    if ((TAKEOVER)); then printf '\n[process]\ncontrol_socket = "encapd.sock"\n'; fi
}

node_up() {
    local i=$1 ns mac
    ns=$(node_ns "$i")
    ns_new "$ns"
    ed_sysctl "$ns" net.ipv4.ip_forward=1 net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0 \
        net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0
    # The pods' bridge exists before the first pod, with a MAC of its own
    # (as in fleet.rs: a bridge without one takes its lowest port's).
    mac=$(printf '02:00:64:60:%02x:01' "$i")
    ip -n "$ns" -batch - <<EOF
link add ul address $(node_mac "$i") type veth peer name v$i netns $UL
link add cni0 address $mac type bridge
addr add $(node_ip "$i")/24 dev ul
link set ul up
EOF
    ip -n "$UL" -batch - <<EOF
link set v$i master br0
link set v$i up
EOF
    mkdir -p "$(node_dir "$i")/state" "$(node_dir "$i")/cni"
    node_config "$i" >"$(node_dir "$i")/encapd.toml"
    NODE_GEN[i]=0
}

# underlay_neighbours: a permanent neighbour entry for every other node (and
# etcd) on every node's underlay, and for every node on br0. The kernel's
# neighbour table is one for all namespaces, with a host-wide limit
# (net.ipv4.neigh.default.gc_thresh3, 1024 by default, shared with whatever
# else runs on the machine); a full mesh of N nodes learns N * (N - 1)
# entries (992 at N = 32), and past the limit the kernel drops packets
# ("neighbor table overflow"). Permanent entries are exempt from it, and the
# root namespace's settings stay untouched.
underlay_neighbours() {
    local i j
    for i in $(all_nodes); do
        {
            echo "neigh replace $ETCD_HOST lladdr $(node_mac 254) dev ul nud permanent"
            for j in $(all_nodes); do
                ((i == j)) || echo "neigh replace $(node_ip "$j") lladdr $(node_mac "$j") dev ul nud permanent"
            done
        } | ip -n "$(node_ns "$i")" -batch -
    done
    for j in $(all_nodes); do
        echo "neigh replace $(node_ip "$j") lladdr $(node_mac "$j") dev br0 nud permanent"
    done | ip -n "$UL" -batch -
}

# pod_neighbours I: permanent entries between node I and its pod (for the
# same reason).
pod_neighbours() {
    local i=$1 ns pod pod_mac gw_mac gw
    ns=$(node_ns "$i")
    pod=${POD_NS[$i]}
    pod_mac=$(ip -n "$pod" -br link show dev eth0 | awk '{print $3}')
    gw_mac=$(ip -n "$ns" -br link show dev cni0 | awk '{print $3}')
    gw=$(ip -n "$ns" -4 -br addr show dev cni0 | awk '{sub(/\/.*/, "", $3); print $3}')
    ip -n "$pod" neigh replace "$gw" lladdr "$gw_mac" dev eth0 nud permanent
    ip -n "$ns" neigh replace "${POD_IP[$i]}" lladdr "$pod_mac" dev cni0 nud permanent
}

# encapd_start I [--takeover]: start node I's encapd (next log generation,
# with BIN, or UPGRADE_BIN for a takeover); NODE_PID[I] is its pid.
encapd_start() {
    local i=$1 bin=$BIN
    shift
    (($#)) && bin=$UPGRADE_BIN
    NODE_GEN[i]=$((NODE_GEN[i] + 1))
    ip netns exec "$(node_ns "$i")" "$bin" run --config "$(node_dir "$i")/encapd.toml" "$@" >"$(node_log "$i")" 2>&1 </dev/null &
    NODE_PID[i]=$!
    ed_track "$!"
}

# encapd_wait_ready I [SECONDS]: its log says "ready: forwarding".
encapd_wait_ready() {
    local i=$1 secs=${2:-60} t
    for ((t = 0; t < secs * 20; t++)); do
        grep -q 'ready: forwarding' "$(node_log "$i")" 2>/dev/null && return 0
        kill -0 "${NODE_PID[$i]}" 2>/dev/null || break
        sleep 0.05
    done
    ed_warn "encapd on node $i not ready (pid ${NODE_PID[$i]} $(kill -0 "${NODE_PID[$i]}" 2>/dev/null && echo running || echo exited)); log:"
    tail -n 20 "$(node_log "$i")" >&2
    return 1
}

# encapd_stop I: SIGTERM, wait (10 s, then SIGKILL); returns its status.
encapd_stop() {
    local i=$1 pid=${NODE_PID[$1]} t st=0
    kill -TERM "$pid" 2>/dev/null || true
    for ((t = 0; t < 100; t++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && { ed_warn "encapd on node $i ignored SIGTERM for 10 s; killing"; kill -KILL "$pid" 2>/dev/null; }
    wait "$pid" 2>/dev/null || st=$?
    ed_untrack "$pid"
    NODE_PID[i]=""
    return "$st"
}

# lease_time I: the time of node I's last lease grant (claim or renewal)
# in its current log.
lease_time() {
    grep -E 'this node holds|lease on .* renewed' "$(node_log "$1")" | tail -n 1 | awk '{print $1}'
}

fleet_up() {
    local i t0 line
    t0=$SECONDS
    ed_log "fleet ${P}*: $NODES nodes, etcd x3 on $ETCD_HOST, binary $BIN (takeover: $([[ $TAKEOVER == 1 ]] && echo yes || echo no))"
    ns_new "$UL"
    ip -n "$UL" -batch - <<EOF
link add br0 address $(node_mac 254) type bridge
link set br0 up
addr add $ETCD_HOST/24 dev br0
EOF
    etcd_up
    for i in $(all_nodes); do node_up "$i"; done
    underlay_neighbours
    ed_log "namespaces up in $((SECONDS - t0)) s; starting $NODES encapds"
    for i in $(all_nodes); do encapd_start "$i"; done
    for i in $(all_nodes); do encapd_wait_ready "$i" 90 || ed_die "encapd on node $i did not start"; done
    ed_log "encapds ready in $((SECONDS - t0)) s; waiting for every table to hold $((NODES - 1)) routes"
    line=$(tool converge --nodes "$(nodes_but 0)" --routes $((NODES - 1)) --timeout 60 --label up | tail -n 1)
    [[ $(field converged "$line") == "$NODES" ]] || ed_die "the fleet did not converge: $line"
    for i in $(all_nodes); do
        POD_NS[i]="${P}p$i"
        POD_IP[i]=$(ed_cni_add "$(node_ns "$i")" "${POD_NS[$i]}" "$(node_dir "$i")/subnet.env" "$(node_dir "$i")/cni")
        pod_neighbours "$i"
    done
    fig "nodes=$NODES" "setup_s=$((SECONDS - t0))"
    ed_log "fleet up in $((SECONDS - t0)) s: pods ${POD_IP[1]} .. ${POD_IP[$NODES]}"
}

# ---------------------------------------------------------------------------
# Commands

# do_check [PREFIX]: the full mesh; figures PREFIX_* (default mesh_*).
do_check() {
    local prefix=${1:-mesh} line rc=0
    ed_log "check ($prefix): full mesh, $((NODES * (NODES - 1))) pod pairs"
    line=$(tool mesh --pods "$(pods_arg)" | tail -n 1) || rc=$?
    figs_from MESH "$line" "$prefix"
    ((rc == 0)) || fail "full mesh ($prefix): $line"
}

# join_node K SAMPLES: start node K's encapd while every other node's
# /metrics is polled; per node, the time from K's lease put (seen through
# an etcd watch on its key, opened first) until its table holds K's subnet,
# and the time from K's process start (join-start).
join_node() {
    local k=$1 samples=$2 cpid line rc=0 cout=$WORK/converge.out t
    rm -f "$WORK/join.start" "$WORK/join.ready"
    python3 "$TOOL" converge --nodes "$(nodes_but "$k")" --routes $((NODES - 1)) --timeout 60 \
        --watch-key "$(node_key "$k")" --etcd "$UL=http://$ETCD_HOST:2379" --ready-file "$WORK/join.ready" \
        --start-file "$WORK/join.start" --label join --samples "$samples" >"$cout" &
    cpid=$!
    ed_track "$cpid"
    for ((t = 0; t < 100; t++)); do
        [[ -e $WORK/join.ready ]] && break
        kill -0 "$cpid" 2>/dev/null || break
        sleep 0.05
    done
    [[ -e $WORK/join.ready ]] || fail "the etcd watch for node $k's join did not start"
    date +%s.%N >"$WORK/join.start"
    encapd_start "$k"
    encapd_wait_ready "$k" 60 || fail "node $k did not start again"
    wait "$cpid" || rc=$?
    ed_untrack "$cpid"
    line=$(tail -n 1 "$cout")
    ed_log "  $line"
    ((rc == 0)) || fail "join of node $k: $line"
}

do_join_leave() {
    local r k line rc ts samples=$WORK/convergence.txt st
    : >"$samples"
    for ((r = 0; r < ROUNDS; r++)); do
        # Nodes spread over the fleet, never the short-lease one.
        k=$((1 + (r * (NODES - 1)) / ROUNDS))
        ed_log "join-leave round $((r + 1))/$ROUNDS: node $k leaves (stop + delete its lease) and joins again"
        st=0
        encapd_stop "$k" || st=$?
        ((st == 0)) || fail "encapd on node $k exited with status $st on SIGTERM"
        rc=0
        line=$(tool converge --nodes "$(nodes_but "$k")" --routes $((NODES - 2)) --timeout 30 \
            --delete-key "$(node_key "$k")" --etcd "$UL=http://$ETCD_HOST:2379" --label leave-delete --samples "$samples" | tail -n 1) || rc=$?
        ed_log "  $line"
        ((rc == 0)) || fail "leave (delete) of node $k: $line"
        join_node "$k" "$samples"
        rc=0
        line=$(tool mesh --pods "$(pods_arg)" --only $((k - 1)) | tail -n 1) || rc=$?
        ((rc == 0)) || fail "reachability to and from node $k after its join: $line"
    done

    # Leave by expiry: the last node's lease is short; stop it, and time
    # from the lease's expiry (its last grant + TTL) to every other node
    # dropping it.
    k=$NODES
    ed_log "join-leave: node $k stops; its lease (ttl $LEASE_TTL s) expires"
    ts=$(lease_time "$k")
    st=0
    encapd_stop "$k" || st=$?
    ((st == 0)) || fail "encapd on node $k exited with status $st on SIGTERM"
    local expiry
    expiry=$(python3 -c 'import sys, datetime; print(datetime.datetime.fromisoformat(sys.argv[1].replace("Z", "+00:00")).timestamp() + float(sys.argv[2]))' "$ts" "$LEASE_TTL")
    rc=0
    line=$(tool converge --nodes "$(nodes_but "$k")" --routes $((NODES - 2)) --timeout $((LEASE_TTL + 30)) \
        --since "$expiry" --label leave-expiry --samples "$samples" | tail -n 1) || rc=$?
    ed_log "  $line"
    ((rc == 0)) || fail "leave (lease expiry) of node $k: $line"
    join_node "$k" "$samples"
    local ev
    for ev in join join-start leave-delete leave-expiry; do
        line=$(tool stats "$samples" --label "$ev" | tail -n 1)
        figs_from STATS "$line" "${ev//-/_}"
    done
    [[ -z $OUT ]] || cp "$samples" "$OUT/convergence.txt"
    do_check mesh_after_churn
}

do_rolling_upgrade() {
    if ((!TAKEOVER)); then
        fig "upgrade=unsupported"
        fail "rolling upgrade: $BIN has no --takeover"
        return 0
    fi
    local ready=$WORK/traffic.ready tout=$WORK/traffic.out i k old st t0 ms handovers=() failed=0 line rc
    rm -f "$ready"
    ed_log "rolling upgrade: $((NODES * STREAMS)) UDP streams of $UDP_RATE/s and $TCP TCP transfers start"
    python3 "$TOOL" traffic --pods "$(pods_arg)" --streams "$STREAMS" --rate "$UDP_RATE" --tcp "$TCP" \
        --tcp-rate "$TCP_RATE" --max-duration $((60 + NODES * 15)) --ready-file "$ready" >"$tout" 2>"$WORK/traffic.err" &
    local tpid=$!
    ed_track "$tpid"
    for ((i = 0; i < 100; i++)); do [[ -e $ready ]] && break; sleep 0.1; done
    [[ -e $ready ]] || { fail "traffic did not start"; cat "$WORK/traffic.err" >&2; return 0; }
    sleep 3
    for i in $(all_nodes); do
        old=${NODE_PID[$i]}
        t0=$(date +%s%N)
        encapd_start "$i" --takeover
        # The predecessor exits 0 once its successor forwards.
        for ((k = 0; k < 300; k++)); do kill -0 "$old" 2>/dev/null || break; sleep 0.02; done
        ms=$((($(date +%s%N) - t0) / 1000000))
        if kill -0 "$old" 2>/dev/null; then
            fail "node $i: the old encapd (pid $old) still runs 6 s after its successor started"
            failed=$((failed + 1))
            tail -n 10 "$(node_log "$i")" >&2
            continue
        fi
        st=0
        wait "$old" 2>/dev/null || st=$?
        ed_untrack "$old"
        if ((st != 0)) || ! kill -0 "${NODE_PID[$i]}" 2>/dev/null; then
            fail "node $i: takeover failed (old exited $st, new $(kill -0 "${NODE_PID[$i]}" 2>/dev/null && echo running || echo exited))"
            failed=$((failed + 1))
            tail -n 10 "$(node_log "$i")" >&2
            continue
        fi
        handovers+=("$ms")
        sleep 0.2
    done
    sleep 3
    kill -INT "$tpid" 2>/dev/null || true
    rc=0
    wait "$tpid" || rc=$?
    ed_untrack "$tpid"
    cat "$WORK/traffic.err" >&2
    line=$(tail -n 1 "$tout")
    figs_from TRAFFIC "$line" upgrade
    printf '%s\n' "${handovers[@]}" | sort -n >"$WORK/handover.txt"
    local n=${#handovers[@]}
    fig "upgrade_nodes=$NODES" "upgrade_done=$n" "upgrade_failed=$failed"
    if ((n)); then
        fig "upgrade_handover_p50_ms=$(sed -n "$(((n + 1) / 2))p" "$WORK/handover.txt")" \
            "upgrade_handover_p99_ms=$(sed -n "$(((n * 99 + 99) / 100))p" "$WORK/handover.txt")" \
            "upgrade_handover_max_ms=$(tail -n 1 "$WORK/handover.txt")"
    fi
    ((rc == 0)) || fail "traffic across the rolling upgrade: $line"
    [[ $(field udp_lost "$line") == 0 ]] || fail "datagrams lost across the rolling upgrade: $line"
    # Every lease is still there, every table complete, the mesh whole.
    local keys
    keys=$(etcdctl_ul get --prefix --keys-only "$ETCD_PREFIX/subnets/" | grep -c . || true)
    fig "upgrade_leases_after=$keys"
    ((keys == NODES)) || fail "after the upgrade etcd holds $keys leases, not $NODES"
    line=$(tool converge --nodes "$(nodes_but 0)" --routes $((NODES - 1)) --timeout 10 --label after-upgrade | tail -n 1) || true
    [[ $(field converged "$line") == "$NODES" ]] || fail "tables incomplete after the upgrade: $line"
    do_check mesh_after_upgrade
}

do_resources() {
    local i pid rss thr fds rows=$WORK/resources.txt
    : >"$rows"
    for i in $(all_nodes); do
        pid=${NODE_PID[$i]}
        if [[ -z $pid ]] || ! kill -0 "$pid" 2>/dev/null; then
            fail "resources: node $i runs no encapd"
            continue
        fi
        rss=$(awk '/^VmRSS:/ {print $2}' "/proc/$pid/status")
        thr=$(awk '/^Threads:/ {print $2}' "/proc/$pid/status")
        fds=$(find "/proc/$pid/fd" -mindepth 1 -maxdepth 1 | wc -l)
        echo "$i $rss $thr $fds" >>"$rows"
    done
    [[ -z $OUT ]] || { echo "# node rss_kib threads fds"; cat "$rows"; } >"$OUT/resources.txt"
    local col name
    for col in 2:rss_kib 3:threads 4:fds; do
        name=${col#*:}
        read -r mn med mx tot < <(cut -d' ' -f"${col%%:*}" "$rows" | sort -n |
            awk '{v[NR] = $1; s += $1} END {print v[1], v[int((NR + 1) / 2)], v[NR], s}')
        fig "encapd_${name}_min=$mn" "encapd_${name}_median=$med" "encapd_${name}_max=$mx" "encapd_${name}_total=$tot"
    done
    local etcd_rss=0
    for pid in "${ETCD_PIDS[@]}"; do
        etcd_rss=$((etcd_rss + $(awk '/^VmRSS:/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo 0)))
    done
    fig "etcd_rss_kib_total=$etcd_rss"
}

do_up() {
    do_check
    local i
    echo "fleet up: underlay namespace $UL (etcd $(etcd_endpoints)), nodes $(node_ns 1) .. $(node_ns "$NODES"), pods ${P}p1 .. ${P}p$NODES"
    for i in $(all_nodes); do echo "  node $i: $(node_ns "$i") $(node_ip "$i") $(node_subnet "$i") encapd pid ${NODE_PID[$i]}, pod ${POD_NS[$i]} ${POD_IP[$i]}"; done
    echo "work directory: $WORK; Ctrl-C tears everything down"
    # A background sleep, so that Ctrl-C's trap runs at once.
    while true; do
        sleep 60 &
        wait "$!"
    done
}

STARTED=$(date -u +%Y-%m-%dT%H:%M:%SZ)
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
if [[ -n $OUT ]]; then
    {
        echo "started=$STARTED"
        echo "invocation=$INVOCATION"
        echo "nodes=$NODES"
        echo "rounds=$ROUNDS"
        echo "lease_ttl_short=$LEASE_TTL"
        echo "udp_streams_per_pod=$STREAMS"
        echo "udp_rate=$UDP_RATE"
        echo "tcp_transfers=$TCP"
        echo "tcp_rate=$TCP_RATE"
        echo "takeover=$TAKEOVER"
        echo "kernel=$(uname -r)"
        echo "cpu=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)"
        echo "nproc=$(nproc)"
        echo "host=$(hostname -s 2>/dev/null || hostname)"
        printf '%s\n' "$PROVENANCE"
        echo "encapd=$("$BIN" --version 2>/dev/null | head -n 1)"
        echo "etcd=$(etcd --version 2>/dev/null | head -n 1)"
        echo "loadavg_start=$LOAD_START"
    } >"$OUT/env.txt"
fi
fleet_up
for c in "${COMMANDS[@]}"; do
    case $c in
        up) do_up ;;
        check) do_check ;;
        join-leave) do_join_leave ;;
        rolling-upgrade) do_rolling_upgrade ;;
        resources) do_resources ;;
    esac
done
fig "elapsed_s=$SECONDS"

if [[ -n $OUT ]]; then
    {
        echo "elapsed_s=$SECONDS"
        echo "loadavg_end=$(cut -d' ' -f1-3 /proc/loadavg)"
        if ((${#FAILURES[@]})); then echo "result=fail"; else echo "result=pass"; fi
    } >>"$OUT/env.txt"
fi

if ((${#FAILURES[@]})); then
    echo "RESULT fail: $(printf '%s; ' "${FAILURES[@]}")"
    exit 1
fi
echo "RESULT pass"
