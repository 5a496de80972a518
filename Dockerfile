# syntax=docker/dockerfile:1
# One image for every Chorus service (router, model, fuser) and the CLI:
#   docker build -t ghcr.io/chorus-mesh/chorus:0.1.0 .
#   docker run --rm ghcr.io/chorus-mesh/chorus:0.1.0 serve router
# onnxruntime-gpu runs on CPU unless the CUDA and cuDNN libraries it loads are present; for GPU
# nodes (k8s/overlays/gpu) build with them:
#   docker build --build-arg CHORUS_PIP_EXTRA="onnxruntime-gpu[cuda,cudnn]" -t ... .
# BASE_IMAGE picks another Python 3.11+ Debian image (a mirror, a pinned digest).
ARG BASE_IMAGE=python:3.11-slim

FROM ${BASE_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore
RUN python -m venv /opt/chorus
ENV PATH=/opt/chorus/bin:$PATH
WORKDIR /src
COPY pyproject.toml README.md ./
COPY chorus ./chorus
ARG CHORUS_PIP_EXTRA=""
RUN pip install . ${CHORUS_PIP_EXTRA} \
 && chorus --help > /dev/null

FROM ${BASE_IMAGE}
LABEL org.opencontainers.image.source="https://github.com/chorus-mesh/chorus" \
      org.opencontainers.image.title="chorus" \
      org.opencontainers.image.description="A message-queue mesh in which many ONNX models work on one task together" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 10001 chorus \
 && useradd --system --uid 10001 --gid chorus --no-create-home --home-dir /tmp \
      --shell /usr/sbin/nologin chorus
COPY --from=build /opt/chorus /opt/chorus
# HOME and every write go to /tmp (an emptyDir in Kubernetes), so the root filesystem can be
# mounted read-only; models live in /models.
ENV PATH=/opt/chorus/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp \
    CHORUS_MODEL_REPOSITORY=/models
WORKDIR /tmp
USER 10001:10001
# router 50051 (gRPC), model 8001 (KServe v2 gRPC) as set in k8s/, metrics 9100
EXPOSE 50051 8001 9100
ENTRYPOINT ["chorus"]
CMD ["--help"]
