#!/usr/bin/env bash
# The whole test suite, as the README and CI run it:
#   sudo scripts/test.sh
# Installs missing Debian packages, then: cargo fmt --check, cargo clippy
# -D warnings, and every test (unit, property, loopback, and the root-only
# end-to-end tests in network namespaces).
#
# Root-only tests skip with a message when not run as root; with
# ENCAPD_REQUIRE_ROOT_TESTS=1 (what .ci/run sets) a skip is a failure.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

log() { printf '[test.sh %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# command:package pairs the tests use.
need=(ip:iproute2 ping:iputils-ping iperf3:iperf3 nft:nftables pgrep:procps ethtool:ethtool protoc:protobuf-compiler etcd:etcd-server etcdctl:etcd-client prometheus:prometheus promtool:prometheus)
missing=()
for pair in "${need[@]}"; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair#*:}")
done
if ((${#missing[@]})); then
    if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
        log "installing: ${missing[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    else
        log "missing packages (${missing[*]}); root-only tests may skip"
    fi
fi
if ! command -v cargo >/dev/null; then
    for c in "$HOME/.cargo/bin/cargo" /usr/local/cargo/bin/cargo; do
        [[ -x $c ]] && PATH="$(dirname "$c"):$PATH" && break
    done
fi
command -v cargo >/dev/null || { log "cargo not found"; exit 1; }
rustup component list --installed 2>/dev/null | grep -q '^rustfmt' || rustup component add rustfmt clippy >/dev/null 2>&1 || true

log "cargo fmt --check"
cargo fmt --all -- --check
log "cargo clippy -D warnings"
cargo clippy --all-targets --locked -- -D warnings
log "building (release, for the end-to-end tests)"
cargo build --release --locked
export ENCAPD_BIN="$PWD/target/release/encapd"
log "cargo test (ENCAPD_REQUIRE_ROOT_TESTS=${ENCAPD_REQUIRE_ROOT_TESTS:-0})"
cargo test --release --locked --lib --bins --tests -- --test-threads=2
log "benchmarks, once each (criterion --test)"
cargo bench --locked --bench table --bench offload -- --test
if [[ $(id -u) -eq 0 ]]; then
    log "benchmark suite, CI-sized (routing vs uring, short tests) -> report"
    out=$(mktemp -d /tmp/encapd-bench-ci.XXXXXX)
    bench/run.sh --quick --modes routing,uring --reps 1 --short --no-build --out "$out"
    [[ -s $out/report.md && -s $out/results.csv ]] || { log "bench/run.sh wrote no report"; exit 1; }
    rm -rf "$out"
elif [[ ${ENCAPD_REQUIRE_ROOT_TESTS:-0} == 1 ]]; then
    log "the benchmark check needs root"; exit 1
fi
log "all tests passed"
