# Small, non-root image of the trading bot. Build: docker build -t trading-bot .
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY bot ./bot
COPY engine ./engine
COPY strategies ./strategies
COPY commands ./commands
COPY alerts ./alerts
COPY db ./db
RUN python -m venv /opt/venv && /opt/venv/bin/pip install --no-cache-dir .

FROM python:3.11-slim
RUN useradd --system --create-home --home-dir /app --uid 10001 trading-bot
COPY --from=build /opt/venv /opt/venv
COPY config.yaml /app/config.yaml
WORKDIR /app
RUN mkdir -p /app/data /app/logs && chown -R trading-bot:trading-bot /app
USER trading-bot
ENV PATH="/opt/venv/bin:$PATH" PYTHONUNBUFFERED=1
# The health endpoint listens on loopback inside the container; the check runs inside it too.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
  CMD python -c "import sys,urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8787/health', timeout=4).status == 200 else 1)"
STOPSIGNAL SIGTERM
CMD ["trading-bot", "run", "--config", "/app/config.yaml"]
