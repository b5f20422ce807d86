FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md alembic.ini ./
COPY models ./models
COPY producer_api ./producer_api
COPY workers ./workers
COPY alembic ./alembic
RUN pip install --no-cache-dir -e .
ENTRYPOINT ["llmfleet"]
