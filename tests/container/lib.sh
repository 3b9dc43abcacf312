# shellcheck shell=bash disable=SC2034  # variables are used by the scripts that source this
# Shared helpers of tests/container/run.sh and tests/container/systemd.sh (sourced, not run).
# Installs podman/buildah/runc/debootstrap when missing, configures them the way RECIPES.md
# measured them on these machines, and builds (once) the debootstrap bookworm base images,
# caching the root file system tarballs under $CACHE so that a wiped podman store is refilled
# by `podman import` in seconds instead of a new debootstrap.

CACHE=${INBOXBOT_TEST_CACHE:-/var/cache/inboxbot-test}
BASE_IMAGE=localhost/inboxbot-test/debian-py:bookworm          # python3 + venv: the Dockerfile's BASE
SYSTEMD_BASE_IMAGE=localhost/inboxbot-test/debian-systemd:bookworm  # + systemd as PID 1
APP_IMAGE=${INBOXBOT_TEST_IMAGE:-localhost/inboxbot:test}
CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)

log() { printf '[%(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "FAIL: $*"; exit 1; }
now() { date +%s.%N; }
elapsed() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f}')" "$1" "${2:-$(now)}"; }

ensure_tools() {
    local missing=()
    for tool in podman buildah runc debootstrap; do
        command -v "$tool" >/dev/null || missing+=("$tool")
    done
    if ((${#missing[@]})); then
        [[ $(id -u) == 0 ]] || die "needs root to install ${missing[*]}"
        log "installing ${missing[*]} (apt-get)"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
    if [[ ! -e /etc/containers/containers.conf ]]; then
        mkdir -p /etc/containers
        cat > /etc/containers/containers.conf <<'CONF'
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=4096:4096"]

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
CONF
    fi
}

# ensure_base IMAGE NAME PACKAGES: debootstrap --variant=minbase bookworm with PACKAGES into a
# tarball under $CACHE (once), imported as IMAGE (when podman does not have it).
ensure_base() {
    local image=$1 name=$2 packages=$3 tarball="$CACHE/$2.tar" root t0
    if podman image exists "$image"; then
        log "base $image: cached in podman"
        return
    fi
    mkdir -p "$CACHE/debs"
    if [[ ! -s $tarball ]]; then
        t0=$(now)
        root=$(mktemp -d "$CACHE/root.XXXXXX")
        log "base $image: debootstrap bookworm ($packages), about a minute"
        debootstrap --variant=minbase --cache-dir="$CACHE/debs" --include="$packages" \
            bookworm "$root" http://deb.debian.org/debian >"$CACHE/$name.debootstrap.log" 2>&1 \
            || { rm -rf "$root"; die "debootstrap failed, see $CACHE/$name.debootstrap.log"; }
        rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
        tar -C "$root" -c . >"$tarball.tmp" && mv "$tarball.tmp" "$tarball"
        rm -rf "$root"
        log "base $image: debootstrap took $(elapsed "$t0") s"
        elapsed "$t0" >"$CACHE/$name.build-seconds"
    fi
    t0=$(now)
    podman import -q "$tarball" "$image" >/dev/null
    log "base $image: imported from $tarball in $(elapsed "$t0") s"
}

# snapshot_context DIR: the build context as it is now (the tree may change during the test).
snapshot_context() {
    rm -rf "$1"
    mkdir -p "$1"
    tar -C "$REPO" --exclude=__pycache__ -c Dockerfile .dockerignore pyproject.toml README.md bot \
        | tar -C "$1" -x
    CONTEXT=$1
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# build_app_image [PODMAN BUILD OPTIONS]: the project's Dockerfile over the debootstrap base
# (pip in the build goes through the intercepting proxy: it needs the host's CA bundle).
build_app_image() {
    local t0
    CONTEXT=${CONTEXT:-$REPO}
    t0=$(now)
    log "building $APP_IMAGE from Dockerfile (BASE=$BASE_IMAGE)"
    podman build -q --network=host --format docker \
        --build-arg BASE="$BASE_IMAGE" --build-arg PIP_CERT="$CA_BUNDLE" \
        -v "$CA_BUNDLE:$CA_BUNDLE:ro" \
        "$@" -t "$APP_IMAGE" -f "$CONTEXT/Dockerfile" "$CONTEXT" >/dev/null
    APP_BUILD_SECONDS=$(elapsed "$t0")
    log "image built in $APP_BUILD_SECONDS s"
}

# --- host-side fakes: the Mail.td simulator and a webhook receiver, on loopback ------------

PY=${INBOXBOT_TEST_PYTHON:-$REPO/.venv/bin/python}
PIDS=()

wait_http() {  # wait_http URL SECONDS
    local deadline=$((SECONDS + $2))
    until python3 -c "
import sys, urllib.error, urllib.request
try:
    urllib.request.urlopen(sys.argv[1], timeout=1)
except urllib.error.HTTPError:
    pass  # an HTTP answer, whatever its status
" "$1" 2>/dev/null; do
        ((SECONDS < deadline)) || die "nothing answers $1"
        sleep 0.1
    done
}

# start_sim DIR: the Mail.td simulator on 127.0.0.1:$SIM_PORT with one account, box@mail.td,
# token $SIM_TOKEN; sets SIM_URL.
start_sim() {
    SIM_PORT=$(free_port)
    SIM_URL=http://127.0.0.1:$SIM_PORT
    SIM_TOKEN=td_containertest0123456789abcdef
    (cd "$REPO" && exec "$PY" -m bot.sim.mailtd --port "$SIM_PORT" --accounts 0) \
        >"$1/sim.log" 2>&1 </dev/null &
    PIDS+=($!)
    wait_http "$SIM_URL/" 10
    python3 - "$SIM_URL" "$SIM_TOKEN" <<'PYEOF' || die "simulator control API"
import json, sys, urllib.request
url, token = sys.argv[1:]
body = json.dumps({"address": "box@mail.td", "token": token}).encode()
req = urllib.request.Request(url + "/_sim/accounts", body, {"Content-Type": "application/json"})
urllib.request.urlopen(req, timeout=5)
PYEOF
}

sim_add_message() {  # sim_add_message SUBJECT
    python3 - "$SIM_URL" "$1" <<'PYEOF' || die "simulator: add message"
import json, sys, urllib.request
url, subject = sys.argv[1:]
body = json.dumps({"account": "box@mail.td", "sender": "alice@example.org", "subject": subject,
                   "text_body": f"Hello, this is {subject}."}).encode()
req = urllib.request.Request(url + "/_sim/messages", body, {"Content-Type": "application/json"})
urllib.request.urlopen(req, timeout=5)
PYEOF
}

# start_receiver DIR: a webhook receiver on 127.0.0.1:$HOOK_PORT appending one line per POST
# ("<Idempotency-Key> <title>") to DIR/hooks.txt; sets HOOK_URL and HOOKS.
start_receiver() {
    HOOK_PORT=$(free_port)
    HOOK_URL=http://127.0.0.1:$HOOK_PORT/hook
    HOOKS=$1/hooks.txt
    : >"$HOOKS"
    python3 - "$HOOK_PORT" "$HOOKS" >"$1/receiver.log" 2>&1 </dev/null <<'PYEOF' &
import json, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
port, out = int(sys.argv[1]), sys.argv[2]
class Hook(BaseHTTPRequestHandler):
    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with open(out, "a") as f:
            print(self.headers.get("Idempotency-Key"), body.get("title"), file=f, flush=True)
        self.send_response(200); self.send_header("Content-Length", "0"); self.end_headers()
    def do_GET(self):
        self.send_response(200); self.send_header("Content-Length", "0"); self.end_headers()
ThreadingHTTPServer(("127.0.0.1", port), Hook).serve_forever()
PYEOF
    PIDS+=($!)
    wait_http "http://127.0.0.1:$HOOK_PORT/" 10
}

hook_count() { wc -l <"$HOOKS"; }
wait_hooks() {  # wait_hooks N SECONDS: until N notifications arrived
    local deadline=$((SECONDS + $2))
    until (($(hook_count) >= $1)); do
        ((SECONDS < deadline)) || die "expected $1 notifications within $2 s, got $(hook_count)"
        sleep 0.2
    done
}

stop_pids() {
    local pid
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    PIDS=()
}

# write_config DIR EVERY: DIR/inboxbot.yaml + rules, one Mail.td feed every EVERY against the
# simulator, every mail notified to the webhook; the token through ${credential:mailtd-token}.
write_config() {
    mkdir -p "$1/rules" "$1/templates"
    cat >"$1/inboxbot.yaml" <<YAML
accounts:
  box:
    type: mailtd
    base_url: $SIM_URL
    account_id: box@mail.td
    token: \${credential:mailtd-token}
    every: $2
sinks:
  hook: {type: webhook, url: "$HOOK_URL"}
rules: [rules/*.yaml]
backlog: notify
YAML
    cat >"$1/rules/all.yaml" <<'YAML'
- name: every-mail
  when: {kind: email}
  notify: [{sink: hook, title: "{{ item.subject }}", message: "from {{ item.sender }}"}]
YAML
    chmod -R a+rX "$1"
}
