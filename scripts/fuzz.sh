#!/usr/bin/env bash
# Runs the cargo-fuzz targets in fuzz/ (see fuzz/README.md):
#   scripts/fuzz.sh [--merge] [SECONDS_PER_TARGET] [TARGET...]
#   scripts/fuzz.sh --replay       # run fuzz/regressions/ and the seeds once
# Default: every target for 60 s each, one after the other, at low priority.
#
# New corpus entries go to a scratch directory (fuzz/scratch/TARGET, or
# $FUZZ_SCRATCH/TARGET), kept between runs and ignored by git; the committed
# seeds in fuzz/corpus/TARGET are only read. With --merge, the scratch
# entries that add coverage are merged into fuzz/corpus/TARGET afterwards.
#
# --replay runs each saved finding in fuzz/regressions/ (and every seed)
# through its target's checks and exits 1 while any of them still fails (0
# once all are fixed). It needs neither cargo-fuzz nor a sanitizer build:
# it is `cargo test -p encapd-fuzz --test replay`, which scripts/test.sh
# runs too.
#
# Prints one summary line per target (executions, seconds, crash file if
# any) and exits 1 if any target found a crash, timeout or OOM; the input
# is in fuzz/artifacts/TARGET/.
#
# Environment: FUZZ_SANITIZER (address by default; none is ~2x faster, and
# the code under test is safe Rust), FUZZ_JOBS (targets run at once, 1),
# FUZZ_ARGS (extra libFuzzer flags).
set -euo pipefail

# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ED_ROOT"

log() { printf '[fuzz.sh %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
usage() {
    sed -n '2,4p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

merge=0
replay=0
seconds=60
seconds_given=0
targets=()
for arg in "$@"; do
    case $arg in
        --merge) merge=1 ;;
        --replay) replay=1 ;;
        -h | --help) usage ;;
        -*) log "unknown option $arg"; usage ;;
        *)
            if [[ ${#targets[@]} -eq 0 && $seconds_given -eq 0 && $arg =~ ^[0-9]+$ ]]; then
                seconds=$arg
                seconds_given=1
            else
                targets+=("$arg")
            fi
            ;;
    esac
done

ed_need_cargo
if ((replay)); then
    ed_need_pkgs @build
    exec cargo test --release --locked -p encapd-fuzz --test replay -- --nocapture
fi
ed_need_pkgs @build @fuzz
if ! cargo fuzz --version >/dev/null 2>&1; then
    log "installing cargo-fuzz (about 2 minutes)"
    cargo install --locked cargo-fuzz
fi
# cargo-fuzz passes -Z sanitizer flags; let the stable toolchain accept them.
export RUSTC_BOOTSTRAP=1
# The workspace's release profile uses LTO, which gains a fuzzer nothing and
# is known to break sanitizer-coverage links (cargo-fuzz issue 384).
export CARGO_PROFILE_RELEASE_LTO=false

all=$(cargo fuzz list --fuzz-dir fuzz)
if [[ ${#targets[@]} -eq 0 ]]; then
    mapfile -t targets <<<"$all"
fi
for t in "${targets[@]}"; do
    grep -qx -- "$t" <<<"$all" || { log "no fuzz target named $t (have: ${all//$'\n'/ })"; exit 2; }
done

sanitizer=${FUZZ_SANITIZER:-address}
scratch_root=${FUZZ_SCRATCH:-fuzz/scratch}
jobs=${FUZZ_JOBS:-1}
# The fuzz binaries need the libfuzzer feature (off for the workspace's
# plain builds and tests).
build=(--fuzz-dir fuzz --sanitizer "$sanitizer" --features libfuzzer)

log "building ${#targets[@]} target(s) (sanitizer: $sanitizer)"
for t in "${targets[@]}"; do
    nice cargo fuzz build "${build[@]}" "$t"
done

logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT

# Runs one target; its libFuzzer output goes to $logs/TARGET.log.
run_one() {
    local t=$1 scratch="$scratch_root/$1" seeds="fuzz/corpus/$1" artifacts="fuzz/artifacts/$1"
    mkdir -p "$scratch" "$seeds" "$artifacts"
    ls "$artifacts" >"$logs/$t.before"
    local rc=0
    # The first corpus directory is the one libFuzzer writes to.
    # shellcheck disable=SC2086
    nice cargo fuzz run "${build[@]}" "$t" "$scratch" "$seeds" -- \
        -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 -max_len=4096 \
        -print_final_stats=1 ${FUZZ_ARGS:-} >"$logs/$t.log" 2>&1 || rc=$?
    echo "$rc" >"$logs/$t.rc"
    if ((merge)) && [[ $rc -eq 0 ]]; then
        # shellcheck disable=SC2086
        nice cargo fuzz run "${build[@]}" "$t" "$seeds" "$scratch" -- -merge=1 -max_len=4096 -rss_limit_mb=2048 ${FUZZ_ARGS:-} \
            >"$logs/$t.merge.log" 2>&1 || log "$t: merge failed (see above)"
    fi
}

log "fuzzing: ${targets[*]} for ${seconds}s each, $jobs at a time"
running=0
for t in "${targets[@]}"; do
    run_one "$t" &
    running=$((running + 1))
    if ((running >= jobs)); then
        wait -n || true
        running=$((running - 1))
    fi
done
wait

found=0
for t in "${targets[@]}"; do
    out="$logs/$t.log"
    rc=$(cat "$logs/$t.rc")
    runs=$(grep -o 'stat::number_of_executed_units: [0-9]*' "$out" | tail -1 | grep -o '[0-9]*$' || true)
    [[ -n $runs ]] || runs=$(grep -oE '^Done [0-9]+ runs' "$out" | grep -oE '[0-9]+' || echo '?')
    secs=$(grep -oE '^Done [0-9]+ runs in [0-9]+' "$out" | grep -oE '[0-9]+$' || echo "$seconds")
    corpus=$(grep -oE 'corp: [0-9]+/[0-9]+[a-zA-Z]*' "$out" | tail -1 | cut -d' ' -f2 || true)
    new=$(comm -13 "$logs/$t.before" <(ls "fuzz/artifacts/$t") | sed "s|^|fuzz/artifacts/$t/|" | tr '\n' ' ')
    merged=""
    if ((merge)) && [[ -f $logs/$t.merge.log ]]; then
        merged=", merged $(grep -oE 'MERGE-OUTER: [0-9]+ new files' "$logs/$t.merge.log" | grep -oE '[0-9]+' || echo 0) new seed(s)"
    fi
    if [[ $rc -ne 0 || -n $new ]]; then
        found=1
        printf 'fuzz.sh: %-17s FINDING after %s runs: %s\n' "$t" "$runs" "${new:-(no artifact)}"
        if grep -q "panicked at" "$out"; then
            # The panic location and its message (the line after it).
            grep -m1 -A1 "panicked at" "$out" | sed 's/^/          /'
        else
            grep -m1 -E "ERROR: libFuzzer|SUMMARY:|error" "$out" | sed 's/^/          /' || echo "          exit code $rc"
        fi
        cp "$out" "fuzz/artifacts/$t/last-finding.log"
        printf '          full log: fuzz/artifacts/%s/last-finding.log\n' "$t"
    else
        printf 'fuzz.sh: %-17s ok: %s runs in %ss, corpus %s%s\n' "$t" "$runs" "$secs" "${corpus:-?}" "$merged"
    fi
done
exit "$found"
