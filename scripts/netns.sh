#!/usr/bin/env bash
# Test topology for encapd: four network namespaces, nothing in the root one.
#
#   ctrA 100.96.1.2 ── nodeA 198.18.0.1 ══ underlay ══ 198.18.0.2 nodeB ── ctrB 100.96.2.3
#
# Usage:
#   scripts/netns.sh up      [--prefix P] [--env FILE]   create (prints env lines)
#   scripts/netns.sh down    --prefix P                  kill processes in them, delete
#   scripts/netns.sh route   --prefix P                  plain routes between the nodes
#   scripts/netns.sh unroute --prefix P
#   scripts/netns.sh vxlan   --prefix P                  flannel.1-style kernel VXLAN (vx0)
#   scripts/netns.sh unvxlan --prefix P
#   scripts/netns.sh mtu     --prefix P MTU              container-facing veth MTU (both sides)
#   scripts/netns.sh status  --prefix P
#
# `up` prints shell assignments (PREFIX, NS_CTRA, NS_NODEA, NS_NODEB, NS_CTRB)
# on stdout, and also writes them to FILE with --env, so a caller can do
#   eval "$(scripts/netns.sh up)"      or      scripts/netns.sh up --env t.env; . t.env
# The default prefix is "ed<4 random hex>-". Run as root.
set -euo pipefail

# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
    ed_script_help "${BASH_SOURCE[0]}" >&2
    exit "${1:-2}"
}

cmd=${1:-}
[[ -n $cmd ]] || usage 2
shift
prefix=""
envfile=""
args=()
while (($#)); do
    case $1 in
        --prefix) prefix=${2:?--prefix needs a value}; shift 2 ;;
        --prefix=*) prefix=${1#*=}; shift ;;
        --env) envfile=${2:?--env needs a file}; shift 2 ;;
        --env=*) envfile=${1#*=}; shift ;;
        -h | --help) usage 0 ;;
        *) args+=("$1"); shift ;;
    esac
done

case $cmd in
    -h | --help | help) usage 0 ;;
esac

ed_require_root
ed_need_pkgs iproute2 iputils-ping

need_prefix() {
    [[ -n $prefix ]] || ed_die "$cmd needs --prefix P (as printed by 'up')"
    ed_check_prefix "$prefix"
    ed_ns_names "$prefix"
    local ns
    for ns in "$NS_CTRA" "$NS_NODEA" "$NS_NODEB" "$NS_CTRB"; do
        ed_ns_exists "$ns" || ed_die "namespace $ns does not exist"
    done
}

case $cmd in
    up)
        [[ -n $prefix ]] || prefix=$(ed_rand_prefix)
        ed_check_prefix "$prefix"
        # On any failure part-way, remove what was created.
        ED_TOPO_PREFIX=$prefix
        ed_install_traps
        ed_ns_names "$prefix"
        for ns in "$NS_CTRA" "$NS_NODEA" "$NS_NODEB" "$NS_CTRB"; do
            # Never adopt (and later delete) namespaces someone else made.
            ed_ns_exists "$ns" && { ED_TOPO_PREFIX=""; ed_die "namespace $ns already exists; pick another --prefix"; }
        done
        ed_topo_up "$prefix"
        ED_TOPO_PREFIX=""   # success: the caller owns it now
        env_lines=$(printf 'PREFIX=%q\nNS_CTRA=%q\nNS_NODEA=%q\nNS_NODEB=%q\nNS_CTRB=%q\n' \
            "$prefix" "$NS_CTRA" "$NS_NODEA" "$NS_NODEB" "$NS_CTRB")
        if [[ -n $envfile ]]; then printf '%s\n' "$env_lines" >"$envfile"; fi
        printf '%s\n' "$env_lines"
        ed_log "topology up, prefix $prefix (tear down: $0 down --prefix $prefix)"
        ;;
    down)
        [[ -n $prefix ]] || ed_die "down needs --prefix P"
        ed_check_prefix "$prefix"
        ed_ns_names "$prefix"
        found=0
        for ns in "$NS_CTRA" "$NS_NODEA" "$NS_NODEB" "$NS_CTRB"; do
            if ed_ns_exists "$ns"; then found=1; fi
        done
        ed_topo_down "$prefix"
        if ((found)); then ed_log "topology $prefix removed"; else ed_log "no namespaces with prefix $prefix"; fi
        ;;
    route) need_prefix; ed_topo_route "$prefix"; ed_log "plain routes added ($prefix)" ;;
    unroute) need_prefix; ed_topo_unroute "$prefix"; ed_log "plain routes removed ($prefix)" ;;
    vxlan) need_prefix; ed_topo_vxlan "$prefix"; ed_log "vx0 up ($prefix)" ;;
    unvxlan) need_prefix; ed_topo_unvxlan "$prefix"; ed_log "vx0 removed ($prefix)" ;;
    mtu)
        need_prefix
        [[ ${#args[@]} -eq 1 && ${args[0]} =~ ^[0-9]+$ ]] || ed_die "usage: $0 mtu --prefix P MTU"
        ed_topo_set_ctr_mtu "$prefix" "${args[0]}"
        ed_topo_flush_cache "$prefix"
        ;;
    status)
        need_prefix
        for ns in "$NS_CTRA" "$NS_NODEA" "$NS_NODEB" "$NS_CTRB"; do
            echo "== $ns"
            ip -n "$ns" -br addr
            ip -n "$ns" route
            ip -n "$ns" -6 route | grep -v '^fe80\|^multicast\|^ff00' || true
        done
        ;;
    *) usage 2 ;;
esac
