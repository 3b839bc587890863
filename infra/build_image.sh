#!/usr/bin/env bash
# Builds the pipeline image from infra/Dockerfile, tagged with the code revision (never `latest`):
#   infra/build_image.sh [--push] [NAME]        # NAME defaults to mnist-tfx
# prints NAME:<revision> as its last line on stdout (all else goes to stderr), e.g.
#   image=$(infra/build_image.sh ghcr.io/ORG/mnist-tfx) && docker run --rm "$image" python /pipeline/infra/image_check.py
# then compile with the same tag:  make compile ARGS="--image $image"
# <revision> is `git rev-parse --short=12 HEAD`, plus `-dirty` when the work tree has changes.
# Idempotent: an existing NAME:<revision> built from the same sources (label mnist.source-hash) is
# not rebuilt. Pushes only with --push.
# On a bare Debian/Ubuntu machine (as root) it installs docker.io, starts dockerd (pid file and log
# in $DOCKERD_STATE, default /tmp/mnist-dockerd) and, when the base image cannot be pulled, makes a
# local stand-in for it (infra/base_image.sh). Options (environment):
#   BASE_IMAGE   default python:3.10-slim-bookworm
#   CA_BUNDLE    CA bundle given to pip in the build (default /etc/ssl/certs/ca-certificates.crt if present)
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
# shellcheck source=infra/docker_env.sh
source "$here/docker_env.sh"

parse_image_args 2,16 mnist-tfx "$@"

revision=$(git -C "$repo" rev-parse --short=12 HEAD)
[ -z "$(git -C "$repo" status --porcelain)" ] || revision="$revision-dirty"
image="$name:$revision"
# What the image is made of: every file git sees (tracked or untracked, not ignored), so a dirty
# tree that changed since the last build is rebuilt under the same -dirty tag.
source_hash=$(cd "$repo" && git ls-files -z --cached --others --exclude-standard \
  | sort -z | xargs -0 -r sha256sum 2>/dev/null | sha256sum | cut -c1-16)

build_once "$image" "$source_hash" -f "$repo/infra/Dockerfile" --build-arg CODE_REVISION="$revision" \
  --label org.opencontainers.image.revision="$revision" "$repo"
