"""The layering the code promises: the core and the dialects do no I/O and know no config."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from tests.helpers.paths import ROOT

PACKAGE = ROOT / "gateway"
DIALECTS = ("chat", "responses", "anthropic")

# What a pure module must never pull in: event loops, HTTP, servers, files of config, the shell.
FORBIDDEN = ("asyncio", "anyio", "httpx", "starlette", "uvicorn", "yaml", "redis", "prometheus_client")
SHELL = ("gateway.config", "gateway.server", "gateway.upstream", "gateway.state", "gateway.keys", "gateway.cli")


def imported_by(*modules: str) -> list[str]:
    """Every module importing ``modules`` loads, in a fresh interpreter."""
    code = "import sys\n" + "".join(f"import {m}\n" for m in modules) + "print('\\n'.join(sys.modules))"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()


def test_the_core_and_the_dialects_import_no_io_and_no_shell() -> None:
    loaded = imported_by(
        "gateway.core", "gateway.dialects.chat", "gateway.dialects.responses", "gateway.dialects.anthropic"
    )
    assert [m for m in loaded if m.split(".")[0] in FORBIDDEN] == []
    assert [m for m in loaded if m.startswith(SHELL)] == []


def test_the_core_has_a_public_face() -> None:
    import gateway.core

    assert sorted(gateway.core.__all__) == gateway.core.__all__
    for name in gateway.core.__all__:
        assert getattr(gateway.core, name) is not None


def imports_of(path: Path) -> set[str]:
    """The modules a source file names in its imports (``from a import b`` as ``a`` and ``a.b``)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def dialect_named(name: str) -> str | None:
    parts = name.split(".")
    if parts[:2] == ["gateway", "dialects"] and len(parts) > 2 and parts[2] in DIALECTS:
        return parts[2]
    return None


def test_no_dialect_imports_another() -> None:
    for dialect in DIALECTS:
        root = PACKAGE / "dialects" / dialect
        files = [*root.rglob("*.py")] if root.is_dir() else [root.with_suffix(".py")]
        for path in files:
            others = {dialect_named(n) for n in imports_of(path)} - {None, dialect}
            assert not others, f"{path.relative_to(PACKAGE)} imports the {sorted(others)} dialect"  # type: ignore[type-var]


def test_the_shell_knows_the_dialects_only_through_their_registry() -> None:
    """A new front door is added in ``gateway.dialects``; no server module names one."""
    for path in (PACKAGE / "server").rglob("*.py"):
        named = sorted(n for n in imports_of(path) if n.startswith("gateway.dialects."))
        assert named == [] or all(dialect_named(n) is None and n.count(".") == 2 for n in named), (path, named)
        assert not any(n.startswith("gateway.dialects.") and n.count(".") > 2 for n in named)


def test_the_upstream_wires_and_the_front_doors_do_not_know_each_other() -> None:
    """A wire reads an upstream into the core's chunks, a door writes the core's events: neither needs the other."""
    for path in (PACKAGE / "core" / "wires").rglob("*.py"):
        assert not [n for n in imports_of(path) if n.startswith("gateway.dialects")], path
    for path in (PACKAGE / "dialects").rglob("*.py"):
        assert not [n for n in imports_of(path) if n.startswith("gateway.core.wires")], path
