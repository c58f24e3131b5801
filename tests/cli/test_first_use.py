"""The command line, docs and platform: what a new user hits on day one.

CLI tests go through click's runner or the installed ``jules-cache``
entry point (subprocess), library tests through the public API.
"""

from __future__ import annotations

import fcntl
import inspect
import json
import os
import re
import subprocess
import sys
import unicodedata
from pathlib import Path

import pytest
from click.testing import CliRunner
from features import bar_count
from helpers import fill_two_entries

import jules_cache
from jules_cache import FeatureStore, InvalidInput, errors
from jules_cache.cli import cli
from jules_cache.synthetic import ticks_for

REPO = Path(__file__).resolve().parents[2]
README = (REPO / "README.md").read_text(encoding="utf-8")
# The README and every page of the docs site, for what a newcomer must be able to find.
DOCS = "\n".join(
    p.read_text(encoding="utf-8") for p in [REPO / "README.md", *(REPO / "docs").rglob("*.md")]
)


@pytest.fixture(scope="module")
def shared_root(tmp_path_factory, ticks) -> Path:
    """A root filled by ``fill_two_entries`` once, for the tests that must leave its entries
    as they are (reads, usage errors, dry runs)."""
    root = tmp_path_factory.mktemp("shared") / "cache"
    fill_two_entries(root, ticks_for(ticks, "AAPL"))
    return root


def _run(args: list[str], env: dict[str, str] | None = None):
    return CliRunner().invoke(cli, args, env=env)


# -- --root before and after every subcommand ---------------------------------------------

# Each subcommand with arguments that succeed on a filled cache without changing it much.
READ_COMMANDS = {
    "stats": ["stats", "--json"],
    "ls": ["ls", "--json"],
    "sql": ["sql", "SELECT count(*) AS n FROM entries", "--format", "json"],
    "overview": ["overview", "--json"],
    "check": ["check", "--json"],
    "gc": ["gc", "--dry-run", "--json"],
    "verify": ["verify", "--json"],
    "rm": ["rm", "--symbol", "NOPE", "--dry-run", "--json"],
}


def test_every_subcommand_takes_root_after_its_name(tmp_path, shared_root):
    elsewhere = tmp_path / "elsewhere"
    for name, args in READ_COMMANDS.items():
        after = _run([*args, "--root", str(shared_root)], env={"JULES_CACHE_ROOT": str(elsewhere)})
        assert after.exit_code == 0, f"{name} --root: {after.output}"
        before = _run(["--root", str(shared_root), *args])
        assert before.exit_code == 0, f"--root {name}: {before.output}"
        assert after.stdout.replace(str(shared_root), "R") == before.stdout.replace(
            str(shared_root), "R"
        ) or (
            name in ("gc", "check")  # timings and run ids differ between two runs
        )
    assert not elsewhere.exists()
    # The subcommand's value wins over the group's and over the environment.
    stats = _run(["--root", str(elsewhere), "stats", "--json", "--root", str(shared_root)])
    assert stats.exit_code == 0 and json.loads(stats.stdout)["entries"] == 2
    assert not elsewhere.exists()


def test_root_is_an_option_of_every_command():
    for name, command in cli.commands.items():
        flags = {opt for p in command.params for opt in getattr(p, "opts", [])}
        assert "--root" in flags, f"`jules-cache {name} --root` is not accepted"


# -- read-only commands never create a cache ----------------------------------------------

NO_CACHE_COMMANDS = [
    ["stats"],
    ["ls"],
    ["sql", "SELECT 1"],
    ["overview"],
    ["check"],
    ["check", "--fix"],
    ["check", "--rebuild"],
    ["gc"],
    ["gc", "--dry-run"],
    ["verify"],
    ["rm", "--symbol", "AAPL"],
]


@pytest.mark.parametrize("args", NO_CACHE_COMMANDS, ids=" ".join)
def test_no_cache_at_root_exits_1_and_creates_nothing(tmp_path, args):
    missing = tmp_path / "typo" / "feature_cache"
    result = _run(["--root", str(missing), *args])
    assert result.exit_code == 1, result.output
    assert f"no jules_cache at {missing}" in result.stderr
    assert not missing.exists() and not missing.parent.exists()


def test_an_existing_empty_folder_is_not_a_cache_and_stays_empty(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = _run(["stats", "--root", str(empty)])
    assert result.exit_code == 1 and f"no jules_cache at {empty}" in result.stderr
    assert list(empty.iterdir()) == []


def test_the_variable_root_is_named_too(tmp_path):
    missing = tmp_path / "nope"
    result = _run(["stats"], env={"JULES_CACHE_ROOT": str(missing)})
    assert result.exit_code == 1 and f"no jules_cache at {missing}" in result.stderr
    assert not missing.exists()


def test_a_lost_manifest_is_still_a_cache_check_rebuild_repairs_it(root, two_entries):
    (root / "manifest.duckdb").unlink()
    stats = _run(["stats", "--json", "--root", str(root)])  # recovers it from the files itself
    assert stats.exit_code == 0 and json.loads(stats.stdout)["entries"] == 2
    (root / "manifest.duckdb").unlink()
    rebuilt = _run(["check", "--rebuild", "--root", str(root)])
    assert rebuilt.exit_code == 0, rebuilt.output
    again = _run(["stats", "--json", "--root", str(root)])
    assert again.exit_code == 0 and json.loads(again.stdout)["entries"] == 2


def test_demo_may_create_its_root(tmp_path):
    root = tmp_path / "new"
    result = _run(["demo", "--symbols", "1", "--rows", "2000", "--root", str(root)])
    assert result.exit_code == 0, result.output
    assert (root / "manifest.duckdb").is_file()


# -- scheduled GC from a plain install, as cron runs it -----------------------------------


def _cron_env(tmp_path: Path, **extra: str) -> list[str]:
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    pairs = {"PATH": "/usr/bin:/bin", "HOME": str(home), "SHELL": "/bin/sh", **extra}
    return ["env", "-i", *(f"{k}={v}" for k, v in pairs.items())]


def _crontab_command(line: str) -> str:
    """The command part of a crontab line: what follows the five schedule fields."""
    return line.split(None, 5)[5]


@pytest.mark.slow
def test_the_printed_crontab_line_runs_gc_under_cron_env(
    tmp_path, root, two_entries, jules_cache_command
):
    printed = subprocess.run(
        [*_cron_env(tmp_path), jules_cache_command, "cron-line", "--root", str(root)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert printed.returncode == 0, printed.stderr
    line = printed.stdout.strip().splitlines()[-1]
    assert line.split()[5] == jules_cache_command  # an absolute path: cron's PATH is not needed
    done = subprocess.run(
        [*_cron_env(tmp_path), "/bin/sh", "-c", _crontab_command(line)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""  # cron mails any output: a successful run is quiet
    log = (root / "gc-logs" / "gc.log").read_text()
    assert "status success" in log and "exit 0" in log
    assert "Traceback" not in log


@pytest.mark.slow
def test_overlapping_cron_runs_exit_75_and_say_so_in_the_log(
    tmp_path, root, two_entries, jules_cache_command
):
    command = [*_cron_env(tmp_path), jules_cache_command, "gc", "--cron", "--root", str(root)]
    first = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr
    gc_lock = root / "locks" / "gc.lock"
    fd = os.open(gc_lock, os.O_RDWR)
    try:  # a GC is running (this test holds its lock)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        busy = subprocess.run(command, capture_output=True, text=True, timeout=300)
    finally:
        os.close(fd)
    assert busy.returncode == 75, busy.stderr
    log = (root / "gc-logs" / "gc.log").read_text()
    assert "exit 75" in log and "busy" in log


@pytest.mark.slow
def test_cron_log_rotates_and_a_missing_root_fails_without_creating_it(
    tmp_path, root, two_entries, jules_cache_command
):
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "gc.log").write_text("x" * 1_100_000)  # over the 1 MiB rotation size
    command = [*_cron_env(tmp_path), jules_cache_command, "gc", "--cron", "--log-dir", str(logs)]
    done = subprocess.run([*command, "--root", str(root)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert (logs / "gc.log.1").stat().st_size == 1_100_000
    assert "status success" in (logs / "gc.log").read_text()
    missing = tmp_path / "typo"
    failed = subprocess.run([*command, "--root", str(missing)], capture_output=True, text=True)
    assert failed.returncode == 1 and f"no jules_cache at {missing}" in failed.stderr
    assert f"no jules_cache at {missing}" in (logs / "gc.log").read_text()
    assert not missing.exists()


def test_no_shipped_script_depends_on_the_callers_path():
    assert not (REPO / "scripts" / "feature_store_gc.sh").exists()
    assert "scripts/feature_store_gc" not in DOCS
    assert "jules-cache cron-line" in DOCS and "gc --cron" in DOCS


# -- usage errors exit 2; rm --all --------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["rm", "--dry-run"],
        ["rm"],
        ["rm", "--key", "4b51"],
        ["rm", "--all", "--symbol", "AAPL"],
        ["gc", "--max-size", "lots", "--dry-run"],
        ["gc", "--grace", "soon", "--dry-run"],
        ["check", "--grace", "soon"],
        ["ls", "--since", "yesterday-ish"],
    ],
    ids=" ".join,
)
def test_usage_errors_exit_2(shared_root, args):
    result = _run(["--root", str(shared_root), *args])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    with FeatureStore(shared_root) as store:
        assert len(store.entries()) == 2


def test_rm_all_dry_run_then_for_real(root, two_entries):
    dry = _run(["rm", "--all", "--dry-run", "--json", "--root", str(root)])
    assert dry.exit_code == 0, dry.output
    assert sorted(e["key"] for e in json.loads(dry.stdout)["removed"]) == sorted(two_entries)
    with FeatureStore(root) as store:
        assert len(store.entries()) == 2
    done = _run(["rm", "--all", "--root", str(root)])
    assert done.exit_code == 0, done.output
    with FeatureStore(root) as store:
        assert store.entries() == []
        assert list((root / "objects").rglob("*.parquet")) == []
        assert store.check().consistent


def test_store_remove_all(store, aapl):
    store.get_or_compute("AAPL", aapl, {"freq": "1m"}, bar_count, name="bars")
    with pytest.raises(InvalidInput):
        store.remove()
    with pytest.raises(InvalidInput):
        store.remove(all=True, symbol="AAPL")
    assert len(store.remove(all=True)) == 1 and store.entries() == []


# -- one duration syntax; store.entry() takes key prefixes --------------------------------


@pytest.mark.parametrize("grace", ["6h", "30m", "7d", "600", "1.5h"])
def test_check_and_gc_take_the_same_durations(shared_root, grace):
    for args in (["check", "--grace", grace], ["gc", "--dry-run", "--grace", grace]):
        result = _run(["--root", str(shared_root), *args, "--json"])
        assert result.exit_code == 0, f"{args}: {result.output}"
    checked = _run(["--root", str(shared_root), "check", "--grace", "1.5h", "--json"])
    assert json.loads(checked.stdout)["consistent"]


def test_ls_since_takes_a_duration_or_a_date(shared_root):
    recent = _run(["ls", "--since", "1h", "--json", "--root", str(shared_root)])
    assert recent.exit_code == 0, recent.output
    assert len(json.loads(recent.stdout)) == 2
    dated = _run(["ls", "--since", "2999-01-01", "--json", "--root", str(shared_root)])
    assert dated.exit_code == 0 and json.loads(dated.stdout) == []


def test_store_entry_takes_a_6_character_prefix(store, aapl):
    key = store.fetch("AAPL", aapl, {"freq": "1m"}, bar_count, name="bars").key
    assert store.entry(key).key == key
    assert store.entry(key[:6]).key == key
    upper = store.entry(key[:12].upper())
    assert upper is None or upper.key == key
    assert store.entry("ffffff" if not key.startswith("ffffff") else "000000") is None
    with pytest.raises(InvalidInput, match="6"):
        store.entry(key[:4])


# -- tables keep significant digits and align wide characters ---------------------------


def _display_width(text: str) -> int:
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def test_sql_table_keeps_small_numbers_and_aligns_wide_text(shared_root):
    query = (
        "SELECT symbol, ret::DOUBLE AS ret, n FROM (VALUES ('日本', -0.000123, 12), "
        "('AAPL', 0.000456, 3), ('BRK/B', 1234567.891, 4)) t(symbol, ret, n)"
    )
    result = _run(["--root", str(shared_root), "sql", query])
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "-0.000123" in out and "0.000456" in out
    assert "0.000 " not in out and "-0.000\n" not in out
    lines = [line for line in out.splitlines() if line.strip()]
    # the right-aligned column after the wide text ends at the same display column in every row
    ends = set()
    for line in lines[2:]:
        number = line.split()[1]
        ends.add(_display_width(line[: line.index(number) + len(number)]))
    assert len(ends) == 1, out
    # every line of a right-aligned numeric table ends at the same display width
    assert len({_display_width(line) for line in lines}) == 1, out


# -- check and GC agree on stale locks ---------------------------------------------------


def test_check_grace_0_counts_the_same_stale_locks_as_gc(root, two_entries):
    gc = _run(["--root", str(root), "gc", "--grace", "0", "--dry-run", "--json"])
    assert gc.exit_code == 0, gc.output
    gc_stale = next(t for t in json.loads(gc.stdout)["totals"] if t["reason"] == "stale_lock")
    assert (root / "locks" / "gc.lock").exists()  # the GC's own lock, there after every run
    check = _run(["--root", str(root), "check", "--grace", "0", "--json"])
    counts = json.loads(check.stdout)["counts"]
    assert counts["stale_lock"] == gc_stale["count"] == 2
    fixed = _run(["--root", str(root), "check", "--grace", "0", "--fix", "--json"])
    assert fixed.exit_code == 0
    assert (root / "locks" / "gc.lock").exists()


@pytest.mark.slow
def test_a_lock_held_by_a_live_process_is_never_stale(root, two_entries):
    held = root / "locks" / f"{two_entries[0]}.lock"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, os, sys, time\n"
            f"fd = os.open({str(held)!r}, os.O_RDWR)\n"
            "fcntl.flock(fd, fcntl.LOCK_EX); print('held', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        fixed = _run(["--root", str(root), "check", "--grace", "0", "--fix", "--json"])
        report = json.loads(fixed.stdout)
        assert report["counts"]["stale_lock"] == 1 and held.exists()
    finally:
        holder.kill()
        holder.communicate()


# -- the exported names are exactly the public API ---------------------------------------


def test_all_matches_the_module_namespace():
    public = {
        name
        for name in dir(jules_cache)  # names loaded on first use are listed too
        if not name.startswith("_")
        and name != "TYPE_CHECKING"
        and not inspect.ismodule(getattr(jules_cache, name))
    }
    assert public == set(jules_cache.__all__) - {"__version__"}
    assert all(hasattr(jules_cache, name) for name in jules_cache.__all__)
    assert len(jules_cache.__all__) == len(set(jules_cache.__all__))


def test_every_exception_and_warning_of_errors_is_exported_and_documented():
    classes = [
        name
        for name, value in vars(errors).items()
        if inspect.isclass(value)
        and issubclass(value, BaseException)
        and value.__module__ == errors.__name__
    ]
    assert {"QueryError", "GCError", "UnsafePath", "PartialRemoval"} <= set(classes)
    (tree,) = re.findall(r"^```text\n(JulesCacheError\n.*?)^```", DOCS, re.MULTILINE | re.DOTALL)
    for name in classes:
        assert name in jules_cache.__all__, f"{name} is not exported"
        assert getattr(jules_cache, name) is getattr(errors, name)
        assert name in errors.__doc__, f"{name} is not in the errors.py tree"
        assert re.search(rf"\b{name}\b", tree), f"{name} is not in the docs' error tree"


# -- supported platforms said plainly ----------------------------------------------------

_BLOCK_FCNTL = """
import sys
class NoFcntl:
    def find_spec(self, name, path=None, target=None):
        if name == "fcntl":
            raise ModuleNotFoundError("No module named 'fcntl'", name="fcntl")
        return None
sys.modules.pop("fcntl", None)
sys.meta_path.insert(0, NoFcntl())
try:
    import jules_cache.cli
except ImportError as exc:
    print(type(exc).__name__, exc)
"""


@pytest.mark.slow
def test_import_without_fcntl_says_which_platforms_are_supported():
    done = subprocess.run(
        [sys.executable, "-c", _BLOCK_FCNTL], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("ImportError"), done.stdout
    assert "Linux and macOS" in done.stdout and "Windows" in done.stdout


def test_no_windows_script_and_no_task_scheduler_in_the_readme():
    assert not (REPO / "scripts" / "feature_store_gc.bat").exists()
    assert "Task Scheduler" not in DOCS and "schtasks" not in DOCS
    assert "Supported platforms: Linux and macOS" in README
