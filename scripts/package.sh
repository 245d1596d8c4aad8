#!/usr/bin/env bash
# Builds encapd's Debian package into target/debian/ and checks it with
# lintian. As root it first installs what it needs (cargo-deb from
# crates.io, the Debian packages of scripts/lib.sh's @build and @package
# groups); otherwise they must be there.
#
#   scripts/package.sh                  # target/debian/encapd_<version>-1_<arch>.deb
#   scripts/package.sh --revision 2     # encapd_<version>-2: a newer package of the same
#                                       # code, for testing an upgrade
#   scripts/package.sh --no-lintian     # skip the lintian check
#   scripts/package.sh --fast           # lighter compression: seconds instead of minutes
#                                       # on a busy machine (what scripts/test.sh uses)
#   scripts/package.sh --no-build       # package the release binaries already built
#                                       # (scripts/test.sh builds them with the tests;
#                                       # a second `cargo build` would relink them)
#   scripts/package.sh --out DIR        # into DIR (from the repository root) instead of
#                                       # target/debian/. Every build (wherever it writes)
#                                       # deletes the other versions' .deb and .ddeb from
#                                       # target/debian/: cargo-deb does that
#
# Steps: `cargo build --release --locked` (the workspace, as scripts/test.sh
# builds it: the daemon, and encapd-dist); encapd-dist writes the man
# pages, shell completions and Debian changelog into target/dist/; `cargo
# deb --no-build` packages what Cargo.toml's [package.metadata.deb] lists
# (the binary stripped, its debug symbols in encapd-dbgsym_*.ddeb beside
# it); lintian must report no error, warning or info tag that is not
# overridden (dist/debian/lintian-overrides says why for each).
#
# The binary says which commit it was built from (`encapd --version`);
# from a tree with uncommitted changes to its sources that is
# "<commit>-dirty", and a warning says so. The last line printed is the
# path of the .deb.
set -euo pipefail

# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ED_ROOT"

# add_md5sums DEB: DEBIAN/md5sums in DEB, as dh_md5sums writes it (every
# file but the conffiles, whose checksums dpkg keeps itself), so that
# `dpkg --verify encapd` and debsums can check an installed system.
# cargo-deb does not write one; the package is unpacked and rebuilt with
# dpkg-deb, which keeps every file's owner, mode and time.
add_md5sums() {
    local deb=$1 work root
    work=$(mktemp -d /tmp/encapd-deb.XXXXXX)
    root=$work/root
    dpkg-deb -R "$deb" "$root"
    (
        cd "$root"
        find . -path ./DEBIAN -prune -o -type f -printf '%P\n' | LC_ALL=C sort |
            grep -vxF -f <(sed 's|^/||' DEBIAN/conffiles 2>/dev/null || true) |
            tr '\n' '\0' | xargs -0 -r md5sum >DEBIAN/md5sums
    )
    chmod 0644 "$root/DEBIAN/md5sums"
    dpkg-deb --root-owner-group -Zxz -b "$root" "$deb" >/dev/null
    rm -rf "$work"
}

REVISION=1
LINT=1
FAST=()
BUILD=1
OUT=target/debian
while (($#)); do
    case $1 in
        --revision) REVISION=${2:?--revision needs a number}; shift 2 ;;
        --revision=*) REVISION=${1#*=}; shift ;;
        --no-lintian) LINT=0; shift ;;
        --fast) FAST=(--fast); shift ;;
        --no-build) BUILD=0; shift ;;
        --out) OUT=${2:?--out needs a directory}; shift 2 ;;
        --out=*) OUT=${1#*=}; shift ;;
        -h | --help) ed_script_help "$0"; exit 0 ;;
        *) ed_die "unknown argument: $1 (see --help)" ;;
    esac
done
[[ $REVISION =~ ^[1-9][0-9]{0,3}$ ]] || ed_die "--revision $REVISION: a number from 1 to 9999"

if [[ $(id -u) -eq 0 ]]; then
    ed_need_pkgs @build @package
else
    ed_verify_pkgs @build @package
fi
ed_need_cargo_deb

t0=$SECONDS
if ((BUILD)); then
    ed_log "building: cargo build --release --locked"
    cargo build --release --locked >&2 || ed_die "cargo build --release failed"
else
    for bin in encapd encapd-dist; do
        [[ -x target/release/$bin ]] || ed_die "--no-build: target/release/$bin is missing (cargo build --release)"
    done
fi

commit=$(ed_bin_commit target/release/encapd)
case $commit in
    *-dirty) ed_warn "building from uncommitted sources: encapd --version will say $commit" ;;
    unknown | "not reported") ed_warn "encapd does not know its commit ($commit): not built from a git checkout" ;;
esac

ed_log "generating man pages, completions and changelog into target/dist/"
rm -rf target/dist
target/release/encapd-dist man target/dist/man
target/release/encapd-dist completions target/dist/completions
target/release/encapd-dist changelog --revision "$REVISION" --commit "${commit%-dirty}" --out target/dist/changelog

ed_log "packaging: cargo deb --no-build --deb-revision $REVISION --dbgsym"
out=$(cargo deb --no-build --locked --deb-revision "$REVISION" --dbgsym "${FAST[@]}" --output "$OUT/" 2>&1) ||
    { printf '%s\n' "$out" >&2; ed_die "cargo deb failed"; }
deb=$(printf '%s\n' "$out" | grep -E '\.deb$' | tail -n 1)
[[ -n $deb && -f $deb ]] || { printf '%s\n' "$out" >&2; ed_die "cargo deb did not say which .deb it wrote"; }

add_md5sums "$deb"

if ((LINT)); then
    ed_log "lintian $deb"
    # --fail-on info: an info tag is a finding too, unless overridden with
    # its reason; pedantic and experimental tags are shown, not fatal.
    lintian --fail-on error,warning,info --display-info --pedantic "$deb" >&2 ||
        ed_die "lintian found problems in $deb (above)"
fi
ed_log "built $deb in $((SECONDS - t0)) s"
printf '%s\n' "$(realpath "$deb")"
