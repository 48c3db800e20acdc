# syntax=docker/dockerfile:1
# Four stages:
#   build   - installs the operator and its dependencies into a virtual environment (/opt/venv);
#   clock-skew-build - compiles the clock-skew fault's tracer (hack/agent/clock-skew), a static binary;
#   tools   - a small Debian image with iproute2 (tc), nftables (nft), stress-ng, the clock-skew tracer and python3
#             with the agent's programs (operator/coordinator/faults/inpod/programs/): the agent image of in-pod
#             faults: `docker build --target tools -t test-coordinator-tools:0.1.0 .`;
#   runtime - the operator image (the default target): the venv on a slim Python, as a non-root user.
# Base images are Docker Hub short names pinned by tag; no registry host is written here.
# tests/unit/test_dockerfile.py lints this file (hadolint) and checks its structure.

FROM python:3.11.10-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN python -m venv /opt/venv
COPY pyproject.toml README.md ./
COPY operator ./operator
RUN /opt/venv/bin/pip install --no-cache-dir .

FROM debian:bookworm-slim AS clock-skew-build
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY hack/agent/clock-skew/clock-skew.c ./
RUN gcc -O2 -Wall -Wextra -Werror -static -o /coordinator-clock-skew clock-skew.c

FROM debian:bookworm-slim AS tools
# Versions follow the bookworm release (security updates included), as the python base does.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends iproute2 nftables stress-ng python3 python3-dnslib python3-h11 \
    && rm -rf /var/lib/apt/lists/*
COPY --from=clock-skew-build /coordinator-clock-skew /usr/local/bin/coordinator-clock-skew
COPY operator/coordinator/faults/inpod/programs/ /opt/coordinator-agent/
# Unprivileged by default; the in-pod network faults run this image with runAsUser 0 and the NET_ADMIN
# capability set in the pod spec, only where they need it.
USER 65534:65534
CMD ["sleep", "infinity"]

FROM python:3.11.10-slim-bookworm AS runtime
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    XDG_DATA_HOME=/var/lib/coordinator
RUN useradd --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin coordinator \
    && mkdir -p /var/lib/coordinator \
    && chown 10001:10001 /var/lib/coordinator
COPY --from=build /opt/venv /opt/venv
USER 10001:10001
EXPOSE 8080
ENTRYPOINT ["coordinator"]
CMD ["run"]
