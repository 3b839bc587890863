#!/usr/bin/env bash
# What the tests need beside the venv: Debian's chromium, to render the evaluation report in a
# real headless browser. Installed once (needs root or sudo); a no-op when already there.
set -euo pipefail
command -v chromium >/dev/null 2>&1 && exit 0
echo "installing Debian's chromium for the report rendering test" >&2
sudo_=""
[ "$(id -u)" = 0 ] || sudo_="sudo"
$sudo_ apt-get update -qq >&2
DEBIAN_FRONTEND=noninteractive $sudo_ apt-get install -y -qq chromium >&2
