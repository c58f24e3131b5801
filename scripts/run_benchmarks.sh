#!/usr/bin/env bash
# Run every benchmark of benchmarks/ in one go, with the interpreter of the active environment
# (activate the venv the project is installed in first: `pip install -e ".[bench]"`).
# Each script prints its table and writes benchmarks/results/<name>.json.
#   scripts/run_benchmarks.sh            # full sizes (tens of minutes on 2 cores)
#   scripts/run_benchmarks.sh --quick    # the scripts that take --quick run small
# bench_shared (local vs shared root) needs the shared extras (`pip install -e ".[bench,shared,
# services]"`); it uses the services `eval "$(scripts/services.sh start)"` exported, else starts
# throwaway ones. Without the extras it is skipped with a note.
set -euo pipefail
cd "$(dirname "$0")/.."
python="${PYTHON:-python}"
quick=()
if [ "${1:-}" = "--quick" ]; then quick=(--quick); fi
scripts=(bench_store bench_imports bench_fingerprint bench_sql bench_gc bench_vs_legacy compare)
if "$python" -c "import boto3, psycopg" 2>/dev/null; then
    scripts+=(bench_shared)
else
    echo "== skipping benchmarks/bench_shared.py: no boto3/psycopg (pip install -e \".[shared,services]\")"
fi
for script in "${scripts[@]}"; do
    echo "== benchmarks/$script.py"
    if "$python" "benchmarks/$script.py" --help 2>/dev/null | grep -q -- "--quick"; then
        "$python" "benchmarks/$script.py" "${quick[@]}"
    else
        "$python" "benchmarks/$script.py"
    fi
done
