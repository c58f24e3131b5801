"""Every ``jules-cache`` command on a shared root: it works, or says why in one line (exit 1).

``--root``, ``--catalog`` and ``--catalog-schema`` are accepted after the command name as well
as before it, as on a local root.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from shared_worker import moving_average, ticks

from jules_cache import FeatureStore

pytestmark = pytest.mark.shared
CLI = str(Path(sys.executable).with_name("jules-cache"))

# command -> what a shared root must answer (exit 0)
COMMANDS = {
    "stats": ["stats", "--json"],
    "ls": ["ls", "--json"],
    "overview": ["overview", "--json"],
    "verify": ["verify", "--json"],
    "gc": ["gc", "--dry-run", "--json"],
    "check": ["check"],
    "sql": ["sql", "SELECT count(*) AS n FROM entries"],
}


@pytest.fixture
def filled(services, s3_url, pg_schema):
    with FeatureStore(s3_url, catalog=services.pg_dsn, catalog_schema=pg_schema) as store:
        store.fetch("A", ticks(1), {"window": 5}, moving_average, version="1")
    return s3_url


def _run(args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CLI, *args], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_command_works_on_a_shared_root_with_the_options_after_it(
    name, filled, services, pg_schema
):
    where = ["--root", filled, "--catalog", services.pg_dsn, "--catalog-schema", pg_schema]
    done = _run([*COMMANDS[name], *where])
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr


def test_overview_of_a_shared_root_counts_its_entries(filled, services, pg_schema):
    where = ["--root", filled, "--catalog", services.pg_dsn, "--catalog-schema", pg_schema]
    done = _run([*where, "overview", "--json"])
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["entries"] == 1 and result["root"] == filled
    assert [group["symbol"] for group in result["groups"]] == ["A"]
