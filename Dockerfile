# syntax=docker/dockerfile:1
# dispatch-bridge: one image, three entrypoints.
#   docker run IMAGE serve-bridge   (default) the agent-facing bridge on :8080
#   docker run IMAGE serve-api      dispatch-api on :8081 (needs DISPATCH_DATABASE_URL)
#   docker run IMAGE migrate        apply migrations, seed incident templates, exit
# Build from the repository root: docker build -t dispatch-bridge:dev .

ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

# ---- builder: build the wheel and install it with its dependencies into /opt/venv ----
FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
RUN python -m venv /opt/venv
COPY pyproject.toml README.md ./
COPY bridge/ bridge/
COPY dispatch_api/ dispatch_api/
COPY dispatch_bridge/ dispatch_bridge/
COPY dispatch_client/ dispatch_client/
COPY settings/ settings/
COPY tools/ tools/
COPY schemas/ schemas/
COPY telemetry/ telemetry/
RUN /opt/venv/bin/pip wheel --no-deps --wheel-dir /wheels . \
 && /opt/venv/bin/pip install /wheels/*.whl \
 && /opt/venv/bin/python -m compileall -q /opt/venv/lib

# ---- runtime: the venv only, run as an unprivileged user ----
FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="dispatch-bridge" \
      org.opencontainers.image.description="Agent tool-bridge gateway and dispatch-api" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 10001 app \
 && useradd --system --uid 10001 --gid app --home-dir /home/app --create-home app
COPY --from=builder /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    DISPATCH_API_HOST=0.0.0.0 \
    DISPATCH_API_PORT=8081 \
    DISPATCH_BRIDGE_HOST=0.0.0.0 \
    DISPATCH_BRIDGE_PORT=8080 \
    DISPATCH_DATA_DIR=/home/app/.dispatch
# Memory that stays flat, bought with some throughput. By default glibc raises its mmap
# threshold (and the trim threshold with it) whenever a larger block is freed; medium blocks,
# such as the 256 KiB buffer asyncio reads each socket into, then come from the heap, and a
# small object left behind pins it: RSS crept 6 % in a 10-minute soak with a flat Python heap.
# Fixed 128 KiB thresholds keep it under 1 % (bench/results/soak.md); each socket read then
# costs an mmap/munmap, some 5-10 % of bridge throughput (the Alloc rows of
# bench/results/latest.md). 1 MiB thresholds were faster still but grew 5-7 %.
# PYTHONMALLOC=malloc: every Python object from glibc, not pymalloc's arenas, which one
# surviving object pins: after a burst of 2,000 calls RSS stayed at 1.64x its baseline with
# pymalloc and goes back to 1.18x (the bridge's idle trim returns it; bench/memory.py). Its
# price was within noise: wrk through the bridge 0.92 vs 0.93 of glibc's defaults (Alloc
# rows), soak capacity 184 vs 182 calls/s (median of 3 each), and the soak stayed flat.
# bench/_product.py starts the services with the same values (a test keeps them equal).
ENV MALLOC_MMAP_THRESHOLD_=131072 \
    MALLOC_TRIM_THRESHOLD_=131072 \
    PYTHONMALLOC=malloc
WORKDIR /home/app
USER 10001:10001
EXPOSE 8080 8081
# slim has no curl: probe /healthz with the standard library. HEALTHCHECK_PORT picks the
# service (8080 bridge, 8081 dispatch-api); one-shot jobs disable the check in compose.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD python -c "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('HEALTHCHECK_PORT', os.environ.get('DISPATCH_BRIDGE_PORT', '8080')) + '/healthz', timeout=2)"
STOPSIGNAL SIGTERM
ENTRYPOINT ["dispatch-bridge"]
CMD ["serve-bridge"]
