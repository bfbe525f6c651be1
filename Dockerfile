# One image for every crm-assets role; the command decides which one a container plays:
#   webserver (default):  dagster-webserver -h 0.0.0.0 -p 3000 -w workspace.grpc.yaml
#   daemon:               dagster-daemon run -w workspace.grpc.yaml
#   code server:          dagster code-server start -m crm_assets.definitions -a defs -h 0.0.0.0 -p 4000 --location-name crm_assets
#   demo CRM:             crm-assets demo-crm --host 0.0.0.0 --port 8765
# See docs/deployment.md and docker-compose.yml.
FROM python:3.11-slim-bookworm

# DAGSTER_EVENT_BATCH_SIZE: wide single-run backfills write one event per partition; batch them.
# DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS: a single-run backfill announces its partitions in one
# planned event, not one per partition (run creation in the daemon/webserver otherwise writes each apart).
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DAGSTER_HOME=/opt/dagster/dagster_home \
    DAGSTER_EVENT_BATCH_SIZE=100 \
    DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS=true \
    CRM_EXPORT_DIR=/opt/dagster/output

RUN groupadd --system --gid 10001 dagster \
    && useradd --system --uid 10001 --gid dagster --home-dir /opt/dagster --shell /usr/sbin/nologin dagster

WORKDIR /opt/dagster/app

# Dependencies first, from the pinned lock: this layer is rebuilt only when the lock changes.
COPY requirements.lock ./
RUN pip install --no-cache-dir --requirement requirements.lock

# Then the project itself, without touching the pinned dependencies.
COPY pyproject.toml README.md ./
COPY crm_assets ./crm_assets
RUN pip install --no-cache-dir --no-deps . \
    && rm -rf build ./*.egg-info

COPY workspace.yaml workspace.grpc.yaml ./
COPY dagster.yaml ${DAGSTER_HOME}/dagster.yaml
RUN mkdir -p "${CRM_EXPORT_DIR}" \
    && chown -R dagster:dagster "${DAGSTER_HOME}" "${CRM_EXPORT_DIR}"

# Numeric, so Kubernetes' runAsNonRoot can verify it.
USER 10001:10001

EXPOSE 3000 4000 8765

# Fits the default role; docker-compose.yml gives the daemon and the code server their own checks.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:3000/server_info', timeout=4).status != 200)"]

CMD ["dagster-webserver", "-h", "0.0.0.0", "-p", "3000", "-w", "workspace.grpc.yaml"]
