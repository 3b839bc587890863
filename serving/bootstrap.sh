#!/usr/bin/env bash
# Creates (once) the serving environment from serving/requirements.lock and prints its path:
# MLServer 1.7.1 (and its MLflow runtime, for comparison only), MLflow, TensorFlow, PyTorch and
# model-signing, apart from the pipeline's venv (MLServer needs protobuf >= 5, TFX pins 3.20).
# Like infra/bootstrap.sh: keyed
# by the lock's hash, exactly the locked set (--no-deps --require-hashes), reused until the lock
# changes; serving environments of older locks are removed.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
lock="$repo/serving/requirements.lock"
home="${MNIST_SERVING_HOME:-$HOME/.cache/mnist-serving}"

find_python311() {
  local candidate
  for candidate in "${PYTHON311:-}" python3.11 \
      "$(pyenv root 2>/dev/null)"/versions/3.11.*/bin/python3.11 \
      /usr/bin/python3.11 /usr/local/bin/python3.11; do
    [ -n "$candidate" ] || continue
    if command -v "$candidate" >/dev/null 2>&1 && \
       "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null; then
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

python=$(find_python311) || {
  echo "error: the serving environment needs Python 3.11 (serving/requirements.lock is compiled for it)" >&2
  echo "       and none was found. Install it (e.g. 'pyenv install 3.11') or point PYTHON311 at it." >&2
  exit 1
}

mkdir -p "$home"
# One bootstrap at a time (tests and `make serve` may start together).
exec 9>"$home/.bootstrap.lock"
flock 9
if [ -f "$venv/.complete" ]; then
  echo "$venv"
  exit 0
fi
for stale in "$home"/venv-*; do
  [ -e "$stale" ] && [ "$stale" != "$venv" ] && { echo "removing stale serving environment $stale" >&2; rm -rf "$stale"; }
done
rm -rf "$venv"
echo "creating $venv with $python from serving/requirements.lock (first run only; about 6 GB)" >&2
"$repo/infra/locked_install.sh" "$python" "$venv" "$lock" "$home"
touch "$venv/.complete"
echo "$venv"
