# One image per role, each its own target, tagged with the package version:
#   control    router, fuser, planner and the CLI; no ONNX Runtime     (extra: control)
#   model-cpu  the model service on ONNX Runtime's CPU build           (extra: services-cpu)
#   model-gpu  the model service on ONNX Runtime's CUDA build, with the CUDA and cuDNN wheels
#              it loads, so the CUDA provider works on a node with only the NVIDIA driver
#                                                                      (extra: services-gpu)
#   demo       model-cpu plus the demo's training, for the demo overlay's push Job
#                                                         (extras: services-cpu, train)
# scripts/build-images.sh builds the three as ghcr.io/chorus-mesh/chorus-<target>:<version>;
# by hand:
#   docker build --target control -t ghcr.io/chorus-mesh/chorus-control:0.1.0 .
#   docker run --rm ghcr.io/chorus-mesh/chorus-control:0.1.0 serve router
# Always name a target: with none, the last one (demo) is built.
# BASE_IMAGE picks another Debian-based image with Python 3.11+ as python3 (a mirror, a pinned
# digest, a local import).
ARG BASE_IMAGE=python:3.11-slim

FROM ${BASE_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore
WORKDIR /src
COPY pyproject.toml README.md ./
COPY chorus ./chorus
RUN python3 -m venv /opt/wheel-builder \
 && /opt/wheel-builder/bin/pip wheel --no-deps --wheel-dir /wheels . \
 && rm -rf /opt/wheel-builder build

FROM ${BASE_IMAGE} AS runtime
LABEL org.opencontainers.image.source="https://github.com/chorus-mesh/chorus" \
      org.opencontainers.image.description="A message-queue mesh in which many ONNX models work on one task together" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 10001 chorus \
 && useradd --system --uid 10001 --gid chorus --no-create-home --home-dir /tmp \
      --shell /usr/sbin/nologin chorus
# HOME and every write go to /tmp (an emptyDir in Kubernetes), so the root filesystem can be
# mounted read-only.
ENV PATH=/opt/chorus/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp
WORKDIR /tmp
ENTRYPOINT ["chorus"]
CMD ["--help"]

# Each role's virtual environment, built where pip and the wheel are, copied alone into the
# runtime stage. The stages run in file order under the classic builder, so each target
# comes right after what it needs and builds nothing of the targets after it.
FROM build AS venv-control
RUN python3 -m venv /opt/chorus \
 && /opt/chorus/bin/pip install "$(echo /wheels/chorus_mesh-*.whl)[control]" \
 && /opt/chorus/bin/chorus --help > /dev/null \
 && ! /opt/chorus/bin/python -c "import onnxruntime" 2> /dev/null

FROM runtime AS control
LABEL org.opencontainers.image.title="chorus-control"
COPY --from=venv-control /opt/chorus /opt/chorus
USER 10001:10001
# router gRPC 50051, metrics 9100 (k8s/)
EXPOSE 50051 9100

FROM build AS venv-model-cpu
RUN python3 -m venv /opt/chorus \
 && /opt/chorus/bin/pip install "$(echo /wheels/chorus_mesh-*.whl)[services-cpu]" \
 && /opt/chorus/bin/python -c "import onnxruntime as ort; assert 'CUDAExecutionProvider' not in ort.get_available_providers()"

FROM runtime AS model-cpu
LABEL org.opencontainers.image.title="chorus-model-cpu"
COPY --from=venv-model-cpu /opt/chorus /opt/chorus
# Models come from /models (a volume) or from the NATS object store, cached under /tmp.
ENV CHORUS_MODEL_REPOSITORY=/models \
    CHORUS_MODEL_CACHE_DIR=/tmp/chorus-models
USER 10001:10001
# KServe v2 gRPC 8001, metrics 9100 (k8s/)
EXPOSE 8001 9100

FROM build AS venv-model-gpu
RUN python3 -m venv /opt/chorus \
 && /opt/chorus/bin/pip install "$(echo /wheels/chorus_mesh-*.whl)[services-gpu]" \
 && /opt/chorus/bin/python -c "import onnxruntime as ort; assert 'CUDAExecutionProvider' in ort.get_available_providers()"

FROM runtime AS model-gpu
LABEL org.opencontainers.image.title="chorus-model-gpu"
COPY --from=venv-model-gpu /opt/chorus /opt/chorus
ENV CHORUS_MODEL_REPOSITORY=/models \
    CHORUS_MODEL_CACHE_DIR=/tmp/chorus-models
USER 10001:10001
EXPOSE 8001 9100

FROM build AS venv-demo
RUN python3 -m venv /opt/chorus \
 && /opt/chorus/bin/pip install "$(echo /wheels/chorus_mesh-*.whl)[services-cpu,train]" \
 && /opt/chorus/bin/python -c "import onnxruntime, sklearn, skl2onnx"

FROM runtime AS demo
LABEL org.opencontainers.image.title="chorus-demo"
COPY --from=venv-demo /opt/chorus /opt/chorus
USER 10001:10001
