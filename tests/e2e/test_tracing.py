"""OpenTelemetry traces as a collector receives them: a server span per request, a client span per attempt,
W3C trace context continued from the client and carried to the provider, and nothing without a collector."""

from __future__ import annotations

import dataclasses
import json
import os
import secrets
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.config import parse_config
from gateway.server.app import create_app
from gateway.server.tracing import tracing_of
from tests.helpers.collector import Collector, Span, collector
from tests.helpers.servers import ScriptedUpstream, clean_env, gateway_process, json_reply, serve, stream_reply
from tests.helpers.streams import agent_answer, sse_payloads

KEY = "gw-trace-key-123456"
ADMIN = "gw-trace-admin-key-abcdef"
PROVIDER_KEY = "sk-trace-provider-987654"
SECRET_TEXT = "USER-SECRET-CONTENT"
THOUGHTS = "MODEL-PRIVATE-THOUGHTS"
ANSWER = "Visible answer."
CONFIG = """
server:
  api_keys: ["{key}"]
  admin_keys: ["{admin}"]
  retry_backoff: 0.01
  otel: {otel}
providers:
  up: {{base_url: "{upstream}/v1", api_key: "{provider_key}"}}
models:
  - {{name: agent, provider: up, model: upstream-agent, rewrite: {{inject_tools: false}}, max_retries: 1}}
"""


def config_text(upstream: str, otel: str) -> str:
    return CONFIG.format(key=KEY, admin=ADMIN, upstream=upstream, provider_key=PROVIDER_KEY, otel=otel)


def agent_chunks() -> list[dict[str, Any]]:
    return agent_answer(THOUGHTS, ANSWER, usage={"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18})


@dataclass
class Traced:
    sink: Collector
    upstream: ScriptedUpstream
    upstream_url: str
    url: str


def without_otel_variables(patch: pytest.MonkeyPatch) -> None:
    for name in [name for name in os.environ if name.startswith("OTEL_")]:
        patch.delenv(name)


@pytest.fixture(scope="module")
def traced() -> Iterator[Traced]:
    """A collector, a scripted upstream and a gateway configured (``server.otel``) to send its traces there."""
    with pytest.MonkeyPatch.context() as patch, collector() as sink:
        without_otel_variables(patch)
        patch.setenv("OTEL_BSP_SCHEDULE_DELAY", "20")  # export within milliseconds, not the default 5 s
        upstream = ScriptedUpstream(default=lambda request: stream_reply(agent_chunks()))
        with serve(upstream) as upstream_url:
            otel = f'{{endpoint: "{sink.url}", service_name: gateway-under-test}}'
            app = create_app(parse_config(config_text(upstream_url, otel), "t.yaml", env={}))
            with serve(app) as url:
                yield Traced(sink, upstream, upstream_url, url)


def trace_of(sink: Collector, trace_id: str, spans: int) -> list[Span]:
    found = sink.wait_for(lambda got: sum(span.trace_id == trace_id for span in got) >= spans)
    return sorted((span for span in found if span.trace_id == trace_id), key=lambda span: span.start_ns)


def chat(url: str, stream: bool, traceparent: str | None = None) -> httpx.Response:
    headers = {"authorization": f"Bearer {KEY}"}
    if traceparent is not None:
        headers["traceparent"] = traceparent
    body = {"model": "agent", "messages": [{"role": "user", "content": SECRET_TEXT}], "stream": stream}
    return httpx.post(url + "/v1/chat/completions", json=body, headers=headers, timeout=10)


def assert_nothing_secret(spans: list[Span]) -> None:
    """No key, no prompt and no completion anywhere in a span: names, attributes, events, resource."""
    text = repr([(s.name, s.attributes, s.events, s.resource) for s in spans])
    for secret in (KEY, PROVIDER_KEY, SECRET_TEXT, THOUGHTS, ANSWER):
        assert secret not in text


def test_a_retried_stream_is_one_server_span_with_a_client_span_per_attempt(traced: Traced, artifacts: Path) -> None:
    sink, upstream, url = traced.sink, traced.upstream, traced.url
    trace_id, client_parent = secrets.token_hex(16), secrets.token_hex(8)
    upstream.reply(json_reply({"error": {"message": "overloaded"}}, status=503), stream_reply(agent_chunks()))
    sent = len(upstream.requests)
    response = chat(url, stream=True, traceparent=f"00-{trace_id}-{client_parent}-01")
    assert response.status_code == 200
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in sse_payloads(response.content)) == ANSWER

    server, *clients = trace_of(sink, trace_id, 3)
    assert server.kind == "SPAN_KIND_SERVER" and server.parent_span_id == client_parent  # the client's trace goes on
    assert server.name == "chat agent"
    assert server.resource["service.name"] == "gateway-under-test"
    attributes = server.attributes
    assert {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "up",
        "gen_ai.request.model": "agent",
        "gen_ai.response.model": "upstream-agent",
        "gen_ai.usage.input_tokens": 11,
        "gen_ai.usage.output_tokens": 7,
        "gen_ai.response.finish_reasons": ("stop",),
        "http.response.status_code": 200,
        "gateway.route": "agent",
        "gateway.key.name": "api_keys[0]",
        "gateway.retries": 1,
        "gateway.stream": True,
    }.items() <= attributes.items()
    assert "error.type" not in attributes
    first_token = attributes["gen_ai.server.time_to_first_token"]
    assert 0 < first_token < (server.end_ns - server.start_ns) / 1e9
    assert server.events == []  # the first token is an attribute, not a span event too

    port = httpx.URL(upstream_url := clients[0].attributes["url.full"]).port
    assert upstream_url.endswith("/v1/chat/completions")
    for attempt, status in zip(clients, (503, 200), strict=True):
        assert attempt.kind == "SPAN_KIND_CLIENT" and attempt.parent_span_id == server.span_id
        assert attempt.name == "POST /chat/completions"
        assert attempt.attributes["server.address"] == "127.0.0.1"
        assert attempt.attributes["server.port"] == port and isinstance(port, int)
        assert attempt.attributes["http.response.status_code"] == status
        assert server.start_ns <= attempt.start_ns and attempt.end_ns <= server.end_ns
    assert clients[0].attributes["error.type"] == "503" and clients[0].status == "STATUS_CODE_ERROR"
    assert "error.type" not in clients[1].attributes
    # Each attempt's request carried the gateway's own traceparent: its client span's, in the client's trace.
    carried = [request.headers["traceparent"] for request in upstream.requests[sent:]]
    assert carried == [f"00-{trace_id}-{attempt.span_id}-01" for attempt in clients]
    assert_nothing_secret([server, *clients])
    received = [dataclasses.asdict(span) for span in (server, *clients)]
    (artifacts / "trace-retried-stream.json").write_text(json.dumps(received, indent=2, default=list))


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": SECRET_TEXT}]}),
        ("/v1/responses", {"input": SECRET_TEXT}),
        ("/v1/messages", {"max_tokens": 50, "messages": [{"role": "user", "content": SECRET_TEXT}]}),
    ],
)
def test_every_front_door_makes_a_server_span_without_a_client_trace(
    traced: Traced, path: str, body: dict[str, Any]
) -> None:
    sink, upstream, url = traced.sink, traced.upstream, traced.url
    sent = len(upstream.requests)
    response = httpx.post(
        url + path, json={"model": "agent", "stream": True, **body}, headers={"authorization": f"Bearer {KEY}"}
    )
    assert response.status_code == 200
    traceparent = upstream.requests[sent].headers["traceparent"]
    _, trace_id, span_id, flags = traceparent.split("-")
    server, attempt = trace_of(sink, trace_id, 2)
    assert server.parent_span_id == "" and attempt.parent_span_id == server.span_id
    assert attempt.span_id == span_id and int(flags, 16) & 1  # sampled
    assert server.name == "chat agent" and server.attributes["url.path"] == path
    assert server.attributes["gen_ai.operation.name"] == "chat"
    assert server.attributes["gen_ai.usage.output_tokens"] == 7
    assert_nothing_secret([server, attempt])


def test_the_consoles_playground_is_traced_and_its_data_is_not(traced: Traced) -> None:
    sink, upstream, url = traced.sink, traced.upstream, traced.url
    sent = len(upstream.requests)
    headers = {"authorization": f"Bearer {ADMIN}"}
    assert httpx.get(url + "/console/api/requests", headers=headers).status_code == 200
    ask = {"route": "agent", "door": "chat", "prompt": SECRET_TEXT}
    assert httpx.post(url + "/console/api/playground", json=ask, headers=headers).status_code == 200
    _, trace_id, span_id, _ = upstream.requests[sent].headers["traceparent"].split("-")
    server, attempt = trace_of(sink, trace_id, 2)
    assert server.name == "POST /console/api/playground" and attempt.parent_span_id == server.span_id
    assert attempt.span_id == span_id
    assert server.attributes["gen_ai.request.model"] == "agent" and "gen_ai.operation.name" not in server.attributes
    assert_nothing_secret([server, attempt])
    assert not [span for span in sink.spans if span.attributes.get("url.path") == "/console/api/requests"]


def test_a_failure_is_an_error_with_its_type(traced: Traced) -> None:
    sink, upstream, url = traced.sink, traced.upstream, traced.url
    trace_id = secrets.token_hex(16)
    upstream.reply(json_reply({"error": {"message": "bad things"}}, status=400))
    response = chat(url, stream=False, traceparent=f"00-{trace_id}-{secrets.token_hex(8)}-01")
    assert response.status_code == 400
    server, attempt = trace_of(sink, trace_id, 2)
    assert server.attributes["http.response.status_code"] == 400 and server.attributes["error.type"] == "status"
    assert attempt.attributes["error.type"] == "400" and attempt.status == "STATUS_CODE_ERROR"


def test_a_provider_that_cannot_be_reached_is_a_failed_attempt(traced: Traced) -> None:
    sink = traced.sink
    closed = f"http://127.0.0.1:{_closed_port()}"
    app = create_app(parse_config(config_text(closed, f'{{endpoint: "{sink.url}"}}'), "t.yaml", env={}))
    trace_id = secrets.token_hex(16)
    with serve(app) as url:
        assert chat(url, stream=True, traceparent=f"00-{trace_id}-{secrets.token_hex(8)}-01").status_code == 502
    server, *attempts = trace_of(sink, trace_id, 3)
    assert server.resource["service.name"] == "agent-gateway"  # nobody named the service
    assert server.attributes["error.type"] == "connect" and server.status == "STATUS_CODE_ERROR"
    assert [a.attributes["error.type"] for a in attempts] == ["unreachable", "unreachable"]
    assert all("http.response.status_code" not in a.attributes for a in attempts)


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_a_sample_ratio_of_zero_records_nothing_but_still_propagates(
    traced: Traced,
) -> None:
    sink, upstream = traced.sink, traced.upstream
    app = create_app(
        parse_config(config_text(traced.upstream_url, f'{{endpoint: "{sink.url}", sample_ratio: 0}}'), "t.yaml", env={})
    )
    with serve(app) as url:
        sent = len(upstream.requests)
        assert chat(url, stream=True).status_code == 200
    _, trace_id, _, flags = upstream.requests[sent].headers["traceparent"].split("-")
    assert not int(flags, 16) & 1  # not sampled, as the provider is told
    assert all(span.trace_id != trace_id for span in sink.spans)


def test_the_standard_variables_configure_a_gateway_process() -> None:
    """No ``server.otel``: OTEL_EXPORTER_OTLP_ENDPOINT and OTEL_SERVICE_NAME alone turn traces on."""
    with collector() as sink:
        env = clean_env(
            OTEL_EXPORTER_OTLP_ENDPOINT=sink.url, OTEL_SERVICE_NAME="from-env", OTEL_BSP_SCHEDULE_DELAY="20"
        )
        with gateway_process(env=env) as gateway:
            trace_id = secrets.token_hex(16)
            response = httpx.post(
                gateway.url + "/v1/chat/completions",
                json={"model": "demo", "messages": [{"role": "user", "content": "hi"}], "stream": True},
                headers={"traceparent": f"00-{trace_id}-{secrets.token_hex(8)}-01"},
                timeout=30,
            )
            assert response.status_code == 200
            server, attempt = trace_of(sink, trace_id, 2)
        assert set(sink.paths) == {"/v1/traces"}
        assert server.resource["service.name"] == "from-env"
        assert server.attributes["gen_ai.request.model"] == "demo" and attempt.kind == "SPAN_KIND_CLIENT"


def test_without_a_collector_nothing_is_traced_and_no_trace_context_crosses(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    without_otel_variables(monkeypatch)
    upstream = ScriptedUpstream(default=lambda request: stream_reply(agent_chunks()))
    with serve(upstream) as upstream_url:
        app = create_app(parse_config(config_text(upstream_url, "null"), "t.yaml", env={}))
        assert app.service.tracing is None
        with serve(app) as url:
            response = chat(url, stream=True, traceparent=f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01")
            assert response.status_code == 200
    assert "traceparent" not in upstream.requests[-1].headers  # the client's header is not forwarded


def test_a_gateway_that_does_not_trace_does_not_load_the_sdk_or_its_exporter() -> None:
    """Nothing costs without a collector: not even the SDK's and the OTLP exporter's memory in each worker."""
    script = (
        "import sys; from gateway.server.app import app_from_env; app_from_env(); "
        "print(sorted(m for m in sys.modules if m.startswith(('opentelemetry.sdk.trace', 'opentelemetry.exporter'))))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", script], env=clean_env(), capture_output=True, text=True, timeout=60, check=True
    )
    assert loaded.stdout.strip() == "[]", loaded.stdout
    traced = subprocess.run(
        [sys.executable, "-c", script],
        env=clean_env(OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:9"),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "opentelemetry.exporter.otlp.proto.http.trace_exporter" in traced.stdout  # the check can see it


def test_the_sdk_switches_win_over_a_named_collector() -> None:
    named = parse_config(config_text("http://up.invalid", '{endpoint: "http://127.0.0.1:9"}'), "t.yaml", env={})
    assert tracing_of(named.server, {"OTEL_SDK_DISABLED": "true"}) is None
    assert tracing_of(named.server, {"OTEL_TRACES_EXPORTER": "none"}) is None
    plain = parse_config(config_text("http://up.invalid", "null"), "t.yaml", env={})
    assert tracing_of(plain.server, {}) is None
    on = tracing_of(plain.server, {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:9/v1/traces"})
    assert on is not None
    on.shutdown()
