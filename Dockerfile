# The one image of confidential-pods: webhook, extender and certs tooling
# (`confidential-pods webhook serve | extender serve | certs ... | doctor`).
#   docker build -t ghcr.io/confidential-pods/confidential-pods:0.1.0 .
# Runs as uid/gid 65532 (non-root) and works with a read-only root filesystem
# (the manifests mount an emptyDir at /tmp).

FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY confidential_pods ./confidential_pods
COPY webhook ./webhook
COPY extender ./extender
COPY certs ./certs
COPY operate ./operate
RUN pip wheel --no-deps --wheel-dir /wheels .

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
COPY --from=build /wheels /wheels
RUN pip install /wheels/*.whl && rm -rf /wheels \
    && groupadd --gid 65532 nonroot \
    && useradd --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin nonroot
USER 65532:65532
WORKDIR /
EXPOSE 8443 8444
ENTRYPOINT ["confidential-pods"]
CMD ["--help"]
