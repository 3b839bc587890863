#!/usr/bin/env bash
# Builds and pushes the pipeline image, tagged with the code revision, e.g.
#   infra/build_image.sh ghcr.io/ORG/mnist-tfx
# then compile with the same tag:  make compile ARGS="--image ghcr.io/ORG/mnist-tfx:<revision>"
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
name=${1:?usage: build_image.sh REGISTRY/IMAGE}
revision=$(git -C "$repo" rev-parse --short=12 HEAD)
[ -z "$(git -C "$repo" status --porcelain)" ] || revision="$revision-dirty"
docker build -f "$repo/infra/Dockerfile" --build-arg CODE_REVISION="$revision" -t "$name:$revision" "$repo"
docker push "$name:$revision"
echo "$name:$revision"
