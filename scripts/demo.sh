#!/usr/bin/env bash
# encapd demo: install what it needs, build, then `encapd-bench demo`:
# bring up two nodes in network namespaces, run encapd on both, attach a pod
# to each node as a Kubernetes node does (flannel's subnet.env -> CNI
# bridge + host-local), ping and iperf3 between the pods, print the
# counters, tear everything down. About half a minute; as root.
#
#   podA ── cni0 nodeA [encapd] 198.18.0.1 ══ UDP 8285 (udp) / 8472 (vxlan) ══ 198.18.0.2 [encapd] nodeB cni0 ── podB
#
# Usage: scripts/demo.sh [--backend udp|vxlan] [--io uring|mmsg|classic] [--workers N] [--no-build]
#
# Everything after the packages and the build is encapd-bench's (its
# `demo --help` lists the options); this script only prepares the machine.
set -euo pipefail

# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

BUILD=1
ARGS=()
while (($#)); do
    case $1 in
        --no-build) BUILD=0; shift ;;
        -h | --help) ed_script_help "$0"; exit 0 ;;
        *) ARGS+=("$1"); shift ;;
    esac
done

ed_require_root
printf '\n== prerequisites\n'
if ((BUILD)); then ed_need_pkgs @build @run; else ed_need_pkgs @run; fi
echo "Debian packages: ok ($(iperf3 --version 2>&1 | head -n1))"
if ((BUILD)); then
    printf '\n== cargo build --release\n'
    ed_build
fi
BENCH=$ED_ROOT/target/release/encapd-bench
[[ -x $BENCH ]] || ed_die "no encapd-bench binary at $BENCH (cargo build --release)"
# $ENCAPD selects another encapd binary, as before.
if [[ -n ${ENCAPD:-} ]]; then export ENCAPD_BIN=$ENCAPD; fi
exec "$BENCH" demo "${ARGS[@]}"
