#!/usr/bin/env bash
# Side-by-side benchmark of encapd against plain routing and kernel VXLAN,
# all in one run on one namespace topology (see bench/README.md).
#
# Usage: bench/run.sh [--reps N] [--quick] [--modes LIST] [--out DIR]
#                     [--workers N] [--ctr-mtu N] [--no-build]
#
#   --reps N       repetitions per mode (default 3); modes are interleaved
#                  within each repetition (routing, vxlan, ..., then again)
#   --quick        3 s per iperf3 test, 200 pings, 1 repetition (unless --reps)
#   --modes LIST   comma-separated subset of routing,vxlan,classic,mmsg,uring
#                  (default: all five)
#   --out DIR      result directory (default bench/runs/<UTC YYYY-MM-DD-HHMM>-<host>)
#   --workers N    encapd [dataplane] workers (default 2)
#   --ctr-mtu N    use this container MTU in every mode instead of the
#                  flannel-style per-backend MTU (1500 / 1450 / 1472)
#   --no-build     do not run `cargo build --release` before encapd modes
#   --no-sockperf  skip the sockperf UDP ping-pong latency test
#
# Run as root. Everything runs inside network namespaces this script creates
# and removes on exit.
set -euo pipefail

# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/../scripts/lib.sh"

ALL_MODES=(routing vxlan classic mmsg uring)
REPS=3
REPS_SET=0
QUICK=0
MODES_ARG=""
OUT=""
WORKERS=2
CTR_MTU=""
BUILD=1
SOCKPERF=1
INVOCATION="$0 $*"

usage() {
    sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//' >&2
    exit "${1:-2}"
}

while (($#)); do
    case $1 in
        --reps) REPS=${2:?--reps needs a number}; REPS_SET=1; shift 2 ;;
        --reps=*) REPS=${1#*=}; REPS_SET=1; shift ;;
        --quick) QUICK=1; shift ;;
        --modes) MODES_ARG=${2:?--modes needs a list}; shift 2 ;;
        --modes=*) MODES_ARG=${1#*=}; shift ;;
        --out) OUT=${2:?--out needs a directory}; shift 2 ;;
        --out=*) OUT=${1#*=}; shift ;;
        --workers) WORKERS=${2:?--workers needs a number}; shift 2 ;;
        --workers=*) WORKERS=${1#*=}; shift ;;
        --ctr-mtu) CTR_MTU=${2:?--ctr-mtu needs a number}; shift 2 ;;
        --ctr-mtu=*) CTR_MTU=${1#*=}; shift ;;
        --no-build) BUILD=0; shift ;;
        --no-sockperf) SOCKPERF=0; shift ;;
        -h | --help) usage 0 ;;
        *) echo "unknown argument: $1" >&2; usage 2 ;;
    esac
done

[[ $REPS =~ ^[1-9][0-9]*$ ]] || ed_die "--reps must be a positive integer"
[[ $WORKERS =~ ^[1-9][0-9]*$ ]] || ed_die "--workers must be a positive integer"
[[ -z $CTR_MTU || $CTR_MTU =~ ^[0-9]+$ ]] || ed_die "--ctr-mtu must be a number"

if ((QUICK)); then
    ((REPS_SET)) || REPS=1
    T_TCP=3
    T_UDP=3
    T_RR=3
    PINGS=200
else
    T_TCP=10
    T_UDP=5
    T_RR=5
    PINGS=300
fi

MODES=()
if [[ -n $MODES_ARG ]]; then
    IFS=, read -r -a MODES <<<"$MODES_ARG"
    for m in "${MODES[@]}"; do
        case " ${ALL_MODES[*]} " in
            *" $m "*) ;;
            *) ed_die "unknown mode '$m' (choose from ${ALL_MODES[*]})" ;;
        esac
    done
else
    MODES=("${ALL_MODES[@]}")
fi
((${#MODES[@]})) || ed_die "no modes selected"

ed_require_root
ed_ensure_pkgs ip:iproute2 bridge:iproute2 ss:iproute2 ping:iputils-ping iperf3:iperf3 python3:python3 timeout:coreutils
if ((SOCKPERF)) && ! command -v sockperf >/dev/null 2>&1; then
    # Optional: a back-to-back UDP ping-pong measures the path's own latency,
    # which ping at 10 ms intervals (dominated by CPU wake-ups) does not.
    (ed_ensure_pkgs sockperf:sockperf) || true
    command -v sockperf >/dev/null 2>&1 || { ed_warn "sockperf unavailable; skipping the udp_rr test"; SOCKPERF=0; }
fi

need_encapd=0
for m in "${MODES[@]}"; do
    case $m in classic | mmsg | uring) need_encapd=1 ;; esac
done
if ((need_encapd)); then
    ((BUILD)) && ed_build
    [[ -x $(ed_encapd_bin) ]] || ed_die "encapd binary $(ed_encapd_bin) missing (cargo build --release)"
fi

host=$(hostname -s 2>/dev/null || hostname)
if [[ -z $OUT ]]; then
    OUT="$ED_ROOT/bench/runs/$(date -u +%Y-%m-%d-%H%M)-$host"
    base=$OUT
    n=2
    while [[ -e $OUT ]]; do OUT="$base-$n"; n=$((n + 1)); done
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

# run_logged FILE_OUT FILE_ERR NS CMD...: record the command, run it in NS.
run_logged() {
    local out=$1 err=$2 ns=$3
    shift 3
    printf '%s\n' "ip netns exec <${ns#"$ED_TOPO_PREFIX"}> $*" >>"$CMDLOG"
    ip netns exec "$ns" "$@" >"$out" 2>"$err"
}

PARSE_PY=$(
    cat <<'PY'
import json, math, re, sys

kind, mode, rep, path = sys.argv[1:5]
rows = []

def row(test, value, unit):
    v = "NA" if value is None else ("%.6g" % value)
    rows.append(f"{mode},{rep},{test},{v},{unit}")

def pct(sorted_vals, p):
    # nearest-rank percentile
    if not sorted_vals:
        return None
    k = max(1, math.ceil(p / 100.0 * len(sorted_vals)))
    return sorted_vals[k - 1]

try:
    if kind.startswith("tcp"):
        d = json.load(open(path))
        if "error" in d:
            raise ValueError(d["error"])
        end = d["end"]
        row(kind, end["sum_received"]["bits_per_second"] / 1e9, "Gbit/s")
        row(kind + "_retrans", end["sum_sent"].get("retransmits"), "count")
    elif kind == "udp64":
        d = json.load(open(path))
        if "error" in d:
            raise ValueError(d["error"])
        end = d["end"]
        rcv = end.get("sum_received") or end["sum"]
        snt = end.get("sum_sent") or end["sum"]
        secs = rcv["seconds"] or 1.0
        sent = rcv["packets"]
        lost = rcv["lost_packets"]
        row("udp64_pps", (sent - lost) / secs, "pps")
        row("udp64_sent_pps", snt["packets"] / (snt["seconds"] or 1.0), "pps")
        row("udp64_loss", rcv["lost_percent"], "%")
    elif kind == "udp_rr":
        text = re.sub(r"\x1b\[[0-9;]*m", "", open(path).read())
        p = {k: float(v) for k, v in re.findall(r"percentile ([0-9.]+) =\s*([0-9.]+)", text)}
        avg = re.search(r"avg-rtt=([0-9.]+)", text)
        if "50.000" not in p or not avg:
            raise ValueError("no sockperf percentiles")
        row("udp_rr_p50", p["50.000"], "us")
        row("udp_rr_p99", p.get("99.000"), "us")
        row("udp_rr_avg", float(avg.group(1)), "us")
    elif kind == "rtt":
        text = open(path).read()
        times = sorted(float(m) * 1000.0 for m in re.findall(r"time=([0-9.]+) ms", text))
        m = re.search(r"(\d+) packets transmitted, (\d+) received", text)
        if not times or not m:
            raise ValueError("no ping replies")
        tx, rx = int(m.group(1)), int(m.group(2))
        row("rtt_p50", pct(times, 50), "us")
        row("rtt_p99", pct(times, 99), "us")
        row("rtt_avg", sum(times) / len(times), "us")
        row("rtt_min", times[0], "us")
        row("rtt_max", times[-1], "us")
        row("rtt_loss", 100.0 * (tx - rx) / tx if tx else None, "%")
except Exception as e:  # record the failure as NA, keep going
    print(f"parse {kind} {path}: {e}", file=sys.stderr)
    rows = []
    names = {"tcp1": [("tcp1", "Gbit/s"), ("tcp1_retrans", "count")],
             "tcp4": [("tcp4", "Gbit/s"), ("tcp4_retrans", "count")],
             "udp64": [("udp64_pps", "pps"), ("udp64_sent_pps", "pps"), ("udp64_loss", "%")],
             "udp_rr": [("udp_rr_p50", "us"), ("udp_rr_p99", "us"), ("udp_rr_avg", "us")],
             "rtt": [("rtt_p50", "us"), ("rtt_p99", "us"), ("rtt_avg", "us"),
                     ("rtt_min", "us"), ("rtt_max", "us"), ("rtt_loss", "%")]}[kind]
    for t, u in names:
        row(t, None, u)
print("\n".join(rows))
PY
)

parse() { python3 -c "$PARSE_PY" "$@" >>"$CSV" || true; }

# iperf_test MODE REP TEST DURATION ARGS...: one iperf3 run against a fresh
# one-shot server in ctrB; raw JSON in raw/, parsed rows in results.csv.
iperf_test() {
    local mode=$1 rep=$2 test=$3 dur=$4
    shift 4
    local base="$RAW/$mode-r$rep-$test" spid rc=0 i
    ip netns exec "$NS_CTRB" timeout $((dur + 40)) iperf3 -s -1 -B "$DST" -p "$IPERF_PORT" >"$base.server.log" 2>&1 &
    spid=$!
    ed_track "$spid"
    printf '%s\n' "ip netns exec <ctrB> timeout $((dur + 40)) iperf3 -s -1 -B $DST -p $IPERF_PORT &" >>"$CMDLOG"
    if ! ed_wait_port "$NS_CTRB" "$IPERF_PORT" 5; then
        ed_warn "$mode rep $rep $test: iperf3 server did not start"
        ed_kill_pid "$spid"
        ed_untrack "$spid"
        echo '{"error":"iperf3 server did not start"}' >"$base.json"
        parse "$test" "$mode" "$rep" "$base.json"
        return 0
    fi
    run_logged "$base.json" "$base.err" "$NS_CTRA" timeout $((dur + 30)) \
        iperf3 -c "$DST" -p "$IPERF_PORT" --connect-timeout 3000 -J -t "$dur" "$@" || rc=$?
    ((rc == 0)) || ed_warn "$mode rep $rep $test: iperf3 client exit status $rc (see $base.json / $base.err)"
    for ((i = 0; i < 50; i++)); do kill -0 "$spid" 2>/dev/null || break; sleep 0.1; done
    ed_kill_pid "$spid" 1
    wait "$spid" 2>/dev/null || true
    ed_untrack "$spid"
    [[ -s $base.err ]] || rm -f "$base.err"
    parse "$test" "$mode" "$rep" "$base.json"
}

rtt_test() {
    local mode=$1 rep=$2 base="$RAW/$1-r$2-rtt" rc=0
    run_logged "$base.txt" "$base.err" "$NS_CTRA" timeout 60 \
        ping -n -i 0.01 -c "$PINGS" -W 1 "$DST" || rc=$?
    ((rc == 0)) || ed_warn "$mode rep $rep rtt: ping exit status $rc"
    [[ -s $base.err ]] || rm -f "$base.err"
    parse rtt "$mode" "$rep" "$base.txt"
}

# sockperf_test MODE REP: UDP ping-pong (64-byte messages, full RTT,
# back-to-back) against a sockperf server in ctrB.
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
    [[ -s $base.err ]] || rm -f "$base.err"
    parse udp_rr "$mode" "$rep" "$base.txt"
}

mode_mtu() {
    if [[ -n $CTR_MTU ]]; then echo "$CTR_MTU"; return; fi
    case $1 in
        routing) echo "$ED_UL_MTU" ;;
        vxlan) echo "$ED_VX_MTU" ;;
        *) echo $((ED_UL_MTU - 28)) ;;
    esac
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
        vxlan)
            echo "# setup: scripts/netns.sh vxlan (flannel.1-style vx0, VNI 1, dstport 8472)" >>"$CMDLOG"
            ed_topo_vxlan "$ED_TOPO_PREFIX"
            ;;
        classic | mmsg | uring)
            local dir="$WORK/$mode-r$rep"
            encapd_write_configs "$dir" "$mode" "$WORKERS"
            mkdir -p "$OUT/configs/$mode"
            cp "$dir"/*.toml "$OUT/configs/$mode/"
            printf '# setup: ip netns exec <nodeX> %s run --config configs/%s/{a,b}.toml\n' "$(ed_encapd_bin)" "$mode" >>"$CMDLOG"
            local chk=0
            encapd_check "$dir" 2>>"$RAW/$mode-r$rep-check.log" || chk=1
            [[ -s $RAW/$mode-r$rep-check.log ]] || rm -f "$RAW/$mode-r$rep-check.log"
            ((chk == 0)) || { ed_warn "$mode: encapd check failed (raw/$mode-r$rep-check.log)"; return 1; }
            encapd_start "$dir" || return 1
            ;;
    esac
    local via
    via=$(ip -n "$NS_NODEA" route get "$DST" 2>/dev/null | head -n1 || true)
    ed_log "  $mode: nodeA route to $DST: $via"
    case $mode in
        routing) [[ $via == *"dev ul0"* ]] || { ed_warn "routing: unexpected route"; return 1; } ;;
        vxlan) [[ $via == *"dev vx0"* ]] || { ed_warn "vxlan: unexpected route"; return 1; } ;;
        *) [[ $via == *"dev $ED_TUN"* ]] || { ed_warn "$mode: route does not use $ED_TUN"; return 1; } ;;
    esac
    ed_ping_ok "$NS_CTRA" "$DST" 15 || { ed_warn "$mode: no connectivity ctrA -> $DST"; return 1; }
}

mode_leave() {
    local mode=$1 rep=$2
    case $mode in
        routing) ed_topo_unroute "$ED_TOPO_PREFIX" ;;
        vxlan)
            ip -n "$NS_NODEA" -s link show dev vx0 >"$RAW/$mode-r$rep-vx0-nodeA.txt" 2>&1 || true
            ed_topo_unvxlan "$ED_TOPO_PREFIX"
            ;;
        classic | mmsg | uring)
            local dir="$WORK/$mode-r$rep"
            if [[ -n $ENCAPD_PID_A || -n $ENCAPD_PID_B ]]; then
                encapd_counters
                encapd_stop || ed_warn "$mode: encapd did not stop cleanly"
            fi
            cp "$dir/a.log" "$RAW/$mode-r$rep-encapd-nodeA.log" 2>/dev/null || true
            cp "$dir/b.log" "$RAW/$mode-r$rep-encapd-nodeB.log" 2>/dev/null || true
            ;;
    esac
}

na_rows() {
    local mode=$1 rep=$2 t
    for t in tcp1:Gbit/s tcp1_retrans:count tcp4:Gbit/s tcp4_retrans:count udp64_pps:pps \
        udp64_sent_pps:pps udp64_loss:% udp_rr_p50:us udp_rr_p99:us udp_rr_avg:us rtt_p50:us rtt_p99:us rtt_avg:us rtt_min:us rtt_max:us rtt_loss:%; do
        echo "$mode,$rep,${t%%:*},NA,${t#*:}" >>"$CSV"
    done
}

started=$(date -u +%Y-%m-%dT%H:%M:%SZ)
t0=$SECONDS
for ((rep = 1; rep <= REPS; rep++)); do
    for mode in "${MODES[@]}"; do
        ed_log "rep $rep/$REPS mode $mode"
        printf '\n# rep %s mode %s (container MTU %s)\n' "$rep" "$mode" "$(mode_mtu "$mode")" >>"$CMDLOG"
        if mode_enter "$mode" "$rep"; then
            iperf_test "$mode" "$rep" tcp1 "$T_TCP"
            iperf_test "$mode" "$rep" tcp4 "$T_TCP" -P 4
            iperf_test "$mode" "$rep" udp64 "$T_UDP" -u -b 0 -l 64
            rtt_test "$mode" "$rep"
            if ((SOCKPERF)); then sockperf_test "$mode" "$rep"; fi
            ed_log "  $(awk -F, -v m="$mode" -v r="$rep" '$1==m && $2==r && ($3=="tcp1"||$3=="tcp4"||$3=="udp64_pps"||$3=="udp64_loss"||$3=="rtt_p50") {printf "%s=%s%s ", $3, $4, $5}' "$CSV")"
        else
            ed_warn "mode $mode rep $rep: setup failed, recording NA"
            na_rows "$mode" "$rep"
        fi
        mode_leave "$mode" "$rep"
    done
done
elapsed=$((SECONDS - t0))

# ---------------------------------------------------------------------------
# summary.md

git_head=$(git -C "$ED_ROOT" rev-parse --verify -q HEAD 2>/dev/null || echo "(no commit yet)")
git_dirty=$(git -C "$ED_ROOT" status --porcelain 2>/dev/null | grep -c . || true)
cpu_model=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)
encapd_version=""
if ((need_encapd)); then encapd_version=$("$(ed_encapd_bin)" --version 2>/dev/null | head -n1 || true); fi

{
    echo "started=$started"
    echo "elapsed_s=$elapsed"
    echo "invocation=$INVOCATION"
    echo "modes=${MODES[*]}"
    echo "reps=$REPS"
    echo "t_tcp=$T_TCP"
    echo "t_udp=$T_UDP"
    echo "pings=$PINGS"
    echo "t_rr=$T_RR"
    echo "sockperf=$( ((SOCKPERF)) && sockperf --version 2>&1 | sed -n 's/.*version \([^ ]*\).*/\1/p' | head -n1)"
    echo "workers=$WORKERS"
    echo "ctr_mtu=${CTR_MTU:-per-mode (routing $ED_UL_MTU, vxlan $ED_VX_MTU, encapd $((ED_UL_MTU - 28)))}"
    echo "kernel=$(uname -r)"
    echo "cpu=$cpu_model"
    echo "nproc=$(nproc)"
    echo "host=$host"
    echo "git_head=$git_head"
    echo "git_dirty_files=$git_dirty"
    echo "iperf3=$(iperf3 --version 2>&1 | head -n1)"
    echo "ping=$(ping -V 2>&1 | head -n1)"
    echo "encapd=$encapd_version"
} >"$OUT/env.txt"

python3 - "$OUT" <<'PY'
import csv, os, statistics, sys

out = sys.argv[1]
env = {}
for line in open(os.path.join(out, "env.txt")):
    k, _, v = line.rstrip("\n").partition("=")
    env[k] = v
rows = list(csv.DictReader(open(os.path.join(out, "results.csv"))))
modes = env["modes"].split()
reps = int(env["reps"])

vals = {}   # (mode, test) -> {rep: value}
for r in rows:
    if r["value"] == "NA":
        continue
    vals.setdefault((r["mode"], r["test"]), {})[int(r["rep"])] = float(r["value"])

def med(mode, test):
    v = list(vals.get((mode, test), {}).values())
    return statistics.median(v) if v else None

def fmt(x, nd=2):
    if x is None:
        return "n/a"
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    return f"{x:.{nd}f}"

cols = [  # (test, header, scale, digits)
    ("tcp1", "TCP 1 stream Gbit/s", 1, 2),
    ("tcp1_retrans", "retrans", 1, 0),
    ("tcp4", "TCP 4 streams Gbit/s", 1, 2),
    ("tcp4_retrans", "retrans", 1, 0),
    ("udp64_pps", "UDP 64 B delivered kpps", 1e-3, 1),
    ("udp64_sent_pps", "sent kpps", 1e-3, 1),
    ("udp64_loss", "loss %", 1, 1),
    ("rtt_p50", "ping RTT p50 µs", 1, 0),
    ("rtt_p99", "ping p99 µs", 1, 0),
    ("udp_rr_p50", "UDP RR p50 µs", 1, 0),
    ("udp_rr_p99", "UDP RR p99 µs", 1, 0),
]
if not env.get("sockperf"):
    cols = [c for c in cols if not c[0].startswith("udp_rr")]
L = []
L.append(f"# encapd benchmark — {env['started']} on {env['host']}")
L.append("")
L.append("## Environment")
L.append("")
L.append(f"- kernel: `{env['kernel']}`")
L.append(f"- CPU: {env['cpu']} ({env['nproc']} CPUs)")
L.append(f"- git HEAD: `{env['git_head']}` ({env['git_dirty_files']} uncommitted/untracked files)")
L.append(f"- iperf3: {env['iperf3']}; ping: {env['ping']}")
if env.get("encapd"):
    L.append(f"- encapd: {env['encapd']}, `workers = {env['workers']}`")
L.append(f"- container MTU: {env['ctr_mtu']}")
L.append(f"- modes: {', '.join(modes)}; repetitions: {reps} (modes interleaved within each repetition); wall time {env['elapsed_s']} s")
L.append("")
L.append("## Commands")
L.append("")
L.append("```")
L.append(f"{env['invocation']}")
L.append(f"# per mode and repetition, in namespace ctrB:  iperf3 -s -1 -B 100.96.2.3 -p 5201   (fresh one-shot server per test)")
L.append(f"# in namespace ctrA:")
L.append(f"iperf3 -c 100.96.2.3 -p 5201 --connect-timeout 3000 -J -t {env['t_tcp']}")
L.append(f"iperf3 -c 100.96.2.3 -p 5201 --connect-timeout 3000 -J -t {env['t_tcp']} -P 4")
L.append(f"iperf3 -c 100.96.2.3 -p 5201 --connect-timeout 3000 -J -t {env['t_udp']} -u -b 0 -l 64")
L.append(f"ping -n -i 0.01 -c {env['pings']} -W 1 100.96.2.3")
if env.get("sockperf"):
    L.append(f"# sockperf {env['sockperf']}; server in ctrB: sockperf server -i 100.96.2.3 -p 11111")
    L.append(f"sockperf ping-pong -i 100.96.2.3 -p 11111 -t {env['t_rr']} -m 64 --full-rtt")
L.append("```")
L.append("")
L.append("Every command actually run is in `commands.log`; raw outputs in `raw/`, all values in `results.csv`.")
L.append("")
L.append("## Medians per mode")
L.append("")
L.append("| mode | " + " | ".join(c[1] for c in cols) + " |")
L.append("|---|" + "---:|" * len(cols))
for m in modes:
    cells = []
    for t, _, s, nd in cols:
        v = med(m, t)
        cells.append(fmt(None if v is None else v * s, nd))
    L.append(f"| {m} | " + " | ".join(cells) + " |")
L.append("")
L.append("UDP: iperf3 `-u -b 0 -l 64` (64-byte UDP payload, 92-byte IP packets); delivered = (sent − lost) / duration, as counted by the iperf3 server. "
         "ping RTT: percentiles (nearest rank) over the individual replies of `ping -i 0.01`, which lets the CPUs idle between packets. "
         "UDP RR: sockperf ping-pong, 64-byte messages back to back, full round trip, sockperf's own percentiles.")
L.append("")

ratio_tests = [("tcp1", "TCP 1"), ("tcp4", "TCP 4"), ("udp64_pps", "UDP 64 B pps"), ("rtt_p50", "ping p50"), ("rtt_p99", "ping p99")]
if env.get("sockperf"):
    ratio_tests += [("udp_rr_p50", "UDP RR p50"), ("udp_rr_p99", "UDP RR p99")]
if "routing" in modes:
    L.append("## Ratios to plain routing, per repetition")
    L.append("")
    L.append("Each value is mode ÷ routing from the same repetition (throughput: higher is better; RTT: lower is better).")
    L.append("")
    L.append("| mode | rep | " + " | ".join(h for _, h in ratio_tests) + " |")
    L.append("|---|---:|" + "---:|" * len(ratio_tests))
    for m in modes:
        if m == "routing":
            continue
        for rep in range(1, reps + 1):
            cells = []
            for t, _ in ratio_tests:
                a = vals.get((m, t), {}).get(rep)
                b = vals.get(("routing", t), {}).get(rep)
                cells.append(f"{a / b:.2f}×" if a is not None and b else "n/a")
            L.append(f"| {m} | {rep} | " + " | ".join(cells) + " |")
    L.append("")

L.append("## Targets")
L.append("")
def target(name, a, b, op, factor, unit_desc):
    if a is None or b is None:
        return f"- {name}: n/a (needs both modes in the run)"
    if op == ">=":
        ok = a >= factor * b
    else:
        ok = a <= factor * b
    ratio = a / b if b else float("nan")
    return f"- {name}: **{'PASS' if ok else 'FAIL'}** ({unit_desc(a)} vs {unit_desc(b)}, ratio {ratio:.2f}×)"
L.append(target("uring TCP 1 stream ≥ 4× classic", med("uring", "tcp1"), med("classic", "tcp1"), ">=", 4.0, lambda x: f"{x:.2f} Gbit/s"))
L.append(target("uring UDP 64 B delivered rate ≥ kernel VXLAN", med("uring", "udp64_pps"), med("vxlan", "udp64_pps"), ">=", 1.0, lambda x: f"{x/1e3:.1f} kpps"))
if env.get("sockperf"):
    L.append(target("uring RTT p50 ≤ 1.5× kernel VXLAN (sockperf UDP RR)", med("uring", "udp_rr_p50"), med("vxlan", "udp_rr_p50"), "<=", 1.5, lambda x: f"{x:.0f} µs"))
L.append(target("uring RTT p50 ≤ 1.5× kernel VXLAN (ping)", med("uring", "rtt_p50"), med("vxlan", "rtt_p50"), "<=", 1.5, lambda x: f"{x:.0f} µs"))
L.append("")
L.append("Medians of the repetitions. Absolute numbers drift on a shared machine; compare modes within one run.")
open(os.path.join(out, "summary.md"), "w").write("\n".join(L) + "\n")
PY

ed_log "done in ${elapsed}s; summary: $OUT/summary.md"
cat "$OUT/summary.md"
