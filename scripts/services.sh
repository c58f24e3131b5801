#!/usr/bin/env bash
# Start, show or stop the throwaway PostgreSQL + S3 (SeaweedFS) servers of the shared-backend
# tests, on 127.0.0.1 only. `start` and `env` print `export ...` lines for the tests:
#   eval "$(scripts/services.sh start)"     # idempotent; installs postgresql if missing (root)
#   python -m pytest -m shared
#   scripts/services.sh stop
# Needs the interpreter of a venv with the extras: pip install -e ".[test,shared,services]"
# (it uses $PYTHON, else the active venv's python, else ./.venv/bin/python).
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
if [ -n "${PYTHON:-}" ]; then
    python="$PYTHON"
elif [ -n "${VIRTUAL_ENV:-}" ]; then
    python="$VIRTUAL_ENV/bin/python"
elif [ -x "$here/.venv/bin/python" ]; then
    python="$here/.venv/bin/python"
else
    python=python3
fi
exec "$python" "$here/tests/shared/shared_services.py" "$@"
