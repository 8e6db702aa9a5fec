# syntax=docker/dockerfile:1
# siliconflow-img-proxy: `docker build -t siliconflow-img-proxy .`
# See docs/deployment.md for running one container, the compose stack and Kubernetes.

ARG PYTHON_IMAGE=python:3.11-slim

# The build stage turns the project and its dependencies into wheels, so the final image gets
# only installed packages: no build backend, no source tree, no pip cache.
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md constraints.txt ./
COPY src ./src
# The dependencies at the versions CI tested (constraints.txt); the final stage installs from
# these wheels alone, so it gets the same.
RUN pip wheel --wheel-dir /wheels -c constraints.txt .

FROM ${PYTHON_IMAGE}
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    IMAGE_DIR=/data/images

# A numeric user, so that Kubernetes' runAsNonRoot can check it without a passwd lookup.
RUN groupadd --system --gid 10001 sfproxy \
    && useradd --system --uid 10001 --gid sfproxy --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin sfproxy \
    && mkdir -p /data/images \
    && chown -R sfproxy:sfproxy /data

# The wheels are mounted, not copied, so they never become a layer of the final image.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-index --find-links=/wheels siliconflow-img-proxy

# Settings come from the environment; nothing in the working directory is read but an
# optional `.env`, which .dockerignore keeps out of the image.
WORKDIR /app
USER 10001:10001
EXPOSE 8000

# slim has no curl; Python's urllib is enough. The port is the one CMD listens on.
HEALTHCHECK --interval=30s --timeout=5s --start-period=15s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]

# uvicorn stops accepting on SIGTERM and lets requests in flight finish within
# SHUTDOWN_GRACE_SECONDS; give `docker stop` more than that (`--stop-timeout`, compose's
# `stop_grace_period`), or it kills the process first.
STOPSIGNAL SIGTERM
CMD ["sfproxy", "serve", "--host", "0.0.0.0", "--port", "8000"]
