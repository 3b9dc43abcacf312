#!/bin/sh
# The real servers the tests talk to: Mosquitto and Dovecot (Debian packages) and a Matrix
# Synapse homeserver (PyPI, in its own virtual environment under .cache/synapse). Idempotent.
# Without root (no apt-get) Mosquitto and Dovecot are left out and their tests skip, saying why.
set -eu
cd "$(dirname "$0")/../.."

missing=""
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || missing="mosquitto mosquitto-clients"
[ -x /usr/sbin/dovecot ] || missing="$missing dovecot-imapd"     # the IMAP source's tests
command -v openssl >/dev/null 2>&1 || missing="$missing openssl"    # test certificates
if [ -n "$missing" ]; then
    if [ "$(id -u)" = 0 ]; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
    else
        echo "install.sh: not root, cannot install:$missing; the tests needing them skip" >&2
    fi
fi

SYNAPSE=.cache/synapse
if [ ! -x "$SYNAPSE/bin/register_new_matrix_user" ]; then
    python3 -m venv "$SYNAPSE"
    "$SYNAPSE/bin/pip" install -q --disable-pip-version-check "matrix-synapse==1.163.2"  # the version the tests were written against
fi
