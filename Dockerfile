# syntax=docker/dockerfile:1
# The winnode image: one image, two commands (`winnode run`, the reconciler; `winnode webhook`, the
# admission webhook). The builder stage turns this checkout into wheels (winnode and every
# dependency, with the kerberos extra); the final stage installs only those wheels into a venv and
# MIT krb5's runtime libraries, so it holds no compiler, no source tree and no pip cache. hack/check-dockerfile.sh checks these rules and runs the install steps
# in a temporary venv (there is no Docker engine on the development machines).
ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator ./operator
# The kerberos extra (python-gssapi, krb5) has no manylinux wheels: they are built here against MIT
# krb5's headers; only this stage has a compiler.
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc libc6-dev libkrb5-dev \
 && rm -rf /var/lib/apt/lists/*
RUN python -m pip wheel --no-cache-dir --wheel-dir /wheels '.[kerberos]'

FROM ${PYTHON_IMAGE}
ENV VIRTUAL_ENV=/opt/winnode \
    PATH=/opt/winnode/bin:/usr/local/bin:/usr/bin:/bin \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp
# The wheels are bind-mounted from the builder, never copied: no layer of this image holds them.
# --no-index: only what the builder built is installed (no test extras, nothing fetched here).
# MIT krb5's runtime libraries only (the kerberos extra links them); no compiler, no headers.
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    apt-get update \
 && apt-get install -y --no-install-recommends libkrb5-3 libgssapi-krb5-2 \
 && rm -rf /var/lib/apt/lists/* \
 && python -m venv "$VIRTUAL_ENV" \
 && "$VIRTUAL_ENV/bin/pip" install --no-cache-dir --no-index --find-links=/wheels 'winnode[kerberos]' \
 && "$VIRTUAL_ENV/bin/winnode" --help >/dev/null
# Numeric, so Kubernetes can check runAsNonRoot; the manifests run pods as the same UID
# (winnode.kube.podspec.RUN_AS_UID). HOME=/tmp: the pods mount an emptyDir there.
USER 10001:10001
ENTRYPOINT ["winnode"]
CMD ["--help"]
