# syntax=docker/dockerfile:1
# Semantic router image: the ext_proc sidecar with the exported ONNX encoder baked in.
#   docker build -t semantic-router .                 # runtime image (router only)
#   docker build --target demo -t semantic-router-demo .   # + the demo upstreams (devstack/), for compose
# Torch is needed only to export the encoder: it lives in the builder's throwaway .venv-build and
# never reaches the runtime image. Pass --build-arg PIP_EXTRA_INDEX_URL=<a CPU-only torch index>
# to avoid downloading CUDA wheels in the builder.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder
ARG PIP_EXTRA_INDEX_URL=""
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_EXTRA_INDEX_URL=${PIP_EXTRA_INDEX_URL} \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY pyproject.toml setup.py MANIFEST.in README.md ./
COPY proto ./proto
COPY router ./router
# The runtime environment: a plain (non-editable) install, copied whole into the final stage. The wheel
# build compiles proto/ into the package (setup.py), so nothing is generated at run time.
RUN python -m venv /opt/venv && /opt/venv/bin/pip install .
# The model: the offline package runs from the source tree (cwd first on sys.path; it is not in the wheel),
# with torch in the throwaway /src/.venv-build. Same command as `make models`.
COPY offline ./offline
RUN /opt/venv/bin/python -m offline build \
    && test -f models/minilm/manifest.json

FROM ${PYTHON_IMAGE} AS runtime
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# libgomp: OpenMP runtime some native wheels (onnxruntime, milvus-lite) load at import.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1 \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin router
WORKDIR /app
COPY --from=builder /opt/venv /opt/venv
COPY --from=builder /src/models ./models
COPY config ./config
COPY envoy ./envoy
RUN mkdir -p var && chown router:router var
USER 10001
# 50051 ext_proc gRPC (Envoy -> router), 9190 /metrics /healthz /readyz
EXPOSE 50051 9190
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9190/healthz', timeout=2)"]
# The same command `make run` starts (docker-compose.yml and deploy/kubernetes use it too).
CMD ["semantic-router", "serve", "--config", "config/config.yaml"]

# Demo upstreams for docker-compose (fake OpenAI-compatible model servers); not for production.
FROM runtime AS demo
USER root
RUN pip install "aiohttp>=3.9"
COPY devstack ./devstack
USER 10001
HEALTHCHECK NONE
