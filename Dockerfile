# convmlp-deploy: export ConvMLP to ONNX, build FP16 TensorRT engines, validate, benchmark, serve.
#
# Base: NGC TensorRT 25.01 = TensorRT 10.8.0.43, CUDA 12.8.0, Ubuntu 24.04, Python 3.12
# (see docs/docker.md). Engines built in this image need a Triton image of the same month
# (nvcr.io/nvidia/tritonserver:25.01-py3) or another runtime with TensorRT 10.8.
#
#   docker build -t convmlp-deploy:0.1.0 .
#   docker run --rm --gpus all --user "$(id -u):$(id -g)" \
#       -v "$PWD/artifacts:/workspace/artifacts" convmlp-deploy:0.1.0 export --variant l --fp16
ARG BASE_IMAGE=nvcr.io/nvidia/tensorrt:25.01-py3
FROM ${BASE_IMAGE}

# The PyPI build of torch for CUDA 12.8 (it bundles its CUDA runtime; TensorRT comes from the base image).
ARG TORCH_VERSION=2.8.0
# The base image's TensorRT, exactly (what `tensorrt.__version__` reports there; docs/docker.md).
ARG TENSORRT_VERSION=10.8.0.43

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_BREAK_SYSTEM_PACKAGES=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    XDG_CACHE_HOME=/workspace/.cache

# The NGC image ships the TensorRT Python bindings (docs/docker.md says on what evidence); should
# they not import, the wheel of the same TensorRT version is installed. Either way the build stops
# unless `import tensorrt` gives exactly TENSORRT_VERSION. Then torch, pinned, so that the project's
# "torch>=2.4" does not pull another build.
RUN { python3 -c "import tensorrt" 2>/dev/null \
      || { echo "the base image's TensorRT bindings do not import: installing tensorrt-cu12==${TENSORRT_VERSION}" \
           && python3 -m pip install "tensorrt-cu12==${TENSORRT_VERSION}"; }; } \
    && python3 -c "import tensorrt as t; v = t.__version__; assert v == '${TENSORRT_VERSION}', f'TensorRT {v} is not ${TENSORRT_VERSION}'" \
    && python3 -m pip install "torch==${TORCH_VERSION}"

WORKDIR /opt/convmlp-deploy
COPY pyproject.toml README.md cli.py ./
COPY convmlp ./convmlp
COPY export ./export
COPY deploy ./deploy
# [gpu] = onnxruntime-gpu, not [trt]: TensorRT stays the one checked above (checked again below).
RUN python3 -m pip install "/opt/convmlp-deploy[gpu]" \
    && python3 -c "import tensorrt as t; assert t.__version__ == '${TENSORRT_VERSION}', t.__version__" \
    && python3 -c "import tensorrt, torch, onnxruntime; print('tensorrt', tensorrt.__version__, '| torch', torch.__version__, '| ort', onnxruntime.__version__)" \
    && convmlp-deploy --version

RUN useradd --create-home --uid 10001 --user-group --shell /usr/sbin/nologin convmlp \
    && mkdir -p /workspace/artifacts /workspace/.cache \
    && chown convmlp:convmlp /workspace/artifacts \
    && chmod 1777 /workspace/.cache

WORKDIR /workspace
VOLUME ["/workspace/artifacts"]
# numeric, so that Kubernetes' runAsNonRoot can verify it (convmlp:convmlp)
USER 10001:10001

ENTRYPOINT ["convmlp-deploy"]
CMD ["--help"]
