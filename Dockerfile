# syntax=docker/dockerfile:1
# Semantic router image: the ext_proc sidecar with the exported ONNX encoder baked in.
#   docker build -t semantic-router .                        # runtime image (router only)
#   docker build --target demo -t semantic-router-demo .     # + the demo upstreams (devstack/), for compose
# The build arg SOURCE chooses where the builder gets the package and the model:
#   SOURCE=index (default, needs network): pip installs this context and its dependencies from the package
#     index; the encoder is exported with `python -m offline build`. Torch lives only in the builder's
#     throwaway .venv-build and never reaches the runtime image. Pass --build-arg PIP_EXTRA_INDEX_URL=<a
#     CPU-only torch index> to avoid downloading CUDA wheels.
#   SOURCE=wheelhouse (no network at all): pip installs the wheel and its dependencies from a wheelhouse built
#     on the host (`make wheelhouse`), and the encoder built on the host (`make models`) is copied in, both
#     given as named build contexts. CI builds the image this way (deploy/image_check.py, with podman):
#       docker build --build-arg SOURCE=wheelhouse --build-context wheels=var/wheelhouse \
#                    --build-context models=models -t semantic-router .
# Either way the runtime stage is the same: the venv and models/ from the builder, nothing else.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm
ARG SOURCE=index

FROM ${PYTHON_IMAGE} AS builder-index
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
# xds-protos ships an old copy of opentelemetry/proto/; opentelemetry-proto's own files must win (README, Tracing).
RUN python3 -m venv /opt/venv && /opt/venv/bin/pip install . \
    && /opt/venv/bin/pip install --force-reinstall --no-deps "$(/opt/venv/bin/pip freeze | grep '^opentelemetry-proto==')"
# The model: the offline package runs from the source tree (cwd first on sys.path; it is not in the wheel),
# with torch in the throwaway /src/.venv-build. Same command as `make models`.
COPY offline ./offline
RUN /opt/venv/bin/python -m offline build \
    && test -f models/minilm/manifest.json && test -f models/cache-pair/manifest.json

FROM ${PYTHON_IMAGE} AS builder-wheelhouse
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
# The same install as a user's `pip install semantic-router`, from the host's wheelhouse only.
COPY --from=wheels . /wheels
RUN python3 -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-index --find-links /wheels semantic-router \
    && /opt/venv/bin/pip install --no-index --find-links /wheels --force-reinstall --no-deps \
       "$(/opt/venv/bin/pip freeze | grep '^opentelemetry-proto==')"
COPY --from=models minilm ./models/minilm
COPY --from=models cache-pair ./models/cache-pair
RUN test -f models/minilm/manifest.json && test -f models/cache-pair/manifest.json

FROM builder-${SOURCE} AS builder

FROM ${PYTHON_IMAGE} AS runtime
# HOME is var/, the one writable directory (an emptyDir under Kubernetes' read-only root filesystem): libraries
# keep their own files under ~ (milvus-lite's mmap directory ~/.cache/milvus; without it every collection
# operation fails with "Mmap manager has not been init").
ENV PATH=/opt/venv/bin:$PATH \
    HOME=/app/var \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# libgomp: OpenMP runtime some native wheels (onnxruntime, milvus-lite) load at import. Installed from
# Debian unless the base image already has it (the offline CI base does, so that build needs no network).
RUN if ! ldconfig -p | grep -q 'libgomp\.so\.1'; then \
        apt-get update \
        && apt-get install -y --no-install-recommends libgomp1 \
        && rm -rf /var/lib/apt/lists/*; \
    fi \
    && useradd --system --uid 10001 --home-dir /app/var --no-create-home --shell /usr/sbin/nologin router
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
# The installed console script, the same command as docker-compose.yml and deploy/kubernetes.
CMD ["semantic-router", "serve", "--config", "config/config.yaml"]

# Demo upstreams for docker-compose (fake OpenAI-compatible model servers); not for production.
FROM runtime AS demo
USER root
RUN pip install "aiohttp>=3.9"
COPY devstack ./devstack
USER 10001
HEALTHCHECK NONE
