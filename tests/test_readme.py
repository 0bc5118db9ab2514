"""The README's examples are what the gateway really does."""

from __future__ import annotations

import re
from pathlib import Path

import orjson

from gateway.core.rewriter import StreamRewriter
from gateway.forwarding import DEFAULT_FORWARD, DEFAULT_FORWARD_HEADERS

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


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


def test_the_forwarded_endpoints_listed_are_the_defaults() -> None:
    section = README.split("The default is the OpenAI API besides chat completions", 1)[1].split("`forward: []`", 1)[0]
    example = (Path(__file__).resolve().parents[1] / "config.example.yaml").read_text()
    listed = example.split("# Default: the OpenAI API endpoints:", 1)[1].split("]", 1)[0]
    assert re.findall(r"`(/[^`]+)`", section) == list(DEFAULT_FORWARD)
    assert re.findall(r"/[\w/*]+", listed) == list(DEFAULT_FORWARD)
    assert "forward_headers: [openai-beta]" in example and list(DEFAULT_FORWARD_HEADERS) == ["openai-beta"]
