"""``import jules_cache`` loads what a hit needs and nothing else: a property of the imports, not
a timing. Heavy libraries and the maintenance and query code load where they are first used."""

from __future__ import annotations

import re
import subprocess
import sys

import jules_cache

# Never imported by `import jules_cache` (each is imported where it is first used).
HEAVY = ("numpy", "pyarrow", "pandas", "duckdb", "cloudpickle", "click", "dask", "psycopg")
LAYERS = ("jules_cache.maintenance", "jules_cache.query", "jules_cache.cli", "jules_cache.fanout")


def _imported_by_import() -> set[str]:
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import jules_cache"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith("import time:")]
    assert lines, done.stderr
    return {line.rsplit("|", 1)[1].strip() for line in lines[1:]}


def test_import_loads_no_heavy_library_and_no_maintenance_or_query_code():
    modules = _imported_by_import()
    assert "polars" in modules and "jules_cache.store" in modules  # the parse works
    heavy = sorted(m for m in modules if m.split(".")[0] in HEAVY)
    assert heavy == [], f"import jules_cache loads {heavy}"
    layers = sorted(m for m in modules if m.startswith(LAYERS))
    assert layers == [], f"import jules_cache loads {layers}"


def test_the_names_loaded_on_first_use_are_there():
    for name in ("compute_many", "JobOutcome", "JobFailure", "CheckReport", "VerifyReport"):
        assert re.fullmatch(r"[A-Za-z_]+", name) and getattr(jules_cache, name) is not None
    assert set(jules_cache.__all__) <= set(dir(jules_cache))


def test_a_first_fingerprint_of_a_tick_frame_needs_no_arrow_compute_kernels():
    # pyarrow.compute costs ~80 ms to import: a process's first hit on a frame of numbers,
    # text and categoricals (the usual tick frame) must not pay it.
    code = (
        "import sys, polars as pl\n"
        "from jules_cache.fingerprints.data import as_arrow, fingerprint_table\n"
        "frame = pl.DataFrame({'ts': [1, 2, 3], 'price': [1.0, 2.0, None],\n"
        "    'symbol': pl.Series(['BRK-B', 'a long instrument name', 'BRK-B'],\n"
        "                        dtype=pl.Categorical),\n"
        "    'venue': ['XNYS', 'a venue with a long name', None]})\n"
        "print(fingerprint_table(as_arrow(frame)), 'pyarrow.compute' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    digest, loaded = done.stdout.split()
    assert digest.startswith("xxh3_128:") and loaded == "False"
