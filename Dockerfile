# One image, two entry points: `producer-service` and `consumer-service`.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY shared ./shared
COPY producer_service ./producer_service
COPY consumer_service ./consumer_service
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
RUN useradd --create-home --uid 10001 app
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
# The topic initialiser that docker-compose runs once before the services start.
COPY infra/topics.py /app/infra/topics.py
WORKDIR /app
USER app
EXPOSE 8000 8001
CMD ["producer-service"]
