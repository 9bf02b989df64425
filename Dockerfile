# syntax=docker/dockerfile:1
# The services' image (decision 0036): the REST ingestion API, the REST and SFTP pullers and the Snowflake
# loader, each an ECS Fargate service of the doors stack (infra/aws/doors.py) running `medistream <command>`.
#
#   docker build -t medistream-services .            (from a clean checkout; README, "Deploying to AWS", step 4)
#
# Python 3.12, the Managed Flink zip's Python (tools/package.py). Every installed version is requirements.lock's:
# the project's runtime dependencies ([project].dependencies of pyproject.toml) are installed with the lock as
# constraints (the lock also pins the local, infra and dev groups, which no service runs), wheels only except
# four pure-Python packages apache-beam pins that PyPI has as source only (crcmod 1.7, dill 0.3.1.1, docopt
# 0.6.2, hdfs 2.7.3; crcmod's C extension is optional, so no compiler): they build with setuptools 80.9.0,
# pyproject.toml's build pin. Checked 2026-12-04 (pip --dry-run --no-deps for cp312 manylinux): every other
# pin of the lock has a wheel for Python 3.12. The lock carries no hashes; when it does, add --require-hashes
# (tests/unit/test_services_image.py checks which).
# Runs as an unprivileged user and writes nowhere but /tmp (the task mounts a volume there: the root file
# system is read-only in the task definition).

# checkov:skip=CKV_DOCKER_2: one image runs four services, three of them without a listening port; the ingest API
# is health-checked by its load balancer's target group, and a task whose process exits is replaced by its ECS
# service (the pullers' and the loader's stalls raise FeedSilent and the consumer-lag alarms)

FROM python:3.12-slim-bookworm AS dependencies
WORKDIR /build
COPY pyproject.toml requirements.lock ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > requirements.services.txt \
    && python -m venv /opt/medistream \
    && /opt/medistream/bin/pip install --no-cache-dir --disable-pip-version-check setuptools==80.9.0 \
    && /opt/medistream/bin/pip install --no-cache-dir --disable-pip-version-check --no-build-isolation \
        --only-binary=:all: --no-binary=crcmod,dill,docopt,hdfs -r requirements.services.txt -c requirements.lock \
    && /opt/medistream/bin/pip uninstall --yes --disable-pip-version-check setuptools

FROM python:3.12-slim-bookworm
ENV PATH=/opt/medistream/bin:$PATH \
    PYTHONPATH=/app \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    MEDISTREAM_HOME=/tmp/medistream/home
COPY --from=dependencies /opt/medistream /opt/medistream
WORKDIR /app
# The code the services import (tools.cli dispatches each command; the contracts and the base properties are
# data they read) and nothing else: no tests, benchmarks, notebooks or the CDK app (.dockerignore).
COPY fresh_imports.py ./
COPY conf/ conf/
COPY schemas/ schemas/
COPY udfs/ udfs/
COPY connectors/ connectors/
COPY jobs/ jobs/
COPY tools/ tools/
COPY infra/ infra/
# `medistream infra migrate-operational` (a one-off task of this image) applies these to Aurora.
COPY migrations/ migrations/
# Bytecode compiled now, as root: at run time nothing is written next to the code.
RUN python -m compileall -q /app \
    && printf '#!/bin/sh\nexec python -m tools.cli "$@"\n' > /usr/local/bin/medistream \
    && chmod 0755 /usr/local/bin/medistream \
    && useradd --system --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin medistream
USER 10001:10001
ENTRYPOINT ["medistream"]
CMD ["--help"]
