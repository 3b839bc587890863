#!/usr/bin/env bash
# What the tests need beside the venv (which brings SeaweedFS's weed, boto3 and psycopg2):
# Debian's chromium, to render the evaluation report in a real headless browser, and Debian's
# PostgreSQL, the MLflow server's backend store in the tests against the deployed registry.
# Installed once (needs root or sudo); a no-op when already there.
set -euo pipefail
missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || missing+=(postgresql)
[ ${#missing[@]} -eq 0 ] && exit 0
echo "installing Debian's ${missing[*]} for the tests" >&2
sudo_=""
[ "$(id -u)" = 0 ] || sudo_="sudo"
$sudo_ apt-get update -qq >&2
DEBIAN_FRONTEND=noninteractive $sudo_ apt-get install -y -qq "${missing[@]}" >&2
