#!/usr/bin/env bash
# Container test (make container-test; minutes the first time, about a minute once cached).
#
# Builds the project's Dockerfile with podman over a debootstrap bookworm base (built once and
# cached under /var/cache/inboxbot-test), then runs the image with a read-only root file
# system against the Mail.td simulator and a webhook receiver on the host's loopback
# (--network=host) and checks: the HEALTHCHECK answers healthy, the daemon runs as the
# image's non-root user, nothing outside /data and /tmp is writable, the state in the /data
# volume survives a restart (a new container on the same volume notifies nothing twice and
# still notifies new mail), and SIGTERM (podman stop -t 15) ends it with exit code 0 within
# the bound. Prints image size and timings. Needs root (apt-get, debootstrap, podman).
set -euo pipefail
# shellcheck source=tests/container/lib.sh
source "$(dirname "$0")/lib.sh"

NAME=inboxbot-test-$$
VOLUME=inboxbot-test-data-$$
STOP_BOUND=${STOP_BOUND:-15}
WORK=$(mktemp -d /tmp/inboxbot-container-test.XXXXXX)
declare -A FIG

cleanup() {
    local rc=$?
    podman rm -f -t 0 "$NAME" >/dev/null 2>&1 || true
    podman volume rm -f "$VOLUME" >/dev/null 2>&1 || true
    stop_pids
    if ((rc == 0)); then rm -rf "$WORK"; else log "logs kept in $WORK"; fi
}
trap cleanup EXIT

ensure_tools
t0=$(now)
if podman image exists "$BASE_IMAGE"; then how="already in podman"
elif [[ -s $CACHE/debian-py-bookworm.tar ]]; then how="imported from the cached tarball"
else how="debootstrap + import"; fi
ensure_base "$BASE_IMAGE" debian-py-bookworm python3,python3-venv,ca-certificates
FIG[base]="$(elapsed "$t0") s ($how; a fresh debootstrap took $(cat "$CACHE/debian-py-bookworm.build-seconds" 2>/dev/null || echo '?') s)"

if [[ -x $REPO/.venv/bin/hadolint ]]; then
    "$REPO/.venv/bin/hadolint" "$REPO/Dockerfile" || die "hadolint"
    log "hadolint: clean"
fi

# A fixed context path: podman 4.3's layer cache keys on it, so unchanged sources rebuild from
# cache across runs. INBOXBOT_TEST_COLD=1 measures a build without any cache first.
snapshot_context "$CACHE/context"
if [[ ${INBOXBOT_TEST_COLD:-} == 1 ]]; then
    build_app_image --no-cache
    FIG[cold]="$APP_BUILD_SECONDS s (--no-cache: venv, pip install from the registry)"
fi
build_app_image
FIG[build]="$APP_BUILD_SECONDS s (cached layers reused where the sources did not change)"
build_app_image
FIG[rebuild]="$APP_BUILD_SECONDS s (nothing changed: every layer cached)"
size=$(podman image inspect --format '{{.Size}}' "$APP_IMAGE")
base_size=$(podman image inspect --format '{{.Size}}' "$BASE_IMAGE")
FIG[size]="$((size / 1000000)) MB (base $((base_size / 1000000)) MB + $(((size - base_size) / 1000000)) MB)"

user=$(podman image inspect --format '{{.Config.User}}' "$APP_IMAGE")
health=$(podman image inspect --format '{{.Config.Healthcheck.Test}}' "$APP_IMAGE")
entry=$(podman image inspect --format '{{.Config.Entrypoint}} {{.Config.Cmd}}' "$APP_IMAGE")
log "image: user=$user healthcheck=$health entrypoint+cmd=$entry"
[[ $user == 10001:10001 ]] || die "image user is '$user'"
[[ $health == "[CMD inboxbot healthcheck]" ]] || die "image healthcheck is '$health' (built without --format docker?)"
[[ $entry == "[inboxbot] [run]" ]] || die "entrypoint/cmd is '$entry'"

start_sim "$WORK"
start_receiver "$WORK"
write_config "$WORK/config" 2s
for n in 1 2 3; do sim_add_message "backlog mail $n"; done
# The secret as compose passes a file secret: bind-mounted to /run/secrets/NAME. (podman
# 4.3's own `--secret` cannot be combined with --read-only: it fails to create the target.)
printf '%s' "$SIM_TOKEN" >"$WORK/mailtd-token"
chmod 0444 "$WORK/mailtd-token"
podman volume create "$VOLUME" >/dev/null
LISTEN_PORT=$(free_port)

start_container() {  # start_container RUN: -d, read-only root, host network; waits until healthy
    local t0 rc
    t0=$(now)
    podman run -d --name "$NAME" --network=host --read-only --tmpfs /tmp \
        -v "$VOLUME:/data" -v "$WORK/config:/config:ro" \
        -v "$WORK/mailtd-token:/run/secrets/mailtd-token:ro" \
        -e INBOXBOT_LISTEN="127.0.0.1:$LISTEN_PORT" -e INBOXBOT_LOG_LEVEL=debug \
        "$APP_IMAGE" >/dev/null
    until podman healthcheck run "$NAME" >/dev/null 2>&1; do
        if [[ $(podman inspect --format '{{.State.Running}}' "$NAME") != true ]]; then
            podman logs "$NAME" >&2 || true
            die "container $1 exited before it was healthy"
        fi
        (($(elapsed "$t0" | cut -d. -f1) < 60)) || die "container $1 not healthy within 60 s"
        sleep 0.2
    done
    FIG[healthy$1]="$(elapsed "$t0") s"
    log "run $1: healthy after ${FIG[healthy$1]} (podman healthcheck run)"
    rc=0; podman healthcheck run "$NAME" >/dev/null || rc=$?
    ((rc == 0)) || die "healthcheck"
}

stop_container() {  # stop_container RUN: SIGTERM, wait at most STOP_BOUND s, must exit 0
    local t0 code
    t0=$(now)
    podman stop -t "$STOP_BOUND" "$NAME" >/dev/null
    FIG[stop$1]="$(elapsed "$t0") s"
    code=$(podman inspect --format '{{.State.ExitCode}}' "$NAME")
    podman logs "$NAME" >"$WORK/run$1.log" 2>&1
    log "run $1: podman stop took ${FIG[stop$1]}, exit code $code"
    [[ $code == 0 ]] || die "exit code $code after SIGTERM (137 = killed at the ${STOP_BOUND} s bound)"
    (($(elapsed "$t0" | cut -d. -f1) < STOP_BOUND)) || die "stop took ${FIG[stop$1]}"
    ! grep -n 'Traceback' "$WORK/run$1.log" || die "a traceback in run $1's log"
    podman rm "$NAME" >/dev/null
}

# Run 1: fresh volume, backlog: notify -> the three mails are notified once.
t_run=$(now)
start_container 1
wait_hooks 3 30
FIG[first]="$(elapsed "$t_run") s from podman run to the 3 backlog notifications"
uid=$(podman exec "$NAME" sh -c 'grep ^Uid: /proc/1/status' | awk '{print $2}')
[[ $uid == 10001 ]] || die "PID 1 runs as uid $uid"
podman exec "$NAME" sh -c 'grep -q " / .*\bro\b" /proc/mounts' || die "root file system is writable"
if podman exec "$NAME" touch /opt/inboxbot/probe 2>/dev/null; then die "wrote to /opt"; fi
podman exec "$NAME" touch /data/probe /tmp/probe || die "cannot write /data or /tmp"
podman exec "$NAME" rm /data/probe /tmp/probe
log "run 1: PID 1 uid=$uid (non-root), root fs read-only, /data and /tmp writable"
podman exec "$NAME" ls -l /data | grep -q 'state.db' || die "no /data/state.db"
stop_container 1
(($(hook_count) == 3)) || die "run 1 sent $(hook_count) notifications, expected 3"

# Run 2: a new container on the same volume: nothing notified again, new mail still is.
start_container 2
sleep 8  # four poll intervals
(($(hook_count) == 3)) || die "run 2 re-notified: $(hook_count) notifications (state lost?)"
sim_add_message "new mail after restart"
wait_hooks 4 20
sleep 4
(($(hook_count) == 4)) || die "expected 4 notifications in all, got $(hook_count)"
dups=$(cut -d' ' -f1 "$HOOKS" | sort | uniq -d | wc -l)
((dups == 0)) || die "$dups duplicate idempotency keys"
log "run 2: state reused (no re-notification of 3 mails), new mail notified once"
stop_container 2

cat <<REPORT

container test: PASS
  image $APP_IMAGE: ${FIG[size]}
  base image:           ${FIG[base]}
  image build:          ${FIG[build]}${FIG[cold]:+
  cold build:           ${FIG[cold]}}
  cached rebuild:       ${FIG[rebuild]}
  time to healthy:      run 1 ${FIG[healthy1]}, run 2 ${FIG[healthy2]} (from podman run)
  first notifications:  ${FIG[first]}
  stop (SIGTERM):       run 1 ${FIG[stop1]}, run 2 ${FIG[stop2]} (bound ${STOP_BOUND} s, exit code 0)
REPORT
