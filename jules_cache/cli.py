"""The ``jules-cache`` command: a thin click layer over ``FeatureStore``.

Exit codes (mapped here, in one place): 0 done, 1 error, 2 usage error (click: every option
value is parsed by a click type at the command line, so a bad one is a usage error), 75 a lock
(or the manifest, held open by another program) was busy past its timeout — "try again later",
as cron wrappers expect (EX_TEMPFAIL).

Only ``demo`` creates a cache: every other command on a root without one says so and exits 1,
creating nothing (a typo in a cron job must not grow a new cache tree).
"""

from __future__ import annotations

import contextlib
import json
import sys
import traceback
import warnings
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click
from click.core import ParameterSource

from jules_cache._durations import SYNTAX as DURATION_SYNTAX
from jules_cache._durations import parse_duration
from jules_cache._formatting import human_age, human_bytes, table
from jules_cache.errors import (
    CacheWriteWarning,
    InvalidInput,
    JulesCacheError,
    LockTimeout,
    ManifestBusy,
    PartialRemoval,
)
from jules_cache.maintenance.leftovers import DEFAULT_GRACE_SECONDS
from jules_cache.metrics import write_prometheus
from jules_cache.query.output import render_result
from jules_cache.roots import Root, claimed_catalog, resolve_root
from jules_cache.storage.layout import MANIFEST_NAME, OBJECTS_DIR, RESULT_SUFFIX
from jules_cache.storage.manifest import utc_now
from jules_cache.store import FeatureStore
from jules_cache.version import __version__

EXIT_ERROR = 1
EXIT_LOCK_BUSY = 75

_Command = TypeVar("_Command", bound=Callable[..., Any])
if TYPE_CHECKING:  # click's ParamType is generic for type checkers; at run time it need not be
    _ParamType = click.ParamType[Any, Any]
else:
    _ParamType = click.ParamType


class CliError(click.ClickException):
    """A library error shown as one line on stderr; exit code 1."""

    exit_code = EXIT_ERROR


class CliBusy(CliError):
    """A lock, or the manifest held open by another program, stayed busy: exit code 75."""

    exit_code = EXIT_LOCK_BUSY


class _Group(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (LockTimeout, ManifestBusy) as exc:  # busy, not broken: retry later
            raise CliBusy(str(exc)) from exc
        except JulesCacheError as exc:
            raise CliError(str(exc)) from exc


class StoreHandle:
    """Builds the store on first use, so ``--help`` never creates a cache directory, and
    only on a root that holds a cache unless ``create`` (``demo``)."""

    def __init__(self) -> None:
        self.root: str | None = None
        self.catalog: str | None = None
        self.catalog_schema: str | None = None
        self.from_environment: dict[str, bool] = {}  # option -> set by its variable only
        self._store: FeatureStore | None = None

    def where(self) -> Root:
        """The root this command works on, read as the library reads it."""
        return resolve_root(self.root)

    def require_cache(self) -> Root:
        """The root, if it holds a cache; else "no jules_cache at <path>" (exit 1). A shared
        root's catalog is created on first use, like a new local root."""
        root = self.where()
        if self.in_postgres(root):
            return root  # a PostgreSQL catalog is created on first use
        path = root.path()
        if path.exists() and not path.is_dir():
            raise CliError(f"cache root {path} exists and is not a directory; pick another root")
        if not is_cache(path):
            raise CliError(
                f"no jules_cache at {path}; check --root or $JULES_CACHE_ROOT (a cache is "
                "created by FeatureStore(root) in Python, or by `jules-cache demo`)"
            )
        return root

    def get(self, *, create: bool = False) -> FeatureStore:
        if self._store is None:
            root = self.where() if create else self.require_cache()
            with warnings.catch_warnings():
                # A damaged manifest: the command that needs it fails saying how to rebuild
                # it (`check --rebuild` opens the store exactly so): no warning on top.
                warnings.simplefilter("ignore", CacheWriteWarning)
                catalog, schema = self._catalog(root)
                self._store = FeatureStore(root.location, catalog=catalog, catalog_schema=schema)
        return self._store

    def in_postgres(self, root: Root) -> bool:
        """Whether ``root``'s catalog is PostgreSQL (not a manifest.duckdb)."""
        return root.shared or self._catalog(root)[0] is not None

    def _catalog(self, root: Root) -> tuple[str | None, str | None]:
        """The catalog and its schema for ``root``: $JULES_CACHE_CATALOG(_SCHEMA) are an
        s3:// root's, or a directory's whose ``catalog.json`` names a PostgreSQL catalog; a
        plain local root gets a catalog only from --catalog itself."""
        if root.shared or claimed_catalog(root.path()) is not None:
            return self.catalog, self.catalog_schema
        given = self.from_environment
        return (
            None if given.get("catalog") else self.catalog,
            None if given.get("catalog_schema") else self.catalog_schema,
        )


def is_cache(path: Path) -> bool:
    """A root holds a cache iff its manifest exists, or ``objects/`` holds a result file (a
    lost manifest is still a cache: ``check --rebuild`` rebuilds it from those files)."""
    if (path / MANIFEST_NAME).exists():
        return True
    try:
        return any((path / OBJECTS_DIR).glob(f"*/*{RESULT_SUFFIX}"))
    except OSError:
        return False


pass_store = click.make_pass_decorator(StoreHandle)


def _setter(attribute: str) -> Callable[[click.Context, click.Parameter, str | None], None]:
    """Store an option's value on the handle. The group's options are parsed first, then the
    subcommand's: a value given after the command name wins."""

    def store_value(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
        if value is not None:
            handle = ctx.ensure_object(StoreHandle)
            setattr(handle, attribute, value)
            source = ctx.get_parameter_source(param.name or "")
            handle.from_environment[attribute] = source == ParameterSource.ENVIRONMENT

    return store_value


# --root, --catalog, --catalog-schema: on the group (with their environment variables) and on
# every subcommand (without them, so an unset subcommand option keeps the group's value).
_WHERE = (
    (
        "--root",
        "root",
        ("JULES_CACHE_ROOT", "FEATURE_STORE_PATH"),
        "Cache root: a directory, or s3://bucket/prefix for a cache shared by many hosts "
        "(with --catalog). Default: $JULES_CACHE_ROOT, $FEATURE_STORE_PATH, or the user cache "
        "dir.",
    ),
    (
        "--catalog",
        "catalog",
        ("JULES_CACHE_CATALOG",),
        "PostgreSQL catalog (postgresql://user@host/db) of an s3:// root, or of a directory "
        "many hosts mount. Default: $JULES_CACHE_CATALOG (for s3:// roots and directories "
        "whose catalog.json names one).",
    ),
    (
        "--catalog-schema",
        "catalog_schema",
        ("JULES_CACHE_CATALOG_SCHEMA",),
        "PostgreSQL schema of that catalog. Default: $JULES_CACHE_CATALOG_SCHEMA, else "
        "jules_cache.",
    ),
)


def _where_options(*, group: bool) -> Callable[[_Command], _Command]:
    """The options that say which cache, accepted before or after the command name."""

    def decorate(command: _Command) -> _Command:
        for flag, attribute, variables, text in reversed(_WHERE):
            command = click.option(
                flag,
                type=str,
                expose_value=False,
                callback=_setter(attribute),
                envvar=list(variables) if group else None,
                help=text + ("" if group else " (also accepted before the command name)"),
            )(command)
        return command

    return decorate


root_option = _where_options(group=False)


class _DurationType(_ParamType):
    """``6h``, ``30m``, ``7d``, ``2w`` or seconds -> seconds (the library's one syntax)."""

    name = "duration"

    def convert(self, value: Any, param: Any, ctx: Any) -> float:
        try:
            return parse_duration(value)
        except InvalidInput as exc:
            self.fail(str(exc), param, ctx)


class _SizeType(_ParamType):
    name = "size"

    def convert(self, value: Any, param: Any, ctx: Any) -> int:
        from jules_cache.maintenance.gc import parse_size

        try:
            return parse_size(value)
        except InvalidInput as exc:
            self.fail(str(exc), param, ctx)


class _SinceType(_ParamType):
    """A duration back from now (``1h``, ``7d``) or a UTC date/time (``2024-03-01``)."""

    name = "since"
    _dates = click.DateTime()

    def convert(self, value: Any, param: Any, ctx: Any) -> datetime:
        if isinstance(value, datetime):
            return value
        with contextlib.suppress(InvalidInput):
            back = parse_duration(value)
            try:
                return utc_now() - timedelta(seconds=back)
            except OverflowError:
                self.fail(f"{value!r} reaches back before year 1; give a shorter duration")
        with contextlib.suppress(click.BadParameter):
            return self._dates.convert(value, param, ctx)
        self.fail(
            f"{value!r} is neither a duration ({DURATION_SYNTAX}) nor a date/time such as "
            "2024-03-01 or 2024-03-01T09:30:00 (UTC)",
            param,
            ctx,
        )


class _KeyPrefixType(_ParamType):
    name = "key"

    def convert(self, value: Any, param: Any, ctx: Any) -> str:
        if len(value) < 6:
            self.fail(f"key prefix {value!r} is too short; give at least 6 characters", param, ctx)
        return str(value)


DURATION = _DurationType()
# The grace period of `gc` and `check` (the library's one default, shown as a duration).
DEFAULT_GRACE = f"{DEFAULT_GRACE_SECONDS / 3600:g}h"


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@_where_options(group=True)
@click.version_option(__version__, prog_name="jules-cache")
@click.pass_context
def cli(ctx: click.Context) -> None:
    """jules-cache: a DuckDB-backed cache of feature computations on tick data.

    \b
    Example:
      jules-cache --root data/feature_cache stats
    """
    ctx.ensure_object(StoreHandle)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@click.option(
    "--prometheus",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write Prometheus text format to this file (node-exporter textfile collector).",
)
@root_option
@pass_store
def stats(handle: StoreHandle, as_json: bool, prometheus: Path | None) -> None:
    """Show entries, size, hits, misses and compute time saved, per feature.

    \b
    Examples:
      jules-cache stats --json
      jules-cache stats --prometheus /var/lib/node_exporter/textfile/jules_cache.prom
    """
    result = handle.get().stats()
    if prometheus is not None:
        write_prometheus(result, prometheus)
        click.echo(f"wrote {prometheus}", err=True)
        return
    if as_json:
        _print_json(result.to_dict() | {"hit_rate": result.hit_rate})
        return
    click.echo(f"root          {result.root}")
    click.echo(f"entries       {result.entries:,}")
    click.echo(f"size          {human_bytes(result.bytes)}")
    click.echo(f"hits          {result.hits:,}")
    click.echo(f"misses        {result.misses:,}")
    click.echo(f"hit rate      {result.hit_rate:.1%}")
    click.echo(f"time saved    {result.seconds_saved:,.1f} s")
    if result.store_failures:
        click.echo(f"store errors  {result.store_failures:,}")
    if result.features:
        click.echo("")
        click.echo(
            table(
                ["feature", "entries", "size", "hits", "compute s", "saved s"],
                [
                    [
                        f.feature,
                        f.entries,
                        human_bytes(f.bytes),
                        f.hits,
                        f.compute_seconds,
                        f.seconds_saved,
                    ]
                    for f in result.features
                ],
            )
        )


@cli.command("ls")
@click.option("--feature", help="Only entries of this feature.")
@click.option("--symbol", help="Only entries of this symbol.")
@click.option(
    "--since",
    type=_SinceType(),
    help="Only entries created within this duration (1h, 7d) or at or after this UTC date.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@root_option
@pass_store
def list_entries(
    handle: StoreHandle,
    feature: str | None,
    symbol: str | None,
    since: datetime | None,
    as_json: bool,
) -> None:
    """List cached entries, newest first, with sizes and ages.

    \b
    Examples:
      jules-cache ls --feature jules_cache.synthetic.make_bars --symbol AAPL
      jules-cache ls --since 1h
    """
    entries = handle.get().entries(feature=feature, symbol=symbol, since=since)
    if as_json:
        _print_json([entry.to_dict() for entry in entries])
        return
    now = utc_now()
    click.echo(
        table(
            ["key", "feature", "symbol", "rows", "size", "age", "last hit", "hits"],
            [
                [
                    e.key[:12],
                    e.feature,
                    e.symbol,
                    e.rows,
                    human_bytes(e.bytes),
                    human_age(e.created_at, now),
                    human_age(e.last_accessed_at, now) if e.hit_count else "never",
                    e.hit_count,
                ]
                for e in entries
            ],
        )
    )
    click.echo(f"{len(entries)} entries", err=True)


@cli.command()
@click.option(
    "--symbols",
    default=8,
    show_default=True,
    type=click.IntRange(1, 10_000),
    help="How many symbols to generate.",
)
@click.option(
    "--rows",
    default=2_000_000,
    show_default=True,
    type=click.IntRange(1_000),
    help="Total ticks over all symbols.",
)
@root_option
@pass_store
def demo(handle: StoreHandle, symbols: int, rows: int) -> None:
    """Compute bars for synthetic ticks twice through the cache: miss time vs hit time.

    \b
    Example:
      jules-cache demo --symbols 4 --rows 500000
    """
    # The synthetic data generator (and `statistics`, ~20 ms): only the demo pays for it. numpy
    # and pyarrow are loaded by every command already (polars, the store).
    from jules_cache.demo import run_demo

    run_demo(handle.get(create=True), symbols=symbols, rows=rows, echo=click.echo)


@cli.command()
@click.option("--fix", is_flag=True, help="Remove the stale entries found.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@root_option
@pass_store
def verify(handle: StoreHandle, fix: bool, as_json: bool) -> None:
    """Find footer-keyed entries whose input file was rewritten under an identical footer.

    Only entries made with fingerprint="footer" can be stale; exit code 1 while any remain.

    \b
    Example:
      jules-cache verify --fix
    """
    report = handle.get().verify(fix=fix)
    if as_json:
        _print_json(report.to_dict())
    else:
        click.echo(f"footer-keyed entries checked  {report.checked}")
        click.echo(f"stale (input rewritten)       {len(report.stale)}")
        click.echo(f"input file gone (kept)        {len(report.inputs_missing)}")
        click.echo(f"removed                       {report.removed}")
        for key in report.stale:
            click.echo(f"  stale: {key}")
    if not report.ok:
        raise CliError("stale entries remain; run `jules-cache verify --fix`")


@cli.command("gc")
@click.option(
    "--retention-weeks",
    type=click.FloatRange(min=0),
    envvar="FEATURE_STORE_GC_RETENTION_WEEKS",
    show_envvar=True,
    help="Delete entries not accessed (read or written) for this many weeks. Default: 4.",
)
@click.option(
    "--max-size",
    type=_SizeType(),
    help="Also delete least recently used entries beyond this, e.g. 50GB.",
)
@click.option(
    "--grace",
    type=DURATION,
    default=DEFAULT_GRACE,
    show_default=True,
    help="Temp and lock files younger than this are kept (e.g. 6h, 90m, 2d, 3600).",
)
@click.option(
    "--dry-run",
    is_flag=True,
    help="Delete nothing; show what a real run would delete (totals; -v lists every path).",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@click.option("-v", "--verbose", is_flag=True, help="List every file and row deleted.")
@click.option(
    "--cron",
    is_flag=True,
    help="For cron: print nothing on success, append to a rotated log, exit 75 if busy.",
)
@click.option(
    "--log-dir",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="FEATURE_STORE_LOG_DIR",
    show_envvar=True,
    help="Where --cron writes gc.log (rotated at 1 MiB, 5 kept). Default: <root>/gc-logs.",
)
@root_option
@pass_store
def gc_command(
    handle: StoreHandle,
    retention_weeks: float | None,
    max_size: int | None,
    grace: float,
    dry_run: bool,
    as_json: bool,
    verbose: bool,
    cron: bool,
    log_dir: Path | None,
) -> None:
    """Delete orphan files, dangling rows, expired and over-budget entries, stale temp files.

    Safe while trainers use the cache. Every run is recorded in the manifest's gc_runs table.
    Exit codes: 0 done, 1 a step failed (run recorded as failed), 75 another GC or a long
    manifest lock is busy (try again later). --cron is for the crontab line printed by
    `jules-cache cron-line`.

    \b
    Examples:
      jules-cache gc --root data/feature_cache --retention-weeks 4 --max-size 50GB --dry-run
      jules-cache gc --cron --root /data/feature_cache --log-dir /var/log/jules_cache
    """
    from jules_cache.errors import GCError

    options: dict[str, Any] = {
        "retention_weeks": retention_weeks,
        "max_size": max_size,
        "grace": grace,
        "dry_run": dry_run,
    }
    if cron:
        _gc_cron(handle, options, log_dir, verbose)
        return
    store = handle.get()
    bar = _ProgressBar(enabled=not as_json and not dry_run and sys.stderr.isatty())
    try:
        report = store.gc(**options, progress=bar.update)
    except GCError as exc:
        bar.close()
        _show_gc(exc.report, as_json, verbose)
        raise CliError(str(exc)) from exc
    except JulesCacheError as exc:
        bar.close()
        if as_json:
            busy = isinstance(exc, LockTimeout)
            _print_json({"status": "busy" if busy else "failed", "error": str(exc)})
        raise
    bar.close()
    _show_gc(report, as_json, verbose)


def _gc_cron(
    handle: StoreHandle, options: dict[str, Any], log_dir: Path | None, verbose: bool
) -> None:
    """One scheduled GC run: quiet on success, everything in the log, one line on stderr and
    the documented exit code otherwise (cron mails what a job prints)."""
    from jules_cache.maintenance.cron import LOG_DIR_NAME, LogBusy, cron_log, log_line

    where = handle.where()
    root: Any = where.location if where.shared else where.path()
    try:
        handle.require_cache()
    except CliError as exc:
        if log_dir is None:  # the log would go inside the root: create nothing there
            raise
        folder = log_dir
        failure: CliError | None = exc
    else:
        if log_dir is None and where.shared:
            raise CliError(f"gc --cron of a shared root ({root}) needs --log-dir")
        folder = log_dir if log_dir is not None else root / LOG_DIR_NAME
        failure = None
    try:
        with cron_log(folder.expanduser()) as log:
            settings = " ".join(f"{k}={v}" for k, v in options.items() if v is not None)
            log_line(log, f"gc --cron start: root {root} {settings}")
            code, message = _gc_cron_run(handle, options, verbose, log, failure)
            log_line(log, f"exit {code}" + (f": {message}" if message else ""))
    except LogBusy as exc:
        message = f"another `jules-cache gc --cron` run holds its log {exc}; try later"
        raise CliBusy(message) from None
    except OSError as exc:
        raise CliError(f"cannot write the GC log in {folder}: {exc.strerror}") from exc
    if code:
        raise (CliBusy if code == EXIT_LOCK_BUSY else CliError)(message or "gc failed; see the log")


def _gc_cron_run(
    handle: StoreHandle,
    options: dict[str, Any],
    verbose: bool,
    log: Any,
    failure: CliError | None,
) -> tuple[int, str]:
    from jules_cache.errors import GCError
    from jules_cache.maintenance.cron import log_line

    if failure is not None:
        return failure.exit_code, failure.message
    try:
        report = handle.get().gc(**options)
    except LockTimeout as exc:
        return EXIT_LOCK_BUSY, f"busy: {exc}"
    except GCError as exc:
        _log_report(log, exc.report, verbose)
        return EXIT_ERROR, str(exc)
    except JulesCacheError as exc:
        return EXIT_ERROR, str(exc)
    except Exception as exc:  # an unforeseen failure: the whole story goes to the log
        log_line(log, traceback.format_exc())
        return EXIT_ERROR, f"unexpected {type(exc).__name__}: {exc}"
    _log_report(log, report, verbose)
    return 0, ""


def _log_report(log: Any, report: Any, verbose: bool) -> None:
    from jules_cache.maintenance.cron import log_line

    action = "would delete (dry run)" if report.dry_run else "deleted"
    log_line(
        log,
        f"status {report.status} (gc run {report.run_id}): {action} {report.files} files/rows, "
        f"{human_bytes(report.bytes)} in {report.duration_seconds:.2f} s, longest lock hold "
        f"{report.max_lock_hold_ms:.1f} ms",
    )
    document = report.to_dict()
    if not verbose:
        document.pop("items")
    log_line(log, json.dumps(document, default=str))
    for error in report.errors:
        log_line(log, f"error: {error}")


@cli.command("cron-line")
@click.option(
    "--schedule",
    default="17 3 * * *",
    show_default=True,
    help="The five crontab time fields.",
)
@click.argument("gc_options", nargs=-1, type=click.UNPROCESSED)
@root_option
@pass_store
def cron_line(handle: StoreHandle, schedule: str, gc_options: tuple[str, ...]) -> None:
    """Print the crontab line that runs `jules-cache gc --cron` for this root, as cron runs it.

    The line names this installation's `jules-cache` by its absolute path (cron's PATH does not
    include a virtualenv) and the root as an absolute path. Extra GC options go after `--`.

    \b
    Examples:
      jules-cache cron-line --root /data/feature_cache
      jules-cache cron-line --root /data/feature_cache --schedule "0 * * * *" -- --max-size 50GB
    """
    from jules_cache.maintenance.cron import crontab_line

    if len(schedule.split()) != 5:
        raise click.BadParameter("give the five crontab fields, e.g. '17 3 * * *'")
    where = handle.where()
    root: Any = where.location if where.shared else where.path()
    if where.shared or claimed_catalog(root) is not None:
        click.echo(
            "note: set $JULES_CACHE_CATALOG in the crontab (not --catalog: it would put "
            "the catalog's password in the crontab)",
            err=True,
        )
    elif not is_cache(root):
        click.echo(f"note: no jules_cache at {root} yet; GC will fail until one exists", err=True)
    click.echo(crontab_line(schedule, ["--root", str(root), *gc_options]))


class _ProgressBar:
    """A click progress bar on stderr, shown only on a TTY and only for many items."""

    MIN_ITEMS = 1000

    def __init__(self, enabled: bool, label: str = "deleting"):
        self.enabled = enabled
        self.label = label
        self._bar: Any = None
        self._shown = 0

    def update(self, done: int, total: int) -> None:
        if not self.enabled or total < self.MIN_ITEMS:
            return
        if self._bar is None:
            self._bar = click.progressbar(length=total, label=self.label, file=sys.stderr)
            self._bar.__enter__()
        self._bar.update(done - self._shown)
        self._shown = done

    def close(self) -> None:
        if self._bar is not None:
            self._bar.__exit__(None, None, None)
            self._bar = None


def _show_gc(report: Any, as_json: bool, verbose: bool) -> None:
    if as_json:
        document = report.to_dict()
        if not (verbose or report.dry_run):
            document.pop("items")
        document["files"], document["bytes"] = report.files, report.bytes
        _print_json(document)
        return
    if verbose:
        for item in report.items:
            click.echo(f"{item.reason:<12} {human_bytes(item.bytes):>10}  {item.path}")
        if report.items:
            click.echo("")
    elif report.dry_run and report.items:
        click.echo(f"{len(report.items)} files/rows would go (-v lists them)", err=True)
    action = "would delete (dry run)" if report.dry_run else "deleted"
    click.echo(f"gc {report.root}: {action}")
    rows: list[list[Any]] = [[t.reason, t.count, human_bytes(t.bytes)] for t in report.totals]
    rows.append(["total", report.files, human_bytes(report.bytes)])
    click.echo(table(["reason", "files/rows", "size"], rows))
    click.echo("")
    click.echo(f"duration      {report.duration_seconds:.2f} s (plan {report.plan_seconds:.2f} s)")
    click.echo(f"manifest lock {report.lock_holds} holds, longest {report.max_lock_hold_ms:.1f} ms")
    if report.skipped:
        click.echo(f"skipped       {report.skipped} (used, re-published or gone since the plan)")
    click.echo(f"status        {report.status} (gc run {report.run_id})")
    for error in report.errors:
        click.echo(f"error: {error}", err=True)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@root_option
@pass_store
def overview(handle: StoreHandle, as_json: bool) -> None:
    """Show entries and bytes by feature and symbol, oldest/newest, and the last GC run.

    \b
    Example:
      jules-cache overview --root data/feature_cache
    """
    result = handle.get().overview()
    if as_json:
        _print_json(result.to_dict())
        return
    now = utc_now()
    click.echo(f"root          {result.root}")
    click.echo(f"entries       {result.entries:,}")
    click.echo(f"size          {human_bytes(result.bytes)}")
    if result.entries:
        click.echo(f"oldest        created {human_age(result.oldest_created, now)} ago")
        click.echo(f"newest        created {human_age(result.newest_created, now)} ago")
        click.echo(f"last access   {human_age(result.most_recent_access, now)} ago")
    last = result.last_gc
    if last is None:
        click.echo("last gc       never")
    else:
        kind = "dry run" if last["dry_run"] else "run"
        click.echo(
            f"last gc       {human_age(last['started_at'], now)} ago, {kind} {last['id']}: "
            f"{last['status']}" + (f" ({last['error']})" if last["error"] else "")
        )
    if result.groups:
        click.echo("")
        click.echo(
            table(
                ["feature", "symbol", "entries", "size", "oldest", "newest", "last access"],
                [
                    [
                        g.feature,
                        g.symbol,
                        g.entries,
                        human_bytes(g.bytes),
                        human_age(g.oldest, now),
                        human_age(g.newest, now),
                        human_age(g.last_access, now),
                    ]
                    for g in result.groups
                ],
            )
        )


@cli.command("check")
@click.option("--fix", is_flag=True, help="Repair what is found (see above).")
@click.option("--deep", is_flag=True, help="Also re-read every page, verifying checksums.")
@click.option(
    "--rebuild",
    is_flag=True,
    help="Move manifest.duckdb aside and rebuild it from the files' metadata (implies --fix).",
)
@click.option(
    "--grace",
    "grace_seconds",
    type=DURATION,
    default=DEFAULT_GRACE,
    show_default=True,
    help="Temp and lock files younger than this are left alone (puts in flight); 600, 30m, 6h.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@root_option
@pass_store
def check_command(
    handle: StoreHandle,
    fix: bool,
    deep: bool,
    rebuild: bool,
    grace_seconds: float,
    as_json: bool,
) -> None:
    """Compare the manifest with the files on disk; report problems by kind; repair with --fix.

    Kinds: missing_file (row without file), orphan_file (file without row), size_mismatch,
    unreadable_footer, checksum_failure (--deep), view_link, orphan_row, and the removable
    leftovers stale_temp and stale_lock. --fix drops rows whose file is gone, registers valid
    orphan files, moves damaged files to <root>/quarantine/, relinks the SQL views, deletes
    orphan rows and stale temp and lock files. Exit code 1 while the cache is inconsistent
    (run again with --fix).

    \b
    Examples:
      jules-cache check
      jules-cache check --deep --fix
      jules-cache check --rebuild      # manifest.duckdb damaged or deleted
      jules-cache check --grace 30m
    """
    if rebuild and handle.in_postgres(handle.require_cache()):
        raise CliError("check --rebuild rebuilds a manifest.duckdb; use check --fix")
    store = handle.get()
    label = "registering" if rebuild else "reading"
    bar = _ProgressBar(enabled=not as_json and sys.stderr.isatty(), label=label)
    report = store.check(
        fix=fix, deep=deep, rebuild=rebuild, grace_seconds=grace_seconds, progress=bar.update
    )
    bar.close()
    if as_json:
        _print_json(report.to_dict())
    else:
        _show_check(report)
    if not report.consistent:
        raise CliError("the cache is inconsistent; run `jules-cache check --fix`")


def _show_check(report: Any) -> None:
    if report.rebuilt_from:
        click.echo(f"old manifest moved to  {report.rebuilt_from}")
        if report.kept_counters:
            click.echo("kept from it           hits, counters, view names and GC history")
    click.echo(f"root       {report.root}")
    click.echo(f"entries    {report.entries:,}")
    click.echo(f"files      {report.files:,}")
    click.echo(f"in flight  {report.in_flight:,}")
    if report.quarantined:
        click.echo(f"quarantine {report.quarantined:,} files (safe to delete once inspected)")
    click.echo("")
    click.echo(table(["problem", "found", "fixed"], _check_rows(report)))
    shown = [p for p in report.problems if p.kind not in ("stale_temp", "stale_lock")]
    for problem in shown[:50]:
        done = f" -> {problem.action}" if problem.action else ""
        click.echo(f"  {problem.kind}: {problem.path}: {problem.detail}{done}")
    if len(shown) > 50:
        click.echo(f"  … and {len(shown) - 50} more (use --json for all)")
    click.echo("consistent" if report.consistent else "INCONSISTENT", err=True)


def _check_rows(report: Any) -> list[list[Any]]:
    fixed = {kind: 0 for kind in report.counts}
    for problem in report.problems:
        fixed[problem.kind] += problem.action is not None
    return [[kind, count, fixed[kind]] for kind, count in report.counts.items()]


@cli.command("sql")
@click.argument("query", required=False)
@click.option(
    "--file",
    "query_file",
    type=click.File("r"),
    help="Read the query from this file ('-' for stdin).",
)
@click.option(
    "--format",
    "output_format",
    type=click.Choice(["table", "csv", "json", "parquet"]),
    default="table",
    show_default=True,
    help="Output format (parquet needs --output).",
)
@click.option(
    "--output", type=click.Path(dir_okay=False, path_type=Path), help="Write to this file."
)
@root_option
@pass_store
def sql_command(
    handle: StoreHandle,
    query: str | None,
    query_file: Any,
    output_format: str,
    output: Path | None,
) -> None:
    """Run one read-only SQL query over the manifest and every cached feature.

    QUERY is the SQL text, or '-' to read it from stdin. Tables: entries, counters, ...,
    feature_views (one row per feature view) and one view per feature, named after the
    feature's last dotted component, with symbol, key, code_version, config_json and
    created_at as extra columns.

    \b
    Examples:
      jules-cache sql "SELECT symbol, avg(vwap) FROM make_bars GROUP BY symbol"
      jules-cache sql "SELECT * FROM feature_views" --format json
      echo "SELECT count(*) FROM entries" | jules-cache sql -
      jules-cache sql --file report.sql --format parquet --output report.parquet
    """
    if query_file is not None and query is not None:
        raise click.UsageError("pass the query as an argument or with --file, not both")
    if query_file is not None:
        text = query_file.read()
    elif query == "-":
        text = sys.stdin.read()
    elif query is not None:
        text = query
    else:
        raise click.UsageError("pass a query, '-' to read it from stdin, or --file FILE")
    if output_format == "parquet" and output is None:
        raise click.UsageError("--format parquet writes binary data: pass --output FILE")
    result = handle.get().sql_arrow(text)
    render_result(result, output_format, output, click.echo)


@cli.command("rm")
@click.option(
    "--key",
    type=_KeyPrefixType(),
    help="An entry's key, or a prefix of at least 6 characters (see `ls`).",
)
@click.option("--feature", help="Every entry of this feature.")
@click.option("--symbol", help="Every entry of this symbol.")
@click.option("--all", "remove_all", is_flag=True, help="Every entry (no filter with it).")
@click.option("--dry-run", is_flag=True, help="Only list what would be removed.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@root_option
@pass_store
def remove(
    handle: StoreHandle,
    key: str | None,
    feature: str | None,
    symbol: str | None,
    remove_all: bool,
    dry_run: bool,
    as_json: bool,
) -> None:
    """Remove cached entries: one key, a feature, a symbol (filters combine with AND), or all.

    \b
    Examples:
      jules-cache rm --feature mypkg.features.make_bars --symbol AAPL
      jules-cache rm --all --dry-run
    """
    filtered = key is not None or feature is not None or symbol is not None
    if remove_all and filtered:
        raise click.UsageError("--all removes every entry: drop --key, --feature and --symbol")
    if not remove_all and not filtered:
        raise click.UsageError("name what to remove: --key, --feature, --symbol, or --all")
    failure: PartialRemoval | None = None
    try:
        removed = handle.get().remove(
            key=key, feature=feature, symbol=symbol, dry_run=dry_run, all=remove_all
        )
    except PartialRemoval as exc:  # rows removed; some files could not be deleted
        failure, removed = exc, list(exc.removed)
    if as_json:
        left = failure.not_deleted if failure is not None else []
        _print_json(
            {
                "dry_run": dry_run,
                "removed": [entry.to_dict() for entry in removed],
                "not_deleted": [str(path) for path in left],
            }
        )
    else:
        verb = "would remove" if dry_run else "removed"
        for entry in removed:
            click.echo(
                f"{verb} {entry.key}  {entry.feature}  {entry.symbol}  {human_bytes(entry.bytes)}"
            )
        total = human_bytes(sum(entry.bytes for entry in removed))
        click.echo(f"{verb} {len(removed)} entries, {total}", err=True)
    if failure is not None:
        raise CliError(str(failure))


def _print_json(document: Any) -> None:
    json.dump(document, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="jules-cache")
