#!/usr/bin/env bash
# The whole test suite, as the README and CI run it:
#   sudo scripts/test.sh
# Installs what is missing (the Debian packages listed in scripts/lib.sh,
# the rustfmt and clippy components, boringtun-cli from crates.io), then
# runs shellcheck, cargo fmt --check, cargo clippy -D warnings, the Debian
# package (scripts/package.sh, with lintian), every test of the workspace
# (unit, property, loopback, the replay of the committed fuzz findings,
# the doctests, and the root-only end-to-end tests in network
# namespaces), the criterion benches once,
# `systemd-analyze verify` of the unit, and a CI-sized benchmark run.
#
# Root-only tests skip with a message when not run as root; with
# ENCAPD_REQUIRE_ROOT_TESTS=1 (what .ci/run sets) a skip is a failure, and
# so is any listed Debian package that is still missing after the install
# step.
#
# Where the time goes: the binaries and the test binaries are built once,
# in one cargo invocation (release without LTO or debug info: the build
# step says why), and run ENCAPD_TEST_JOBS (default 3) at a time, each
# timed, with clippy and the CI-sized benchmark as jobs of the same pool
# (run_tests); every step is timed too, and a
# table of both is printed at the end of every run, passed or failed
# (also written to $ENCAPD_TIMING_OUT when set). A failing test binary
# does not stop the others: the run fails at the end, naming it.
#
# ENCAPD_TEST_THREADS (default 4) is each binary's --test-threads;
# ENCAPD_TEST_TOPOLOGIES (default 2, see tests/testbed/src/netns.rs) bounds
# how many topologies one binary runs at once, so the extra threads go to
# tests that wait rather than to more namespaces moving data.
set -euo pipefail

# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ED_ROOT"

require=${ENCAPD_REQUIRE_ROOT_TESTS:-0}
t_suite=$SECONDS
t_step=$SECONDS
step_name=""
# The timing table: one "SECONDS<TAB>WHAT<TAB>NOTE" row per step and per
# test binary, printed by report_times on exit.
TIMES=()
FAILED=()
TESTS_PASSED=0
TESTS_FAILED=0
TESTS_IGNORED=0
log() { printf '[test.sh %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
# end_step: records the running step's duration.
end_step() {
    [[ -n $step_name ]] || return 0
    log "  ($((SECONDS - t_step)) s)"
    TIMES+=("$((SECONDS - t_step))"$'\t'"$step_name"$'\t')
    step_name=""
}
# step NAME: ends the previous step, then starts NAME.
step() {
    end_step
    t_step=$SECONDS
    step_name=$*
    log "$*"
}
# report_times: the table of where the time went, at the end of every run.
report_times() {
    local rc=$? row secs what note
    end_step
    {
        printf '\n== where the time went (s; load average at the end: %s)\n' "$(cut -d' ' -f1-3 /proc/loadavg)"
        printf '%6s  %-58s %s\n' "s" "step / test binary" "tests"
        for row in "${TIMES[@]}"; do
            IFS=$'\t' read -r secs what note <<<"$row"
            printf '%6s  %-58s %s\n' "$secs" "$what" "$note"
        done
        printf '%6s  %-58s\n' "$((SECONDS - t_suite))" "total"
        printf 'tests: %d passed, %d failed, %d skipped\n' "$TESTS_PASSED" "$TESTS_FAILED" "$TESTS_IGNORED"
    } | tee ${ENCAPD_TIMING_OUT:+"$ENCAPD_TIMING_OUT"} >&2
    return "$rc"
}
trap report_times EXIT

# test_binaries: "KIND NAME DIR EXECUTABLE" per test binary of the
# workspace (built here if need be), from cargo's JSON messages. DIR is
# the package's directory, where cargo would run it. Only test harnesses
# (profile "test": true): the plain binaries the integration tests run
# (encapd, encapd-bench) are artifacts of the same build and would reject
# the harness's arguments.
test_binaries() {
    cargo test --release --locked --workspace --lib --bins --tests --no-run \
        --message-format=json-render-diagnostics |
        grep '"executable":"/' |
        grep -E '"profile":\{[^}]*"test":true' |
        sed -E 's/.*"manifest_path":"([^"]*)\/Cargo.toml".*"target":\{"kind":\["([a-z-]+)"\][^}]*"name":"([^"]+)".*"executable":"([^"]+)".*/\2 \3 \1 \4/'
}

# threads_for NAME: --test-threads for one binary. ENCAPD_TEST_THREADS
# (default 4), except e2e_wg_interop: its four rekey tests each wait out
# WireGuard's real 120 s timer (an echo a second for 150 s), so all of its
# tests run at once and the transfers overlap that wait.
threads_for() {
    case $1 in
    e2e_wg_interop) echo 12 ;;
    *) echo "${ENCAPD_TEST_THREADS:-4}" ;;
    esac
}

# run_job LABEL RESULT DIR CMD...: runs CMD in DIR (a test binary, as
# cargo would run it, or the benchmark check) with its output in
# RESULT.log, printed whole when it ends (so jobs running side by side do
# not interleave their lines), and writes "SECONDS PASSED FAILED IGNORED
# STATUS" to RESULT (the counts from libtest's summary line, 0 without).
run_job() {
    local label=$1 res=$2 dir=$3 rc=0 t0=$SECONDS counts p=0 f=0 i=0
    shift 3
    (cd "$dir" && "$@") >"$res.log" 2>&1 || rc=$?
    counts=$(grep -E '^test result: ' "$res.log" | tail -n 1 || true)
    if [[ $counts =~ ([0-9]+)\ passed ]]; then p=${BASH_REMATCH[1]}; fi
    if [[ $counts =~ ([0-9]+)\ failed ]]; then f=${BASH_REMATCH[1]}; fi
    if [[ $counts =~ ([0-9]+)\ ignored ]]; then i=${BASH_REMATCH[1]}; fi
    {
        flock 9
        log "$label ended after $((SECONDS - t0)) s, status $rc; its output:"
        cat "$res.log" >&2
    } 9>"${res%/*}/print.lock"
    echo "$((SECONDS - t0)) $p $f $i $rc" >"$res"
}

# ci_benchmark: the CI-sized benchmark run (routing and uring, 1 s tests,
# both underlay profiles): checks that the harness brings every profile
# up, measures and writes its report. Its figures mean nothing here (1 s
# tests, beside the test binaries); the committed runs are the evidence.
ci_benchmark() {
    local out rc=0
    out=$(mktemp -d /tmp/encapd-bench-ci.XXXXXX)
    "$ED_ROOT/target/release/encapd-bench" run --quick --modes routing,uring --underlay veth,wire --reps 1 --short --no-build --out "$out" || rc=$?
    if ((rc == 0)) && ! [[ -s $out/report.md && -s $out/results.csv ]]; then
        echo "encapd-bench run wrote no report"
        rc=1
    fi
    rm -rf "$out"
    return "$rc"
}

# ci_clippy: cargo clippy -D warnings on the workspace, all targets. A
# check build of its own (target/debug), so it runs in the pool beside the
# test binaries instead of before the release build.
ci_clippy() {
    cargo clippy --workspace --all-targets --locked -- -D warnings
}

# EXTRA_JOBS: the pool's jobs that are not test binaries, "ID|LABEL|FUNCTION";
# clippy goes first (it is the longest of the CPU-bound ones), the
# benchmark check last (root only: added by run_tests).
EXTRA_JOBS=("clippy|cargo clippy -D warnings (workspace, all targets)|ci_clippy")

# LONG_FIRST: the binaries that take longest (the timing table of a CI
# run), started first so that the short ones fill in beside them; the
# order changes only the wall time, never what runs.
LONG_FIRST=(e2e_wg_interop e2e_datapath e2e_takeover e2e_faults e2e_offload e2e_systemd)

# run_tests: every test binary (BINARIES: "KIND NAME DIR EXE" each), clippy
# and, as root, the benchmark check, ENCAPD_TEST_JOBS (default 3) at a time,
# longest first; then adds each one's time and counts to the table in
# cargo's order. A failure is recorded, not fatal. Side by side is safe:
# every namespace, TUN device and socket a test or the benchmark makes
# is named by its process (tests/testbed/src/netns.rs), each binary
# bounds its own topologies (ENCAPD_TEST_TOPOLOGIES), and what a test
# measures under load is printed, not asserted.
run_tests() {
    local jobs=${ENCAPD_TEST_JOBS:-3} res order=() show=() extra=("${EXTRA_JOBS[@]}") b n e kind name dir exe secs p f i rc
    if [[ $(id -u) -eq 0 ]]; then extra+=("bench|CI-sized benchmark (routing, uring; veth, wire)|ci_benchmark"); fi
    res=$(mktemp -d /tmp/encapd-test-results.XXXXXX)
    order+=("${extra[0]%%|*}")
    for name in "${LONG_FIRST[@]}"; do
        for n in "${!BINARIES[@]}"; do
            read -r _ b _ _ <<<"${BINARIES[n]}"
            [[ $b == "$name" ]] && order+=("$n")
        done
    done
    for n in "${!BINARIES[@]}"; do
        read -r _ b _ _ <<<"${BINARIES[n]}"
        [[ " ${LONG_FIRST[*]} " == *" $b "* ]] || order+=("$n")
    done
    for e in "${extra[@]:1}"; do order+=("${e%%|*}"); done
    for n in "${order[@]}"; do
        while (($(jobs -rp | wc -l) >= jobs)); do wait -n || true; done
        if [[ ! $n =~ ^[0-9]+$ ]]; then
            for e in "${extra[@]}"; do
                IFS='|' read -r _ name exe <<<"$e"
                [[ ${e%%|*} == "$n" ]] || continue
                log "$name started"
                run_job "$name" "$res/$n" "$ED_ROOT" "$exe" &
            done
            continue
        fi
        read -r kind name dir exe <<<"${BINARIES[n]}"
        log "test binary $name started"
        # e2e_sched says which kernel-dependent branch it took: keep it in the log.
        show=()
        if [[ $name == e2e_sched ]]; then show=(--show-output); fi
        run_job "test binary $name ($kind)" "$res/$n" "$dir" "$exe" --test-threads="$(threads_for "$name")" "${show[@]}" &
    done
    wait
    for n in "${!BINARIES[@]}" "${extra[@]}"; do
        if [[ ! $n =~ ^[0-9]+$ ]]; then
            IFS='|' read -r n name _ <<<"$n"
            kind=check
        else
            read -r kind name _ _ <<<"${BINARIES[n]}"
        fi
        secs='?' p=0 f=0 i=0 rc=1
        [[ -s $res/$n ]] && read -r secs p f i rc <"$res/$n"
        TESTS_PASSED=$((TESTS_PASSED + p))
        TESTS_FAILED=$((TESTS_FAILED + f))
        TESTS_IGNORED=$((TESTS_IGNORED + i))
        TIMES+=("$secs"$'\t'"  $name ($kind)"$'\t'"$p passed, $f failed, $i ignored")
        if ((rc != 0)); then
            FAILED+=("$name ($kind)")
            ((f > 0)) || TESTS_FAILED=$((TESTS_FAILED + 1))
        fi
    done
    rm -rf "$res"
}

# verify_unit: `systemd-analyze verify` of dist/encapd.service. verify
# checks that every Exec binary exists; the unit names the package's path
# /usr/sbin/encapd, and installing there would change the machine outside
# the repository, so a copy is verified in which that path (and nothing
# else: checked) names the binary just built. It also runs `man` for the
# unit's Documentation=man:encapd(8): MANPATH points at the pages
# encapd-dist generates, as the package installs them. Any output counts
# as a failure, warnings included.
verify_unit() {
    local dir unit out rc=0
    if ! command -v systemd-analyze >/dev/null; then
        ((require)) && ed_die "systemd-analyze missing (Debian systemd)"
        log "systemd-analyze missing; unit not verified"
        return 0
    fi
    dir=$(mktemp -d /tmp/encapd-unit.XXXXXX)
    unit=$dir/encapd.service
    sed "s|/usr/sbin/encapd |$ENCAPD_BIN |" dist/encapd.service >"$unit"
    if ! diff <(sed 's|/usr/sbin/encapd |BIN |' dist/encapd.service) <(sed "s|$ENCAPD_BIN |BIN |" "$unit") >/dev/null ||
        ! grep -q "^ExecStart=$ENCAPD_BIN run" "$unit"; then
        rm -rf "$dir"
        ed_die "dist/encapd.service: could not point ExecStart at $ENCAPD_BIN"
    fi
    mkdir -p "$dir/man/man8"
    target/release/encapd-dist man "$dir/man/man8" || ed_die "encapd-dist man failed"
    out=$(MANPATH="$dir/man" systemd-analyze verify "$unit" 2>&1) || rc=$?
    rm -rf "$dir"
    if ((rc != 0)) || [[ -n $out ]]; then
        printf '%s\n' "$out" >&2
        ed_die "systemd-analyze verify dist/encapd.service failed (status $rc)"
    fi
}

step "prerequisites: Debian packages (scripts/lib.sh), rustfmt, clippy, boringtun-cli"
ed_need_cargo
if [[ $(id -u) -eq 0 ]]; then
    ed_need_pkgs @build @run @test @package
else
    absent=$(ed_missing_pkgs @build @run @test @package | tr '\n' ' ')
    [[ -z $absent ]] || log "not root: cannot install $absent; tests that need them skip"
fi
if [[ $(id -u) -eq 0 ]] || ((require)); then
    # boringtun-cli (crates.io), the second userspace WireGuard peer of
    # tests/e2e_wg_peers.rs; found there via wg_peer::tools_dir.
    ed_need_boringtun
fi
if ((require)); then
    # CI: the install step must have left nothing out.
    ed_verify_pkgs @build @run @test @package
fi
ed_need_rust_components

if command -v shellcheck >/dev/null; then
    step "shellcheck scripts/*.sh bench/*.sh .ci/run"
    shellcheck -x scripts/*.sh bench/*.sh .ci/run
fi
step "fuzz/gen_corpus.py: compiles, and writes exactly the committed seeds"
# The one Python file of the repository: byte-compiled with warnings as
# errors, then run on a copy of the corpus, which must come out unchanged
# (a seed edited by hand, or a generator change not committed with its
# seeds, fails here).
corpus_copy=$(mktemp -d /tmp/encapd-corpus.XXXXXX)
mkdir "$corpus_copy/fuzz"
cp fuzz/gen_corpus.py "$corpus_copy/fuzz/"
cp -r fuzz/corpus "$corpus_copy/fuzz/corpus"
python3 -W error -m py_compile "$corpus_copy/fuzz/gen_corpus.py"
python3 -W error "$corpus_copy/fuzz/gen_corpus.py" >/dev/null
diff -r fuzz/corpus "$corpus_copy/fuzz/corpus" || ed_die "fuzz/gen_corpus.py does not write the committed seeds (diff above)"
rm -rf "$corpus_copy"
step "cargo fmt --check (workspace)"
cargo fmt --all -- --check
step "building (release: encapd, encapd-bench and every test binary)"
# One build for the binaries and the tests: `cargo build --release` alone
# resolves features without the dev-dependencies and `cargo test` with
# them, so the two built encapd, etcd-client, tonic, tun-rs, serde, regex
# and some 25 more crates twice (seen in a CI log: 32 crates compiled
# again by the test build right after the release build).
#
# The tests' flavour of the release profile: opt-level 3 as shipped, but
# no thin LTO, no debug info and 16 codegen units. On this 2-core machine
# that cut the cold build from 621-915 s to 198 s (measured 2026-12-07,
# `cargo build --release --locked --workspace --all-targets` into an
# empty target directory). Its binaries are as fast for what the tests
# check; the benchmarks and the package an operator installs are built
# by bench/ and scripts/package.sh with the profile in Cargo.toml, and
# ENCAPD_TEST_SHIPPED_PROFILE=1 makes this suite use that one too. The
# variables stay set for the cargo calls below (test binaries, doctests,
# benches), so nothing is built twice.
if [[ ${ENCAPD_TEST_SHIPPED_PROFILE:-0} != 1 ]]; then
    export CARGO_PROFILE_RELEASE_LTO=off CARGO_PROFILE_RELEASE_DEBUG=0 CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16
fi
cargo build --release --locked --workspace --all-targets
export ENCAPD_BIN="$PWD/target/release/encapd"
step "Debian packages: scripts/package.sh (lintian), and revision 2 for the upgrade tests"
# tests/e2e_package.rs and tests/e2e_systemd.rs install them (root only);
# the build above is reused. Revision 2 first, elsewhere: every cargo-deb
# run deletes the other versions' packages from target/debian/.
if [[ $(id -u) -eq 0 ]] || { [[ -z $(ed_missing_pkgs @package) ]] && cargo deb --version >/dev/null 2>&1; }; then
    ENCAPD_DEB_UPGRADE=$(scripts/package.sh --fast --no-build --no-lintian --revision 2 --out target/debian-upgrade)
    ENCAPD_DEB=$(scripts/package.sh --fast --no-build)
    export ENCAPD_DEB ENCAPD_DEB_UPGRADE
elif ((require)); then
    ed_die "cannot build the Debian package: not root, and cargo-deb or a package of @package is missing"
else
    log "not root, and cargo-deb or a package of @package is missing: no package built; the package tests skip"
fi
mapfile -t BINARIES < <(test_binaries)
((${#BINARIES[@]} > 0)) || ed_die "cargo listed no test binary"
step "cargo test, workspace, ${ENCAPD_TEST_JOBS:-3} binaries at a time, with clippy and the CI-sized benchmark (ENCAPD_REQUIRE_ROOT_TESTS=$require)"
# The workspace holds encapd, encapd-testbed, encapd-bench (bench/tool)
# and the fuzz crate, whose tests replay fuzz/regressions/ and the seed
# corpus through every target without libFuzzer.
if [[ $(id -u) -ne 0 ]] && ((require)); then
    log "the benchmark check needs root"
    FAILED+=("benchmark check (not root)")
fi
run_tests
step "doctests (workspace)"
doc_out=$(mktemp /tmp/encapd-doctest-out.XXXXXX)
doc_rc=0
cargo test --release --locked --workspace --doc 2>&1 | tee "$doc_out" || doc_rc=$?
while read -r line; do
    if [[ $line =~ ([0-9]+)\ passed ]]; then TESTS_PASSED=$((TESTS_PASSED + BASH_REMATCH[1])); fi
    if [[ $line =~ ([0-9]+)\ failed ]]; then TESTS_FAILED=$((TESTS_FAILED + BASH_REMATCH[1])); fi
    if [[ $line =~ ([0-9]+)\ ignored ]]; then TESTS_IGNORED=$((TESTS_IGNORED + BASH_REMATCH[1])); fi
done < <(grep -E '^test result: ' "$doc_out" || true)
rm -f "$doc_out"
((doc_rc == 0)) || FAILED+=("doctests")
step "benchmarks, once each (criterion --test)"
cargo bench --locked --bench table --bench offload -- --test

step "systemd-analyze verify dist/encapd.service"
verify_unit

end_step
if ((${#FAILED[@]})); then
    log "FAILED: ${FAILED[*]}"
    exit 1
fi
log "all tests passed in $((SECONDS - t_suite)) s"
