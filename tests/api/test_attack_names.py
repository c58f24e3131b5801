"""Names are validated whole: ``$`` matches before a trailing newline, so a ``^...$`` check
with ``re.match`` let ``"bars\\n"`` through as ``"bars"``."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from jules_cache.query.views import require_identifier
from jules_cache.storage.layout import KEY_PATTERN

pytestmark = pytest.mark.attack
PACKAGE = Path(__file__).resolve().parents[2] / "jules_cache"


@pytest.mark.parametrize("name", ["bars\n", "bars\r\n", "bars ", "\nbars"])
def test_an_sql_identifier_with_a_newline_is_refused(name):
    with pytest.raises(ValueError, match="identifier"):
        require_identifier(name)


def test_a_key_with_a_trailing_newline_is_not_a_key():
    assert KEY_PATTERN.fullmatch("0" * 32)
    assert not KEY_PATTERN.fullmatch("0" * 32 + "\n")


def _anchored_patterns() -> list[str]:
    """Compiled patterns of the package that end in a bare ``$`` (not MULTILINE)."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not (isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "compile"):
                continue
            if not node.args or not isinstance(node.args[0], ast.Constant):
                continue
            pattern = node.args[0].value
            flags = ast.unparse(node.args[1]) if len(node.args) > 1 else ""
            if isinstance(pattern, str) and pattern.endswith("$") and "MULTILINE" not in flags:
                found.append(f"{path.relative_to(PACKAGE)}: {pattern}")
    return found


def test_no_pattern_of_the_package_relies_on_dollar():
    """Patterns are written bare and used with ``fullmatch``; a ``$`` anchor is a sign of
    ``match`` used as a whole-string check."""
    assert _anchored_patterns() == []
    assert re.compile("a$").match("a\n")  # why: the trap this guards against
