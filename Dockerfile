# One image for every part of a team deployment: the API with its dispatcher, the Ray head
# and the Ray workers (docker-compose.yml says which runs what). torch from PyPI carries
# its CUDA libraries, so the same image trains on GPUs where the container is given some.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Dependencies first (cached while only the code changes), then the code, installed
# editable so the dashboard's static files and the migrations are read from /app.
COPY pyproject.toml README.md ./
COPY loope ./loope
COPY api ./api
COPY service ./service
COPY workers ./workers
COPY examples ./examples
RUN pip install -e '.[service]'

RUN useradd --create-home --uid 1000 loope \
    && mkdir -p /data /artifacts \
    && chown loope:loope /data /artifacts
USER loope

EXPOSE 8000
CMD ["loope", "serve", "--host", "0.0.0.0", "--port", "8000"]
