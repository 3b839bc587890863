#!/usr/bin/env bash
# Builds the MLflow tracking server image from infra/mlflow/Dockerfile, tagged with the MLflow
# version it holds (never `latest`):
#   infra/mlflow/build_image.sh [--push] [NAME]     # NAME defaults to mlflow-server
# prints NAME:<mlflow version> as its last line on stdout (all else goes to stderr); then point
# infra/mlflow/kustomization.yaml's `images:` entry at it. Idempotent: an existing tag built from
# the same Dockerfile and lock (label mnist.source-hash) is not rebuilt. Pushes only with --push.
# Docker daemon, base image (BASE_IMAGE, default python:3.10-slim-bookworm, or its local
# stand-in) and CA_BUNDLE: as infra/build_image.sh (infra/docker_env.sh).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=infra/docker_env.sh
source "$here/../docker_env.sh"

parse_image_args 2,9 mlflow-server "$@"

version=$(sed -n 's/^mlflow==\([0-9.]*\).*/\1/p' "$here/requirements.lock")
image="$name:$version"
source_hash=$(cat "$here/Dockerfile" "$here/requirements.lock" | sha256sum | cut -c1-16)

build_once "$image" "$source_hash" -f "$here/Dockerfile" \
  --label org.opencontainers.image.version="$version" "$here"
