#!/usr/bin/env bash
# Build, smoke-test and export the service's OCI image: deploy/container.sh build|test|env.
# Thin wrapper so the Makefile and CI call one stable name; the steps live in container.py.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# The project's venv holds bentoml; $PYTHON overrides it, plain python3 is the last resort.
python_bin="${PYTHON:-}"
if [[ -z "$python_bin" ]]; then
    if [[ -x "$here/../.venv/bin/python" ]]; then python_bin="$here/../.venv/bin/python"
    else python_bin=python3; fi
fi
exec "$python_bin" "$here/container.py" "$@"
