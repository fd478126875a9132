# The one image of confidential-pods: webhook, extender, node probe and certs tooling
# (`confidential-pods webhook serve | extender serve | node-probe | certs ... | doctor`).
#   docker build -t <registry>/confidential-pods:0.1.0 .
#   buildah bud --build-arg BASE=<a Debian bookworm image with python3 and python3-venv> -t ... .
# BASE is any image with Python 3.11+ (`python3`, its `venv` module) and groupadd/useradd: the
# official python:3.11-slim (the default), or Debian bookworm with its own python3.11 and
# python3-venv (tests/e2e/images/build.sh builds one with mmdebstrap). The package goes into a
# virtual environment, /opt/confidential-pods, on both: Debian's pip refuses to install into the
# system's Python (PEP 668). Pass SOURCE_DATE_EPOCH for reproducible bytecode (checked-hash .pyc)
# and password-file dates; docs/images.md has the details.
# Runs as uid/gid 65532 (non-root) and works with a read-only root filesystem
# (the manifests mount an emptyDir at /tmp).
ARG BASE=python:3.11-slim

FROM ${BASE} AS build
ARG SOURCE_DATE_EPOCH
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY confidential_pods ./confidential_pods
COPY webhook ./webhook
COPY extender ./extender
COPY certs ./certs
COPY operate ./operate
COPY nodeprobe ./nodeprobe
# An empty SOURCE_DATE_EPOCH (the argument not passed) is dropped in each RUN: tools that read it
# (wheel's zip dates, useradd's password dates) complain about an empty one.
RUN if [ -z "${SOURCE_DATE_EPOCH:-}" ]; then unset SOURCE_DATE_EPOCH; fi \
    && python3 -m venv /opt/build \
    && /opt/build/bin/pip wheel --no-deps --wheel-dir /wheels .

FROM ${BASE}
ARG SOURCE_DATE_EPOCH
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/confidential-pods/bin:$PATH
COPY --from=build /wheels /wheels
RUN if [ -z "${SOURCE_DATE_EPOCH:-}" ]; then unset SOURCE_DATE_EPOCH; fi \
    && python3 -m venv /opt/confidential-pods \
    && pip install /wheels/*.whl \
    && pip uninstall --yes pip setuptools \
    && rm -rf /wheels \
    && groupadd --gid 65532 nonroot \
    && useradd --uid 65532 --gid 65532 --no-create-home --no-log-init --home-dir /nonexistent \
       --shell /usr/sbin/nologin nonroot
USER 65532:65532
WORKDIR /
EXPOSE 8443 8444
ENTRYPOINT ["confidential-pods"]
CMD ["--help"]
