#!/bin/sh
# The real servers the tests talk to: Mosquitto (Debian package) and a Matrix Synapse
# homeserver (PyPI, in its own virtual environment under .cache/synapse). Idempotent.
# Without root (no apt-get) Mosquitto is left out and its tests skip, saying why.
set -eu
cd "$(dirname "$0")/../.."

if ! command -v mosquitto >/dev/null 2>&1 && [ ! -x /usr/sbin/mosquitto ]; then
    if [ "$(id -u)" = 0 ]; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto mosquitto-clients openssl >/dev/null
    else
        echo "install.sh: not root, Mosquitto not installed; the MQTT tests will skip" >&2
    fi
fi

SYNAPSE=.cache/synapse
if [ ! -x "$SYNAPSE/bin/register_new_matrix_user" ]; then
    python3 -m venv "$SYNAPSE"
    "$SYNAPSE/bin/pip" install -q --disable-pip-version-check "matrix-synapse>=1.100"
fi
