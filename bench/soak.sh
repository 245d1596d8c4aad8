#!/usr/bin/env bash
# Soak test of encapd: sustained load for a long time while nodeA's peers
# file keeps changing; watches both daemons for leaks and for throughput
# decay. A script for humans and nightly jobs, not a CI test.
#
# Usage: bench/soak.sh [--minutes N] [--io ENGINE] [--out DIR] [--rate BPS]
#                      [--slice SECONDS] [--workers N] [--no-build]
#
#   --minutes N    how long to drive load (default 30)
#   --io ENGINE    encapd I/O engine: uring (default), mmsg or classic
#   --out DIR      result directory (default bench/runs/<UTC YYYY-MM-DD-HHMM>-soak-<host>);
#                  under bench/runs/ only from a clean checkout with encapd
#                  built from HEAD (else exit 1); experiments: --out /tmp/...
#   --rate BPS     iperf3 UDP offered rate, iperf3 syntax (default 500M)
#   --slice S      length of one iperf3 run = the sampling period (default 10)
#   --workers N    encapd [dataplane] workers (default 2)
#   --no-build     do not run `cargo build --release` first ($ENCAPD selects the binary)
#
# What it does, in namespaces it creates (scripts/lib.sh topology) and
# removes on every exit path:
#   - starts encapd on nodeA and nodeB (container MTU 1472, as flannel sets it);
#   - repeats, until the time is up: rewrite nodeA's peers file (write a
#     sibling + rename, alternately with and without a peer 100.96.3.0/24 at
#     198.18.0.2), run `iperf3 -u -b RATE -l 1400 -t SLICE` ctrA -> ctrB,
#     then sample RSS, open fds and threads of both encapd processes, and
#     the kernel counters where UDP load is lost (ctrA's veth, nodeA's TUN
#     queue, nodeB's and ctrB's UDP receive buffers);
#   - writes OUT/soak.csv (one row per slice), OUT/summary.txt and
#     OUT/provenance.txt (commit, uncommitted files, encapd's sha256 and the
#     commit it was built from), keeps the encapd logs and iperf3 JSON in OUT.
#
# The summary gives first/last/max RSS, fds and threads per node, the mean
# throughput of the first and the last 5 minutes (of the first and last half
# when the run is shorter than 10 minutes), where datagrams were dropped,
# and a verdict line. The verdict is FAIL if an encapd died or exited
# non-zero, RSS grew by more than 16 MiB after the first slice, the fd or
# thread count changed, a peers-file change was rejected, or the last
# window's throughput is below 90 % of the first window's. Exit status: 0 on
# PASS, 1 on FAIL or when it cannot run at all, 2 on bad usage.
set -euo pipefail

# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/../scripts/lib.sh"

MINUTES=30
IO=uring
OUT=""
RATE=500M
SLICE=10
WORKERS=2
BUILD=1
INVOCATION="$0 $*"

usage() {
    ed_script_help "${BASH_SOURCE[0]}" >&2
    exit "${1:-2}"
}

while (($#)); do
    case $1 in
        --minutes) MINUTES=${2:?--minutes needs a number}; shift 2 ;;
        --minutes=*) MINUTES=${1#*=}; shift ;;
        --io) IO=${2:?--io needs an engine}; shift 2 ;;
        --io=*) IO=${1#*=}; shift ;;
        --out) OUT=${2:?--out needs a directory}; shift 2 ;;
        --out=*) OUT=${1#*=}; shift ;;
        --rate) RATE=${2:?--rate needs a value}; shift 2 ;;
        --rate=*) RATE=${1#*=}; shift ;;
        --slice) SLICE=${2:?--slice needs seconds}; shift 2 ;;
        --slice=*) SLICE=${1#*=}; shift ;;
        --workers) WORKERS=${2:?--workers needs a number}; shift 2 ;;
        --workers=*) WORKERS=${1#*=}; shift ;;
        --no-build) BUILD=0; shift ;;
        -h | --help) usage 0 ;;
        *) echo "unknown argument: $1" >&2; usage 2 ;;
    esac
done

[[ $MINUTES =~ ^[1-9][0-9]*$ ]] || { echo "--minutes must be a positive integer" >&2; exit 2; }
[[ $SLICE =~ ^[1-9][0-9]*$ ]] || { echo "--slice must be a positive integer" >&2; exit 2; }
[[ $WORKERS =~ ^[1-9][0-9]*$ ]] || { echo "--workers must be a positive integer" >&2; exit 2; }
[[ $RATE =~ ^[0-9]+(\.[0-9]+)?[KMGkmg]?$ ]] || { echo "--rate must look like 500M" >&2; exit 2; }
case $IO in uring | mmsg | classic) ;; *) echo "--io must be uring, mmsg or classic" >&2; exit 2 ;; esac

ed_require_root
if ((BUILD)); then
    ed_need_pkgs @build @run
    ed_build
else
    ed_need_pkgs @run
fi
[[ -x $(ed_encapd_bin) ]] || ed_die "encapd binary $(ed_encapd_bin) missing (cargo build --release)"

host=$(hostname -s 2>/dev/null || hostname)
if [[ -z $OUT ]]; then
    OUT="$ED_ROOT/bench/runs/$(date -u +%Y-%m-%d-%H%M)-soak-$host"
    base=$OUT
    n=2
    while [[ -e $OUT ]]; do OUT="$base-$n"; n=$((n + 1)); done
fi
if ed_under_runs "$OUT"; then ed_require_provenance "$(ed_encapd_bin)"; fi
mkdir -p "$OUT/iperf3"
OUT=$(cd "$OUT" && pwd)
ed_provenance_env encapd="$(ed_encapd_bin)" >"$OUT/provenance.txt"
CSV=$OUT/soak.csv
CONF=$OUT/encapd

ed_install_traps
ED_TOPO_PREFIX=$(ed_rand_prefix)
ed_log "results in $OUT"
ed_log "bringing up topology ${ED_TOPO_PREFIX}*"
ed_topo_up "$ED_TOPO_PREFIX"
ed_ns_names "$ED_TOPO_PREFIX"
ed_topo_set_ctr_mtu "$ED_TOPO_PREFIX" $((ED_UL_MTU - 28))

encapd_write_configs "$CONF" "$IO" "$WORKERS"
encapd_check "$CONF" 2>"$OUT/check.log" || ed_die "encapd check rejected the configuration (see $OUT/check.log)"
encapd_start "$CONF" || ed_die "encapd did not start"
PID_A=$ENCAPD_PID_A
PID_B=$ENCAPD_PID_B
ed_ping_ok "$NS_CTRA" "$ED_CTRB_IP" 20 || ed_die "no ping ctrA -> ctrB through encapd"
ed_log "encapd ($IO, $WORKERS workers) running: nodeA pid $PID_A, nodeB pid $PID_B"

PEERS_A=$CONF/peers-a.toml
# peers_a WITH_Y: nodeA's peers file, replaced atomically (sibling + rename).
peers_a() {
    {
        printf '[[peer]]\nsubnet    = "%s"\nsubnet6   = "%s"\npublic_ip = "%s"\n' "$ED_B_SUB" "$ED_B_SUB6" "$ED_B_UL"
        if (($1)); then printf '\n[[peer]]\nsubnet    = "100.96.3.0/24"\npublic_ip = "%s"\n' "$ED_B_UL"; fi
    } >"$PEERS_A.new"
    mv -f "$PEERS_A.new" "$PEERS_A"
}

# proc_sample PID: "rss_kib,fds,threads" (or "NA,NA,NA" once it is gone).
proc_sample() {
    local pid=$1 rss threads fds
    if [[ ! -r /proc/$pid/status ]]; then echo "NA,NA,NA"; return; fi
    rss=$(awk '/^VmRSS:/ {print $2}' "/proc/$pid/status" 2>/dev/null || true)
    threads=$(awk '/^Threads:/ {print $2}' "/proc/$pid/status" 2>/dev/null || true)
    fds=$(find "/proc/$pid/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l)
    echo "${rss:-NA},${fds:-NA},${threads:-NA}"
}

# udp_rcvbuf NS: UDP receive-buffer drops (cumulative) in namespace NS.
udp_rcvbuf() {
    # shellcheck disable=SC2016 # an awk program, not a shell expansion
    ip netns exec "$1" awk '/^Udp:/ { if (!h) { for (i = 1; i <= NF; i++) if ($i == "RcvbufErrors") c = i; h = 1 } else print $c }' \
        /proc/net/snmp 2>/dev/null || echo NA
}

# link_dropped NS DEV: tx_dropped of DEV in NS (cumulative).
link_dropped() {
    ip netns exec "$1" cat "/sys/class/net/$2/statistics/tx_dropped" 2>/dev/null || echo NA
}

# drop_sample: where UDP load can be lost, as cumulative kernel counters:
# ctrA's veth (sender side), nodeA's TUN queue (overrun before encapd
# reads it), nodeB's encapd sockets, ctrB's iperf3 socket.
drop_sample() {
    echo "$(link_dropped "$NS_CTRA" eth0),$(link_dropped "$NS_NODEA" "$ED_TUN"),$(udp_rcvbuf "$NS_NODEB"),$(udp_rcvbuf "$NS_CTRB")"
}

# slice_result JSON: "mbit_per_s,loss_pct" as measured by the iperf3 server.
slice_result() {
    python3 - "$1" <<'PY' 2>/dev/null || echo "NA,NA"
import json, sys
d = json.load(open(sys.argv[1]))
if "error" in d:
    raise SystemExit(1)
end = d["end"]
rcv = end.get("sum_received") or end["sum"]
secs = rcv["seconds"] or 1.0
mbps = (rcv["packets"] - rcv["lost_packets"]) * 1400 * 8 / secs / 1e6 if "packets" in rcv else rcv["bits_per_second"] / 1e6
print(f"{mbps:.1f},{rcv['lost_percent']:.3f}")
PY
}

# run_slice N: one iperf3 UDP run against a fresh one-shot server in ctrB.
IPERF_PORT=5201
run_slice() {
    local n=$1 json="$OUT/iperf3/slice-$1.json" spid cpid rc=0 i
    ip netns exec "$NS_CTRB" timeout $((SLICE + 40)) iperf3 -s -1 -B "$ED_CTRB_IP" -p "$IPERF_PORT" \
        >"$OUT/iperf3/slice-$n.server.log" 2>&1 &
    spid=$!
    ed_track "$spid"
    if ed_wait_port "$NS_CTRB" "$IPERF_PORT" 5; then
        # In the background + wait, so that a signal's trap runs at once.
        ip netns exec "$NS_CTRA" timeout $((SLICE + 30)) iperf3 -c "$ED_CTRB_IP" -p "$IPERF_PORT" \
            --connect-timeout 3000 -J -u -b "$RATE" -l 1400 -t "$SLICE" >"$json" 2>"$OUT/iperf3/slice-$n.err" &
        cpid=$!
        ed_track "$cpid"
        wait "$cpid" || rc=$?
        ed_untrack "$cpid"
        ((rc == 0)) || ed_warn "slice $n: iperf3 client exit status $rc"
    else
        ed_warn "slice $n: iperf3 server did not start"
        echo '{"error":"server did not start"}' >"$json"
    fi
    for ((i = 0; i < 50; i++)); do kill -0 "$spid" 2>/dev/null || break; sleep 0.1; done
    ed_kill_pid "$spid" 1
    wait "$spid" 2>/dev/null || true
    ed_untrack "$spid"
    [[ -s $OUT/iperf3/slice-$n.err ]] || rm -f "$OUT/iperf3/slice-$n.err"
    [[ -s $OUT/iperf3/slice-$n.server.log ]] || rm -f "$OUT/iperf3/slice-$n.server.log"
}

{
    echo "# $INVOCATION"
    echo "# $(date -u +%Y-%m-%dT%H:%M:%SZ) host=$host kernel=$(uname -r) cpus=$(nproc) io=$IO workers=$WORKERS rate=$RATE slice=${SLICE}s"
    echo "# encapd $(ed_encapd_bin)"
    echo "slice,t_start_s,t_end_s,peer_y,rss_a_kib,fds_a,threads_a,rss_b_kib,fds_b,threads_b,mbit_s,loss_pct,ctra_veth_tx_dropped,nodea_tun_tx_dropped,nodeb_udp_rcvbuf_errors,ctrb_udp_rcvbuf_errors"
} >"$CSV"

START=$(date +%s)
DEADLINE=$((START + MINUTES * 60))
ed_log "driving iperf3 UDP $RATE in ${SLICE} s slices for $MINUTES min; peers file rewritten every slice"
echo "0,0,0,0,$(proc_sample "$PID_A"),$(proc_sample "$PID_B"),NA,NA,$(drop_sample)" >>"$CSV"
n=0
rewrites=0
while (($(date +%s) < DEADLINE)); do
    n=$((n + 1))
    with_y=$((n % 2))
    peers_a "$with_y"
    rewrites=$((rewrites + 1))
    t0=$(($(date +%s) - START))
    run_slice "$n"
    t1=$(($(date +%s) - START))
    echo "$n,$t0,$t1,$with_y,$(proc_sample "$PID_A"),$(proc_sample "$PID_B"),$(slice_result "$OUT/iperf3/slice-$n.json"),$(drop_sample)" >>"$CSV"
    if ((n % 6 == 0)); then ed_log "  $(tail -n 1 "$CSV")"; fi
    for pid in "$PID_A" "$PID_B"; do
        kill -0 "$pid" 2>/dev/null || { ed_warn "encapd pid $pid died"; break 2; }
    done
done
ed_log "load done after $(($(date +%s) - START)) s, $n slices, $rewrites peers-file rewrites"

alive=1
for pid in "$PID_A" "$PID_B"; do kill -0 "$pid" 2>/dev/null || alive=0; done
stop_ok=1
encapd_stop || stop_ok=0
cp "$PEERS_A" "$OUT/peers-a.final.toml" 2>/dev/null || true

python3 - "$CSV" "$CONF/a.log" "$CONF/b.log" "$alive" "$stop_ok" "$rewrites" "$SLICE" >"$OUT/summary.txt" <<'PY'
import csv, re, sys

path, log_a, log_b, alive, stop_ok, rewrites, slice_s = sys.argv[1:8]
alive, stop_ok, rewrites, slice_s = alive == "1", stop_ok == "1", int(rewrites), int(slice_s)
rows = list(csv.DictReader(line for line in open(path) if not line.startswith("#")))

def num(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return None

out, fails = [], []
out.append(f"soak summary ({len(rows) - 1} slices of {slice_s} s, {rewrites} peers-file rewrites)")
for node, sfx in (("nodeA", "a"), ("nodeB", "b")):
    for col, unit in (("rss", "KiB"), ("fds", ""), ("threads", "")):
        key = f"{col}_{sfx}_kib" if col == "rss" else f"{col}_{sfx}"
        vals = [num(r[key]) for r in rows if num(r[key]) is not None]
        if not vals:
            fails.append(f"{node}: no {col} samples")
            continue
        first, last, mx = vals[0], vals[-1], max(vals)
        out.append(f"  {node} {col:8s} first {first:8.0f}  last {last:8.0f}  max {mx:8.0f} {unit}")
        # Growth is judged from the end of the first slice (buffers warmed up).
        base = vals[1] if len(vals) > 2 else first
        if col == "rss" and last - base > 16 * 1024:
            fails.append(f"{node} RSS grew by {last - base:.0f} KiB after the first slice")
        if col in ("fds", "threads") and last != first:
            fails.append(f"{node} {col} {first:.0f} -> {last:.0f}")

load = [r for r in rows if r["slice"] != "0"]
end = max((num(r["t_end_s"]) or 0 for r in load), default=0)
window = min(300.0, end / 2) if end else 0
first_w = [num(r["mbit_s"]) for r in load if num(r["t_end_s"]) is not None and num(r["t_end_s"]) <= window]
last_w = [num(r["mbit_s"]) for r in load if num(r["t_start_s"]) is not None and num(r["t_start_s"]) >= end - window]
missing = sum(1 for r in load if num(r["mbit_s"]) is None)
first_w = [v for v in first_w if v is not None]
last_w = [v for v in last_w if v is not None]
loss = [num(r["loss_pct"]) for r in load if num(r["loss_pct"]) is not None]
if first_w and last_w:
    f, l = sum(first_w) / len(first_w), sum(last_w) / len(last_w)
    out.append(f"  throughput first {window / 60:.1f} min {f:8.1f} Mbit/s  last {window / 60:.1f} min {l:8.1f} Mbit/s  ({100 * l / f if f else 0:.1f} %)")
    if l < 0.9 * f:
        fails.append(f"throughput fell from {f:.1f} to {l:.1f} Mbit/s")
else:
    fails.append("no throughput samples")
if loss:
    out.append(f"  UDP loss per slice: min {min(loss):.3f} %  max {max(loss):.3f} %  mean {sum(loss) / len(loss):.3f} %")
where = []
for col, what in (("ctra_veth_tx_dropped", "ctrA veth tx_dropped"), ("nodea_tun_tx_dropped", "nodeA TUN tx_dropped (queue overrun)"),
                  ("nodeb_udp_rcvbuf_errors", "nodeB UDP RcvbufErrors (encapd sockets)"), ("ctrb_udp_rcvbuf_errors", "ctrB UDP RcvbufErrors (iperf3)")):
    vals = [num(r.get(col)) for r in rows if num(r.get(col)) is not None]
    if len(vals) >= 2:
        where.append(f"{what} +{vals[-1] - vals[0]:.0f}")
if where:
    out.append("  where datagrams were dropped: " + ", ".join(where))
if missing:
    fails.append(f"{missing} slices without an iperf3 result")

def last_summary(log):
    text = open(log, errors="replace").read()
    i = text.rfind("encapd counters:")
    return text[i:] if i >= 0 else ""

for node, log in (("nodeA", log_a), ("nodeB", log_b)):
    s = last_summary(log)
    m = re.search(r"tables published (\d+) \| reload failures (\d+)", s)
    drops = re.findall(r"drops (\w+)\s+(\d+)", s)
    total = re.search(r"total\s+egress (\d+) pkts.*?ingress (\d+) pkts", s)
    pub, fail = (int(m.group(1)), int(m.group(2))) if m else (None, None)
    out.append(f"  {node} final counters: egress {total.group(1) if total else '?'} pkts, ingress {total.group(2) if total else '?'} pkts, "
               f"tables published {pub}, reload failures {fail}, drops {', '.join(f'{k} {v}' for k, v in drops) or 'none'}")
    if m is None:
        fails.append(f"{node}: no final counter summary in its log")
    elif fail:
        fails.append(f"{node}: {fail} peers-file reloads rejected")
    if node == "nodeA" and pub is not None and pub == 0 and rewrites > 1:
        fails.append("nodeA published no table although its peers file changed")
if not alive:
    fails.append("an encapd process died during the run")
if not stop_ok:
    fails.append("an encapd did not stop cleanly (SIGTERM, exit 0, TUN removed)")
out.append("verdict: " + ("PASS" if not fails else "FAIL (" + "; ".join(fails) + ")"))
print("\n".join(out))
PY
cat "$OUT/summary.txt"
ed_log "CSV: $CSV"
grep -q '^verdict: PASS' "$OUT/summary.txt"
