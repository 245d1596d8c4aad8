#!/usr/bin/env bash
# etcd control-plane benchmark (root; runs inside network namespaces it
# creates and removes): time from an etcd put to the published table change
# (median and p99 over 1,000 puts, read from /metrics' encapd_table_version)
# and the time for encapd to start with 5,000 leases in etcd.
#   sudo bench/etcd_propagation.sh            # ENCAPD_BENCH_PUTS / ENCAPD_BENCH_LEASES to change the counts
# Installs what it needs from scripts/lib.sh's list (the build packages,
# etcd-server, etcd-client).
set -euo pipefail

# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/../scripts/lib.sh"
cd "$ED_ROOT"

ed_require_root
ed_need_pkgs @build @run etcd-server etcd-client
ed_need_cargo
cargo build --release --locked >&2
ENCAPD_BIN="$PWD/target/release/encapd" ENCAPD_REQUIRE_ROOT_TESTS=1 \
    cargo test --release --locked --test e2e_etcd -- --ignored --exact bench_etcd_propagation --nocapture 2>&1 |
    grep -E '^(etcd put|start-up with|test result)'
