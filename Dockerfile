# SMART draft agent: production image (cannot be built in the dev sandbox; kept simple).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 \
    APP_DATA_DIR=/var/lib/smart-draft-agent

RUN useradd --create-home --uid 10001 app \
 && mkdir -p /var/lib/smart-draft-agent && chown app /var/lib/smart-draft-agent
WORKDIR /srv/app

COPY pyproject.toml requirements.txt requirements-nodeps.txt ./
COPY app ./app
COPY deploy ./deploy
COPY sandbox ./sandbox
# CPU torch pinned first so nothing pulls a CUDA build.
RUN pip install --no-cache-dir torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu \
 && pip install --no-cache-dir -r requirements.txt \
 && pip install --no-cache-dir --no-deps -r requirements-nodeps.txt

USER app
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
  CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4).status == 200 else 1)"
# Stateless workers (docs/operations.md): 4 gthread workers sharing only the database; set
# APP_DATABASE_URL=postgresql+psycopg://... to share it across containers. The master migrates first.
ENV GUNICORN_BIND=0.0.0.0:8000 GUNICORN_WORKERS=4 GUNICORN_THREADS=8
CMD ["gunicorn", "-c", "deploy/gunicorn.conf.py", "app.wsgi:application"]
