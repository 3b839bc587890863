#!/usr/bin/env bash
# Builds the pipeline image as a Beam SDK container for beam_runner dataflow or flink: the image
# from infra/build_image.sh plus Beam's /opt/apache/beam (boot entrypoint) from the official
# apache/beam_python3.10_sdk image of the locked Beam version (infra/Dockerfile.beam-sdk):
#   infra/build_beam_sdk_image.sh [--push] [NAME]    # NAME defaults to mnist-tfx
# prints NAME:<revision>-beam<version> as its last line; compile with it as the one image:
#   make compile ARGS="--image $(infra/build_beam_sdk_image.sh --push REGISTRY/mnist-tfx) --beam-runner dataflow ..."
# It needs a registry that serves apache/beam_python3.10_sdk (Docker Hub or a mirror of it).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
# shellcheck source=infra/docker_env.sh
source "$here/docker_env.sh"

parse_image_args 2,9 mnist-tfx "$@"
pipeline_image=$("$here/build_image.sh" $([ "$push" = 1 ] && echo --push) "$name" | tail -n 1)
beam_version=$(sed -n 's/^apache-beam\(\[[^]]*\]\)\?==\([^ ]*\).*/\2/p' "$repo/requirements.lock" | head -n 1)
[ -n "$beam_version" ] || { log "no apache-beam pin in requirements.lock"; exit 1; }
image="$pipeline_image-beam$beam_version"
source_hash=$(printf '%s %s\n' "$(docker image inspect -f '{{.Id}}' "$pipeline_image")" \
  "$(sha256sum "$here/Dockerfile.beam-sdk" | cut -c1-64)" | sha256sum | cut -c1-16)
build_once "$image" "$source_hash" -f "$here/Dockerfile.beam-sdk" --build-arg PIPELINE_IMAGE="$pipeline_image" \
  --build-arg BEAM_VERSION="$beam_version" "$here"
