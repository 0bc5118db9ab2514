"""The layering the code promises: the core and the dialects do no I/O and know no config."""

from __future__ import annotations

import subprocess
import sys

# What a pure module must never pull in: event loops, HTTP, servers, files of config, the shell.
FORBIDDEN = ("asyncio", "anyio", "httpx", "starlette", "uvicorn", "yaml", "redis", "prometheus_client")
SHELL = ("gateway.config", "gateway.server", "gateway.upstream", "gateway.state", "gateway.keys", "gateway.cli")


def imported_by(*modules: str) -> list[str]:
    """Every module importing ``modules`` loads, in a fresh interpreter."""
    code = "import sys\n" + "".join(f"import {m}\n" for m in modules) + "print('\\n'.join(sys.modules))"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()


def test_the_core_and_the_dialects_import_no_io_and_no_shell() -> None:
    loaded = imported_by("gateway.core", "gateway.dialects.chat", "gateway.dialects.responses", "gateway.dialects.anthropic")
    assert [m for m in loaded if m.split(".")[0] in FORBIDDEN] == []
    assert [m for m in loaded if m.startswith(SHELL)] == []


def test_the_core_has_a_public_face() -> None:
    import gateway.core

    assert sorted(gateway.core.__all__) == gateway.core.__all__
    for name in gateway.core.__all__:
        assert getattr(gateway.core, name) is not None
