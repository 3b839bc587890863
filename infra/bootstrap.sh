#!/usr/bin/env bash
# Creates (once) the project's virtual environment from requirements.lock and prints its path.
# The venv lives outside the clone, keyed by the lock file's hash, so a CI machine or a second
# clone reuses it until the lock changes; venvs of other lock versions are removed.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
lock="$repo/requirements.lock"
home="${MNIST_PIPELINE_HOME:-$HOME/.cache/mnist-pipeline}"

find_python310() {
  local candidate
  for candidate in "${PYTHON310:-}" python3.10 \
      "$(pyenv root 2>/dev/null)"/versions/3.10.*/bin/python3.10 \
      /usr/bin/python3.10 /usr/local/bin/python3.10; do
    [ -n "$candidate" ] || continue
    if command -v "$candidate" >/dev/null 2>&1 && \
       "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 10))' 2>/dev/null; then
      command -v "$candidate"
      return 0
    fi
  done
  return 1
}

key=$(sha256sum "$lock" | cut -c1-16)
venv="$home/venv-$key"
if [ -f "$venv/.complete" ]; then
  echo "$venv"
  exit 0
fi
# One creator at a time: a second `make` started meanwhile waits for the first one's venv instead
# of deleting it half-built.
mkdir -p "$home"
exec 9>"$home/.bootstrap.lock"
flock 9
if [ -f "$venv/.complete" ]; then
  echo "$venv"
  exit 0
fi

python=$(find_python310) || {
  echo "error: Python 3.10 is required (TFX 1.16 supports 3.9-3.10 only) and none was found." >&2
  echo "       Install it (e.g. 'pyenv install 3.10') or point PYTHON310 at its interpreter." >&2
  exit 1
}

for stale in "$home"/venv-*; do
  [ -e "$stale" ] && [ "$stale" != "$venv" ] && { echo "removing stale environment $stale" >&2; rm -rf "$stale"; }
done
rm -rf "$venv"
echo "creating $venv with $python from requirements.lock (first run only; several GB)" >&2
"$repo/infra/locked_install.sh" "$python" "$venv" "$lock" "$home"
touch "$venv/.complete"
echo "$venv"
