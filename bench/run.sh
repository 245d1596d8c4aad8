#!/usr/bin/env bash
# Side-by-side benchmark of encapd against plain routing and kernel VXLAN,
# all in one run on one namespace topology (see bench/README.md).
#
# Usage: bench/run.sh [--quick] [--short] [--reps N] [--modes LIST] [--out DIR]
#                     [--workers N] [--ctr-mtu N] [--no-build] [--sockperf]
#                     [--wait-quiet SECS] [--baseline REV]
#
#   --quick          1 repetition (unless --reps), short tests: TCP 2 s,
#                    UDP 1 s, latency 1 s per load (all modes: < 3 min)
#   --short          shortest tests (TCP, UDP, latency 1 s each), for a
#                    CI-sized check, e.g. --quick --modes routing,uring --short
#   --reps N         repetitions (default 3); modes are interleaved within
#                    each repetition, in the listed order in odd ones and in
#                    reverse in even ones (routing, ..., uring, then uring,
#                    ..., routing), so that no mode always runs right after
#                    the same other mode
#   --modes LIST     comma-separated subset of routing, vxlan-kernel,
#                    classic, mmsg-nooffload, mmsg, uring-nooffload, uring
#                    (the udp backend against routing and kernel VXLAN),
#                    encapd-vxlan, encapd-vxlan-mixed (the vxlan backend)
#                    (default: all nine; `vxlan` is accepted for vxlan-kernel);
#                    on request only, settings under evaluation:
#                    uring-trust (ingress_checksum = "trust-outer"),
#                    uring-nopin (cpus = []: workers not pinned),
#                    uring-crossed (nodeB's workers pinned in the reverse
#                    order of nodeA's), uring-batchN (batch = N, 1-256:
#                    N TUN read buffers in flight per worker instead of 64),
#                    uring-nocoop (cooperative task work off; the report
#                    divides it by uring-base), uring-slice
#                    (sched = "short-slice": a woken worker preempts the
#                    application on its CPU), uring-kernel
#                    (kernel_path = "tc": IPv4 between the nodes carried by
#                    encapd's eBPF programs, the workers for the rest),
#                    encapd-vxlan-kernel and encapd-vxlan-mixed-kernel
#                    (encapd-vxlan and encapd-vxlan-mixed with
#                    kernel_path = "tc" on every encapd)
#   --out DIR        result directory (default bench/runs/<UTC YYYY-MM-DD-HHMM>-<host>);
#                    under bench/runs/ only from a clean checkout with
#                    binaries built from HEAD (else exit 1): experiments
#                    go elsewhere, e.g. --out /tmp/bench
#   --workers N      encapd [dataplane] workers (default 2)
#   --ctr-mtu N      use this container MTU in every mode instead of the
#                    flannel-style per-backend MTU (1500 / 1450 / 1472)
#   --no-build       do not run `cargo build --release` first
#   --sockperf       also run a sockperf UDP ping-pong (back to back) per mode
#   --wait-quiet S   first wait up to S seconds for the 1-minute load average
#                    to drop below 1.0 (the load is recorded either way)
#   --baseline REV   also run encapd as built from git revision REV (say,
#                    the commit before a refactor) as modes mmsg-base and
#                    uring-base, interleaved with mmsg and uring: a same-run
#                    before/after comparison (report: "After ÷ before").
#                    REV is built in a temporary clean worktree into
#                    target/baseline/<commit>/ (kept for later runs); config
#                    fields REV does not know yet are left out of its
#                    configs, as its own `encapd check` names them. Default
#                    modes with --baseline: vxlan-kernel mmsg-base mmsg
#                    uring-base uring.
#
# Exit status: 0 when every mode came up and every test produced a value;
# 3 when the run completed but a mode's setup failed or a test recorded NA
# (results are written either way); 1 when it cannot run at all; 2 usage.
#
# Provenance: env.txt and report.md record the commit, the uncommitted
# files and the sha256 of encapd and encapd-bench with the commit each says
# it was built from (`--version`).
#
# Run as root. Everything runs inside network namespaces this script creates
# and removes on exit; nothing is configured in the root namespace.
set -euo pipefail

# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/../scripts/lib.sh"

# vxlan-kernel: kernel VXLAN <-> kernel VXLAN, both configured as flannel
# configures flannel.1 (it was called `vxlan` before the vxlan backend).
# encapd-vxlan: encapd's vxlan backend on both nodes; encapd-vxlan-mixed:
# encapd's vxlan backend on nodeA, a flannel.1-style kernel VTEP on nodeB.
ALL_MODES=(routing vxlan-kernel classic mmsg-nooffload mmsg uring-nooffload uring encapd-vxlan encapd-vxlan-mixed)
# Modes run only when asked for by name: settings under evaluation.
EXTRA_MODES=(uring-trust uring-nopin uring-crossed uring-nocoop uring-slice uring-kernel encapd-vxlan-kernel encapd-vxlan-mixed-kernel)
# mmsg and uring as built from --baseline REV.
BASE_MODES=(mmsg-base uring-base)
LOADS=(10 50 90)
REPS=3
REPS_SET=0
QUICK=0
SHORT=0
MODES_ARG=""
OUT=""
WORKERS=2
CTR_MTU=""
BUILD=1
SOCKPERF=0
WAIT_QUIET=0
BASELINE=""
INVOCATION="bench/run.sh $*"

usage() {
    ed_script_help "${BASH_SOURCE[0]}" >&2
    exit "${1:-2}"
}

while (($#)); do
    case $1 in
        --reps) REPS=${2:?--reps needs a number}; REPS_SET=1; shift 2 ;;
        --reps=*) REPS=${1#*=}; REPS_SET=1; shift ;;
        --quick) QUICK=1; shift ;;
        --short) SHORT=1; shift ;;
        --modes) MODES_ARG=${2:?--modes needs a list}; shift 2 ;;
        --modes=*) MODES_ARG=${1#*=}; shift ;;
        --out) OUT=${2:?--out needs a directory}; shift 2 ;;
        --out=*) OUT=${1#*=}; shift ;;
        --workers) WORKERS=${2:?--workers needs a number}; shift 2 ;;
        --workers=*) WORKERS=${1#*=}; shift ;;
        --ctr-mtu) CTR_MTU=${2:?--ctr-mtu needs a number}; shift 2 ;;
        --ctr-mtu=*) CTR_MTU=${1#*=}; shift ;;
        --no-build) BUILD=0; shift ;;
        --sockperf) SOCKPERF=1; shift ;;
        --wait-quiet) WAIT_QUIET=${2:?--wait-quiet needs seconds}; shift 2 ;;
        --wait-quiet=*) WAIT_QUIET=${1#*=}; shift ;;
        --baseline) BASELINE=${2:?--baseline needs a git revision}; shift 2 ;;
        --baseline=*) BASELINE=${1#*=}; shift ;;
        -h | --help) usage 0 ;;
        *) echo "unknown argument: $1" >&2; usage 2 ;;
    esac
done

usage_error() { echo "bench/run.sh: $*" >&2; exit 2; }
[[ $REPS =~ ^[1-9][0-9]*$ ]] || usage_error "--reps must be a positive integer"
[[ $WORKERS =~ ^[1-9][0-9]*$ ]] || usage_error "--workers must be a positive integer"
[[ -z $CTR_MTU || $CTR_MTU =~ ^[0-9]+$ ]] || usage_error "--ctr-mtu must be a number"
[[ $WAIT_QUIET =~ ^[0-9]+$ ]] || usage_error "--wait-quiet must be a number of seconds"

# Test durations (seconds).
if ((SHORT)); then
    T_TCP=1 T_UDP=1 T_LAT=1 T_RR=1
elif ((QUICK)); then
    T_TCP=2 T_UDP=1 T_LAT=1 T_RR=2
else
    T_TCP=5 T_UDP=2 T_LAT=3 T_RR=3
fi
if ((QUICK)) && ((!REPS_SET)); then REPS=1; fi
# tcp1_paced: one stream held at this rate (iperf3 -b), which every batched
# mode reaches even on a busy machine, so that the modes' CPU per Gbit/s is
# compared at equal work rather than at each one's own saturation.
PACED_RATE=1G

MODES=()
if [[ -n $MODES_ARG ]]; then
    IFS=, read -r -a MODES <<<"$MODES_ARG"
    for i in "${!MODES[@]}"; do
        # The kernel pair's name before the vxlan backend's modes existed.
        if [[ ${MODES[i]} == vxlan ]]; then MODES[i]=vxlan-kernel; fi
    done
    for m in "${MODES[@]}"; do
        if [[ " ${BASE_MODES[*]} " == *" $m "* ]]; then
            [[ -n $BASELINE ]] || usage_error "mode '$m' runs the baseline build: give --baseline REV"
            continue
        fi
        if [[ $m =~ ^uring-batch([0-9]+)$ ]]; then
            ((BASH_REMATCH[1] >= 1 && BASH_REMATCH[1] <= 256)) || usage_error "mode '$m': batch must be 1-256"
            continue
        fi
        case " ${ALL_MODES[*]} ${EXTRA_MODES[*]} " in
            *" $m "*) ;;
            *) usage_error "unknown mode '$m' (choose from ${ALL_MODES[*]} ${EXTRA_MODES[*]} uring-batchN${BASELINE:+ ${BASE_MODES[*]}})" ;;
        esac
    done
elif [[ -n $BASELINE ]]; then
    MODES=(vxlan-kernel mmsg-base mmsg uring-base uring)
else
    MODES=("${ALL_MODES[@]}")
fi
((${#MODES[@]})) || usage_error "no modes selected"

ed_require_root
pkgs=(@run git)
((BUILD)) && pkgs+=(@build)
((SOCKPERF)) && pkgs+=(sockperf)
ed_need_pkgs "${pkgs[@]}"

# encapd-bench (the latency probe and the report renderer, bench/tool) is
# built with encapd by `cargo build --release`.
bench_bin() { printf '%s\n' "${ENCAPD_BENCH:-$ED_ROOT/target/release/encapd-bench}"; }
need_encapd=0
for m in "${MODES[@]}"; do
    case $m in routing | vxlan-kernel) ;; *) need_encapd=1 ;; esac
done
if ((BUILD)); then ed_build; fi
[[ -x $(bench_bin) ]] || ed_die "$(bench_bin) missing (cargo build --release)"
BINS=(encapd_bench="$(bench_bin)")
if ((need_encapd)); then
    [[ -x $(ed_encapd_bin) ]] || ed_die "encapd binary $(ed_encapd_bin) missing (cargo build --release)"
    BINS+=(encapd="$(ed_encapd_bin)")
fi
MAIN_BIN=$(ed_encapd_bin)

# build_baseline REV: builds encapd from REV in a temporary clean worktree
# (target/baseline/<commit>/, reused when present); sets BASE_COMMIT and
# BASE_BIN.
build_baseline() {
    local commit dir wt
    commit=$(ed_git rev-parse --verify -q "$1^{commit}") || ed_die "--baseline: '$1' is not a commit of $ED_ROOT"
    dir=$ED_ROOT/target/baseline/$commit
    BASE_COMMIT=$commit
    BASE_BIN=$dir/release/encapd
    [[ -x $BASE_BIN ]] && return 0
    ed_need_cargo
    wt=$(mktemp -d "${TMPDIR:-/tmp}/encapd-baseline.XXXXXX")
    ed_git worktree add --detach -q "$wt" "$commit" || { rmdir "$wt"; ed_die "--baseline: git worktree add $commit failed"; }
    ed_log "building the baseline $commit: cargo build --release --locked --bin encapd (target $dir)"
    if ! (cd "$wt" && CARGO_TARGET_DIR=$dir cargo build --release --locked --bin encapd); then
        ed_git worktree remove --force "$wt" || true
        ed_die "--baseline: building $commit failed"
    fi
    ed_git worktree remove --force "$wt" || ed_warn "could not remove the worktree $wt (git worktree prune)"
    [[ -x $BASE_BIN ]] || ed_die "--baseline: no $BASE_BIN after the build"
}
BASE_COMMIT=""
BASE_BIN=""
BASE_PAIR=()
if [[ -n $BASELINE ]]; then
    build_baseline "$BASELINE"
    BASE_PAIR=(encapd_base="$BASE_BIN")
fi

host=$(hostname -s 2>/dev/null || hostname)
if [[ -z $OUT ]]; then
    OUT="$ED_ROOT/bench/runs/$(date -u +%Y-%m-%d-%H%M)-$host"
    base=$OUT
    n=2
    while [[ -e $OUT ]]; do OUT="$base-$n"; n=$((n + 1)); done
fi
# Results under bench/runs/ are committed as evidence: they must name a
# clean commit and binaries built from it. Checked before the run (a long
# run must not be wasted) and its state recorded now, before anything
# could change it.
if ed_under_runs "$OUT"; then ed_require_provenance "${BINS[@]#*=}"; fi
PROVENANCE=$(ed_provenance_env "${BINS[@]}" "${BASE_PAIR[@]}")

load1() { awk '{print $1}' /proc/loadavg; }
quiet_note=""
if ((WAIT_QUIET > 0)); then
    deadline=$((SECONDS + WAIT_QUIET))
    while awk -v l="$(load1)" 'BEGIN {exit !(l >= 1.0)}' && ((SECONDS < deadline)); do
        ed_log "waiting for a quiet machine: load average $(cut -d' ' -f1-3 /proc/loadavg)"
        sleep 20
    done
    if awk -v l="$(load1)" 'BEGIN {exit !(l >= 1.0)}'; then
        quiet_note="machine never quiet within ${WAIT_QUIET} s (1-minute load $(load1)); ran anyway"
        ed_warn "$quiet_note"
    else
        quiet_note="waited $((WAIT_QUIET - (deadline - SECONDS))) s for the 1-minute load to drop below 1.0"
    fi
fi

mkdir -p "$OUT/raw"
OUT=$(cd "$OUT" && pwd)
RAW=$OUT/raw
CSV=$OUT/results.csv
CMDLOG=$OUT/commands.log
echo "mode,rep,test,value,unit" >"$CSV"
: >"$CMDLOG"

ed_install_traps
ed_mktemp_dir
WORK=$ED_TMP
ED_TOPO_PREFIX=$(ed_rand_prefix)
ed_log "results in $OUT"
ed_log "bringing up topology ${ED_TOPO_PREFIX}*"
ed_topo_up "$ED_TOPO_PREFIX"
ed_ns_names "$ED_TOPO_PREFIX"

DST=$ED_CTRB_IP
IPERF_PORT=5201
LAT_PORT=7000
CLK_TCK=$(getconf CLK_TCK)
TCP_CC_DEFAULT=$(ip netns exec "$NS_CTRA" cat /proc/sys/net/ipv4/tcp_congestion_control 2>/dev/null || echo unknown)
loadavg_start=$(cut -d' ' -f1-3 /proc/loadavg)
FAILED_MODES=()

# run_logged FILE_OUT FILE_ERR NS CMD...: record the command, run it in NS.
run_logged() {
    local out=$1 err=$2 ns=$3
    shift 3
    printf '%s\n' "ip netns exec <${ns#"$ED_TOPO_PREFIX"}> $*" >>"$CMDLOG"
    ip netns exec "$ns" "$@" >"$out" 2>"$err"
}

# The parser turns one raw output into results.csv rows; on any failure it
# prints NA rows for the test, so every (mode, rep, test) has its rows.
PARSE_PY=$(
    cat <<'PY'
import json, re, sys

kind, test, mode, rep, path = sys.argv[1:6]
extra = sys.argv[6:]
rows = []

def row(name, value, unit):
    v = "NA" if value is None else ("%.6g" % value)
    rows.append(f"{mode},{rep},{name},{v},{unit}")

def iperf(path):
    d = json.load(open(path))
    if "error" in d:
        raise ValueError(d["error"])
    return d["end"]

NAMES = {
    "tcp": [("", "Gbit/s"), ("_retrans", "count"), ("_cpu", "cores"), ("_cpu_per_gbps", "cores/(Gbit/s)")],
    "encapd": [("_encapd_cpu", "cores"), ("_encapd_cpu_per_gbps", "cores/(Gbit/s)"),
               ("_encapd_cs_vol_per_gb", "per GB"), ("_encapd_cs_invol_per_gb", "per GB")],
    "udp": [("_pps", "pps"), ("_sent_pps", "pps"), ("_loss", "%")],
    "lat": [("_p50", "us"), ("_p90", "us"), ("_p99", "us"), ("_p999", "us"), ("_max", "us"), ("_mean", "us"),
            ("_lost", "count"), ("_loss", "%"), ("_offered_pps", "pps"), ("_achieved_pps", "pps")],
    "udp_rr": [("_p50", "us"), ("_p99", "us"), ("_avg", "us")],
}

try:
    if kind == "tcp":
        # extra: whole-machine cores, then (encapd modes only) encapd's
        # cores, voluntary and involuntary context switches over the test.
        end = iperf(path)
        gbps = end["sum_received"]["bits_per_second"] / 1e9
        gb = end["sum_received"]["bytes"] / 1e9
        num = lambda v: None if v == "NA" else float(v)
        per = lambda v, d: v / d if v is not None and d > 0 else None
        cores = num(extra[0]) if extra else None
        row(test, gbps, "Gbit/s")
        row(test + "_retrans", end["sum_sent"].get("retransmits"), "count")
        row(test + "_cpu", cores, "cores")
        row(test + "_cpu_per_gbps", per(cores, gbps), "cores/(Gbit/s)")
        if len(extra) == 4:
            ecores, vol, invol = (num(v) for v in extra[1:])
            row(test + "_encapd_cpu", ecores, "cores")
            row(test + "_encapd_cpu_per_gbps", per(ecores, gbps), "cores/(Gbit/s)")
            row(test + "_encapd_cs_vol_per_gb", per(vol, gb), "per GB")
            row(test + "_encapd_cs_invol_per_gb", per(invol, gb), "per GB")
    elif kind == "udp":
        end = iperf(path)
        rcv = end.get("sum_received") or end["sum"]
        snt = end.get("sum_sent") or end["sum"]
        secs = rcv["seconds"] or 1.0
        row(test + "_pps", (rcv["packets"] - rcv["lost_packets"]) / secs, "pps")
        row(test + "_sent_pps", snt["packets"] / (snt["seconds"] or 1.0), "pps")
        row(test + "_loss", rcv["lost_percent"], "%")
    elif kind == "lat":
        d = json.load(open(path))
        if not d.get("count"):
            raise ValueError("no replies")
        for key, name in [("p50_us", "_p50"), ("p90_us", "_p90"), ("p99_us", "_p99"), ("p99.9_us", "_p999"),
                          ("max_us", "_max"), ("mean_us", "_mean")]:
            row(test + name, d[key], "us")
        row(test + "_lost", d["lost"], "count")
        row(test + "_loss", d["loss_pct"], "%")
        row(test + "_offered_pps", d["offered_pps"], "pps")
        row(test + "_achieved_pps", d["achieved_pps"], "pps")
    elif kind == "udp_rr":
        text = re.sub(r"\x1b\[[0-9;]*m", "", open(path).read())
        p = {k: float(v) for k, v in re.findall(r"percentile ([0-9.]+) =\s*([0-9.]+)", text)}
        avg = re.search(r"avg-rtt=([0-9.]+)", text)
        if "50.000" not in p or not avg:
            raise ValueError("no sockperf percentiles")
        row(test + "_p50", p["50.000"], "us")
        row(test + "_p99", p.get("99.000"), "us")
        row(test + "_avg", float(avg.group(1)), "us")
    else:
        raise ValueError(f"unknown kind {kind}")
except Exception as e:  # record the failure as NA, keep going
    print(f"parse {test} {path}: {e}", file=sys.stderr)
    rows = []
    for suffix, unit in NAMES[kind] + (NAMES["encapd"] if kind == "tcp" and len(extra) == 4 else []):
        row(test + suffix, None, unit)
print("\n".join(rows))
PY
)

parse() { python3 -c "$PARSE_PY" "$@" >>"$CSV" || true; }

# csv_value MODE REP TEST: a value recorded earlier in this run (or NA).
csv_value() {
    awk -F, -v m="$1" -v r="$2" -v t="$3" '$1==m && $2==r && $3==t {v=$4} END {print (v == "" ? "NA" : v)}' "$CSV"
}

# cpu_busy: busy and total jiffies of the whole machine (user + nice +
# system + irq + softirq; idle, iowait and steal are not busy).
cpu_busy() { awk '/^cpu / {print $2 + $3 + $4 + $7 + $8; exit}' /proc/stat; }
now_ns() { date +%s%N; }

# encapd_sample: "TICKS VOLUNTARY INVOLUNTARY" for the running encapd
# processes together (both nodes', or nodeA's alone in encapd-vxlan-mixed),
# "-" when this mode runs none, "NA" when one is gone.
# TICKS: user + system time of every thread, /proc/PID/stat fields 14 and
# 15 (counted after the ")" that ends the command name, which may hold
# spaces). Context switches: summed over /proc/PID/task/*/status, as the
# process's own status line counts its main thread only. `ip netns exec`
# execs encapd, so the PIDs are encapd's.
encapd_sample() {
    local pid stat fields ticks=0 cs=(0 0)
    [[ -n $ENCAPD_PID_A || -n $ENCAPD_PID_B ]] || { echo -; return; }
    for pid in "$ENCAPD_PID_A" "$ENCAPD_PID_B"; do
        [[ -n $pid ]] || continue
        stat=$(cat "/proc/$pid/stat" 2>/dev/null) || { echo NA; return; }
        read -r -a fields <<<"${stat##*) }"
        ticks=$((ticks + fields[11] + fields[12]))
        read -r -a cs < <(cat "/proc/$pid"/task/*/status 2>/dev/null |
            awk -v v="${cs[0]}" -v n="${cs[1]}" '/^voluntary_ctxt_switches/ {v += $2} /^nonvoluntary_ctxt_switches/ {n += $2} END {print v, n}')
    done
    echo "$ticks ${cs[0]} ${cs[1]}"
}

# encapd_delta BEFORE AFTER WALL_NS: "CORES VOLUNTARY INVOLUNTARY" over the
# test (or the parser's NA/not-applicable arguments).
encapd_delta() {
    local a b
    read -r -a a <<<"$1"
    read -r -a b <<<"$2"
    if [[ ${a[0]} == - ]]; then return; fi
    if [[ ${a[0]} == NA || ${b[0]} == NA ]]; then echo "NA NA NA"; return; fi
    awk -v t="$((b[0] - a[0]))" -v hz="$CLK_TCK" -v ns="$3" -v v="$((b[1] - a[1]))" -v n="$((b[2] - a[2]))" \
        'BEGIN {printf "%.4f %d %d\n", (t / hz) / (ns / 1e9), v, n}'
}

# iperf_test KIND MODE REP TEST DURATION ARGS...: one iperf3 run against a
# fresh one-shot server in ctrB; raw JSON in raw/, parsed rows in results.csv.
# For KIND tcp, the whole machine's busy CPU over the client run is recorded.
iperf_test() {
    local kind=$1 mode=$2 rep=$3 test=$4 dur=$5
    shift 5
    local base="$RAW/$mode-r$rep-$test" spid rc=0 i b0 b1 t0 t1 e0 e1 cores=NA encapd=()
    ip netns exec "$NS_CTRB" timeout $((dur + 40)) iperf3 -s -1 -B "$DST" -p "$IPERF_PORT" >"$base.server.log" 2>&1 &
    spid=$!
    ed_track "$spid"
    printf '%s\n' "ip netns exec <ctrB> timeout $((dur + 40)) iperf3 -s -1 -B $DST -p $IPERF_PORT &" >>"$CMDLOG"
    if ! ed_wait_port "$NS_CTRB" "$IPERF_PORT" 5; then
        ed_warn "$mode rep $rep $test: iperf3 server did not start"
        ed_kill_pid "$spid"
        ed_untrack "$spid"
        echo '{"error":"iperf3 server did not start"}' >"$base.json"
        parse "$kind" "$test" "$mode" "$rep" "$base.json" NA
        return 0
    fi
    e0=$(encapd_sample)
    b0=$(cpu_busy)
    t0=$(now_ns)
    run_logged "$base.json" "$base.err" "$NS_CTRA" timeout $((dur + 30)) \
        iperf3 -c "$DST" -p "$IPERF_PORT" --connect-timeout 3000 -J -t "$dur" "$@" || rc=$?
    t1=$(now_ns)
    b1=$(cpu_busy)
    e1=$(encapd_sample)
    if [[ $kind == tcp ]] && ((t1 > t0)); then
        cores=$(awk -v b="$((b1 - b0))" -v hz="$CLK_TCK" -v ns="$((t1 - t0))" 'BEGIN {printf "%.4f", (b / hz) / (ns / 1e9)}')
        read -r -a encapd < <(encapd_delta "$e0" "$e1" "$((t1 - t0))") || true
    fi
    ((rc == 0)) || ed_warn "$mode rep $rep $test: iperf3 client exit status $rc (see $base.json / $base.err)"
    for ((i = 0; i < 50; i++)); do kill -0 "$spid" 2>/dev/null || break; sleep 0.1; done
    ed_kill_pid "$spid" 1
    wait "$spid" 2>/dev/null || true
    ed_untrack "$spid"
    [[ -s $base.err ]] || rm -f "$base.err"
    [[ -s $base.server.log ]] || rm -f "$base.server.log"
    parse "$kind" "$test" "$mode" "$rep" "$base.json" "$cores" "${encapd[@]}"
}

# lat_test MODE REP LOAD: the latency probe at LOAD % of this mode's UDP
# 64 B delivered rate measured in this repetition.
lat_test() {
    local mode=$1 rep=$2 load=$3 test="lat$3" base="$RAW/$1-r$2-lat$3" max rate spid rc=0
    max=$(csv_value "$mode" "$rep" udp64_pps)
    if [[ $max == NA ]]; then
        ed_warn "$mode rep $rep $test: no UDP 64 B rate to derive the probe rate from"
        echo '{}' >"$base.json"
        parse lat "$test" "$mode" "$rep" "$base.json"
        return 0
    fi
    rate=$(awk -v m="$max" -v l="$load" 'BEGIN {r = m * l / 100; if (r < 100) r = 100; printf "%d", r}')
    ip netns exec "$NS_CTRB" "$(bench_bin)" latency server --bind "$DST:$LAT_PORT" --exit-after $((T_LAT + 30)) >/dev/null 2>"$base.server.err" &
    spid=$!
    ed_track "$spid"
    printf '%s\n' "ip netns exec <ctrB> encapd-bench latency server --bind $DST:$LAT_PORT --exit-after $((T_LAT + 30)) &" >>"$CMDLOG"
    if ed_wait_port "$NS_CTRB" "$LAT_PORT" 5 udp; then
        run_logged "$base.out" "$base.err" "$NS_CTRA" timeout $((T_LAT + 20)) \
            "$(bench_bin)" latency client --target "$DST:$LAT_PORT" --rate "$rate" --duration "$T_LAT" --out "$base" --json || rc=$?
        ((rc == 0)) || ed_warn "$mode rep $rep $test: probe exit status $rc (see $base.err)"
    else
        ed_warn "$mode rep $rep $test: probe server did not start"
    fi
    [[ -s $base.json ]] || echo '{}' >"$base.json"
    ed_kill_pid "$spid" 1
    wait "$spid" 2>/dev/null || true
    ed_untrack "$spid"
    rm -f "$base.out"
    [[ -s $base.err ]] || rm -f "$base.err"
    [[ -s $base.server.err ]] || rm -f "$base.server.err"
    parse lat "$test" "$mode" "$rep" "$base.json"
}

# sockperf_test MODE REP: UDP ping-pong (64-byte messages, back to back).
sockperf_test() {
    local mode=$1 rep=$2 base="$RAW/$1-r$2-udp_rr" spid rc=0 port=11111
    ip netns exec "$NS_CTRB" timeout $((T_RR + 30)) sockperf server -i "$DST" -p "$port" >"$base.server.log" 2>&1 &
    spid=$!
    ed_track "$spid"
    printf '%s\n' "ip netns exec <ctrB> timeout $((T_RR + 30)) sockperf server -i $DST -p $port &" >>"$CMDLOG"
    if ed_wait_port "$NS_CTRB" "$port" 5 udp; then
        run_logged "$base.txt" "$base.err" "$NS_CTRA" timeout $((T_RR + 20)) \
            sockperf ping-pong -i "$DST" -p "$port" -t "$T_RR" -m 64 --full-rtt || rc=$?
        ((rc == 0)) || ed_warn "$mode rep $rep udp_rr: sockperf exit status $rc"
    else
        ed_warn "$mode rep $rep udp_rr: sockperf server did not start"
        : >"$base.txt"
    fi
    ed_kill_pid "$spid" 1
    wait "$spid" 2>/dev/null || true
    ed_untrack "$spid"
    rm -f "$base.server.log"
    [[ -s $base.err ]] || rm -f "$base.err"
    parse udp_rr udp_rr "$mode" "$rep" "$base.txt"
}

# mode_engine MODE: encapd's io engine in MODE (empty: no encapd).
mode_engine() {
    case $1 in
        classic) echo classic ;;
        mmsg | mmsg-nooffload | mmsg-base) echo mmsg ;;
        uring | uring-nooffload | uring-base | uring-trust | uring-nopin | uring-crossed | uring-nocoop | uring-slice | uring-kernel | uring-batch* | encapd-vxlan*) echo uring ;;
    esac
}

# mode_setting MODE: the [dataplane] line MODE adds on both nodes, if any.
mode_setting() {
    case $1 in
        *-nooffload) echo 'offload = "off"' ;;
        uring-trust) echo 'ingress_checksum = "trust-outer"' ;;
        uring-nopin) echo 'cpus = []' ;;
        uring-nocoop) echo 'uring_disable = ["coop_taskrun"]' ;;
        uring-slice) echo 'sched = "short-slice"' ;;
        uring-kernel | encapd-vxlan-kernel | encapd-vxlan-mixed-kernel) echo 'kernel_path = "tc"' ;;
        uring-batch*) echo "batch = ${1#uring-batch}" ;;
    esac
}

# mode_backend MODE: encapd's backend (wire format) in MODE.
mode_backend() {
    case $1 in
        encapd-vxlan*) echo vxlan ;;
        *) echo udp ;;
    esac
}

mode_mtu() {
    if [[ -n $CTR_MTU ]]; then echo "$CTR_MTU"; return; fi
    case $1 in
        routing) echo "$ED_UL_MTU" ;;
        vxlan-kernel | encapd-vxlan*) echo "$ED_VX_MTU" ;;
        *) echo $((ED_UL_MTU - 28)) ;;
    esac
}

# vtep_mac NS: the MAC of the kernel VTEP vx0 in NS.
vtep_mac() { ip -n "$1" link show dev vx0 | awk '/link\/ether/ {print $2; exit}'; }

# encapd_start_a DIR: start encapd in nodeA only (log DIR/a.log), as
# encapd_start does for both nodes; non-zero if it dies or its TUN (with
# the overlay route) does not appear within 5 s.
encapd_start_a() {
    local dir=$1 i
    : >"$dir/a.log"
    ip netns exec "$NS_NODEA" "$(ed_encapd_bin)" run --config "$dir/a.toml" 2>>"$dir/a.log" &
    ENCAPD_PID_A=$!
    ed_track "$ENCAPD_PID_A"
    for ((i = 0; i < 100; i++)); do
        if ip -n "$NS_NODEA" route show dev "$ED_TUN" 2>/dev/null | grep -q .; then return 0; fi
        kill -0 "$ENCAPD_PID_A" 2>/dev/null || break
        sleep 0.05
    done
    ed_warn "encapd on node a: no $ED_TUN with a route after 5 s (pid $ENCAPD_PID_A); log:"
    tail -n 20 "$dir/a.log" >&2 || true
    return 1
}

# baseline_configs DIR: leaves out of DIR/{a,b}.toml each field (a key, or
# a whole [section]) that the baseline binary rejects, as its own `encapd
# check` names them: unknown (added after BASE_COMMIT), or "only meaningful
# with" another setting (it has no effect there, e.g. subnet_env with a
# peers file before encapd wrote subnet.env in that case). A field it
# accepts is kept, so it never falls back to a default path on the host.
baseline_configs() {
    local dir=$1 side ns out field i
    for side in a b; do
        if [[ $side == a ]]; then ns=$NS_NODEA; else ns=$NS_NODEB; fi
        for ((i = 0; i < 8; i++)); do
            out=$(ip netns exec "$ns" "$BASE_BIN" check --config "$dir/$side.toml" 2>&1) && break
            # shellcheck disable=SC2016 # literal backquotes, as serde prints them
            field=$(grep -o 'unknown field `[A-Za-z0-9_]*`' <<<"$out" | head -n1 | cut -d'`' -f2)
            [[ -n $field ]] || field=$(sed -n 's/.*\] \([A-Za-z0-9_]*\) = ([^)]*): only meaningful with.*/\1/p' <<<"$out" | head -n1)
            [[ -n $field ]] || break
            if grep -qx "\[$field\]" "$dir/$side.toml"; then
                awk -v s="[$field]" '$0 == s {skip = 1; next} /^\[/ {skip = 0} !skip' "$dir/$side.toml" >"$dir/$side.toml.new"
                mv "$dir/$side.toml.new" "$dir/$side.toml"
            else
                sed -i "/^$field *=/d" "$dir/$side.toml"
            fi
            # shellcheck disable=SC2016 # literal backquotes (Markdown)
            printf '# baseline: left `%s` out of %s.toml (%s rejects it: %s)\n' "$field" "$side" "$BASE_COMMIT" "$(grep -m1 -- "$field" <<<"$out")" >>"$CMDLOG"
        done
    done
}

# mode_enter MODE REP: configure the data path; non-zero if it does not pass
# a connectivity check.
mode_enter() {
    local mode=$1 rep=$2
    ed_topo_set_ctr_mtu "$ED_TOPO_PREFIX" "$(mode_mtu "$mode")"
    ed_topo_flush_cache "$ED_TOPO_PREFIX"
    case $mode in
        routing)
            echo "# setup: scripts/netns.sh route (plain routes via the underlay)" >>"$CMDLOG"
            ed_topo_route "$ED_TOPO_PREFIX"
            ;;
        vxlan-kernel)
            echo "# setup: scripts/netns.sh vxlan (flannel.1-style vx0, VNI 1, dstport 8472)" >>"$CMDLOG"
            ed_topo_vxlan "$ED_TOPO_PREFIX"
            ;;
        *)
            local dir="$WORK/$mode-r$rep" sides=(a b)
            encapd_write_configs "$dir" "$(mode_engine "$mode")" "$WORKERS" "$(mode_backend "$mode")"
            local setting
            setting=$(mode_setting "$mode")
            if [[ -n $setting ]]; then
                sed -i "/^io *=/a $setting" "$dir/a.toml" "$dir/b.toml"
            fi
            if [[ $setting == kernel_path* ]]; then
                # Each node's peer decapsulates in its kernel (encapd with
                # the kernel path, or the mixed mode's kernel VTEP): the
                # kernel path sends only to such peers.
                sed -i '/^public_ip *=/a kernel_decap = true' "$dir/peers-a.toml" "$dir/peers-b.toml"
            fi
            if [[ $mode == uring-crossed ]]; then
                # nodeB's worker i on the CPU of nodeA's worker W-1-i.
                local i n list=()
                n=$(nproc)
                for ((i = WORKERS - 1; i >= 0; i--)); do list+=("$((i % n))"); done
                sed -i "/^io *=/a cpus = [$(IFS=,; echo "${list[*]}")]" "$dir/b.toml"
            fi
            if [[ $mode == *-base ]]; then baseline_configs "$dir"; fi
            if [[ $mode == encapd-vxlan-mixed* ]]; then
                # Both nodes get flannel.1-style kernel VTEPs (as in
                # vxlan-kernel); then encapd takes nodeA's place, with
                # nodeA's VTEP MAC, so that nodeB's kernel VTEP, its FDB,
                # neighbour and route are left exactly as flannel set them
                # up for a kernel peer (an encapd node joining a flannel
                # cluster in place of one of its nodes).
                local mac_a mac_b
                echo "# setup: scripts/netns.sh vxlan (flannel.1-style vx0 on both nodes), then nodeA's vx0 deleted" >>"$CMDLOG"
                ed_topo_vxlan "$ED_TOPO_PREFIX"
                mac_a=$(vtep_mac "$NS_NODEA")
                mac_b=$(vtep_mac "$NS_NODEB")
                ip -n "$NS_NODEA" link del vx0
                printf 'ip -n <nodeA> link del vx0   # its VTEP MAC %s goes to encapd; nodeB vx0 MAC %s\n' "$mac_a" "$mac_b" >>"$CMDLOG"
                sed -i "s/\"$ED_A_MAC\"/\"$mac_a\"/" "$dir/a.toml"
                sed -i "s/\"$ED_B_MAC\"/\"$mac_b\"/" "$dir/peers-a.toml"
                if ! grep -q "\"$mac_a\"" "$dir/a.toml" || ! grep -q "\"$mac_b\"" "$dir/peers-a.toml"; then
                    ed_warn "$mode: could not set the kernel VTEP MACs in the encapd config"
                    return 1
                fi
                rm -f "$dir/b.toml" "$dir/peers-b.toml"
                sides=(a)
            fi
            mkdir -p "$OUT/configs/$mode"
            cp "$dir"/*.toml "$OUT/configs/$mode/"
            if ((${#sides[@]} == 2)); then
                printf '# setup: ip netns exec <nodeX> encapd run --config configs/%s/{a,b}.toml\n' "$mode" >>"$CMDLOG"
            else
                printf '# setup: ip netns exec <nodeA> encapd run --config configs/%s/a.toml\n' "$mode" >>"$CMDLOG"
            fi
            local chk=0 side
            if ((${#sides[@]} == 2)); then
                encapd_check "$dir" >/dev/null 2>>"$RAW/$mode-r$rep-check.log" || chk=1
            else
                ip netns exec "$NS_NODEA" "$(ed_encapd_bin)" check --config "$dir/a.toml" >/dev/null 2>>"$RAW/$mode-r$rep-check.log" || chk=1
            fi
            [[ -s $RAW/$mode-r$rep-check.log ]] || rm -f "$RAW/$mode-r$rep-check.log"
            ((chk == 0)) || { ed_warn "$mode: encapd check failed (raw/$mode-r$rep-check.log)"; return 1; }
            if ((${#sides[@]} == 2)); then
                encapd_start "$dir" || return 1
            else
                encapd_start_a "$dir" || return 1
            fi
            for side in "${sides[@]}"; do
                ed_log "  $mode node $side: $(grep -o 'engine .*' "$dir/$side.log" | head -n1 || true)"
            done
            ;;
    esac
    local via via_b
    via=$(ip -n "$NS_NODEA" route get "$DST" 2>/dev/null | head -n1 || true)
    via_b=$(ip -n "$NS_NODEB" route get "$ED_CTRA_IP" 2>/dev/null | head -n1 || true)
    case $mode in
        routing) [[ $via == *"dev ul0"* ]] || { ed_warn "routing: unexpected route: $via"; return 1; } ;;
        vxlan-kernel) [[ $via == *"dev vx0"* ]] || { ed_warn "vxlan-kernel: unexpected route: $via"; return 1; } ;;
        *) [[ $via == *"dev $ED_TUN"* ]] || { ed_warn "$mode: route does not use $ED_TUN: $via"; return 1; } ;;
    esac
    if [[ $mode == encapd-vxlan-mixed* && $via_b != *"dev vx0"* ]]; then
        ed_warn "$mode: nodeB's route back does not use its kernel VTEP vx0: $via_b"
        return 1
    fi
    ed_ping_ok "$NS_CTRA" "$DST" 15 || { ed_warn "$mode: no connectivity ctrA -> $DST"; return 1; }
}

mode_leave() {
    local mode=$1 rep=$2
    case $mode in
        routing) ed_topo_unroute "$ED_TOPO_PREFIX" ;;
        vxlan-kernel)
            ip -n "$NS_NODEA" -s link show dev vx0 >"$RAW/$mode-r$rep-vx0-nodeA.txt" 2>&1 || true
            ed_topo_unvxlan "$ED_TOPO_PREFIX"
            ;;
        *)
            local dir="$WORK/$mode-r$rep"
            if [[ -n $ENCAPD_PID_A || -n $ENCAPD_PID_B ]]; then
                encapd_counters
                encapd_stop || ed_warn "$mode: encapd did not stop cleanly"
            fi
            cp "$dir/a.log" "$RAW/$mode-r$rep-encapd-nodeA.log" 2>/dev/null || true
            cp "$dir/b.log" "$RAW/$mode-r$rep-encapd-nodeB.log" 2>/dev/null || true
            if [[ $mode == encapd-vxlan-mixed* ]]; then
                ip -n "$NS_NODEB" -s link show dev vx0 >"$RAW/$mode-r$rep-vx0-nodeB.txt" 2>&1 || true
                ed_topo_unvxlan "$ED_TOPO_PREFIX"
            fi
            ;;
    esac
}

# All tests of one mode in one repetition.
run_tests() {
    local mode=$1 rep=$2 load
    iperf_test tcp "$mode" "$rep" tcp1 "$T_TCP"
    iperf_test tcp "$mode" "$rep" tcp1_cubic "$T_TCP" -C cubic
    iperf_test tcp "$mode" "$rep" tcp1_paced "$T_TCP" -b "$PACED_RATE"
    iperf_test tcp "$mode" "$rep" tcp4 "$T_TCP" -P 4
    iperf_test tcp "$mode" "$rep" tcp4_cubic "$T_TCP" -P 4 -C cubic
    iperf_test udp "$mode" "$rep" udp64 "$T_UDP" -u -b 0 -l 64
    iperf_test udp "$mode" "$rep" udp512 "$T_UDP" -u -b 0 -l 512
    iperf_test udp "$mode" "$rep" udp1400 "$T_UDP" -u -b 0 -l 1400
    for load in "${LOADS[@]}"; do lat_test "$mode" "$rep" "$load"; done
    if ((SOCKPERF)); then sockperf_test "$mode" "$rep"; fi
}

# NA rows for every test of a mode whose setup failed.
na_rows() {
    local mode=$1 rep=$2 t load
    local encapd=()
    [[ -n $(mode_engine "$mode") ]] && encapd=(NA NA NA)
    for t in tcp1 tcp1_cubic tcp1_paced tcp4 tcp4_cubic; do parse tcp "$t" "$mode" "$rep" /nonexistent NA "${encapd[@]}" 2>/dev/null; done
    for t in udp64 udp512 udp1400; do parse udp "$t" "$mode" "$rep" /nonexistent 2>/dev/null; done
    for load in "${LOADS[@]}"; do parse lat "lat$load" "$mode" "$rep" /nonexistent 2>/dev/null; done
    if ((SOCKPERF)); then parse udp_rr udp_rr "$mode" "$rep" /nonexistent 2>/dev/null; fi
}

started=$(date -u +%Y-%m-%dT%H:%M:%SZ)
t_start=$SECONDS
for ((rep = 1; rep <= REPS; rep++)); do
    # Counterbalanced: a mode's place in the sequence (what ran just before
    # it, how warm the machine is) is not the same in every repetition.
    order=("${MODES[@]}")
    if ((rep % 2 == 0)); then
        order=()
        for ((i = ${#MODES[@]} - 1; i >= 0; i--)); do order+=("${MODES[i]}"); done
    fi
    for mode in "${order[@]}"; do
        ed_log "rep $rep/$REPS mode $mode"
        # ed_encapd_bin (used to start, check and stop) names the build.
        if [[ $mode == *-base ]]; then ENCAPD=$BASE_BIN; else ENCAPD=$MAIN_BIN; fi
        printf '\n# rep %s mode %s (container MTU %s)\n' "$rep" "$mode" "$(mode_mtu "$mode")" >>"$CMDLOG"
        if mode_enter "$mode" "$rep"; then
            run_tests "$mode" "$rep"
            ed_log "  $(awk -F, -v m="$mode" -v r="$rep" '$1==m && $2==r && ($3=="tcp1"||$3=="tcp4"||$3=="udp64_pps"||$3=="lat50_p50"||$3=="tcp1_cpu_per_gbps"||$3=="tcp1_paced_encapd_cpu_per_gbps") {printf "%s=%s%s ", $3, $4, $5}' "$CSV")"
        else
            ed_warn "mode $mode rep $rep: setup failed, recording NA"
            FAILED_MODES+=("$mode/r$rep")
            na_rows "$mode" "$rep"
        fi
        mode_leave "$mode" "$rep"
    done
done
ENCAPD=$MAIN_BIN
elapsed=$((SECONDS - t_start))
loadavg_end=$(cut -d' ' -f1-3 /proc/loadavg)

# ---------------------------------------------------------------------------
# Metadata: env.txt (key=value, read by the report) and README.md (people).

git_head=$(awk -F= '$1 == "git_head" {print $2}' <<<"$PROVENANCE")
git_uncommitted=$(awk -F= '$1 == "git_uncommitted" {print $2}' <<<"$PROVENANCE")
# The binaries must be the ones recorded before the run.
for pair in "${BINS[@]}"; do
    sha=$(sha256sum "${pair#*=}" 2>/dev/null | cut -d' ' -f1)
    grep -qx "${pair%%=*}_sha256=$sha" <<<"$PROVENANCE" || ed_warn "${pair#*=} changed during the run (sha256 now $sha)"
done
cpu_model=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)
encapd_version=""
if ((need_encapd)); then encapd_version=$("$(ed_encapd_bin)" --version 2>/dev/null | head -n1 || true); fi
iperf3_version=$(iperf3 --version 2>&1 | head -n1)
mtus="routing $ED_UL_MTU, vxlan-kernel and encapd vxlan backend $ED_VX_MTU, encapd udp backend $((ED_UL_MTU - 28))"
{
    echo "started=$started"
    echo "elapsed_s=$elapsed"
    echo "invocation=$INVOCATION"
    echo "modes=${MODES[*]}"
    echo "mode_order=alternating"
    echo "reps=$REPS"
    echo "t_tcp=$T_TCP"
    echo "t_udp=$T_UDP"
    echo "t_lat=$T_LAT"
    echo "lat_loads=${LOADS[*]}"
    echo "tcp_cc_default=$TCP_CC_DEFAULT"
    echo "workers=$WORKERS"
    echo "ctr_mtu=${CTR_MTU:-per mode ($mtus)}"
    echo "kernel=$(uname -r)"
    echo "cpu=$cpu_model"
    echo "nproc=$(nproc)"
    echo "host=$host"
    printf '%s\n' "$PROVENANCE"
    echo "iperf3=$iperf3_version"
    echo "encapd=$encapd_version"
    echo "loadavg_start=$loadavg_start"
    echo "loadavg_end=$loadavg_end"
    echo "quiet=$quiet_note"
    if [[ -n $BASE_COMMIT ]]; then echo "baseline_rev=$BASE_COMMIT"; fi
    if ((SOCKPERF)); then echo "sockperf=$(sockperf --version 2>&1 | sed -n 's/.*version \([^ ]*\).*/\1/p' | head -n1)"; fi
} >"$OUT/env.txt"

{
    echo "# encapd benchmark run $started on $host"
    echo
    echo "Raw data of one \`bench/run.sh\` run; \`report.md\` is rendered from it"
    echo "(\`encapd-bench report DIR\`). See bench/README.md for what each test measures."
    echo
    echo "- command: \`$INVOCATION\` (wall time $elapsed s)"
    echo "- kernel: \`$(uname -r)\`"
    echo "- CPU: $cpu_model ($(nproc) CPUs)"
    echo "- git revision: \`${git_head:-not a git checkout}\`; uncommitted at start: ${git_uncommitted:-none}"
    for pair in "${BINS[@]}"; do
        echo "- \`${pair#*=}\`: sha256 \`$(awk -F= -v k="${pair%%=*}_sha256" '$1 == k {print $2}' <<<"$PROVENANCE")\`, built from \`$(awk -F= -v k="${pair%%=*}_build" '$1 == k {print $2}' <<<"$PROVENANCE")\`"
    done
    if [[ -n $BASE_COMMIT ]]; then
        echo "- baseline (modes ${BASE_MODES[*]}): \`$BASE_BIN\`, sha256 \`$(awk -F= '$1 == "encapd_base_sha256" {print $2}' <<<"$PROVENANCE")\`, built by this script from \`$BASE_COMMIT\` in a clean worktree"
    fi
    echo "- iperf3: $iperf3_version; TCP default congestion control: \`$TCP_CC_DEFAULT\`"
    [[ -z $encapd_version ]] || echo "- encapd: $encapd_version, \`workers = $WORKERS\`, configs in \`configs/<mode>/\`"
    echo "- container MTU: ${CTR_MTU:-per mode ($mtus)}"
    echo "- load average (1, 5, 15 min) at start: $loadavg_start; at end: $loadavg_end${quiet_note:+; $quiet_note}"
    echo "- modes: ${MODES[*]}; $REPS repetition(s), modes interleaved within each (in reverse order in even repetitions)"
    echo
    echo "## Commands"
    echo
    echo "Per mode and repetition (\`<ctrA>\`, \`<ctrB>\`: the container namespaces; a fresh"
    echo "one-shot server in ctrB for every test). The probe rate is LOAD % of the mode's"
    echo "\`udp64_pps\` in the same repetition (\`lat<LOAD>_offered_pps\` in results.csv)."
    echo
    echo '```sh'
    echo "ip netns exec <ctrB> iperf3 -s -1 -B $DST -p $IPERF_PORT"
    echo "ip netns exec <ctrA> iperf3 -c $DST -p $IPERF_PORT --connect-timeout 3000 -J -t $T_TCP                  # tcp1"
    echo "ip netns exec <ctrA> iperf3 -c $DST -p $IPERF_PORT --connect-timeout 3000 -J -t $T_TCP -C cubic        # tcp1_cubic"
    echo "ip netns exec <ctrA> iperf3 -c $DST -p $IPERF_PORT --connect-timeout 3000 -J -t $T_TCP -b $PACED_RATE  # tcp1_paced"
    echo "ip netns exec <ctrA> iperf3 -c $DST -p $IPERF_PORT --connect-timeout 3000 -J -t $T_TCP -P 4            # tcp4"
    echo "ip netns exec <ctrA> iperf3 -c $DST -p $IPERF_PORT --connect-timeout 3000 -J -t $T_TCP -P 4 -C cubic  # tcp4_cubic"
    echo "ip netns exec <ctrA> iperf3 -c $DST -p $IPERF_PORT --connect-timeout 3000 -J -t $T_UDP -u -b 0 -l 64   # udp64 (also 512, 1400)"
    echo "ip netns exec <ctrB> encapd-bench latency server --bind $DST:$LAT_PORT"
    echo "ip netns exec <ctrA> encapd-bench latency client --target $DST:$LAT_PORT --rate RATE --duration $T_LAT --out raw/MODE-rREP-latLOAD --json"
    echo '```'
    echo
    echo "CPU: \`/proc/stat\` (user + nice + system + irq + softirq jiffies of the whole"
    echo "machine) read before and after each TCP client run; cores = busy jiffies /"
    echo "$CLK_TCK per s / wall seconds. encapd's own CPU over the same run: utime + stime"
    echo "of both encapd processes (\`/proc/PID/stat\`), and their threads' voluntary and"
    echo "involuntary context switches (\`/proc/PID/task/*/status\`) per GB received."
    echo "Every command exactly as run: \`commands.log\`."
    echo
    echo "## Files"
    echo
    echo "- \`results.csv\`: every value (\`mode,rep,test,value,unit\`; \`NA\`: failed)"
    echo "- \`env.txt\`: the above as \`key=value\` lines (read by the report)"
    echo "- \`raw/\`: iperf3 JSON, probe \`.hgrm\` + \`.json\`, encapd logs with counters, \`vx0\` statistics"
    echo "- \`report.md\` and \`*.svg\`: the rendered report"
    if ((${#FAILED_MODES[@]})); then
        echo
        echo "Setup failed for: ${FAILED_MODES[*]} (recorded as NA)."
    fi
} >"$OUT/README.md"

# Keep the run folder small: drop any raw file over 1 MB.
find "$RAW" -type f -size +1M -print -delete | sed 's/^/dropped (> 1 MB): /' >&2 || true

# ---------------------------------------------------------------------------
# Report

report_ok=0
if "$(bench_bin)" report "$OUT" >/dev/null; then report_ok=1; else ed_warn "encapd-bench report $OUT failed"; fi

ed_log "done in ${elapsed}s; results in $OUT"
if ((report_ok)); then
    # The headline: medians, ratios and targets.
    awk '/^## Headline/ {on = 1} /^## Medians per mode/ {on = 0} on' "$OUT/report.md"
else
    column -s, -t <"$CSV" || cat "$CSV"
fi

na=$(awk -F, 'NR > 1 && $4 == "NA"' "$CSV" | wc -l)
if ((${#FAILED_MODES[@]})) || ((na > 0)); then
    ed_warn "incomplete run: setup failed for [${FAILED_MODES[*]}], $na NA values (see results.csv)"
    exit 3
fi
