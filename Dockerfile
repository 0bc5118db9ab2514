# agent-gateway: a slim image that runs as a non-root user.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
RUN useradd --system --no-create-home --uid 10001 gateway

# The dependencies first, exactly as locked (scripts/lock writes requirements.lock from
# pyproject.toml), in their own layer: a change to the code does not reinstall them.
COPY requirements.lock ./
RUN pip install --no-deps -r requirements.lock

# Then the gateway itself; `pip check` fails the build if the lock lacks something it needs.
COPY pyproject.toml README.md ./
COPY gateway ./gateway
RUN pip install --no-deps . && pip check

USER gateway
EXPOSE 8080
# `gateway health` finds the port the way `serve` does (GATEWAY_CONFIG's server.port, else 8080).
HEALTHCHECK --interval=15s --timeout=5s --start-period=10s --retries=3 CMD ["gateway", "health"]
# No config file: the built-in demo, or with OPENAI_API_KEY every model via OpenAI.
# With one: mount it and set GATEWAY_CONFIG to its path.
CMD ["gateway", "serve", "--host", "0.0.0.0"]
