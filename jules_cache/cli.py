"""The ``jules-cache`` command: a thin click layer over ``FeatureStore``.

Exit codes (mapped here, in one place): 0 done, 1 error, 2 usage error (click), 75 a lock
was busy past its timeout — "try again later", as cron wrappers expect (EX_TEMPFAIL).
"""

from __future__ import annotations

import json
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import click

from .errors import JulesCacheError, LockTimeout
from .formatting import human_age, human_bytes, table
from .manifest import utc_now
from .store import FeatureStore
from .version import __version__

EXIT_ERROR = 1
EXIT_LOCK_BUSY = 75


class CliError(click.ClickException):
    """A library error shown as one line on stderr, with its exit code."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


class _Group(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except LockTimeout as exc:
            raise CliError(str(exc), EXIT_LOCK_BUSY) from exc
        except JulesCacheError as exc:
            raise CliError(str(exc), EXIT_ERROR) from exc


class StoreHandle:
    """Builds the store on first use, so ``--help`` never creates a cache directory."""

    def __init__(self, root: Path | None):
        self.root = root
        self._store: FeatureStore | None = None

    def get(self) -> FeatureStore:
        if self._store is None:
            self._store = FeatureStore(self.root)
        return self._store


pass_store = click.make_pass_decorator(StoreHandle)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--root",
    type=click.Path(path_type=Path),
    envvar=["JULES_CACHE_ROOT", "FEATURE_STORE_PATH"],
    help="Cache root. Default: $JULES_CACHE_ROOT, $FEATURE_STORE_PATH, or the user cache dir.",
)
@click.version_option(__version__, prog_name="jules-cache")
@click.pass_context
def cli(ctx: click.Context, root: Path | None) -> None:
    """jules-cache: a DuckDB-backed cache of feature computations on tick data.

    \b
    Example:
      jules-cache --root data/feature_cache stats
    """
    ctx.obj = StoreHandle(root)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@pass_store
def stats(handle: StoreHandle, as_json: bool) -> None:
    """Show entries, size, hits, misses and compute time saved, per feature.

    \b
    Example:
      jules-cache stats --json
    """
    result = handle.get().stats()
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
@click.option("--since", type=click.DateTime(), help="Only entries created at or after (UTC).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
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
    Example:
      jules-cache ls --feature jules_cache.synthetic.make_bars --symbol AAPL
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
                    human_age(e.last_accessed_at, now),
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
@pass_store
def demo(handle: StoreHandle, symbols: int, rows: int) -> None:
    """Compute bars for synthetic ticks twice through the cache: miss time vs hit time.

    \b
    Example:
      jules-cache demo --symbols 4 --rows 500000
    """
    from .demo import run_demo  # synthetic data needs numpy: only load it for the demo

    run_demo(handle.get(), symbols=symbols, rows=rows, echo=click.echo)


def _print_json(document: Any) -> None:
    json.dump(document, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="jules-cache")
