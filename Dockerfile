# syntax=docker/dockerfile:1
# The service image: slim Python, the runtime only (ONNX Runtime, no PyTorch, no build tools), non-root.
#   docker build -t cats-dogs-other .
#   docker build --build-arg MODEL_URI=models:/cats-dogs-other@champion \
#                --build-arg MLFLOW_TRACKING_URI=http://mlflow:5000 -t cats-dogs-other:champion .
# The base pinned by digest (python:3.11-slim, linux/amd64 and arm64): a rebuild gets the same image until
# this line changes (let Renovate or Dependabot propose updates).
ARG PYTHON_IMAGE=python:3.11-slim@sha256:9c900dea9e8fb7e16277c179b555cc72d29a352dbc33cff48ad5a0412fd5bfc7

FROM ${PYTHON_IMAGE} AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY deploy/docker/requirements.lock ./deploy/docker/requirements.lock
COPY src ./src
COPY deploy/docker/install.sh /usr/local/bin/install-service
# Fetching a model at build time (as the course's Dockerfile does) needs the MLflow client, and Keras to
# convert a Keras model to ONNX: both stay in this build stage.
ARG MODEL_URI=""
ARG MLFLOW_TRACKING_URI=""
# Opt-in extras shipped in the image, e.g. --build-arg EXTRAS=heic for iPhones' HEIC photos: LGPL-3.0
# libraries and a patent-encumbered codec, so whoever distributes the image decides (docs/decisions.md).
ARG EXTRAS=""
RUN install-service /opt/venv /src ${EXTRAS}
RUN mkdir -p /opt/model \
    && if [ -n "${MODEL_URI}" ]; then \
        install-service /opt/fetch /src mlflow keras \
        && MLFLOW_TRACKING_URI="${MLFLOW_TRACKING_URI}" /opt/fetch/bin/cats-dogs-other fetch "${MODEL_URI}" --out /opt/model; \
    fi

FROM ${PYTHON_IMAGE}
ARG MODEL_URI=""
RUN useradd --uid 10001 --no-create-home --shell /usr/sbin/nologin app
COPY --from=build /opt/venv /opt/venv
COPY --from=build /opt/model /opt/model
# The default model ships inside the package; a model fetched at build time is served from /opt/model.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOST=0.0.0.0 \
    PORT=8080 \
    MODEL_CACHE_DIR=/tmp/models \
    MODEL_URI=${MODEL_URI:+/opt/model}
USER 10001
EXPOSE 8080
ENTRYPOINT ["cats-dogs-other", "serve"]
