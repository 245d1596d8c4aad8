# shellcheck shell=bash
# Shared helpers for scripts/*.sh and bench/*.sh.
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

# Fixed addressing plan (the test topology, bench/README.md "Topology"): underlay from the
# benchmarking range 198.18.0.0/15, overlay from 100.96.0.0/12.
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

ed_sysctl() { local ns=$1; shift; local kv; for kv in "$@"; do ip netns exec "$ns" sysctl -qw "$kv" >/dev/null; done; }

# ---------------------------------------------------------------------------
# What the project needs from Debian
#
# The one list, by purpose. Every script that builds or runs anything asks
# for the groups it uses (ed_need_pkgs @build @run ...), and test.sh checks
# after its install step that every listed package is there (.ci/run fails
# naming the missing ones). A group is checked by package with dpkg-query,
# never by a command being on PATH: a command can be present while the
# files it needs are not. That is how a fresh machine failed: `protoc`
# (protobuf-compiler) was installed, but google/protobuf/descriptor.proto
# ships in libprotobuf-dev, which is only a Recommends of protobuf-compiler
# and so is left out by --no-install-recommends.
#
# Why a system protoc and not a vendored one: etcd-client's build script
# hands its .proto files to tonic-prost-build / prost-build, which runs
# $PROTOC (else `protoc` on PATH) with $PROTOC_INCLUDE added to the include
# path. It has no vendored-protoc feature, and a crate cannot set a
# variable for another crate's build script, so the protoc-bin-vendored
# crate (Google's prebuilt binaries and well-known .proto files, shipped on
# crates.io) would only help a build started with PROTOC and PROTOC_INCLUDE
# pointing into ~/.cargo/registry/src/<index-hash>/protoc-bin-vendored-*/:
# a path no config file can name, so plain `cargo build` would still fail,
# and the project would run an executable downloaded from crates.io
# instead of Debian's signed one. protobuf-src builds protoc from source
# (minutes of C++ with cmake). Two Debian packages are simpler than either,
# so they stay.
ED_PKGS_BUILD=(
    git               # build.rs embeds the commit; encapd-bench run records it
    gcc libc6-dev     # ring (rustls, for etcd TLS) compiles C and assembly
    protobuf-compiler # protoc, for etcd-client's build script
    libprotobuf-dev   # google/protobuf/*.proto that etcd's .proto files import
    clang             # build.rs compiles the kernel path's eBPF C (-target bpf)
    libbpf-dev        # bpf/bpf_helpers.h etc. for that C (headers only)
    linux-libc-dev    # linux/bpf.h and the other uapi headers it includes
)
ED_PKGS_RUN=(
    iproute2     # ip, ss, bridge, tc: namespaces, veths, routes, VXLAN
    iputils-ping # ping
    iperf3       # the demo's and the benchmarks' load
    procps       # sysctl, pgrep
    coreutils    # timeout, sha256sum
    containernetworking-plugins # CNI bridge + host-local: the demo's pods, as a Kubernetes node wires them
)
ED_PKGS_TEST=(
    etcd-server etcd-client     # the etcd control source's end-to-end tests
    nftables                    # loss on the underlay (numgen random)
    ethtool                     # offload settings of the veths
    bpftool                     # the kernel path's programs dump with their C source
    sockperf                    # UDP ping-pong (encapd-bench run --sockperf, wakeups, trace-rtt)
    prometheus                  # promtool and the server, for the metrics tests
    systemd                     # systemd-analyze verify dist/encapd.service
    man-db                      # ... which runs `man` for the unit's Documentation=man:encapd(8)
    mmdebstrap                  # a Debian root for the unit's test under a real systemd (tests/e2e_systemd.rs)
    systemd-container           # systemd-nspawn boots that root
    shellcheck                  # the scripts stay shellcheck-clean
    python3                     # fuzz/gen_corpus.py, checked against the committed seeds
    wireguard-tools             # wg genkey/pubkey: tests/wireguard_keys.rs checks encapd's keys against them; wg configures the peers below
    wireguard-go                # a userspace WireGuard peer (tests/e2e_wg_peers.rs, the benchmark's wireguard-go mode)
)
# boringtun-cli, the other userspace WireGuard peer, is a crate:
# ed_need_boringtun.
# The Debian package (scripts/package.sh): cargo-deb itself is a crate
# (ed_need_cargo_deb); these are what it runs.
ED_PKGS_PACKAGE=(
    dpkg-dev # dpkg-shlibdeps: the package's Depends on shared libraries (cargo-deb's $auto)
    binutils # objcopy: debug symbols into the -dbgsym package (cargo deb --dbgsym)
    lintian  # the package is lintian-clean (scripts/package.sh fails otherwise)
)
ED_PKGS_FUZZ=(g++) # libFuzzer is C++ (libfuzzer-sys builds it)
ED_PKGS_PROFILE=(linux-perf)
ED_APT_UPDATED=0

# ed_pkgs @GROUP|PKG...: the packages named, groups expanded (@build, @run,
# @test, @package, @fuzz, @profile), one per line, sorted, without duplicates.
ed_pkgs() {
    local a
    for a in "$@"; do
        case $a in
            @build) printf '%s\n' "${ED_PKGS_BUILD[@]}" ;;
            @run) printf '%s\n' "${ED_PKGS_RUN[@]}" ;;
            @test) printf '%s\n' "${ED_PKGS_TEST[@]}" ;;
            @package) printf '%s\n' "${ED_PKGS_PACKAGE[@]}" ;;
            @fuzz) printf '%s\n' "${ED_PKGS_FUZZ[@]}" ;;
            @profile) printf '%s\n' "${ED_PKGS_PROFILE[@]}" ;;
            @*) ed_die "unknown package group $a" ;;
            *) printf '%s\n' "$a" ;;
        esac
    done | sort -u
}

ed_pkg_installed() {
    [[ $(dpkg-query -W -f='${Status}' "$1" 2>/dev/null) == "install ok installed" ]]
}

# ed_missing_pkgs @GROUP|PKG...: the packages that are not installed.
ed_missing_pkgs() {
    local p
    while read -r p; do
        ed_pkg_installed "$p" || printf '%s\n' "$p"
    done < <(ed_pkgs "$@")
}

# ed_need_pkgs @GROUP|PKG...: install what is missing (root only), with at
# most one `apt-get update` per run and without Recommends (every package
# the project needs is listed, so nothing may depend on a Recommends).
ed_need_pkgs() {
    local missing=()
    mapfile -t missing < <(ed_missing_pkgs "$@")
    ((${#missing[@]})) || return 0
    [[ $(id -u) -eq 0 ]] || ed_die "missing Debian packages: ${missing[*]} (run as root to install them)"
    command -v apt-get >/dev/null 2>&1 || ed_die "missing Debian packages ${missing[*]} and no apt-get to install them"
    ed_log "installing missing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    if ((!ED_APT_UPDATED)); then
        apt-get update -q >/dev/null || ed_die "apt-get update failed"
        ED_APT_UPDATED=1
    fi
    apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null || ed_die "apt-get install ${missing[*]} failed"
    ed_verify_pkgs "$@"
}

# ed_verify_pkgs @GROUP|PKG...: fail naming every package that is missing.
ed_verify_pkgs() {
    local missing=()
    mapfile -t missing < <(ed_missing_pkgs "$@")
    ((${#missing[@]} == 0)) || ed_die "Debian packages not installed: ${missing[*]}"
}

# ed_need_rust_components: rustfmt and clippy, each added if it is missing.
ed_need_rust_components() {
    local c
    for c in rustfmt clippy; do
        if command -v rustup >/dev/null 2>&1; then
            rustup component list --installed 2>/dev/null | grep -q "^$c" && continue
            ed_log "adding rustup component $c"
            rustup component add "$c" >/dev/null || ed_die "rustup component add $c failed"
        else
            # A distribution toolchain: its own packages provide these.
            cargo "${c/rustfmt/fmt}" --version >/dev/null 2>&1 || ed_die "cargo ${c/rustfmt/fmt} missing and no rustup to add $c"
        fi
    done
}

# ed_need_cargo: put cargo (PATH, else ~/.cargo/bin, where rustup puts it
# and where sudo's reset PATH does not look) on PATH, or fail.
ed_need_cargo() {
    local c
    command -v cargo >/dev/null 2>&1 && return 0
    for c in "${CARGO_HOME:-$HOME/.cargo}/bin/cargo" /root/.cargo/bin/cargo /usr/local/cargo/bin/cargo; do
        if [[ -x $c ]]; then
            PATH="$(dirname "$c"):$PATH"
            export PATH
            return 0
        fi
    done
    ed_die "cargo not found (install Rust: https://rustup.rs)"
}

# The cargo-deb release scripts/package.sh is written against (its
# [package.metadata.deb] keys and the maintainer-script snippets it
# generates, which tests/e2e_package.rs checks).
ED_CARGO_DEB_VERSION=3.8.0

# ed_need_cargo_deb: `cargo deb` on PATH, installed from crates.io
# (`cargo install cargo-deb --locked`, about 3 minutes) when missing; a
# warning when another release is installed.
ed_need_cargo_deb() {
    local have
    ed_need_cargo
    if ! have=$(cargo deb --version 2>/dev/null); then
        ed_log "installing cargo-deb $ED_CARGO_DEB_VERSION (cargo install --locked)"
        cargo install cargo-deb --locked --version "$ED_CARGO_DEB_VERSION" >&2 || ed_die "cargo install cargo-deb failed"
        have=$(cargo deb --version 2>/dev/null) || ed_die "cargo deb does not run after installing it"
    fi
    [[ $have == *" $ED_CARGO_DEB_VERSION"* ]] || ed_warn "cargo-deb is '$have', the package is written against $ED_CARGO_DEB_VERSION"
}

# The boringtun-cli release the testbed's peer (tests/testbed/src/wg_peer.rs)
# and the benchmark's boringtun mode are written against: its flags
# (--foreground --disable-drop-privileges) and its configuration socket.
ED_BORINGTUN_VERSION=0.7.1
# Where crates.io tools are installed (`cargo install --root`): outside the
# checkout, so every worktree and a fresh clone on this machine share one
# build (about 4 minutes on 2 busy cores). The testbed looks there too
# (wg_peer::tools_dir).
ED_TOOLS_DIR=${ENCAPD_TOOLS_DIR:-${HOME:-/root}/.cache/encapd/tools}

# ed_need_boringtun: boringtun-cli in $ED_TOOLS_DIR/bin (or on PATH),
# installed from crates.io (`cargo install boringtun-cli --locked`) when
# missing; a warning when another release is installed.
ed_need_boringtun() {
    local bin have
    bin=$(command -v boringtun-cli 2>/dev/null || true)
    [[ -n $bin ]] || bin=$ED_TOOLS_DIR/bin/boringtun-cli
    if [[ ! -x $bin ]]; then
        ed_need_cargo
        ed_log "installing boringtun-cli $ED_BORINGTUN_VERSION into $ED_TOOLS_DIR (cargo install --locked)"
        cargo install boringtun-cli --locked --version "$ED_BORINGTUN_VERSION" --root "$ED_TOOLS_DIR" >&2 ||
            ed_die "cargo install boringtun-cli failed"
        bin=$ED_TOOLS_DIR/bin/boringtun-cli
    fi
    have=$("$bin" --version 2>/dev/null) || ed_die "$bin --version failed"
    [[ $have == *" $ED_BORINGTUN_VERSION"* ]] || ed_warn "boringtun-cli is '$have', the testbed is written against $ED_BORINGTUN_VERSION"
}

# ed_build: cargo build --release in the repository root (the workspace's
# default members: target/release/encapd and target/release/encapd-bench).
ed_build() {
    ed_need_cargo
    ed_log "building: cargo build --release"
    (cd "$ED_ROOT" && cargo build --release) || ed_die "cargo build --release failed"
}

# ---------------------------------------------------------------------------
# Provenance: what code a result comes from

# ed_git ARGS...: git in this checkout, never rewriting the index (a plain
# `git status` may refresh it, which would make cargo re-run build.rs).
ed_git() { git -C "$ED_ROOT" --no-optional-locks "$@"; }

# ed_git_head: HEAD's full hash (empty outside a checkout).
ed_git_head() { ed_git rev-parse --verify -q HEAD 2>/dev/null || true; }

# ed_git_uncommitted: modified, staged and untracked files, one per line.
ed_git_uncommitted() { ed_git status --porcelain --untracked-files=all 2>/dev/null | cut -c4- || true; }

# ed_bin_commit BIN: the commit BIN says it was built from: its --version
# line ends in "(git COMMIT)", COMMIT being a full hash with "-dirty" when
# its sources differed from it, or "unknown" (build.rs). Prints
# "not reported" for a binary that does not say.
ed_bin_commit() {
    local v
    v=$("$1" --version 2>/dev/null | head -n 1) || true
    if [[ $v =~ \(git\ ([0-9a-f]{40}(-dirty)?|unknown)\)$ ]]; then
        printf '%s\n' "${BASH_REMATCH[1]}"
    else
        printf 'not reported\n'
    fi
}

# ed_under_runs DIR: true when DIR lies under this checkout's bench/runs/,
# where results are committed as evidence.
ed_under_runs() {
    local dir runs
    dir=$(realpath -m -- "$1")
    runs=$(realpath -m -- "$ED_ROOT/bench/runs")
    [[ $dir == "$runs"/* ]]
}

# ed_require_provenance BIN...: for a result written under bench/runs/: the
# checkout is clean and every BIN says it was built from HEAD without
# uncommitted changes. Otherwise dies, naming each problem; experiments go
# elsewhere (--out /tmp/...).
ed_require_provenance() {
    local head bin built problems=() dirty=()
    head=$(ed_git_head)
    [[ -n $head ]] || problems+=("$ED_ROOT is not a git checkout with a commit")
    mapfile -t dirty < <(ed_git_uncommitted)
    ((${#dirty[@]} == 0)) || problems+=("${#dirty[@]} uncommitted file(s): ${dirty[*]:0:8}")
    for bin in "$@"; do
        built=$(ed_bin_commit "$bin")
        if [[ $built == "not reported" ]]; then
            problems+=("$bin does not say which commit it was built from (its --version lacks \"(git COMMIT)\")")
        elif [[ -z $head || $built != "$head" ]]; then
            problems+=("$bin was built from '$built', not from HEAD ${head:-(none)} (rebuild: cargo build --release)")
        fi
    done
    ((${#problems[@]} == 0)) && return 0
    local p
    for p in "${problems[@]}"; do ed_warn "$p"; done
    ed_die "refusing to write under bench/runs/: a committed result must name a clean commit and binaries built from it; commit and rebuild, or write an experiment elsewhere with --out /tmp/DIR"
}

# ed_provenance_env BIN_KEY=BIN...: key=value lines recording the commit,
# the uncommitted files, and each binary's sha256 and build commit (keys
# <KEY>_sha256, <KEY>_build; "not found" when the binary is missing).
ed_provenance_env() {
    local files=() pair key bin
    mapfile -t files < <(ed_git_uncommitted)
    echo "git_head=$(ed_git_head)"
    echo "git_dirty_files=${#files[@]}"
    echo "git_uncommitted=${files[*]}"
    for pair in "$@"; do
        key=${pair%%=*}
        bin=${pair#*=}
        if [[ -x $bin ]]; then
            echo "${key}_sha256=$(sha256sum "$bin" | cut -d' ' -f1)"
            echo "${key}_build=$(ed_bin_commit "$bin")"
        else
            echo "${key}_sha256=not found"
        fi
    done
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

# _ed_ns_up NS...: create namespaces with loopback up, DAD and reverse-path
# filtering off (so links created in them inherit that).
_ed_ns_up() {
    local ns
    for ns in "$@"; do
        ed_ns_exists "$ns" && ed_die "namespace $ns already exists; pick another --prefix"
    done
    for ns in "$@"; do
        ip netns add "$ns"
        ed_sysctl "$ns" net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0 \
            net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0
        ip -n "$ns" link set lo up
    done
}

# _ed_nodes_up PREFIX: nodeA and nodeB (routers) and the underlay veth
# between them.
_ed_nodes_up() {
    local ns
    ed_ns_names "$1"
    _ed_ns_up "$NS_NODEA" "$NS_NODEB"
    for ns in "$NS_NODEA" "$NS_NODEB"; do
        ed_sysctl "$ns" net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1 net.ipv6.conf.default.forwarding=1
    done
    # Created inside nodeA with its peer placed directly in nodeB: nothing
    # ever appears in the root namespace.
    ip -n "$NS_NODEA" link add ul0 mtu "$ED_UL_MTU" type veth peer name ul0 netns "$NS_NODEB"
    ip -n "$NS_NODEB" link set ul0 mtu "$ED_UL_MTU"
    ip -n "$NS_NODEA" addr add "$ED_A_UL/24" dev ul0
    ip -n "$NS_NODEB" addr add "$ED_B_UL/24" dev ul0
    for ns in "$NS_NODEA" "$NS_NODEB"; do
        ip -n "$ns" link set ul0 up
        ed_sysctl "$ns" net.ipv4.conf.ul0.rp_filter=0
    done
}

# ed_script_help SCRIPT: the comment block at the top of SCRIPT (from its
# second line to `set -euo pipefail`), without the comment marks: every
# script's --help.
ed_script_help() { sed -n '2,/^set -euo/p' "$1" | sed -e '$d' -e 's/^# \{0,1\}//'; }

# ed_topo_up PREFIX: create the four namespaces and links. Fails (leaving the
# partial topology for the caller's cleanup) if a namespace already exists.
ed_topo_up() {
    local p=$1
    ed_check_prefix "$p"
    ed_ns_names "$p"
    _ed_ns_up "$NS_CTRA" "$NS_CTRB"
    _ed_nodes_up "$p"

    # Every veth is created inside a namespace with its peer placed directly
    # in the other one: nothing ever appears in the root namespace.
    ip -n "$NS_NODEA" link add vc0 type veth peer name eth0 netns "$NS_CTRA"
    ip -n "$NS_NODEB" link add vc0 type veth peer name eth0 netns "$NS_CTRB"

    # ctrA <-> nodeA
    ip -n "$NS_CTRA" addr add "$ED_CTRA_IP/24" dev eth0
    ip -n "$NS_CTRA" addr add "$ED_CTRA_IP6/64" dev eth0 nodad
    ip -n "$NS_NODEA" addr add "$ED_A_GW/24" dev vc0
    ip -n "$NS_NODEA" addr add "$ED_A_GW6/64" dev vc0 nodad
    # nodeB <-> ctrB
    ip -n "$NS_NODEB" addr add "$ED_B_GW/24" dev vc0
    ip -n "$NS_NODEB" addr add "$ED_B_GW6/64" dev vc0 nodad
    ip -n "$NS_CTRB" addr add "$ED_CTRB_IP/24" dev eth0
    ip -n "$NS_CTRB" addr add "$ED_CTRB_IP6/64" dev eth0 nodad

    for ns in "$NS_CTRA" "$NS_CTRB"; do ip -n "$ns" link set eth0 up; done
    for ns in "$NS_NODEA" "$NS_NODEB"; do
        ip -n "$ns" link set vc0 up
        ed_sysctl "$ns" net.ipv4.conf.vc0.rp_filter=0
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

# ed_topo_down PREFIX: kill every process left in our namespaces (every
# namespace whose name starts with PREFIX: the prefix is this run's own),
# delete them.
ed_topo_down() {
    local p=$1 ns pid pids
    ed_check_prefix "$p"
    for ns in $(ip netns list | awk -v p="$p" 'index($1, p) == 1 {print $1}'); do
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

# ---------------------------------------------------------------------------
# encapd

# encapd_write_configs DIR IO [WORKERS]: a.toml/b.toml and their peers files.
# VTEP MACs of the two nodes with the vxlan backend (what encapd would
# derive from their public IPs; written out so the configs say them).
ED_A_MAC=02:00:c6:12:00:01
ED_B_MAC=02:00:c6:12:00:02

# encapd_write_configs DIR IO [WORKERS] [BACKEND]: a.toml/b.toml and their
# peers files (BACKEND udp, the default, or vxlan).
encapd_write_configs() {
    local dir=$1 io=$2 workers=${3:-2} backend=${4:-udp}
    mkdir -p "$dir"
    _encapd_conf a "$ED_A_UL" "$ED_A_SUB" "$ED_A_SUB6" "$io" "$workers" "$backend" "$ED_A_MAC" >"$dir/a.toml"
    _encapd_conf b "$ED_B_UL" "$ED_B_SUB" "$ED_B_SUB6" "$io" "$workers" "$backend" "$ED_B_MAC" >"$dir/b.toml"
    _encapd_peers "$ED_B_SUB" "$ED_B_SUB6" "$ED_B_UL" "$backend" "$ED_B_MAC" >"$dir/peers-a.toml"
    _encapd_peers "$ED_A_SUB" "$ED_A_SUB6" "$ED_A_UL" "$backend" "$ED_A_MAC" >"$dir/peers-b.toml"
}

# _encapd_conf SIDE PUBLIC_IP SUBNET SUBNET6 IO WORKERS BACKEND VTEP_MAC
_encapd_conf() {
    local side=$1 vtep="" port=$ED_PORT
    if [[ $7 == vxlan ]]; then
        vtep="vtep_mac  = \"$8\""
        port=8472
    fi
    # subnet.env and the control socket beside the config (subnet-a.env,
    # a.sock), never in the host's /run. ED_DATAPLANE_EXTRA: more
    # [dataplane] lines, for experiments (e.g. "busy_poll_us = 50").
    cat <<EOF
[node]
public_ip = "$2"
subnet    = "$3"
subnet6   = "$4"
$vtep

[network]
cidr    = "$ED_NET"
cidr6   = "$ED_NET6"
backend = "$7"
port    = $port

[dataplane]
tun     = "$ED_TUN"
workers = $6
io      = "$5"
${ED_DATAPLANE_EXTRA:-}

[control]
source = "file"
peers  = "peers-$side.toml"
subnet_env = "subnet-$side.env"

[process]
control_socket = "$side.sock"
EOF
}

# _encapd_peers SUBNET SUBNET6 PUBLIC_IP BACKEND VTEP_MAC
_encapd_peers() {
    cat <<EOF
[[peer]]
subnet    = "$1"
subnet6   = "$2"
public_ip = "$3"
EOF
    if [[ $4 == vxlan ]]; then echo "vtep_mac  = \"$5\""; fi
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
