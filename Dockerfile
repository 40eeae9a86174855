# One image for web, worker, beat and migrations (docker-compose.yml picks the command).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY worker ./worker
COPY integrations ./integrations
COPY config ./config
RUN pip install . && useradd --system --uid 10001 admitflow
USER admitflow
EXPOSE 8000
CMD ["admitflow", "web", "--host", "0.0.0.0", "--port", "8000"]
