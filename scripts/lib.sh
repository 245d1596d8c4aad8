# shellcheck shell=bash
# Shared helpers for scripts/*.sh and bench/run.sh: logging, what the
# project needs from Debian (the one package list, by purpose) and from
# crates.io (cargo, cargo-deb), the release build, and each script's --help.
#
# Bash is kept for what bash is the right tool for: installing packages and
# short wrappers. The test environment (namespaces, the two-node topology,
# the fleet, traffic) is the encapd-testbed crate (tests/testbed), used by
# the tests and by encapd-bench; nothing here creates a namespace.
#
# Source it from a script that runs with `set -euo pipefail`.

ED_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

ed_log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
ed_warn() { printf '[%s] WARNING: %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
ed_die() { printf '[%s] ERROR: %s\n' "$(date +%H:%M:%S)" "$*" >&2; exit 1; }

ed_require_root() {
    [[ $(id -u) -eq 0 ]] || ed_die "must run as root (network namespaces); try: sudo $0"
}

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
# What a binary says about itself

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

# ed_script_help SCRIPT: the comment block at the top of SCRIPT (from its
# second line to `set -euo pipefail`), without the comment marks: every
# script's --help.
ed_script_help() { sed -n '2,/^set -euo/p' "$1" | sed -e '$d' -e 's/^# \{0,1\}//'; }
