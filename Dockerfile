# nra, the MetalLB node route agent. The released images (ghcr.io/nra-project/nra, amd64 and
# arm64) are built by scripts/release, without a registry or a Docker daemon:
#   scripts/release                      both architectures, the manifest list, the chart
#   scripts/build-image [--arch arm64]   one architecture, for a local try
# Both build this file on their own Debian bookworm base (debootstrap; its packages pinned in
# image/base-<arch>.lock), passed as PYTHON_IMAGE. Any Debian bookworm image with Python 3.11 as
# `python` (and pip) works too; pin it by digest in your own builds, e.g.
#   docker build --build-arg PYTHON_IMAGE=python:3.11-slim-bookworm@sha256:<digest> -t nra .
# There is no default: an unpinned base is never picked silently.
ARG PYTHON_IMAGE

# ---- build: nra's wheel, and a virtualenv with it and its locked dependencies ------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
# The dependencies first, from the lock alone (every file checked against its sha256), so
# this layer is reused while requirements.lock is unchanged.
COPY requirements.lock requirements-build.lock ./
RUN python -m venv /opt/nra \
 && /opt/nra/bin/pip install --require-hashes --no-deps -r requirements.lock \
 && python -m venv /opt/build \
 && /opt/build/bin/pip install --require-hashes --no-deps -r requirements-build.lock
COPY pyproject.toml README.md ./
COPY nra ./nra
# nra's own wheel with the locked build backend (no build isolation: nothing unlocked is
# fetched), installed with --no-deps: the venv holds exactly the lock. `pip check` proves
# the lock satisfies nra's requirements. The venv's own pip and setuptools are removed:
# nothing is installed at run time.
RUN /opt/build/bin/pip wheel --no-deps --no-build-isolation --wheel-dir /wheels . \
 && /opt/nra/bin/pip install --no-deps /wheels/nra-*.whl \
 && /opt/nra/bin/pip check \
 && /opt/nra/bin/pip uninstall -y pip setuptools \
 && /opt/nra/bin/nra --version

# ---- run: the virtualenv, libnftables (the conntrack return path), iproute2 and nft for
# looking (`ip rule`, `ip route`, `nft list table inet nra`), nothing else ----------------
FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="nra" \
      org.opencontainers.image.description="MetalLB node route agent: policy routing so LoadBalancer replies return through the BGP peers" \
      org.opencontainers.image.source="https://github.com/nra-project/nra" \
      org.opencontainers.image.licenses="MIT"
# nra's own base has these packages already (pinned with it: no apt run, no network); any
# other base gets them from its Debian mirror. The base's pip/setuptools/wheel are build
# tools; the agent has its own venv.
RUN if ! dpkg-query -W iproute2 libnftables1 nftables >/dev/null 2>&1; then \
        apt-get update \
     && apt-get install -y --no-install-recommends iproute2 libnftables1 nftables \
     && rm -rf /var/lib/apt/lists/*; \
    fi \
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
