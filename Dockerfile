# syntax=docker/dockerfile:1
# The service image: slim Python, the runtime only (ONNX Runtime, no PyTorch, no build tools), non-root.
#   docker build -t cats-dogs-other .
#   docker build --build-arg MODEL_URI=models:/cats-dogs-other@champion \
#                --build-arg MLFLOW_TRACKING_URI=http://mlflow:5000 -t cats-dogs-other:champion .
# The base pinned by digest (python:3.11-slim, linux/amd64 and arm64): a rebuild gets the same image until
# this line changes (let Renovate or Dependabot propose updates).
ARG PYTHON_IMAGE=python:3.11-slim@sha256:9c900dea9e8fb7e16277c179b555cc72d29a352dbc33cff48ad5a0412fd5bfc7

# The locked dependencies, before any source: a change under src/ does not re-install them.
FROM ${PYTHON_IMAGE} AS dependencies
COPY deploy/docker/install.sh /usr/local/bin/install-service
COPY deploy/docker/requirements.lock /src/deploy/docker/requirements.lock
COPY pyproject.toml /src/
# Opt-in extras shipped in the image, e.g. --build-arg EXTRAS=heic for iPhones' HEIC photos: LGPL-3.0
# libraries and a patent-encumbered codec, so whoever distributes the image decides (docs/decisions.md).
ARG EXTRAS=""
RUN install-service dependencies /opt/venv /src ${EXTRAS}

# What the image keeps of that venv: no pip, no build backend, no test suites.
FROM dependencies AS runtime
RUN install-service slim /opt/venv

# The package alone, in a prefix of its own: the image's only layer that a change under src/ rebuilds.
FROM dependencies AS package
COPY README.md /src/
COPY src /src/src
RUN install-service package /opt/venv /src /opt/package

# Fetching a model at build time (as the course's Dockerfile does) needs the MLflow client, and Keras to
# convert a Keras model to ONNX: both stay in this stage.
FROM package AS model
ARG MODEL_URI=""
ARG MLFLOW_TRACKING_URI=""
RUN mkdir -p /opt/model \
    && if [ -n "${MODEL_URI}" ]; then \
        install-service all /opt/fetch /src mlflow keras \
        && MLFLOW_TRACKING_URI="${MLFLOW_TRACKING_URI}" /opt/fetch/bin/cats-dogs-other fetch "${MODEL_URI}" --out /opt/model; \
    fi

FROM ${PYTHON_IMAGE}
ARG MODEL_URI=""
RUN useradd --uid 10001 --no-create-home --shell /usr/sbin/nologin app
COPY --from=runtime /opt/venv /opt/venv
COPY --from=model /opt/model /opt/model
COPY --from=package /opt/package/ /opt/venv/
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
