# The verification service, torch-free: the same install the tests exercise (`pip install -c
# constraints.txt ".[serve]"`, then `sigverify serve`). The model folder (`sigverify export`) is
# mounted at /model; the database is any PostgreSQL with pgvector (docker-compose.yml starts one).
FROM python:3.11-slim
RUN useradd --create-home --uid 1000 sigverify
WORKDIR /app
COPY pyproject.toml constraints.txt README.md ./
COPY sigverify ./sigverify
RUN pip install --no-cache-dir -c constraints.txt ".[serve]"
USER sigverify
EXPOSE 8000
# Ready means the model is loaded and the database answers (/healthz would only say the process is up).
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/readyz', timeout=4)"]
# SIGVERIFY_API_KEY and DATABASE_URL come from the environment. Without DATABASE_URL the container stops
# at once: the embedded database it would fall back to needs a writable data folder it does not have.
CMD ["sh", "-c", "test -n \"$DATABASE_URL\" || { echo 'sigverify: set DATABASE_URL (postgresql://...) for the service' >&2; exit 2; }; exec sigverify serve --model /model --db \"$DATABASE_URL\" --host 0.0.0.0 --port 8000"]
