"""What a new process pays to import each cache, and to print ``jules-cache --help``.

Run: ``python benchmarks/bench_imports.py [--rounds 7]``. Each sample is a fresh interpreter
(``python -X importtime -c "import <module>"``); the top-level cumulative import time is parsed
from its stderr, interleaved across modules so machine load hits all alike. Also reports which
heavy modules ``import jules_cache`` loads (a hit needs no DuckDB, pandas or pyarrow.compute).
Writes benchmarks/results/imports.json.
"""

from __future__ import annotations

import argparse
import compileall
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from common import write_json

MODULES = ("polars", "jules_cache", "joblib", "diskcache")
HEAVY = ("duckdb", "pandas", "pyarrow.compute", "pyarrow.dataset", "pyarrow.parquet", "numpy")


def import_ms(module: str) -> float:
    """Cumulative import time of ``module`` in a fresh interpreter, in ms."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", f"import {module}"],
        capture_output=True,
        text=True,
        check=True,
        cwd="/",
    )
    for line in reversed(done.stderr.splitlines()):
        fields = [part.strip() for part in line.split("|")]
        if len(fields) == 3 and fields[2] == module:
            return int(fields[1]) / 1000
    raise RuntimeError(f"no importtime line for {module}: {done.stderr[-300:]}")


def help_ms() -> float:
    started = time.perf_counter()
    # The entry point of the interpreter running this script (its venv need not be activated).
    command = Path(sys.executable).with_name("jules-cache")
    subprocess.run([str(command), "--help"], capture_output=True, check=True)
    return (time.perf_counter() - started) * 1000


def loaded_by_jules_cache() -> list[str]:
    code = f"import sys, jules_cache; print(' '.join(m for m in {HEAVY!r} if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/")
    return done.stdout.split()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--output", default="imports")
    args = parser.parse_args()
    # Bytecode, as an installed package has it: with PYTHONDONTWRITEBYTECODE=1 (this machine
    # sets it) an editable checkout would recompile every module in every fresh interpreter.
    import jules_cache

    compileall.compile_dir(str(Path(jules_cache.__file__).parent), quiet=1)
    samples: dict[str, list[float]] = {name: [] for name in (*MODULES, "jules-cache --help")}
    for _ in range(args.rounds):
        for module in MODULES:
            samples[module].append(import_ms(module))
        samples["jules-cache --help"].append(help_ms())
    medians = {name: statistics.median(values) for name, values in samples.items()}
    for name, value in medians.items():
        print(f"{name:20} {value:7.1f} ms  (median of {args.rounds})")
    print(f"jules_cache / joblib import: {medians['jules_cache'] / medians['joblib']:.2f}")
    heavy = loaded_by_jules_cache()
    print(f"import jules_cache loads: {' '.join(heavy) or 'none of ' + ', '.join(HEAVY)}")
    write_json(
        args.output,
        {
            "medians_ms": medians,
            "samples_ms": samples,
            "jules_cache_loads": heavy,
            "pythonpath": os.environ.get("PYTHONPATH"),
            "load_average": os.getloadavg(),
        },
    )


if __name__ == "__main__":
    main()
