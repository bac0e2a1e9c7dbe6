# risk-monitor: slim image, non-root, health-checked on readiness.
# Build: docker build -t risk-monitor .   (cannot be built on the project's CI machines: no Docker engine)
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    RISK_MONITOR_LOG_FORMAT=json

RUN useradd --create-home --uid 10001 risk
WORKDIR /app

# Dependencies first, so code changes do not reinstall them.
COPY pyproject.toml README.md ./
RUN mkdir -p models services jobs proto/riskmonitor proto/marketdata \
    && pip install . && pip uninstall -y risk-monitor

COPY alembic.ini ./
COPY migrations migrations
COPY models models
COPY services services
COPY jobs jobs
COPY proto proto
# Editable: migrations/ and alembic.ini are found beside the packages.
RUN pip install --no-deps -e . && chown -R risk /app

USER risk
# Inside the container the listeners must accept the published ports; outside, publish them on loopback.
ENV RISK_MONITOR_HTTP_HOST=0.0.0.0 \
    RISK_MONITOR_GRPC_HOST=0.0.0.0
EXPOSE 8080 50051

HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8080/api/v1/ready', timeout=2).status != 200)"

ENTRYPOINT ["risk-monitor"]
CMD ["serve"]
