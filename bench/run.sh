#!/usr/bin/env bash
# The benchmark is `encapd-bench run` (bench/tool/src/run/, bench/README.md);
# this wrapper builds it when it is missing and runs it with the options
# given, e.g.
#   sudo bench/run.sh --quick --modes routing,uring --out /tmp/q
# `target/release/encapd-bench run --help` lists the options.
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/../scripts/lib.sh"
bin=${ENCAPD_BENCH:-$ED_ROOT/target/release/encapd-bench}
if [[ ! -x $bin ]]; then
    ed_need_pkgs @build
    ed_build
fi
exec "$bin" run "$@"
