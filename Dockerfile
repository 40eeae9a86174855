# One image for web, worker, beat and migrations (docker-compose.yml picks the command).
FROM python:3.11.15-slim-bookworm

# The package index pip reads (a mirror, if your network has one); the lock's hashes are checked whatever it is.
ARG PIP_INDEX_URL=https://pypi.org/simple
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /build
# Every dependency at the version and hash requirements.txt pins (docs/deploy.md says how to update it), in a layer
# of its own that a code change does not rebuild.
COPY requirements.txt ./
RUN pip install --require-hashes --no-deps -r requirements.txt
# The project itself from no index at all: nothing but the locked packages goes in, and pip check proves them whole.
COPY pyproject.toml README.md ./
COPY worker ./worker
COPY integrations ./integrations
COPY config ./config
RUN pip install --no-index --no-deps --no-build-isolation . && pip check \
 && cd / && rm -rf /build \
 && useradd --system --uid 10001 --create-home --home-dir /home/admitflow admitflow

USER admitflow
WORKDIR /
EXPOSE 8000
CMD ["admitflow", "web", "--host", "0.0.0.0", "--port", "8000"]
