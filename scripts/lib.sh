# shellcheck shell=bash
# Shared helpers for scripts/netns.sh, scripts/demo.sh and bench/run.sh.
#
# Source it from a script that runs with `set -euo pipefail`. Nothing here
# touches the root network namespace: every link, address, route, sysctl and
# process lives in namespaces created by ed_topo_up, whose names carry a
# per-run prefix (default "ed<4 random hex digits>-").
#
# Topology (ed_topo_up):
#   ctrA eth0 100.96.1.2/24 fd00:96:1::2/64
#     | veth
#   nodeA vc0 100.96.1.1/24 fd00:96:1::1/64, ul0 198.18.0.1/24 (MTU 1500)
#     | veth (underlay)
#   nodeB ul0 198.18.0.2/24, vc0 100.96.2.1/24 fd00:96:2::1/64
#     | veth
#   ctrB eth0 100.96.2.3/24 fd00:96:2::3/64

ED_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

# Fixed addressing plan (see /work/shared/DESIGN.md).
ED_A_UL=198.18.0.1
ED_B_UL=198.18.0.2
ED_A_SUB=100.96.1.0/24
ED_B_SUB=100.96.2.0/24
ED_A_SUB6=fd00:96:1::/64
ED_B_SUB6=fd00:96:2::/64
ED_A_GW=100.96.1.1
ED_B_GW=100.96.2.1
ED_A_GW6=fd00:96:1::1
ED_B_GW6=fd00:96:2::1
ED_CTRA_IP=100.96.1.2
ED_CTRB_IP=100.96.2.3
ED_CTRA_IP6=fd00:96:1::2
ED_CTRB_IP6=fd00:96:2::3
ED_NET=100.96.0.0/16
ED_NET6=fd00:96::/32
ED_UL_MTU=1500
ED_VX_MTU=1450
ED_TUN=encap0
ED_PORT=8285

# State for cleanup: PIDs of background processes this script started, the
# topology prefix it owns (torn down on exit), temp dirs it created.
ED_PIDS=()
ED_TOPO_PREFIX=""
ED_TMPDIRS=()
ED_CLEANED=0

ed_log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
ed_warn() { printf '[%s] WARNING: %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
ed_die() { printf '[%s] ERROR: %s\n' "$(date +%H:%M:%S)" "$*" >&2; exit 1; }

ed_require_root() {
    [[ $(id -u) -eq 0 ]] || ed_die "must run as root (network namespaces); try: sudo $0"
}

# ed_rand_prefix: a short unique namespace-name prefix such as "ed3fa9-".
ed_rand_prefix() {
    local hex
    hex=$(od -An -N2 -tx1 /dev/urandom | tr -d ' \n')
    printf 'ed%s-\n' "$hex"
}

ed_check_prefix() {
    [[ $1 =~ ^[A-Za-z0-9_.-]{1,24}$ ]] || ed_die "bad prefix '$1' (1-24 chars of [A-Za-z0-9_.-])"
}

# ed_ns_names PREFIX: set NS_CTRA NS_NODEA NS_NODEB NS_CTRB.
ed_ns_names() {
    NS_CTRA="${1}ctrA"
    NS_NODEA="${1}nodeA"
    NS_NODEB="${1}nodeB"
    NS_CTRB="${1}ctrB"
}

ed_ns_exists() { ip netns list | awk '{print $1}' | grep -qxF -- "$1"; }

# ed_in NS CMD...: run CMD inside namespace NS.
ed_in() { local ns=$1; shift; ip netns exec "$ns" "$@"; }

ed_sysctl() { local ns=$1; shift; local kv; for kv in "$@"; do ip netns exec "$ns" sysctl -qw "$kv" >/dev/null; done; }

# ed_ensure_pkgs CMD:PKG...: install the Debian packages whose commands are
# missing; runs apt-get update at most once, and only if something is missing.
ed_ensure_pkgs() {
    local pair missing=()
    for pair in "$@"; do
        command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair#*:}")
    done
    ((${#missing[@]})) || return 0
    command -v apt-get >/dev/null 2>&1 || ed_die "missing packages ${missing[*]} and no apt-get to install them"
    mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
    ed_log "installing missing packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >/dev/null || ed_die "apt-get update failed"
    apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null || ed_die "apt-get install ${missing[*]} failed"
    for pair in "$@"; do
        command -v "${pair%%:*}" >/dev/null 2>&1 || ed_die "'${pair%%:*}' still missing after installing ${pair#*:}"
    done
}

# ed_find_cargo: print the cargo binary (PATH, then ~/.cargo/bin).
ed_find_cargo() {
    local c
    for c in "$(command -v cargo 2>/dev/null || true)" "${CARGO_HOME:-$HOME/.cargo}/bin/cargo" /root/.cargo/bin/cargo; do
        if [[ -n $c && -x $c ]]; then printf '%s\n' "$c"; return 0; fi
    done
    return 1
}

# ed_build: cargo build --release in the repository root.
ed_build() {
    local cargo
    cargo=$(ed_find_cargo) || ed_die "cargo not found (install Rust: https://rustup.rs)"
    ed_log "building: cargo build --release"
    (cd "$ED_ROOT" && "$cargo" build --release) || ed_die "cargo build --release failed"
}

ed_encapd_bin() { printf '%s\n' "${ENCAPD:-$ED_ROOT/target/release/encapd}"; }

# ---------------------------------------------------------------------------
# Processes

# ed_kill_pid PID [GRACE_SECONDS]: SIGTERM, wait, then SIGKILL. Only for PIDs
# this script started (or that live in namespaces it created).
ed_kill_pid() {
    local pid=$1 grace=${2:-3} i
    kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < grace * 10; i++)); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
}

# ed_track PID: remember a background PID for cleanup.
ed_track() { ED_PIDS+=("$1"); }

ed_untrack() {
    local p keep=()
    for p in "${ED_PIDS[@]}"; do [[ $p == "$1" ]] || keep+=("$p"); done
    ED_PIDS=("${keep[@]}")
}

# ed_wait_port NS PORT [SECONDS] [tcp|udp]: wait for a listening socket on
# PORT in NS (TCP by default).
ed_wait_port() {
    local ns=$1 port=$2 secs=${3:-5} proto=${4:-tcp} i flags=-Hltn
    [[ $proto == udp ]] && flags=-Hlun
    for ((i = 0; i < secs * 20; i++)); do
        if ip netns exec "$ns" ss "$flags" "sport = :$port" 2>/dev/null | grep -q .; then return 0; fi
        sleep 0.05
    done
    return 1
}

# ed_wait_link NS DEV present|absent [SECONDS]
ed_wait_link() {
    local ns=$1 dev=$2 want=$3 secs=${4:-5} i
    for ((i = 0; i < secs * 20; i++)); do
        if ip -n "$ns" link show dev "$dev" >/dev/null 2>&1; then
            [[ $want == present ]] && return 0
        else
            [[ $want == absent ]] && return 0
        fi
        sleep 0.05
    done
    return 1
}

# ---------------------------------------------------------------------------
# Topology

# ed_topo_up PREFIX: create the four namespaces and links. Fails (leaving the
# partial topology for the caller's cleanup) if a namespace already exists.
ed_topo_up() {
    local p=$1 ns
    ed_check_prefix "$p"
    ed_ns_names "$p"
    for ns in "$NS_CTRA" "$NS_NODEA" "$NS_NODEB" "$NS_CTRB"; do
        ed_ns_exists "$ns" && ed_die "namespace $ns already exists; pick another --prefix"
    done
    for ns in "$NS_CTRA" "$NS_NODEA" "$NS_NODEB" "$NS_CTRB"; do
        ip netns add "$ns"
        # Defaults first, so links created below inherit them.
        ed_sysctl "$ns" net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0 \
            net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0
        ip -n "$ns" link set lo up
    done
    for ns in "$NS_NODEA" "$NS_NODEB"; do
        ed_sysctl "$ns" net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1 net.ipv6.conf.default.forwarding=1
    done

    # Every veth is created inside a namespace with its peer placed directly
    # in the other one: nothing ever appears in the root namespace.
    ip -n "$NS_NODEA" link add vc0 type veth peer name eth0 netns "$NS_CTRA"
    ip -n "$NS_NODEA" link add ul0 mtu "$ED_UL_MTU" type veth peer name ul0 netns "$NS_NODEB"
    ip -n "$NS_NODEB" link add vc0 type veth peer name eth0 netns "$NS_CTRB"
    ip -n "$NS_NODEB" link set ul0 mtu "$ED_UL_MTU"

    # ctrA <-> nodeA
    ip -n "$NS_CTRA" addr add "$ED_CTRA_IP/24" dev eth0
    ip -n "$NS_CTRA" addr add "$ED_CTRA_IP6/64" dev eth0 nodad
    ip -n "$NS_NODEA" addr add "$ED_A_GW/24" dev vc0
    ip -n "$NS_NODEA" addr add "$ED_A_GW6/64" dev vc0 nodad
    # nodeA <-> nodeB underlay (IPv4 only)
    ip -n "$NS_NODEA" addr add "$ED_A_UL/24" dev ul0
    ip -n "$NS_NODEB" addr add "$ED_B_UL/24" dev ul0
    # nodeB <-> ctrB
    ip -n "$NS_NODEB" addr add "$ED_B_GW/24" dev vc0
    ip -n "$NS_NODEB" addr add "$ED_B_GW6/64" dev vc0 nodad
    ip -n "$NS_CTRB" addr add "$ED_CTRB_IP/24" dev eth0
    ip -n "$NS_CTRB" addr add "$ED_CTRB_IP6/64" dev eth0 nodad

    for ns in "$NS_CTRA" "$NS_CTRB"; do ip -n "$ns" link set eth0 up; done
    for ns in "$NS_NODEA" "$NS_NODEB"; do
        ip -n "$ns" link set vc0 up
        ip -n "$ns" link set ul0 up
        ed_sysctl "$ns" net.ipv4.conf.vc0.rp_filter=0 net.ipv4.conf.ul0.rp_filter=0
    done
    ip -n "$NS_CTRA" route add default via "$ED_A_GW"
    ip -n "$NS_CTRA" -6 route add default via "$ED_A_GW6"
    ip -n "$NS_CTRB" route add default via "$ED_B_GW"
    ip -n "$NS_CTRB" -6 route add default via "$ED_B_GW6"
    ed_topo_settle "$p"
}

# ed_topo_settle PREFIX: right after creation, the first IPv6 neighbour
# solicitation on a fresh veth is lost (the first ping takes ~1 s); resolve
# the gateways (v4 and v6) and the underlay peer once, in parallel, so that
# callers start with warm neighbour caches.
ed_topo_settle() {
    local pids=() pid
    ed_ns_names "$1"
    ip netns exec "$NS_CTRA" ping -n -c 1 -W 3 "$ED_A_GW" >/dev/null 2>&1 & pids+=("$!")
    ip netns exec "$NS_CTRB" ping -n -c 1 -W 3 "$ED_B_GW" >/dev/null 2>&1 & pids+=("$!")
    ip netns exec "$NS_CTRA" ping -6 -n -c 1 -W 3 "$ED_A_GW6" >/dev/null 2>&1 & pids+=("$!")
    ip netns exec "$NS_CTRB" ping -6 -n -c 1 -W 3 "$ED_B_GW6" >/dev/null 2>&1 & pids+=("$!")
    ip netns exec "$NS_NODEA" ping -n -c 1 -W 3 "$ED_B_UL" >/dev/null 2>&1 & pids+=("$!")
    for pid in "${pids[@]}"; do
        wait "$pid" || ed_warn "topology settle: a gateway ping failed"
    done
}

# ed_topo_down PREFIX: kill every process left in our namespaces, delete them.
ed_topo_down() {
    local p=$1 ns pid pids
    ed_check_prefix "$p"
    ed_ns_names "$p"
    for ns in "$NS_CTRA" "$NS_NODEA" "$NS_NODEB" "$NS_CTRB"; do
        ed_ns_exists "$ns" || continue
        # The namespace is ours, so every process in it is ours too.
        pids=$(ip netns pids "$ns" 2>/dev/null || true)
        for pid in $pids; do kill -TERM "$pid" 2>/dev/null || true; done
        for pid in $pids; do ed_kill_pid "$pid" 2; done
        ip netns del "$ns" 2>/dev/null || ed_warn "could not delete namespace $ns"
    done
}

# ed_topo_set_ctr_mtu PREFIX MTU: MTU of the container-facing veths on both
# sides, as flannel's CNI sets the pod MTU to the backend MTU (FLANNEL_MTU).
ed_topo_set_ctr_mtu() {
    local mtu=$2
    ed_ns_names "$1"
    ip -n "$NS_CTRA" link set eth0 mtu "$mtu"
    ip -n "$NS_NODEA" link set vc0 mtu "$mtu"
    ip -n "$NS_NODEB" link set vc0 mtu "$mtu"
    ip -n "$NS_CTRB" link set eth0 mtu "$mtu"
}

# ed_topo_flush_cache PREFIX: forget learned PMTU/redirect exceptions so one
# mode's state cannot leak into the next.
ed_topo_flush_cache() {
    local ns
    ed_ns_names "$1"
    for ns in "$NS_CTRA" "$NS_NODEA" "$NS_NODEB" "$NS_CTRB"; do
        ip -n "$ns" route flush cache 2>/dev/null || true
        ip -n "$ns" -6 route flush cache 2>/dev/null || true
    done
}

# _ed_route6 NS PREFIX6 PEER_UL4: IPv6 route over the IPv4-only underlay:
# an IPv4 next hop (RFC 5549 style) when the kernel supports it, otherwise
# the peer's link-local address on ul0.
_ed_route6() {
    local ns=$1 pfx=$2 nh=$3 peer_ns=$4 ll
    if ip -n "$ns" -6 route add "$pfx" via inet "$nh" dev ul0 2>/dev/null; then return 0; fi
    ll=$(ip -n "$peer_ns" -6 -o addr show dev ul0 scope link | awk '{sub(/\/.*/, "", $4); print $4; exit}')
    [[ -n $ll ]] || ed_die "no IPv6 link-local address on $peer_ns ul0"
    ip -n "$ns" -6 route add "$pfx" via "$ll" dev ul0
}

# ed_topo_route PREFIX: plain routing between the node subnets.
ed_topo_route() {
    ed_ns_names "$1"
    ip -n "$NS_NODEA" route add "$ED_B_SUB" via "$ED_B_UL" dev ul0
    ip -n "$NS_NODEB" route add "$ED_A_SUB" via "$ED_A_UL" dev ul0
    _ed_route6 "$NS_NODEA" "$ED_B_SUB6" "$ED_B_UL" "$NS_NODEB"
    _ed_route6 "$NS_NODEB" "$ED_A_SUB6" "$ED_A_UL" "$NS_NODEA"
}

ed_topo_unroute() {
    ed_ns_names "$1"
    ip -n "$NS_NODEA" route del "$ED_B_SUB" 2>/dev/null || true
    ip -n "$NS_NODEB" route del "$ED_A_SUB" 2>/dev/null || true
    ip -n "$NS_NODEA" -6 route del "$ED_B_SUB6" 2>/dev/null || true
    ip -n "$NS_NODEB" -6 route del "$ED_A_SUB6" 2>/dev/null || true
}

_ed_net_addr() { printf '%s\n' "${1%/*}"; }

# ed_topo_vxlan PREFIX: kernel VXLAN configured exactly like flannel's
# flannel.1 (VNI 1, dstport 8472, nolearning, static neighbour + FDB
# entries, onlink route via the peer subnet's network address), plus the
# flannel-v6 equivalent for the IPv6 subnets on the same device.
ed_topo_vxlan() {
    local ns mac_a mac_b
    ed_ns_names "$1"
    ip -n "$NS_NODEA" link add vx0 type vxlan id 1 local "$ED_A_UL" dev ul0 dstport 8472 nolearning
    ip -n "$NS_NODEB" link add vx0 type vxlan id 1 local "$ED_B_UL" dev ul0 dstport 8472 nolearning
    for ns in "$NS_NODEA" "$NS_NODEB"; do
        ip -n "$ns" link set vx0 mtu "$ED_VX_MTU"
        ed_sysctl "$ns" net.ipv6.conf.vx0.accept_dad=0 net.ipv4.conf.vx0.rp_filter=0
    done
    ip -n "$NS_NODEA" addr add "$(_ed_net_addr "$ED_A_SUB")/32" dev vx0
    ip -n "$NS_NODEB" addr add "$(_ed_net_addr "$ED_B_SUB")/32" dev vx0
    ip -n "$NS_NODEA" addr add "$(_ed_net_addr "$ED_A_SUB6")/128" dev vx0 nodad
    ip -n "$NS_NODEB" addr add "$(_ed_net_addr "$ED_B_SUB6")/128" dev vx0 nodad
    ip -n "$NS_NODEA" link set vx0 up
    ip -n "$NS_NODEB" link set vx0 up
    mac_a=$(ip -n "$NS_NODEA" link show dev vx0 | awk '/link\/ether/ {print $2; exit}')
    mac_b=$(ip -n "$NS_NODEB" link show dev vx0 | awk '/link\/ether/ {print $2; exit}')
    [[ -n $mac_a && -n $mac_b ]] || ed_die "could not read vx0 MAC addresses"

    # A -> B
    ip -n "$NS_NODEA" neigh replace "$(_ed_net_addr "$ED_B_SUB")" lladdr "$mac_b" dev vx0 nud permanent
    ip -n "$NS_NODEA" neigh replace "$(_ed_net_addr "$ED_B_SUB6")" lladdr "$mac_b" dev vx0 nud permanent
    bridge -n "$NS_NODEA" fdb append "$mac_b" dev vx0 dst "$ED_B_UL" self permanent
    ip -n "$NS_NODEA" route add "$ED_B_SUB" via "$(_ed_net_addr "$ED_B_SUB")" dev vx0 onlink
    ip -n "$NS_NODEA" -6 route add "$ED_B_SUB6" via "$(_ed_net_addr "$ED_B_SUB6")" dev vx0 onlink
    # B -> A
    ip -n "$NS_NODEB" neigh replace "$(_ed_net_addr "$ED_A_SUB")" lladdr "$mac_a" dev vx0 nud permanent
    ip -n "$NS_NODEB" neigh replace "$(_ed_net_addr "$ED_A_SUB6")" lladdr "$mac_a" dev vx0 nud permanent
    bridge -n "$NS_NODEB" fdb append "$mac_a" dev vx0 dst "$ED_A_UL" self permanent
    ip -n "$NS_NODEB" route add "$ED_A_SUB" via "$(_ed_net_addr "$ED_A_SUB")" dev vx0 onlink
    ip -n "$NS_NODEB" -6 route add "$ED_A_SUB6" via "$(_ed_net_addr "$ED_A_SUB6")" dev vx0 onlink
}

# ed_topo_unvxlan PREFIX: deleting vx0 removes its routes, neighbours, FDB.
ed_topo_unvxlan() {
    local ns
    ed_ns_names "$1"
    for ns in "$NS_NODEA" "$NS_NODEB"; do
        ip -n "$ns" link del vx0 2>/dev/null || true
    done
}

# ed_ping_ok NS DST [TRIES]: true once a single ping gets an answer.
ed_ping_ok() {
    local ns=$1 dst=$2 tries=${3:-10} i
    for ((i = 0; i < tries; i++)); do
        if ip netns exec "$ns" ping -n -c 1 -W 1 "$dst" >/dev/null 2>&1; then return 0; fi
        sleep 0.2
    done
    return 1
}

# ---------------------------------------------------------------------------
# encapd

# encapd_write_configs DIR IO [WORKERS]: a.toml/b.toml and their peers files.
encapd_write_configs() {
    local dir=$1 io=$2 workers=${3:-2}
    mkdir -p "$dir"
    _encapd_conf "$ED_A_UL" "$ED_A_SUB" "$ED_A_SUB6" "$io" "$workers" peers-a.toml >"$dir/a.toml"
    _encapd_conf "$ED_B_UL" "$ED_B_SUB" "$ED_B_SUB6" "$io" "$workers" peers-b.toml >"$dir/b.toml"
    _encapd_peers "$ED_B_SUB" "$ED_B_SUB6" "$ED_B_UL" >"$dir/peers-a.toml"
    _encapd_peers "$ED_A_SUB" "$ED_A_SUB6" "$ED_A_UL" >"$dir/peers-b.toml"
}

_encapd_conf() {
    cat <<EOF
[node]
public_ip = "$1"
subnet    = "$2"
subnet6   = "$3"

[network]
cidr    = "$ED_NET"
cidr6   = "$ED_NET6"
backend = "udp"
port    = $ED_PORT

[dataplane]
tun     = "$ED_TUN"
workers = $5
io      = "$4"

[control]
source = "file"
peers  = "$6"
EOF
}

_encapd_peers() {
    cat <<EOF
[[peer]]
subnet    = "$1"
subnet6   = "$2"
public_ip = "$3"
EOF
}

ENCAPD_PID_A=""
ENCAPD_PID_B=""

# encapd_check DIR: `encapd check` both configs (in the node namespaces);
# non-zero (with a warning) if either is rejected.
encapd_check() {
    local dir=$1 bin side ns
    bin=$(ed_encapd_bin)
    [[ -x $bin ]] || { ed_warn "encapd binary not found at $bin (cargo build --release)"; return 1; }
    for side in a b; do
        if [[ $side == a ]]; then ns=$NS_NODEA; else ns=$NS_NODEB; fi
        if ! ip netns exec "$ns" "$bin" check --config "$dir/$side.toml" >&2; then
            ed_warn "encapd check --config $dir/$side.toml failed"
            return 1
        fi
    done
}

# encapd_start DIR: start encapd in nodeA and nodeB (logs DIR/a.log, b.log),
# wait for both TUN devices (with their overlay route). Returns non-zero
# (after printing the logs) if either daemon dies or its TUN does not appear
# within 5 s.
encapd_start() {
    local dir=$1 bin
    bin=$(ed_encapd_bin)
    [[ -x $bin ]] || ed_die "encapd binary not found at $bin (cargo build --release)"
    : >"$dir/a.log"
    : >"$dir/b.log"
    ip netns exec "$NS_NODEA" "$bin" run --config "$dir/a.toml" 2>>"$dir/a.log" &
    ENCAPD_PID_A=$!
    ed_track "$ENCAPD_PID_A"
    ip netns exec "$NS_NODEB" "$bin" run --config "$dir/b.toml" 2>>"$dir/b.log" &
    ENCAPD_PID_B=$!
    ed_track "$ENCAPD_PID_B"
    local ok=1 ns pid side
    for side in a b; do
        if [[ $side == a ]]; then ns=$NS_NODEA; pid=$ENCAPD_PID_A; else ns=$NS_NODEB; pid=$ENCAPD_PID_B; fi
        local i found=0
        for ((i = 0; i < 100; i++)); do
            # Ready = the TUN exists and carries encapd's overlay route.
            if ip -n "$ns" route show dev "$ED_TUN" 2>/dev/null | grep -q .; then found=1; break; fi
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.05
        done
        if ((!found)); then
            ok=0
            ed_warn "encapd on node $side: no $ED_TUN with a route after 5 s (pid $pid $(kill -0 "$pid" 2>/dev/null && echo running || echo exited)); log:"
            tail -n 20 "$dir/$side.log" >&2 || true
        fi
    done
    ((ok)) || return 1
}

# encapd_counters: SIGUSR1 to both daemons (they print counters to stderr).
encapd_counters() {
    local pid
    for pid in "$ENCAPD_PID_A" "$ENCAPD_PID_B"; do
        if [[ -n $pid ]]; then kill -USR1 "$pid" 2>/dev/null || true; fi
    done
    sleep 0.5
}

# encapd_stop: SIGTERM both daemons, wait (5 s, then SIGKILL), report exit
# codes, wait for the TUN devices to go away. Returns non-zero if a daemon
# did not exit 0.
encapd_stop() {
    local rc=0 pid side st ns
    for side in a b; do
        if [[ $side == a ]]; then pid=$ENCAPD_PID_A; ns=$NS_NODEA; else pid=$ENCAPD_PID_B; ns=$NS_NODEB; fi
        [[ -n $pid ]] || continue
        kill -TERM "$pid" 2>/dev/null || true
        local i
        for ((i = 0; i < 50; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        if kill -0 "$pid" 2>/dev/null; then
            ed_warn "encapd on node $side (pid $pid) ignored SIGTERM for 5 s; killing"
            kill -KILL "$pid" 2>/dev/null || true
        fi
        st=0
        wait "$pid" 2>/dev/null || st=$?
        ed_untrack "$pid"
        if ((st != 0)); then
            ed_warn "encapd on node $side exited with status $st"
            rc=1
        fi
        ed_wait_link "$ns" "$ED_TUN" absent 5 || { ed_warn "$ED_TUN still present in $ns after encapd exit"; rc=1; }
    done
    ENCAPD_PID_A=""
    ENCAPD_PID_B=""
    return "$rc"
}

# ---------------------------------------------------------------------------
# Cleanup

# ed_mktemp_dir: create a temp dir (removed by ed_cleanup), path in ED_TMP.
# Not for use in $(...): the cleanup list would be lost with the subshell.
ED_TMP=""
ed_mktemp_dir() {
    ED_TMP=$(mktemp -d "${TMPDIR:-/tmp}/encapd.XXXXXX")
    ED_TMPDIRS+=("$ED_TMP")
}

# ed_cleanup: kill our background processes, tear down the topology this
# script created, remove temp dirs. Idempotent; installed by ed_install_traps.
ed_cleanup() {
    ((ED_CLEANED)) && return 0
    ED_CLEANED=1
    set +e
    local pid
    for pid in "${ED_PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null; done
    for pid in "${ED_PIDS[@]}"; do ed_kill_pid "$pid" 3; done
    ED_PIDS=()
    if [[ -n $ED_TOPO_PREFIX ]]; then
        ed_topo_down "$ED_TOPO_PREFIX"
        ED_TOPO_PREFIX=""
    fi
    local d
    for d in "${ED_TMPDIRS[@]}"; do [[ -n $d && -d $d ]] && rm -rf -- "$d"; done
    ED_TMPDIRS=()
}

ed_install_traps() {
    trap 'ed_cleanup' EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
}
