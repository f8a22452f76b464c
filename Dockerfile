# nra, the MetalLB node route agent.
#   docker build -t ghcr.io/nra-project/nra:0.1.0 .
# (the image name is a placeholder; see docs/operations.md). Multi-arch:
#   docker buildx build --platform linux/amd64,linux/arm64 -t <name> .
# Pin the base by digest in your own builds (python:3.11-slim-bookworm@sha256:...).
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---- build: the wheel, and a virtualenv with it and its dependencies -------------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY nra ./nra
# The venv's own pip and setuptools are removed: nothing is installed at run time.
RUN python -m pip wheel --no-deps --wheel-dir /wheels . \
 && python -m venv /opt/nra \
 && /opt/nra/bin/pip install /wheels/nra-*.whl \
 && /opt/nra/bin/pip uninstall -y pip setuptools \
 && /opt/nra/bin/nra --version

# ---- run: the virtualenv, libnftables (the conntrack return path), iproute2 and nft for
# looking (`ip rule`, `ip route`, `nft list table inet nra`), nothing else ----------------
FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="nra" \
      org.opencontainers.image.description="MetalLB node route agent: policy routing so LoadBalancer replies return through the BGP peers" \
      org.opencontainers.image.licenses="MIT"
# The base image's pip/setuptools/wheel are build tools; the agent has its own venv.
RUN apt-get update \
 && apt-get install -y --no-install-recommends iproute2 libnftables1 nftables \
 && rm -rf /var/lib/apt/lists/* \
 && python -m pip uninstall -y pip setuptools wheel
COPY --from=build /opt/nra /opt/nra
# The root filesystem is read-only in the pod: no .pyc writes, unbuffered logs.
ENV PATH=/opt/nra/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# Root with only CAP_NET_ADMIN (set in the pod spec): changing the node's rules and
# routes needs it in the host network namespace.
USER 0
ENTRYPOINT ["nra"]
CMD ["run"]
