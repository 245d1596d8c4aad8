#!/usr/bin/env bash
# The simulated fleet as a benchmark: scripts/cluster.sh at N = 32 (by
# default) with every measurement — full mesh, join/leave convergence
# (p50/p99 over all nodes), a rolling --takeover upgrade of every node
# under counted UDP streams and TCP transfers, RSS/threads/fds per node —
# its figures written to a directory.
#
# Usage: bench/cluster.sh --out DIR [--nodes N] [--no-build] [scripts/cluster.sh options...]
#
#   --out DIR    result directory (required): figures.txt (key=value),
#                convergence.txt (every join/leave sample: event node
#                published_ms observed_ms), resources.txt (per node),
#                env.txt (commit, uncommitted files, sha256 of encapd and
#                the commit it says it was built from, machine, load),
#                output.txt (the script's stdout) and logs/. Under
#                bench/runs/ only from a clean checkout with encapd built
#                from HEAD (else exit 1).
#   --nodes N    fleet size (default 32)
#   --no-build   do not run `cargo build --release` first ($ENCAPD selects the binary)
#
# Other options (--rounds, --streams, --udp-rate, --tcp, --upgrade-bin, ...)
# go to scripts/cluster.sh unchanged. Exit status: that of scripts/cluster.sh
# (0 pass, 1 fail, 2 usage). Run as root; everything happens in network
# namespaces the script creates and removes.
set -euo pipefail

# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/../scripts/lib.sh"

OUT=""
NODES=32
BUILD=1
PASS=()
while (($#)); do
    case $1 in
        --out) OUT=${2:?--out needs a directory}; shift 2 ;;
        --out=*) OUT=${1#*=}; shift ;;
        --nodes) NODES=${2:?--nodes needs a number}; shift 2 ;;
        --nodes=*) NODES=${1#*=}; shift ;;
        --no-build) BUILD=0; shift ;;
        -h | --help) ed_script_help "${BASH_SOURCE[0]}"; exit 0 ;;
        *) PASS+=("$1"); shift ;;
    esac
done
[[ -n $OUT ]] || { echo "bench/cluster.sh: --out DIR is required (see --help)" >&2; exit 2; }

ed_require_root
if ((BUILD)); then
    ed_need_pkgs @build
    ed_build
fi
# Refuse early (before a build's worth of waiting is wasted on a run that
# could not be committed); scripts/cluster.sh checks again and records it.
if ed_under_runs "$OUT"; then ed_require_provenance "$(ed_encapd_bin)"; fi
# The output goes to a temp file first: scripts/cluster.sh checks the
# provenance again and must find the checkout (and $OUT) still clean.
tmp_out=$(mktemp /tmp/encapd-cluster-output.XXXXXX)
rc=0
"$ED_ROOT/scripts/cluster.sh" --nodes "$NODES" --out "$OUT" "${PASS[@]}" all | tee "$tmp_out" || rc=$?
mkdir -p "$OUT"
mv "$tmp_out" "$OUT/output.txt"
ed_log "figures in $OUT/figures.txt"
exit "$rc"
