"""The README's examples are what the gateway really does."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson

from gateway.core.rewriter import StreamRewriter
from tests.servers import clean_env

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_before_and_after_stream_example() -> None:
    upstream_block = README.split("upstream:  ", 1)[1].split("client:", 1)[0]
    client_block = README.split("client:    ", 1)[1].split("```", 1)[0]
    upstream = [orjson.loads(line.strip().removeprefix("data: ")) for line in upstream_block.strip().splitlines()]
    rewriter = StreamRewriter()
    sent = [f"data: {orjson.dumps(out).decode()}" for chunk in upstream for out in rewriter.feed(chunk)]
    assert sent + ["data: [DONE]"] == [line.strip() for line in client_block.strip().splitlines()]


def test_the_test_command_is_what_ci_runs() -> None:
    ci = (Path(__file__).resolve().parents[1] / ".ci" / "run").read_text()
    assert '.venv/bin/pip install -e ".[test]" && .venv/bin/pytest -q' in README
    assert 'pip install --quiet -e ".[test]"' in ci and "pytest -q" in ci


def test_skips_name_the_fixtures_folder_actually_read(tmp_path: Path) -> None:
    """The README: tests read the recordings from GATEWAY_FIXTURES when set, and skip with a reason naming it."""
    assert "GATEWAY_FIXTURES=<dir>" in README
    probe = "from tests.streams import needs_recordings as n; m, f = n(), n('x.sse'); print(m.args[0], m.kwargs['reason']); print(f.args[0], f.kwargs['reason'])"
    empty = tmp_path / "elsewhere"
    empty.mkdir()
    lines = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, env=clean_env(GATEWAY_FIXTURES=str(empty)), capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert lines == [
        f"True recorded provider streams not found: {empty} is absent (GATEWAY_FIXTURES=<dir> looks elsewhere)",
        f"True recorded provider streams not found: {empty / 'x.sse'} is absent (GATEWAY_FIXTURES=<dir> looks elsewhere)",
    ]
    (empty / "x.sse").write_bytes(b"data: {}\n\n")
    lines = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, env=clean_env(GATEWAY_FIXTURES=str(empty)), capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert [line.split(" ", 1)[0] for line in lines] == ["False", "False"]
