"""Metrics, structured logs, request ids and the overhead header."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.config import parse_config
from gateway.server.app import create_app
from gateway.server.logs import JsonFormatter, TextFormatter
from tests.helpers.metrics import scrape, value
from tests.helpers.servers import (
    Reply,
    ScriptedUpstream,
    completion_of,
    gateway_process,
    json_reply,
    serve,
    sse,
    stream_reply,
)
from tests.helpers.streams import agent_stream, call, choice, chunk, split_evenly

KEY = "gw-observe-key-123456"
PROVIDER_KEY = "sk-observe-provider-987654"
SECRET_TEXT = "USER-SECRET-CONTENT"
THOUGHTS = "MODEL-PRIVATE-THOUGHTS"
CONFIG = """
server: {{api_keys: ["{key}"], retry_backoff: 0.01}}
providers:
  up: {{base_url: "{upstream}/v1", api_key: "{provider_key}", timeout: {{idle: 0.5}}}}
models:
  - {{name: agent, provider: up, rewrite: {{inject_tools: false}}, max_retries: 1}}
  - {{name: thinking, provider: up, rewrite: {{inject_tools: false, reasoning: expose}}, max_retries: 0}}
"""


def agent_chunks(message: str = "Visible answer.", usage: bool = True) -> list[dict[str, Any]]:
    chunks = agent_stream(split_evenly(json.dumps({"inner_thoughts": THOUGHTS, "message": message}), 5))
    if usage:
        chunks.append(chunk(usage={"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}))
    return chunks


@pytest.fixture(scope="module")
def setup() -> Iterator[tuple[ScriptedUpstream, str]]:
    upstream = ScriptedUpstream(default=lambda request: stream_reply(agent_chunks()))
    with serve(upstream) as upstream_url:
        app = create_app(
            parse_config(CONFIG.format(key=KEY, upstream=upstream_url, provider_key=PROVIDER_KEY), "o.yaml", env={})
        )
        with serve(app) as url:
            yield upstream, url


def post(url: str, model: str = "agent", stream: bool = True, **headers: str) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": SECRET_TEXT}], "stream": stream}
    return httpx.post(
        url + "/v1/chat/completions", json=body, headers={"authorization": f"Bearer {KEY}", **headers}, timeout=10
    )


def test_metrics_move_with_a_mix_of_requests(setup: tuple[ScriptedUpstream, str]) -> None:
    upstream, url = setup
    before = scrape(url)
    assert post(url).text.endswith("[DONE]\n\n")
    upstream.reply(
        json_reply(completion_of(agent_chunks(usage=False)) | {"usage": {"prompt_tokens": 5, "completion_tokens": 3}})
    )
    assert post(url, stream=False).status_code == 200
    upstream.reply(
        json_reply({"error": {"message": "busy", "type": "server_error"}}, 503), stream_reply(agent_chunks())
    )
    assert post(url).status_code == 200  # retried once
    upstream.reply(json_reply({"error": {"message": "down", "type": "server_error"}}, 503))
    assert post(url, model="thinking").status_code == 503
    upstream.reply(Reply(sse(agent_chunks())[:3], then="hang"))
    assert '"upstream_timeout"' in post(url).text
    upstream.reply(stream_reply(agent_chunks(), delay=0.05))
    with httpx.stream(
        "POST",
        url + "/v1/chat/completions",
        json={"model": "agent", "messages": [], "stream": True},
        headers={"authorization": f"Bearer {KEY}"},
    ) as response:
        next(response.iter_bytes())
    upstream.reply(stream_reply(agent_chunks()))
    post(url, model="thinking")
    time.sleep(0.5)
    after = scrape(url)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("gateway_requests_total", route="agent", status="200", stream="true") == 4
    assert delta("gateway_requests_total", route="agent", status="200", stream="false") == 1
    assert delta("gateway_requests_total", route="thinking", status="503", stream="true") == 1
    assert delta("gateway_request_duration_seconds_count", route="agent", stream="true") == 4
    assert delta("gateway_time_to_first_byte_seconds_count", route="agent", stream="true") == 4
    assert delta("gateway_overhead_seconds_count", route="agent", stream="false") == 1
    assert delta("gateway_retries_total", route="agent") == 1
    assert delta("gateway_upstream_errors_total", provider="up", kind="status") == 2
    assert delta("gateway_upstream_errors_total", provider="up", kind="mid_stream") == 1
    assert delta("gateway_client_disconnects_total", route="agent") == 1
    assert delta("gateway_tokens_total", route="agent", kind="prompt") == 11 + 5 + 11
    assert delta("gateway_tokens_total", route="agent", kind="completion") == 7 + 3 + 7
    assert delta("gateway_rewrite_message_calls_total", route="agent") >= 4
    assert delta("gateway_rewrite_reasoning_chars_total", route="agent", action="hidden") >= 3 * len(
        THOUGHTS
    )  # two were cut early
    assert delta("gateway_rewrite_reasoning_chars_total", route="thinking", action="exposed") == len(THOUGHTS)
    assert value(after, "gateway_in_flight_requests") == 0 and value(after, "gateway_in_flight_streams") == 0


def test_no_created_series_are_exported(setup: tuple[ScriptedUpstream, str]) -> None:
    """Counters and histograms carry their values only, not a `*_created` timestamp series per label set."""
    _, url = setup
    assert post(url).status_code == 200
    families = {family.name: family for family in text_string_to_metric_families(httpx.get(url + "/metrics").text)}
    assert {"gateway_requests", "gateway_request_duration_seconds"} <= set(families)
    names = {sample.name for family in families.values() for sample in family.samples}
    assert "gateway_requests_total" in names and not [name for name in names if name.endswith("_created")]


def test_invalid_tool_arguments_and_client_calls_are_counted(setup: tuple[ScriptedUpstream, str]) -> None:
    upstream, url = setup
    before = scrape(url)
    chunks = [
        chunk(
            choice(role="assistant", tool_calls=[call(0, '{"message": "ok"} trailing', id="m", name="send_message")])
        ),
        chunk(choice(tool_calls=[call(1, '{"inner_thoughts": "t", "q": 1}', id="c", name="lookup")])),
        chunk(choice(finish="tool_calls")),
    ]
    upstream.reply(stream_reply(chunks))
    post(url)
    after = scrape(url)
    assert (
        value(after, "gateway_rewrite_invalid_arguments_total", route="agent")
        - value(before, "gateway_rewrite_invalid_arguments_total", route="agent")
        == 1
    )
    assert (
        value(after, "gateway_rewrite_client_calls_total", route="agent")
        - value(before, "gateway_rewrite_client_calls_total", route="agent")
        == 1
    )


def test_log_lines_have_the_fields_and_never_content_or_keys(
    setup: tuple[ScriptedUpstream, str], caplog: pytest.LogCaptureFixture
) -> None:
    _, url = setup
    with caplog.at_level(logging.DEBUG, logger="gateway"):
        response = post(url, **{"x-request-id": "client-chosen-id-1"})
        post(url, stream=False)
        time.sleep(0.3)
    access = [
        r
        for r in caplog.records
        if r.name == "gateway.access" and getattr(r, "fields", {}).get("path") == "/v1/chat/completions"
    ]
    assert len(access) >= 2
    line = json.loads(JsonFormatter().format(access[0]))
    assert line["request_id"] == "client-chosen-id-1" == response.headers["x-request-id"]
    for field in (
        "time",
        "route",
        "upstream_model",
        "status",
        "stream",
        "duration_ms",
        "ttfb_ms",
        "upstream_ms",
        "retries",
        "prompt_tokens",
        "completion_tokens",
        "error_kind",
    ):
        assert field in line
    assert (line["route"], line["status"], line["stream"], line["prompt_tokens"]) == ("agent", 200, True, 11)
    rewrite = [r for r in caplog.records if r.getMessage() == "rewrite"]
    assert rewrite and rewrite[0].fields["message_calls"] == 1
    for record in caplog.records:
        for formatted in (JsonFormatter().format(record), TextFormatter().format(record)):
            for secret in (SECRET_TEXT, THOUGHTS, "Visible answer", KEY, PROVIDER_KEY):
                assert secret not in formatted


PYTHON_REPORTS = """
import asyncio, gc, logging.config, warnings
from gateway.cli import log_config
from gateway.server.logs import log_python_reports

logging.config.dictConfig(log_config("info", "json"))
log_python_reports()
logging.getLogger("asyncio").warning("socket.send() raised exception.")
logging.getLogger("httpx").info("below the root's level: not written")
warnings.warn("a library's warning")

class Finaliser:
    def __del__(self) -> None:
        raise RuntimeError("raised in __del__")

Finaliser()
gc.collect()
"""


def test_what_python_and_libraries_report_is_written_in_the_one_format() -> None:
    """A library's record, a warning, an exception ignored in a finaliser: each a JSON line, as log shippers parse."""
    done = subprocess.run([sys.executable, "-c", PYTHON_REPORTS], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stderr.splitlines()]
    assert [(line["logger"], line["level"]) for line in lines] == [
        ("asyncio", "warning"),
        ("py.warnings", "warning"),
        ("gateway.python", "error"),
    ]
    assert "a library's warning" in lines[1]["message"] and "Finaliser" in lines[2]["message"]
    assert "RuntimeError: raised in __del__" in lines[2]["exception"]


def test_log_content_logs_the_request_body_at_debug_only_when_asked(caplog: pytest.LogCaptureFixture) -> None:
    upstream = ScriptedUpstream(default=lambda request: stream_reply(agent_chunks()))
    with serve(upstream) as upstream_url:
        for log_content in (False, True):
            text = CONFIG.format(key=KEY, upstream=upstream_url, provider_key=PROVIDER_KEY)
            text = text.replace("retry_backoff: 0.01", f"retry_backoff: 0.01, log_content: {str(log_content).lower()}")
            with (
                serve(create_app(parse_config(text, "o.yaml", env={}))) as url,
                caplog.at_level(logging.DEBUG, logger="gateway"),
            ):
                caplog.clear()
                assert post(url, **{"x-request-id": f"content-{log_content}"}).status_code == 200
                time.sleep(0.2)
            logged = [r for r in caplog.records if r.getMessage() == "request content"]
            if not log_content:
                assert logged == [] and not any(SECRET_TEXT in r.getMessage() for r in caplog.records)
                continue
            [line] = [json.loads(JsonFormatter().format(r)) for r in logged]
            assert line["request_id"] == "content-True" and SECRET_TEXT in line["body"]
            assert KEY not in line["body"]


def test_request_ids_go_upstream_and_come_back(setup: tuple[ScriptedUpstream, str]) -> None:
    upstream, url = setup
    response = post(url, **{"x-request-id": "abc-123"})
    assert response.headers["x-request-id"] == "abc-123" and upstream.requests[-1].headers["x-request-id"] == "abc-123"
    response = post(url, **{"x-request-id": "has spaces and\ttabs"})
    generated = response.headers["x-request-id"]
    assert generated.startswith("req_") and upstream.requests[-1].headers["x-request-id"] == generated


def test_overhead_header_on_non_streaming_responses_only(setup: tuple[ScriptedUpstream, str]) -> None:
    upstream, url = setup
    upstream.reply(json_reply(completion_of(agent_chunks(usage=False))))
    assert float(post(url, stream=False).headers["x-gateway-overhead-ms"]) >= 0
    assert "x-gateway-overhead-ms" not in post(url).headers


def test_metrics_add_up_across_workers(tmp_path: Path) -> None:
    upstream = ScriptedUpstream(default=lambda request: stream_reply(agent_chunks()))
    with serve(upstream) as upstream_url:
        config = tmp_path / "workers.yaml"
        # The supervisor stops its workers with SIGTERM; no drain delay is needed to stop a test.
        config.write_text(
            f"server: {{drain_delay: 0}}\nproviders: {{up: {{base_url: '{upstream_url}/v1'}}}}\n"
            "models: [{name: agent, provider: up, rewrite: {inject_tools: false}}]\n"
        )
        with gateway_process("--config", str(config), "--workers", "2") as running:
            url = running.url
            threads = [
                threading.Thread(
                    target=lambda: [
                        httpx.post(
                            url + "/v1/chat/completions", json={"model": "agent", "messages": [], "stream": True}
                        )
                        for _ in range(5)
                    ]
                )
                for _ in range(4)
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            for _ in range(4):  # whichever worker answers the scrape, it reports all of them
                assert value(scrape(url), "gateway_requests_total", route="agent", status="200", stream="true") == 20
