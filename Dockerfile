# inboxbot container image.
#
#   docker build -t inboxbot .                       # or: podman build --format docker …
#   docker run -d --read-only --tmpfs /tmp -v inboxbot-data:/data \
#       -v ./config:/config:ro inboxbot
#
# BASE is any Debian-like image with python3 (>= 3.11) and its venv module: the official
# python:3.12-slim by default; the container tests build over a debootstrap bookworm base.
# HEALTHCHECK needs `--format docker` with podman/buildah (the OCI format drops it).
ARG BASE=python:3.12-slim

# --- build: the project and its dependencies into a venv at /opt/inboxbot -----------------
FROM ${BASE} AS build
# Set by builds behind a TLS-intercepting proxy (build with -v CA:CA:ro --build-arg PIP_CERT=CA).
ARG PIP_CERT=
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_ROOT_USER_ACTION=ignore
RUN python3 -m venv /opt/inboxbot
WORKDIR /src
COPY pyproject.toml README.md ./
COPY bot ./bot
# A wheel of the project (not an editable install), with the optional Sentry support.
RUN /opt/inboxbot/bin/pip install --no-cache-dir ".[sentry]" \
    && /opt/inboxbot/bin/pip uninstall --yes --quiet pip

# --- final: the venv, a fixed non-root user, nothing written outside /data and /tmp ---------
FROM ${BASE}
ARG APP_UID=10001
RUN groupadd --gid "${APP_UID}" inboxbot \
    && useradd --uid "${APP_UID}" --gid "${APP_UID}" --no-create-home \
       --home-dir /data --shell /usr/sbin/nologin inboxbot \
    && mkdir -p /config /data \
    && chown "${APP_UID}:${APP_UID}" /data
COPY --from=build /opt/inboxbot /opt/inboxbot
ENV PATH=/opt/inboxbot/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    INBOXBOT_CONFIG=/config/inboxbot.yaml \
    INBOXBOT_STATE=/data/state.db \
    INBOXBOT_LISTEN=0.0.0.0:9321
WORKDIR /data
VOLUME ["/data"]
EXPOSE 9321
USER ${APP_UID}:${APP_UID}
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["inboxbot", "healthcheck"]
# Exec form: inboxbot is PID 1 and gets SIGTERM itself (it stops within 10 s).
ENTRYPOINT ["inboxbot"]
CMD ["run"]
