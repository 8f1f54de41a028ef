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
# SIGVERIFY_API_KEY and DATABASE_URL come from the environment.
CMD ["sh", "-c", "exec sigverify serve --model /model --db \"$DATABASE_URL\" --host 0.0.0.0 --port 8000"]
