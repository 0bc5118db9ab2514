"""The README's examples are what the gateway really does."""

from __future__ import annotations

from pathlib import Path

import orjson

from gateway.core.options import RewriteOptions
from gateway.core.translator import StreamTranslator
from gateway.dialects.chat import ChatStreamEncoder

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def test_before_and_after_stream_example() -> None:
    upstream_block = README.split("upstream:  ", 1)[1].split("client:", 1)[0]
    client_block = README.split("client:    ", 1)[1].split("```", 1)[0]
    upstream = [orjson.loads(line.strip().removeprefix("data: ")) for line in upstream_block.strip().splitlines()]
    body = b"".join(b"data: " + orjson.dumps(chunk) + b"\n\n" for chunk in upstream) + b"data: [DONE]\n\n"
    translator = StreamTranslator(RewriteOptions(), "openai")
    sent = ChatStreamEncoder().encode(translator.feed(body)).decode()
    assert [line for line in sent.split("\n") if line] == [line.strip() for line in client_block.strip().splitlines()]


def test_the_test_command_is_what_ci_runs() -> None:
    ci = (Path(__file__).resolve().parents[1] / ".ci" / "run").read_text()
    assert '.venv/bin/pip install -e ".[test]" && .venv/bin/pytest -q' in README
    assert 'pip install --quiet -e ".[test]"' in ci and "pytest -q" in ci
