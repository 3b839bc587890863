#!/usr/bin/env bash
# Makes a local stand-in for Docker Hub's python:3.10-slim-bookworm, for machines that cannot pull
# it (no registry reachable), so that infra/Dockerfile and infra/mlflow/Dockerfile build unchanged:
#   infra/base_image.sh            # -> tags python:3.10-slim-bookworm (skips if the tag exists)
# Debian bookworm (debootstrap --variant=minbase) + the shared libraries a CPython 3.10 loads +
# this machine's CPython 3.10 copied to /usr/local (the same layout as the official image: no
# tests, no .pyc, pip from ensurepip). It is NOT the official image: use the real one wherever it
# can be pulled (infra/build_image.sh only calls this when the pull fails).
# Needs root, debootstrap and docker. Options (environment):
#   PYTHON310_PREFIX  the CPython 3.10 installation to copy (default: pyenv's newest 3.10.x, else
#                     the prefix of `python3.10` on PATH)
#   DEBIAN_MIRROR     default: the first URIs: of /etc/apt/sources.list.d/debian.sources, else
#                     http://deb.debian.org/debian
# Logs go to stderr; the tag is printed on stdout.
set -euo pipefail
tag=${1:-python:3.10-slim-bookworm}
log() { echo "base_image.sh: $*" >&2; }

if docker image inspect "$tag" >/dev/null 2>&1; then
  log "$tag exists, nothing to do"
  echo "$tag"
  exit 0
fi
[ "$(id -u)" = 0 ] || { log "needs root (debootstrap, chroot)"; exit 1; }
command -v debootstrap >/dev/null || {
  log "installing debootstrap"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >&2 \
    || { apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >&2; }
}

prefix=${PYTHON310_PREFIX:-}
if [ -z "$prefix" ]; then
  pyenv_root=${PYENV_ROOT:-$HOME/.pyenv}
  prefix=$(ls -d "$pyenv_root"/versions/3.10.* 2>/dev/null | sort -V | tail -n 1 || true)
fi
if [ -z "$prefix" ] && command -v python3.10 >/dev/null; then
  prefix=$(python3.10 -c 'import sys; print(sys.base_prefix)')
fi
[ -n "$prefix" ] && [ -x "$prefix/bin/python3.10" ] \
  || { log "no CPython 3.10 found: set PYTHON310_PREFIX to its installation prefix"; exit 1; }
version=$("$prefix/bin/python3.10" -c 'import platform; print(platform.python_version())')

mirror=${DEBIAN_MIRROR:-$(sed -n 's/^URIs:[[:space:]]*\([^[:space:]]*\).*/\1/p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -n 1)}
mirror=${mirror:-http://deb.debian.org/debian}

work=$(mktemp -d "${TMPDIR:-/tmp}/python-base.XXXXXX")
trap 'rm -rf "$work"' EXIT
root=$work/rootfs

# What CPython 3.10's extension modules link (ssl, ctypes, sqlite3, lzma, bz2, zlib, readline,
# curses, uuid, dbm, nis), what the official slim image carries (ca-certificates, netbase, tzdata),
# and libgomp1 (OpenMP, used by numerical wheels that do not vendor it).
packages=ca-certificates,netbase,tzdata,libssl3,libffi8,libsqlite3-0,zlib1g,libbz2-1.0,liblzma5,\
libreadline8,libncursesw6,libtinfo6,libuuid1,libgdbm6,libgdbm-compat4,libnsl2,libtirpc3,libexpat1,\
libcrypt1,libdb5.3,libgomp1
log "debootstrap bookworm from $mirror into $root"
debootstrap --variant=minbase --include="$packages" bookworm "$root" "$mirror" >&2

log "copying CPython $version from $prefix to /usr/local"
# The official image's clean-up: no test suites, no byte code, no static library; no
# site-packages (this machine's may hold anything): pip comes from ensurepip below.
tar -C "$prefix" -c \
  --exclude=./lib/python3.10/site-packages --exclude=./lib/python3.10/test \
  --exclude=test --exclude=tests --exclude=idle_test --exclude=__pycache__ \
  --exclude='*.pyc' --exclude='*.pyo' --exclude='libpython*.a' \
  --exclude='./bin/pip*' . | tar -C "$root/usr/local" -x --no-same-owner
mkdir -p "$root/usr/local/lib/python3.10/site-packages"
# The copied scripts and build configuration name the old prefix: point them at /usr/local.
grep -rlI --null -F "$prefix" "$root/usr/local/bin" "$root/usr/local/lib/pkgconfig" \
  "$root/usr/local/lib/python3.10"/_sysconfigdata_*.py "$root/usr/local/lib/python3.10"/config-3.10-*/ 2>/dev/null \
  | xargs -0 -r sed -i "s|$prefix|/usr/local|g"
chroot "$root" /sbin/ldconfig
chroot "$root" /usr/local/bin/python3.10 -m ensurepip --default-pip >&2
chroot "$root" /usr/local/bin/python3.10 -c 'import ssl, sqlite3, ctypes, lzma, bz2, zlib, readline, uuid, decimal; print(ssl.OPENSSL_VERSION)' >&2
find "$root/usr/local" -depth -name __pycache__ -type d -exec rm -rf {} +
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* "$root"/tmp/* "$root"/root/.cache

log "importing as $tag"
tar -C "$root" -c . | docker import \
  --change 'ENV PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV LANG=C.UTF-8' \
  --change "ENV PYTHON_VERSION=$version" \
  --change 'CMD ["python3"]' \
  --message "local stand-in for python:3.10-slim-bookworm (debootstrap bookworm minbase + CPython $version)" \
  - "$tag" >&2
echo "$tag"
