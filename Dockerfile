FROM python:3.11-slim
WORKDIR /app
COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt
COPY server.py client.py ./
COPY gateway ./gateway
COPY store ./store
COPY chatclient ./chatclient
ENV CHAT_HOST=0.0.0.0 PYTHONUNBUFFERED=1
EXPOSE 8000 9100
HEALTHCHECK --interval=5s --timeout=3s --retries=5 \
  CMD python3 -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:9100/healthz', timeout=2)" || exit 1
ENTRYPOINT ["python3", "server.py"]
