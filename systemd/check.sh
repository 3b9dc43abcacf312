#!/usr/bin/env bash
# Static checks of systemd/inboxbot.service (called from .ci/run):
#  1. `systemd-analyze verify` prints nothing. verify also insists that every Exec*= binary
#     exists; /opt/inboxbot/bin/inboxbot does not on a build machine, so a copy of the unit,
#     identical except for that path (rewritten to an existing inboxbot: the repo's
#     .venv/bin/inboxbot, else `command -v inboxbot`, else an executable stub), is verified.
#  2. `systemd-analyze security --offline=yes` on the unit as shipped reports an exposure of at
#     most $MAX_EXPOSURE (default 1.5).
# Prints the exposure; exits 1 on any verify output or a higher exposure.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
unit=$here/inboxbot.service
max=${MAX_EXPOSURE:-1.5}
installed=/opt/inboxbot/bin/inboxbot
fail=0

if ! command -v systemd-analyze >/dev/null; then
    if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
        echo "systemd/check.sh: installing systemd (for systemd-analyze)" >&2
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq systemd >/dev/null
    else
        echo "systemd/check.sh: systemd-analyze is missing (apt-get install systemd)" >&2
        exit 1
    fi
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
binary=$here/../.venv/bin/inboxbot
[[ -x $binary ]] || binary=$(command -v inboxbot || true)
if [[ -z $binary ]]; then
    binary=$tmp/inboxbot
    printf '#!/bin/sh\nexit 0\n' >"$binary"
    chmod 755 "$binary"
fi
binary=$(realpath -s "$binary")
mkdir "$tmp/unit"
sed "s|$installed|$binary|g" "$unit" >"$tmp/unit/inboxbot.service"
# Only the binary's path may differ between the shipped and the verified unit.
changed=$(diff "$unit" "$tmp/unit/inboxbot.service" | grep -c '^>' || true)
[[ $changed -ge 2 ]] || { echo "check.sh: expected ExecStartPre/ExecStart on $installed" >&2; exit 1; }

verify=$(cd "$tmp/unit" && systemd-analyze verify --man=no inboxbot.service 2>&1) || true
if [[ -n $verify ]]; then
    echo "systemd-analyze verify: FAIL" >&2
    printf '%s\n' "$verify" | sed "s|$binary|$installed|g" >&2
    fail=1
else
    echo "systemd-analyze verify: ok (no output; ExecStart checked against $binary)"
fi

report=$(systemd-analyze security --offline=yes --no-pager "$unit" 2>&1) || true
exposure=$(printf '%s\n' "$report" | sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p')
if [[ -z $exposure ]]; then
    printf '%s\n' "$report" >&2
    echo "systemd-analyze security: no exposure level in its output" >&2
    fail=1
elif python3 -c "import sys; sys.exit(float(sys.argv[1]) > float(sys.argv[2]))" "$exposure" "$max"; then
    echo "systemd-analyze security: exposure $exposure (limit $max)"
else
    printf '%s\n' "$report" | grep '✗' >&2 || true
    echo "systemd-analyze security: FAIL: exposure $exposure > $max" >&2
    fail=1
fi
exit $fail
