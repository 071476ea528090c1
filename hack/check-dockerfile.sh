#!/usr/bin/env bash
# Check the Dockerfile without a Docker engine: its rules, then its install steps in a temporary
# venv (hack/check_dockerfile.py says which). Usage: hack/check-dockerfile.sh [--rules-only]
set -euo pipefail
cd "$(dirname "$0")/.."
python="${PYTHON:-.venv/bin/python}"
[ -x "$python" ] || python=python3.11
exec "$python" hack/check_dockerfile.py "$@"
