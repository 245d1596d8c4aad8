#!/usr/bin/env bash
# The whole test suite, as the README and CI run it:
#   sudo scripts/test.sh
# Installs what is missing (the Debian packages listed in scripts/lib.sh,
# the rustfmt and clippy components), then: shellcheck, cargo fmt --check,
# cargo clippy -D warnings, every test of the workspace (unit, property,
# loopback, the replay of the committed fuzz findings, and the root-only
# end-to-end tests in network namespaces), the criterion benches once,
# `systemd-analyze verify` of the unit, and a CI-sized benchmark run.
#
# Root-only tests skip with a message when not run as root; with
# ENCAPD_REQUIRE_ROOT_TESTS=1 (what .ci/run sets) a skip is a failure, and
# so is any listed Debian package that is still missing after the install
# step.
set -euo pipefail

# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ED_ROOT"

require=${ENCAPD_REQUIRE_ROOT_TESTS:-0}
t_suite=$SECONDS
t_step=$SECONDS
log() { printf '[test.sh %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
# step NAME: log the previous step's duration, then NAME.
step() {
    ((SECONDS == t_suite)) || log "  ($((SECONDS - t_step)) s)"
    t_step=$SECONDS
    log "$*"
}

# verify_unit: `systemd-analyze verify` of dist/encapd.service. verify
# checks that every Exec binary exists; the unit names the install path
# /usr/local/bin/encapd, and installing there would change the machine
# outside the repository, so a copy is verified in which that path (and
# nothing else: checked) names the binary just built. Any output counts as
# a failure, warnings included.
verify_unit() {
    local dir unit out rc=0
    if ! command -v systemd-analyze >/dev/null; then
        ((require)) && ed_die "systemd-analyze missing (Debian systemd)"
        log "systemd-analyze missing; unit not verified"
        return 0
    fi
    dir=$(mktemp -d /tmp/encapd-unit.XXXXXX)
    unit=$dir/encapd.service
    sed "s|/usr/local/bin/encapd |$ENCAPD_BIN |" dist/encapd.service >"$unit"
    if ! diff <(sed 's|/usr/local/bin/encapd |BIN |' dist/encapd.service) <(sed "s|$ENCAPD_BIN |BIN |" "$unit") >/dev/null ||
        ! grep -q "^ExecStart=$ENCAPD_BIN run" "$unit"; then
        rm -rf "$dir"
        ed_die "dist/encapd.service: could not point ExecStart at $ENCAPD_BIN"
    fi
    out=$(systemd-analyze verify "$unit" 2>&1) || rc=$?
    rm -rf "$dir"
    if ((rc != 0)) || [[ -n $out ]]; then
        printf '%s\n' "$out" >&2
        ed_die "systemd-analyze verify dist/encapd.service failed (status $rc)"
    fi
}

step "prerequisites: Debian packages (scripts/lib.sh), rustfmt, clippy"
ed_need_cargo
if [[ $(id -u) -eq 0 ]]; then
    ed_need_pkgs @build @run @test
else
    absent=$(ed_missing_pkgs @build @run @test | tr '\n' ' ')
    [[ -z $absent ]] || log "not root: cannot install $absent; tests that need them skip"
fi
if ((require)); then
    # CI: the install step must have left nothing out.
    ed_verify_pkgs @build @run @test
fi
ed_need_rust_components

if command -v shellcheck >/dev/null; then
    step "shellcheck scripts/*.sh bench/*.sh .ci/run"
    shellcheck -x scripts/*.sh bench/*.sh .ci/run
fi
step "cargo fmt --check (workspace)"
cargo fmt --all -- --check
step "cargo clippy -D warnings (workspace, all targets)"
cargo clippy --workspace --all-targets --locked -- -D warnings
step "building (release, for the end-to-end tests)"
cargo build --release --locked
export ENCAPD_BIN="$PWD/target/release/encapd"
step "cargo test, workspace (ENCAPD_REQUIRE_ROOT_TESTS=$require)"
# The workspace holds encapd, encapd-bench (bench/tool) and the fuzz
# crate, whose tests replay fuzz/regressions/ and the seed corpus through
# every target without libFuzzer.
cargo test --release --locked --workspace --lib --bins --tests -- --test-threads=2
step "benchmarks, once each (criterion --test)"
cargo bench --locked --bench table --bench offload -- --test

step "systemd-analyze verify dist/encapd.service"
verify_unit

if [[ $(id -u) -eq 0 ]]; then
    step "benchmark suite, CI-sized (routing vs uring, short tests, both underlay profiles) -> report"
    out=$(mktemp -d /tmp/encapd-bench-ci.XXXXXX)
    target/release/encapd-bench run --quick --modes routing,uring --underlay veth,wire --reps 1 --short --no-build --out "$out"
    [[ -s $out/report.md && -s $out/results.csv ]] || { log "encapd-bench run wrote no report"; exit 1; }
    rm -rf "$out"
elif ((require)); then
    log "the benchmark check needs root"
    exit 1
fi
step "all tests passed in $((SECONDS - t_suite)) s"
