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

push=0
name=mlflow-server
for arg in "$@"; do
  case "$arg" in
    --push) push=1 ;;
    -h|--help) sed -n '2,9p' "$0" >&2; exit 0 ;;
    -*) log "unknown option $arg"; exit 2 ;;
    *) name=$arg ;;
  esac
done

version=$(sed -n 's/^mlflow==\([0-9.]*\).*/\1/p' "$here/requirements.lock")
image="$name:$version"
source_hash=$(cat "$here/Dockerfile" "$here/requirements.lock" | sha256sum | cut -c1-16)

docker_ready
if [ "$(docker image inspect -f '{{index .Config.Labels "mnist.source-hash"}}' "$image" 2>/dev/null)" = "$source_hash" ]; then
  log "$image exists (sources $source_hash), not rebuilt"
else
  base_ready
  log "building $image from $here/Dockerfile (base $BASE_IMAGE)"
  start=$(date +%s)
  docker_build -f "$here/Dockerfile" --build-arg BASE_IMAGE="$BASE_IMAGE" \
    --label org.opencontainers.image.version="$version" --label mnist.source-hash="$source_hash" \
    -t "$image" "$here"
  log "built $image in $(( $(date +%s) - start )) s"
fi
if [ "$push" = 1 ]; then
  log "pushing $image"
  docker push "$image" >&2
fi
echo "$image"
