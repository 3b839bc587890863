# Helpers shared by infra/build_image.sh and infra/mlflow/build_image.sh (sourced, not run):
# a running Docker daemon, the base image, and a BuildKit build (for the `ca_bundle` build secret).
# Everything they print goes to stderr: the scripts print only the image reference on stdout.
infra_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
BASE_IMAGE=${BASE_IMAGE:-python:3.10-slim-bookworm}
DOCKERD_STATE=${DOCKERD_STATE:-/tmp/mnist-dockerd}

log() { echo "$(basename "$0"): $*" >&2; }

# A reachable daemon; as root on a bare Debian/Ubuntu machine: installs docker.io, starts dockerd.
docker_ready() {
  docker info >/dev/null 2>&1 && return 0
  if ! command -v dockerd >/dev/null || ! command -v docker >/dev/null; then
    [ "$(id -u)" = 0 ] || { log "no Docker daemon reachable and Docker is not installed"; return 1; }
    log "installing docker.io"
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io >&2
    docker info >/dev/null 2>&1 && return 0
  fi
  [ "$(id -u)" = 0 ] || { log "no Docker daemon reachable (start it, or join the docker group)"; return 1; }
  mkdir -p "$DOCKERD_STATE"
  log "starting dockerd (pid file $DOCKERD_STATE/dockerd.pid, log $DOCKERD_STATE/dockerd.log)"
  setsid nohup dockerd --pidfile "$DOCKERD_STATE/dockerd.pid" >"$DOCKERD_STATE/dockerd.log" 2>&1 </dev/null &
  local _
  for _ in $(seq 60); do
    docker info >/dev/null 2>&1 && return 0
    sleep 1
  done
  log "dockerd did not come up: see $DOCKERD_STATE/dockerd.log"
  return 1
}

# $BASE_IMAGE present: pulled, or (for the default python:3.10-slim-bookworm, when nothing can be
# pulled) the local stand-in made by infra/base_image.sh.
base_ready() {
  docker image inspect "$BASE_IMAGE" >/dev/null 2>&1 && return 0
  log "pulling $BASE_IMAGE"
  timeout 300 docker pull "$BASE_IMAGE" >&2 && return 0
  if [ "$BASE_IMAGE" = python:3.10-slim-bookworm ]; then
    log "cannot pull $BASE_IMAGE: making a local stand-in with infra/base_image.sh"
    "$infra_dir/base_image.sh" "$BASE_IMAGE" >/dev/null
  else
    log "cannot pull $BASE_IMAGE"
    return 1
  fi
}

# docker build with BuildKit and the host network; passes $CA_BUNDLE (default: the system bundle)
# as the build secret `ca_bundle`. BuildKit: the buildx plugin, else a pre-23 CLI with
# DOCKER_BUILDKIT=1 (e.g. Debian's docker.io 20.10 at /usr/bin/docker).
docker_build() {
  local -a cmd=() secret=()
  local cli major
  if docker buildx version >/dev/null 2>&1; then
    cmd=(docker buildx build --load)
  else
    for cli in docker /usr/bin/docker; do
      major=$("$cli" version -f '{{.Client.Version}}' 2>/dev/null | cut -d. -f1) || true
      if [[ "$major" =~ ^[0-9]+$ ]] && [ "$major" -lt 23 ]; then
        cmd=(env DOCKER_BUILDKIT=1 "$cli" build)
        break
      fi
    done
  fi
  [ ${#cmd[@]} -gt 0 ] || { log "BuildKit needed: install the docker buildx plugin"; return 1; }
  local ca=${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
  [ ! -s "$ca" ] || secret=(--secret "id=ca_bundle,src=$ca")
  "${cmd[@]}" --network host --progress plain "${secret[@]}" "$@" >&2
}

# `[--push] [NAME]` of the calling script: sets $push (0/1) and $name (default $2); --help prints
# the script's header lines ($1, a sed range such as 2,16).
parse_image_args() {
  local help_lines=$1 arg
  name=$2
  push=0
  shift 2
  for arg in "$@"; do
    case "$arg" in
      --push) push=1 ;;
      -h|--help) sed -n "${help_lines}p" "$0" >&2; exit 0 ;;
      -*) log "unknown option $arg"; exit 2 ;;
      *) name=$arg ;;
    esac
  done
}

# Builds image $1 (docker_build arguments after $2) unless an image of that name was built from
# the same sources (label mnist.source-hash = $2); pushes it when $push is 1; prints its name.
build_once() {
  local image=$1 source_hash=$2 start
  shift 2
  docker_ready
  if [ "$(docker image inspect -f '{{index .Config.Labels "mnist.source-hash"}}' "$image" 2>/dev/null)" = "$source_hash" ]; then
    log "$image exists (sources $source_hash), not rebuilt"
  else
    base_ready
    log "building $image (base $BASE_IMAGE)"
    start=$(date +%s)
    docker_build --build-arg BASE_IMAGE="$BASE_IMAGE" --label mnist.source-hash="$source_hash" -t "$image" "$@"
    log "built $image in $(( $(date +%s) - start )) s"
  fi
  if [ "${push:-0}" = 1 ]; then
    log "pushing $image"
    docker push "$image" >&2
  fi
  echo "$image"
}
