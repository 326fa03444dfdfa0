# One image for every service: the API, the migration step, the dispatcher and
# the Ray head and GPU workers. All Ray nodes must run the same Python and Ray
# versions, which one image guarantees.
#
# GPUs: the torch wheels from PyPI carry their own CUDA libraries, so the slim
# base works on a GPU node; the NVIDIA driver comes from the host through the
# NVIDIA Container Toolkit. For a host whose driver is too old for the wheel's
# CUDA version, add an index with torch builds for an older CUDA version:
#   docker compose build --build-arg TORCH_INDEX_URL=<index URL>
FROM python:3.11-slim

# Extra package index for torch builds of another CUDA version (empty: PyPI only).
ARG TORCH_INDEX_URL=
# Ray beyond the project's ray[tune]: the head's dashboard needs ray[default];
# pin it (e.g. "ray[default]==2.60.0") for repeatable builds.
ARG RAY_SPEC="ray[default]"

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /tmp/silo-src

# Dependencies first, from pyproject.toml alone: this layer (torch is gigabytes)
# is rebuilt only when the dependency list changes, not on every code change.
COPY pyproject.toml ./
# The base install and the engine, server and worker extras (every part runs here).
RUN python -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; parts = [p['dependencies']] + [p['optional-dependencies'][x] for x in ('engine', 'server', 'worker')]; print(*(d for part in parts for d in part if not d.startswith('silo-service')), sep=chr(10))" > requirements.txt \
 && pip install ${TORCH_INDEX_URL:+--extra-index-url "$TORCH_INDEX_URL"} -r requirements.txt "$RAY_SPEC"

COPY README.md ./
COPY silo_contract ./silo_contract
COPY silo_core ./silo_core
COPY silo_client ./silo_client
COPY server ./server
COPY workers ./workers
COPY migrations ./migrations

# The project itself (the Alembic scripts are a package of it); check from /,
# so the installed package is imported rather than this folder, that the
# migrations' head revision can be read.
RUN pip install '.[all]' \
 && (cd / && python -c 'from server.db.migrate import head_revision; print("migrations head:", head_revision())') \
 && cd / && rm -rf /tmp/silo-src

WORKDIR /srv/silo

# An unprivileged user; the folders below are the mount points of the
# deployment's volumes, so new named volumes start out owned by this user.
RUN useradd --create-home --uid 1000 silo \
 && mkdir -p /srv/silo/artifacts /srv/silo/data \
 && chown -R silo:silo /srv/silo
USER silo

EXPOSE 8000
CMD ["silo", "serve", "--host", "0.0.0.0", "--port", "8000"]
