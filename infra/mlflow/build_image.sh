#!/usr/bin/env bash
# Builds and pushes the MLflow tracking server image, tagged with the MLflow version it holds, e.g.
#   infra/mlflow/build_image.sh ghcr.io/ORG/mlflow-server
# then point infra/mlflow/kustomization.yaml's `images:` entry at the printed name.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
name=${1:?usage: build_image.sh REGISTRY/IMAGE}
version=$(sed -n 's/^mlflow==\([0-9.]*\).*/\1/p' "$here/requirements.lock")
docker build -t "$name:$version" "$here"
docker push "$name:$version"
echo "$name:$version"
