#!/usr/bin/env bash
# Install everything the test suite needs into .venv (and tests/node/node_modules), then run it.
# Usage: bash tests/run.sh [pytest arguments]
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages the browser, proxy and cluster tests drive (never a downloaded browser).
missing=""
command -v chromium >/dev/null || missing="$missing chromium"
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || missing="$missing nginx-light"
command -v redis-server >/dev/null || missing="$missing redis-server"
command -v openssl >/dev/null || missing="$missing openssl"
command -v npm >/dev/null || missing="$missing nodejs npm"  # pusher-js, ably-js and the Next.js example
python3 -c "import ensurepip" 2>/dev/null || missing="$missing python3-venv"  # Debian's python3 makes no venv without it
if [ -n "$missing" ]; then
  if [ "$(id -u)" = 0 ]; then sudo=""; else sudo="sudo"; fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq $missing >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e '.[test,redis,plot]' -c tests/constraints.txt

if [ -f tests/node/package-lock.json ]; then
  npm ci --prefix tests/node --no-audit --no-fund --loglevel=error
fi
if [ -f examples/nextjs/package-lock.json ]; then
  npm ci --prefix examples/nextjs --no-audit --no-fund --loglevel=error
fi

# Most tests wait on real servers and clients rather than compute, so three test processes finish in about a third
# of the time even on two cores; each process takes whole files, so a module's fixtures stay in one. `-n 0` runs serially.
# Files are handed out in the order tests/conftest.py puts them in (those with a test marked `long` first), not
# xdist's (most tests first), which left the few-test files of the longest tests (a Next.js build, a schemathesis
# run, the soak) to start in the last minutes.
exec .venv/bin/python -m pytest -n 3 --dist loadfile --no-loadscope-reorder "$@"
