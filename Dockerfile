# streamtap: the fake upstream, the demo and the proxy (`streamtap --help`).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip install . \
    && useradd --create-home --uid 10001 streamtap

# A numeric user: with runAsNonRoot the kubelet can verify only a number.
USER 10001
# 8600 the fake upstream, 8787 the proxy, 9464 the demo's /metrics.
EXPOSE 8600 8787 9464
CMD ["streamtap", "--help"]
