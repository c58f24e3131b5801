"""The README and the docs site say what the code does: every code block runs, every command is
documented.

How a page's fenced blocks are checked (the comment line right above a fence, invisible once
rendered, says when a block needs more than a scratch cache):

- ``python``: run as a script in a new process; ``bash``: run by ``bash -euo pipefail``. The
  blocks of one page run in order, in one scratch folder, with ``JULES_CACHE_ROOT`` set to one
  scratch cache, so a page may build on its earlier blocks.
- A ``pip install -e ".[extras]"`` line is not run (the environment running the tests was
  installed by ``.ci/run``); the extras it names must exist in ``pyproject.toml``.
- ``<!-- docs-test: ci -->``: the block's lines are run verbatim by ``.ci/run`` (the quick
  start: it runs the test suite itself); the test checks they are there.
- ``<!-- docs-test: shared -->``: needs PostgreSQL and S3. A Python block runs against the test
  services (``JULES_CACHE_TEST_*``) under a fresh prefix and schema; a bash block (the
  try-it-locally recipe) starts and stops its own services, as a user would. Without services
  they skip here and ``.ci/run`` runs them in its shared step.
- A block that imports an optional package (Dask for ``compute_many``, joblib) runs where its
  extra is installed (``.ci/run`` installs ``docs`` before the tests, ``shared`` for its last
  step); elsewhere it skips, naming the extra.
- ``text`` blocks are output or listings, not run; the error tree is checked below.
"""

from __future__ import annotations

import importlib.util
import inspect
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
import uuid
from dataclasses import dataclass
from pathlib import Path

import click
import pytest

import jules_cache
from jules_cache import errors
from jules_cache.cli import cli

REPO = Path(__file__).resolve().parent.parent
PAGES = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
DOCS = {page.relative_to(REPO).as_posix(): page.read_text(encoding="utf-8") for page in PAGES}
ALL_TEXT = "\n".join(DOCS.values())
COMMANDS = sorted(cli.commands.items())
RUN_LANGUAGES = {"python", "bash"}
SHOWN_LANGUAGES = {"text"}

_FENCE = re.compile(
    r"^(?:<!-- docs-test: (?P<mark>[a-z]+) -->\n)?```(?P<lang>[a-z]*)\n(?P<body>.*?)^```$",
    re.MULTILINE | re.DOTALL,
)
_PIP_LINE = re.compile(r'^pip install -e "\.\[(?P<extras>[a-z,]+)\]"(?: && (?P<rest>.*))?$')


@dataclass(frozen=True)
class Block:
    page: str
    number: int
    lang: str
    mark: str | None
    body: str

    def __str__(self) -> str:
        return f"{self.page} block {self.number} ({self.lang})"


def blocks_of(page: str) -> list[Block]:
    return [
        Block(page, n, m["lang"], m["mark"], m["body"])
        for n, m in enumerate(_FENCE.finditer(DOCS[page]), 1)
    ]


def _extras() -> set[str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    return set(project["optional-dependencies"])


def _bash_script(block: Block) -> str:
    """The block as run here: ``pip install`` lines checked against the extras, not run."""
    lines = []
    for line in block.body.splitlines():
        pip = _PIP_LINE.match(line.split("  #")[0].rstrip())
        if pip is None:
            assert not line.startswith("pip "), f"{block}: an unsupported pip line: {line}"
            lines.append(line)
            continue
        unknown = set(pip["extras"].split(",")) - _extras()
        assert not unknown, f"{block}: pyproject.toml has no extra {unknown}"
        lines.append(pip["rest"] or "")
    return "\n".join(lines) + "\n"


# Optional packages a block may need, and the extra that installs each.
OPTIONAL = {"distributed": "shared", "joblib": "docs"}


def _missing(block: Block) -> list[str]:
    """The optional packages the block uses (``compute_many`` needs Dask) that are not here."""
    needs = {
        name for name in OPTIONAL if re.search(rf"^\s*(import|from) {name}\b", block.body, re.M)
    }
    if "compute_many" in block.body:
        needs.add("distributed")
    return sorted(name for name in needs if importlib.util.find_spec(name) is None)


def _shared_python_env(env: dict[str, str]) -> dict[str, str]:
    unique = uuid.uuid4().hex[:12]
    bucket = os.environ["JULES_CACHE_TEST_S3_BUCKET"]
    return {
        **env,
        "JULES_CACHE_ROOT": f"s3://{bucket}/docs-{unique}",
        "JULES_CACHE_CATALOG": os.environ["JULES_CACHE_TEST_PG_DSN"],
        "JULES_CACHE_CATALOG_SCHEMA": f"docs_{unique}",
    }


def _shared_bash_env(env: dict[str, str], state: Path) -> dict[str, str]:
    """A user's shell: no services of the tests' own, a state folder of the recipe's own."""
    fresh = {k: v for k, v in env.items() if not k.startswith(("JULES_CACHE_", "AWS_"))}
    fresh["JULES_CACHE_ROOT"] = env["JULES_CACHE_ROOT"]
    fresh["JULES_CACHE_SERVICES_DIR"] = str(state)
    return fresh


def run_block(block: Block, env: dict[str, str], work: Path) -> None:
    shared_bash = block.mark == "shared" and block.lang == "bash"
    if block.mark == "shared" and block.lang == "python":
        env = _shared_python_env(env)
    if shared_bash:
        # Not under pytest's private tmp_path: PostgreSQL runs as its own user and must reach it.
        parent = Path(tempfile.mkdtemp(prefix="jules-cache-docs-services-"))
        parent.chmod(0o711)
        env = _shared_bash_env(env, parent / "services")
    if block.lang == "python":
        script = work / f"block_{block.number}.py"
        script.write_text(block.body, encoding="utf-8")
        command = [sys.executable, str(script)]
    else:
        command = ["bash", "-euo", "pipefail", "-c", _bash_script(block)]
    try:
        done = subprocess.run(
            command,
            cwd=REPO if shared_bash else work,  # the recipe runs scripts/services.sh
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
    finally:
        if shared_bash:  # stop the recipe's services even if it failed before its own stop
            subprocess.run(["scripts/services.sh", "stop"], cwd=REPO, env=env, capture_output=True)
            shutil.rmtree(parent, ignore_errors=True)
    assert done.returncode == 0, f"{block}:\n{block.body}\nstdout:\n{done.stdout}\n{done.stderr}"


# -- every block of every page ------------------------------------------------------------------


def test_every_block_has_a_known_language_and_mark():
    for page in DOCS:
        for block in blocks_of(page):
            assert block.lang in RUN_LANGUAGES | SHOWN_LANGUAGES, f"{block}: say its language"
            assert block.mark in (None, "ci", "shared"), f"{block}: unknown mark {block.mark}"
            assert block.mark != "ci" or block.lang == "bash", f"{block}: ci marks bash only"
    fences = sum(text.count("\n```") + text.startswith("```") for text in DOCS.values())
    assert fences == 2 * sum(len(blocks_of(page)) for page in DOCS), "an unparsed fence"


def test_ci_blocks_are_run_verbatim_by_ci():
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    marked = [b for page in DOCS for b in blocks_of(page) if b.mark == "ci"]
    assert marked, "the README's quick start is a ci block"
    for block in marked:
        for line in block.body.splitlines():
            assert line in ci, f"{block}: .ci/run does not run `{line}`"
    quick_start = [b for b in blocks_of("README.md") if b.mark == "ci"]
    assert quick_start and "jules-cache demo" in quick_start[0].body


def _runnable(page: str) -> list[Block]:
    return [b for b in blocks_of(page) if b.lang in RUN_LANGUAGES and b.mark != "ci"]


@pytest.mark.slow
@pytest.mark.parametrize("page", [page for page in DOCS if _runnable(page)])
def test_every_block_of_the_page_runs(page, tmp_path):
    runnable = _runnable(page)
    work = tmp_path / "work"
    work.mkdir()
    bin_dir = str(Path(sys.executable).parent)  # jules-cache and python of this environment
    env = {**os.environ, "JULES_CACHE_ROOT": str(tmp_path / "cache")}
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    env.pop("FEATURE_STORE_PATH", None)
    has_services = bool(os.environ.get("JULES_CACHE_TEST_PG_DSN"))
    left = []
    for block in runnable:
        missing = _missing(block)
        if missing:
            extras = ", ".join(f"{name} (the {OPTIONAL[name]} extra)" for name in missing)
            left.append(f"{block}: needs {extras}")
        elif block.mark == "shared" and not has_services:
            left.append(f"{block}: needs the shared services (.ci/run's shared step runs it)")
        else:
            run_block(block, env, work)
    shutil.rmtree(work, ignore_errors=True)
    if os.environ.get("JULES_CACHE_REQUIRE_SHARED") == "1":
        assert not left, "\n".join(left)
    if left:
        pytest.skip("; ".join(left))


# -- commands and errors are documented ---------------------------------------------------------


@pytest.mark.parametrize(("name", "command"), COMMANDS, ids=[name for name, _ in COMMANDS])
def test_command_help_has_an_example(name, command):
    assert command.help and "Example" in command.help, f"`jules-cache {name}` help lacks one"


@pytest.mark.parametrize(("name", "command"), COMMANDS, ids=[name for name, _ in COMMANDS])
def test_command_and_options_are_described_in_the_docs(name, command):
    assert f"jules-cache {name}" in ALL_TEXT, f"the docs do not show `jules-cache {name}`"
    for parameter in command.params:
        if isinstance(parameter, click.Option):
            flag = max(parameter.opts, key=len)
            assert flag in ALL_TEXT, f"the docs do not mention `jules-cache {name} {flag}`"


def test_the_cli_reference_is_generated_from_the_click_group():
    page = DOCS["docs/reference/cli.md"]
    assert "::: mkdocs-click" in page and ":module: jules_cache.cli" in page
    assert ":command: cli" in page


def test_every_public_name_is_in_the_api_reference():
    page = DOCS["docs/reference/api.md"]
    for name in jules_cache.__all__:
        if name != "__version__":
            assert f"::: jules_cache.{name}\n" in page, f"{name} is not in the API reference"


def _error_classes() -> list[str]:
    return [
        name
        for name, value in vars(errors).items()
        if inspect.isclass(value)
        and issubclass(value, BaseException)
        and value.__module__ == errors.__name__
    ]


def test_every_error_is_in_the_tree_and_has_a_troubleshooting_entry():
    page = DOCS["docs/troubleshooting.md"]
    (tree,) = re.findall(r"^```text\n(JulesCacheError\n.*?)^```", page, re.MULTILINE | re.DOTALL)
    classes = _error_classes()
    assert {"QueryError", "GCError", "UnsafePath", "PartialRemoval"} <= set(classes)
    for name in classes:
        assert re.search(rf"\b{name}\b", tree), f"{name} is not in the troubleshooting tree"
        assert f"## `{name}`" in page, f"troubleshooting has no section for {name}"


def test_the_version_is_in_one_place_and_in_the_changelog():
    assert jules_cache.__version__ == "0.2.0"
    changelog = (REPO / "CHANGELOG.md").read_text(encoding="utf-8")
    assert f"## [{jules_cache.__version__}]" in changelog
    pyproject = (REPO / "pyproject.toml").read_text(encoding="utf-8")
    assert 'dynamic = ["version"]' in pyproject and jules_cache.__version__ not in pyproject


def test_the_readme_stays_short_and_links_into_the_docs():
    readme = DOCS["README.md"]
    assert len(readme.splitlines()) <= 250
    for link in re.findall(r"\]\((docs/[^)#]+)", readme):
        assert (REPO / link).is_file(), f"README links to a missing {link}"
    assert "Supported platforms: Linux and macOS" in readme


def test_every_docs_page_is_in_the_navigation():
    nav = (REPO / "mkdocs.yml").read_text(encoding="utf-8")
    for page in (REPO / "docs").rglob("*.md"):
        assert page.relative_to(REPO / "docs").as_posix() in nav, f"{page} is not in the nav"


def test_no_stale_reference_in_source_comments():
    stale = re.compile(r"DESIGN\.md|\b[Ii]ssues? #?\d")
    sources = [*(REPO / "jules_cache").rglob("*.py"), *(REPO / "sql").rglob("*.sql")]
    sources += [*(REPO / "tests").rglob("*.py"), *(REPO / "benchmarks").glob("*.py")]
    sources += [REPO / ".ci" / "run", REPO / "pyproject.toml", *(REPO / "scripts").iterdir()]
    found = [
        f"{path.relative_to(REPO)}:{n}"
        for path in sources
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if stale.search(line) and path.name != "test_docs.py"
    ]
    assert not found, f"stale references (a missing DESIGN.md, issue numbers): {found}"
    assert not (REPO / "BENCH_README_DRAFT.md").exists()
