#!/usr/bin/env bash
# Real-systemd test (make systemd-test; about two minutes once the bases are cached).
#
# systemd/inboxbot.service, unchanged, under systemd as PID 1 in a privileged podman container
# (--network=host, so the daemon reaches the Mail.td simulator and the webhook receiver on the
# host's loopback). The venv /opt/inboxbot is copied from the image run.sh builds; the only
# drop-in moves the HTTP port off 9321 so the test cannot collide with anything on the host.
# Checks: `systemctl start` returns with the unit active (Type=notify: only READY=1 gets it
# there) and a STATUS= text; the sandbox lets it poll and notify (DynamicUser, credentials,
# StateDirectory); a hung process (kill -STOP) is killed by the watchdog and restarted
# (NRestarts) without re-notifying; `systemctl reload` applies a new configuration and
# refuses a broken one; `systemctl stop` ends it cleanly within TimeoutStopSec.
set -euo pipefail
# shellcheck source=tests/container/lib.sh
source "$(dirname "$0")/lib.sh"

NAME=inboxbot-systemd-test-$$
IMAGE=localhost/inboxbot-test/systemd:test
WORK=$(mktemp -d /tmp/inboxbot-systemd-test.XXXXXX)
declare -A FIG

cleanup() {
    local rc=$?
    if ((rc != 0)) && podman container exists "$NAME"; then
        podman exec "$NAME" journalctl --no-pager -u inboxbot >"$WORK/journal.txt" 2>&1 || true
        podman exec "$NAME" systemctl status --no-pager inboxbot >>"$WORK/journal.txt" 2>&1 || true
        tail -30 "$WORK/journal.txt" >&2
    fi
    podman rm -f -t 0 "$NAME" >/dev/null 2>&1 || true
    stop_pids
    if ((rc == 0)); then rm -rf "$WORK"; else log "logs kept in $WORK"; fi
}
trap cleanup EXIT

in_ct() { podman exec "$NAME" "$@"; }
prop() { in_ct systemctl show -P "$1" inboxbot.service; }
polls() {  # inboxbot_polls_total summed over feeds, from /metrics
    in_ct python3 -c "
import urllib.request as u
text = u.urlopen('http://127.0.0.1:$LISTEN_PORT/metrics', timeout=5).read().decode()
print(int(sum(float(l.split()[-1]) for l in text.splitlines() if l.startswith('inboxbot_polls_total'))))"
}
poll_rate() {  # poll_rate SECONDS: polls counted during SECONDS
    local p0
    p0=$(polls)
    sleep "$1"
    echo $(($(polls) - p0))
}
journal_has() { in_ct journalctl --no-pager -q -u inboxbot.service | grep -q -- "$1"; }
wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...
    local deadline=$((SECONDS + $1)) what=$2
    shift 2
    until "$@"; do
        ((SECONDS < deadline)) || die "$what: not within the time allowed"
        sleep 0.2
    done
}

ensure_tools
t0=$(now)
ensure_base "$BASE_IMAGE" debian-py-bookworm python3,python3-venv,ca-certificates
ensure_base "$SYSTEMD_BASE_IMAGE" debian-systemd-bookworm \
    python3,python3-venv,ca-certificates,systemd,systemd-sysv,dbus,procps
snapshot_context "$CACHE/context"
build_app_image  # shellcheck disable=SC2119
FIG[images]="$(elapsed "$t0") s (bases $(podman image exists "$SYSTEMD_BASE_IMAGE" && echo cached); app image $APP_BUILD_SECONDS s)"

start_sim "$WORK"
start_receiver "$WORK"
write_config "$WORK/etc-inboxbot" 2s
for n in 1 2 3; do sim_add_message "backlog mail $n"; done
LISTEN_PORT=$(free_port)

mkdir -p "$WORK/build"
cp "$REPO/systemd/inboxbot.service" "$WORK/build/"
printf '%s' "$SIM_TOKEN" >"$WORK/build/inboxbot.mailtd-token"
cat >"$WORK/build/test-port.conf" <<CONF
[Service]
Environment=INBOXBOT_LISTEN=127.0.0.1:$LISTEN_PORT
CONF
cat >"$WORK/build/Containerfile" <<CONTAINERFILE
FROM $SYSTEMD_BASE_IMAGE
COPY --from=$APP_IMAGE /opt/inboxbot /opt/inboxbot
COPY inboxbot.service /etc/systemd/system/inboxbot.service
COPY test-port.conf /etc/systemd/system/inboxbot.service.d/test-port.conf
COPY inboxbot.mailtd-token /etc/credstore/inboxbot.mailtd-token
RUN chmod 0700 /etc/credstore && chmod 0600 /etc/credstore/inboxbot.mailtd-token \\
    && systemctl mask systemd-networkd-wait-online.service getty@tty1.service console-getty.service
CMD ["/sbin/init"]
CONTAINERFILE
podman build -q --network=host -t "$IMAGE" -f "$WORK/build/Containerfile" "$WORK/build" >/dev/null

# /run must be a shared mount: systemd builds each unit's $CREDENTIALS_DIRECTORY in a child
# mount namespace and relies on propagation (with podman's private /run tmpfs, LoadCredential=
# yields an empty, root-only directory).
podman run -d --name "$NAME" --privileged --systemd=always --network=host --tmpfs /run:rw,rshared \
    -v "$WORK/etc-inboxbot:/etc/inboxbot" "$IMAGE" >/dev/null
wait_for 60 "systemd boots" sh -c "podman exec $NAME systemctl is-system-running 2>/dev/null | grep -qE 'running|degraded'"
log "systemd $(in_ct systemctl --version | head -1 | cut -d' ' -f2) is PID 1: $(in_ct systemctl is-system-running || true)"

# 1. start: Type=notify, so `systemctl start` returns once READY=1 arrived.
t0=$(now)
in_ct systemctl start inboxbot.service || die "systemctl start"
FIG[ready]="$(elapsed "$t0") s"
[[ $(prop ActiveState) == active ]] || die "not active after start"
status=$(prop StatusText)
[[ -n $status ]] || die "no STATUS= text"
pid=$(prop MainPID)
uid=$(in_ct ps -o uid= -p "$pid" | tr -d ' ')
log "start: active after ${FIG[ready]} (systemctl start, ExecStartPre check included); STATUS=$status; uid $uid"
((uid >= 61184 && uid <= 65519)) || die "uid $uid is not a DynamicUser uid"
wait_hooks 3 30
in_ct test -f /var/lib/private/inboxbot/state.db || die "no state.db in the StateDirectory"
in_ct python3 -c "import urllib.request as u; u.urlopen('http://127.0.0.1:$LISTEN_PORT/healthz', timeout=5)" \
    || die "/healthz"
in_ct python3 -c "import urllib.request as u; b=u.urlopen('http://127.0.0.1:$LISTEN_PORT/metrics', timeout=5).read(); assert b'inboxbot' in b" \
    || die "/metrics"
log "sandboxed daemon: 3 notifications, state.db in /var/lib/private/inboxbot, /healthz and /metrics answer"

# 2. watchdog: a stopped process sends no WATCHDOG=1; after WatchdogSec systemd kills it and
#    Restart=on-failure starts it again.
watchdog=$(prop WatchdogUSec)
in_ct kill -STOP "$pid"
t0=$(now)
wait_for 90 "watchdog restart" sh -c "[ \"\$(podman exec $NAME systemctl show -P NRestarts inboxbot.service)\" = 1 ] && [ \"\$(podman exec $NAME systemctl is-active inboxbot.service)\" = active ]"
FIG[watchdog]="$(elapsed "$t0") s (WatchdogSec=$watchdog, RestartSec=$(prop RestartUSec))"
newpid=$(prop MainPID)
[[ $newpid != "$pid" ]] || die "same MainPID after the restart"
journal_has "Watchdog timeout" || die "no watchdog timeout in the journal"
log "watchdog: hung PID $pid killed, restarted as PID $newpid after ${FIG[watchdog]}; NRestarts=1"
sleep 5
(($(hook_count) == 3)) || die "the restart re-notified: $(hook_count) notifications"

# 3. reload: a broken configuration is refused (still running), a valid one is applied.
printf 'accounts: [\n' >"$WORK/etc-inboxbot/broken.yaml"
cp "$WORK/etc-inboxbot/inboxbot.yaml" "$WORK/inboxbot.yaml.good"
cp "$WORK/etc-inboxbot/broken.yaml" "$WORK/etc-inboxbot/inboxbot.yaml"
in_ct systemctl reload inboxbot.service || die "systemctl reload (broken config)"
wait_for 20 "reload refused" journal_has "reload refused"
[[ $(prop ActiveState) == active && $(prop MainPID) == "$newpid" ]] || die "a broken config stopped it"
before=$(poll_rate 10)
sed -e 's/every: 2s/every: 6s/' "$WORK/inboxbot.yaml.good" >"$WORK/etc-inboxbot/inboxbot.yaml"
sed -i 's/title: "{{ item.subject }}"/title: "v2 {{ item.subject }}"/' "$WORK/etc-inboxbot/rules/all.yaml"
t0=$(now)
in_ct systemctl reload inboxbot.service || die "systemctl reload"
wait_for 60 "reloaded" journal_has "event=reloaded"
FIG[reload]="$(elapsed "$t0") s"
[[ $(prop ActiveState) == active && $(prop MainPID) == "$newpid" ]] || die "reload restarted it"
sim_add_message "mail after reload"
wait_hooks 4 30
grep -q ' v2 mail after reload$' "$HOOKS" || die "the new rule was not applied: $(tail -1 "$HOOKS")"
after=$(poll_rate 12)
log "reload: polls in 10 s at every: 2s: $before; in 12 s at every: 6s: $after"
((before >= 4 && after <= 3)) || die "the new interval did not take effect ($before, then $after polls)"
FIG[rates]="$before polls/10 s before, $after polls/12 s after"
log "reload: broken config refused and kept running; new config (every 6s, new title) applied in ${FIG[reload]}, same PID"
in_ct journalctl --no-pager -q -u inboxbot.service -g 'reload' | tail -3 >&2 || true

# 4. stop: SIGTERM, the daemon exits 0 well within TimeoutStopSec.
t0=$(now)
in_ct systemctl stop inboxbot.service
FIG[stop]="$(elapsed "$t0") s (TimeoutStopSec=$(prop TimeoutStopUSec))"
[[ $(prop Result) == success ]] || die "Result=$(prop Result) after stop"
[[ $(prop ActiveState) == inactive ]] || die "not inactive after stop"
journal_has "stopped" || die "no 'stopped' line in the journal"
log "stop: inactive after ${FIG[stop]}, Result=success"

cat <<REPORT

systemd test: PASS
  images:               ${FIG[images]}
  start -> active:      ${FIG[ready]} (systemctl start; Type=notify, READY=1)
  watchdog restart:     ${FIG[watchdog]} after kill -STOP
  reload applied:       ${FIG[reload]} from systemctl reload to the 'reloaded' log line (interval 2s -> 6s: ${FIG[rates]})
  stop:                 ${FIG[stop]}
REPORT
