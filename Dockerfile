FROM python:3.11-slim
WORKDIR /app
# Runtime requirements only: the test tools live in requirements-dev.txt.
COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt \
    && useradd --system --uid 10001 --user-group --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin chat
COPY server.py client.py ./
COPY gateway ./gateway
COPY store ./store
COPY chatclient ./chatclient
# Every setting comes from the environment (gateway/settings.py: option --x-y is env
# CHAT_X_Y), so `docker run -e` and compose's `environment:` override any of them; the
# command line carries no options because an option would beat its variable.
#
# CHAT_HOST=0.0.0.0: inside a container the default 127.0.0.1 is unreachable from outside.
# The metrics server binds CHAT_METRICS_HOST, 127.0.0.1 by default: on so that the
# HEALTHCHECK below (run inside the container) has something to probe, but not reachable
# from outside. To scrape or publish it set CHAT_METRICS_HOST=0.0.0.0 and publish it on
# purpose, e.g. `-p 127.0.0.1:9100:9100` (docker-compose.yml does both); 9100 is
# deliberately not EXPOSEd, so `docker run -P` does not publish it.
# CHAT_METRICS_PORT=0 turns metrics off, and with them the health check.
ENV CHAT_HOST=0.0.0.0 \
    CHAT_PORT=8000 \
    CHAT_WEB_PORT=8080 \
    CHAT_IRC_PORT=6667 \
    CHAT_METRICS_PORT=9100 \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
# The public chat port only; see above for 9100.
EXPOSE 8000 8080 6667
USER chat
# The port comes from CHAT_METRICS_PORT, so overriding it moves the probe with it.
HEALTHCHECK --interval=5s --timeout=3s --start-period=10s --retries=5 \
  CMD ["python3", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ['CHAT_METRICS_PORT'], timeout=2)"]
ENTRYPOINT ["python3", "server.py"]
