"""The console's page and JSON endpoints on a real server: admin keys only, names and numbers, no content."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, cast

import httpx
import orjson
import pytest

from gateway.config import parse_config
from gateway.server.app import create_app
from tests.helpers.polling import eventually
from tests.helpers.servers import ScriptedUpstream, json_reply, serve, stream_reply
from tests.helpers.streams import agent_answer, sse_payloads

ADMIN = "gw-admin-key-abcdef123456"
CLIENT = "gw-client-key-123456"
LIMITED = "gw-limited-key-654321"
PROVIDER_KEY = "sk-console-provider-987654"
SECRET_TEXT = "USER-SECRET-CONTENT"
THOUGHTS = "MODEL-PRIVATE-THOUGHTS"
ANSWER = "Visible answer."
CONFIG = """
server: {{api_keys: ["{client}"], admin_keys: ["{admin}"], retry_backoff: 0.01}}
providers:
  up: {{base_url: "{upstream}/v1", api_key: "{provider_key}"}}
  spare: {{base_url: "{upstream}/spare/v1", api_key: "{provider_key}", max_failures: 1, cooldown: 60}}
models:
  - {{name: agent, provider: up, rewrite: {{inject_tools: false}}, max_retries: 0}}
  - {{name: plain, provider: spare, max_retries: 0}}
keys:
  - {{name: team-a, key: "{limited}", rpm: 100, tpm: 10000, budget: {{tokens: 50000, period: day}}}}
"""


def agent_chunks() -> list[dict[str, Any]]:
    return agent_answer(THOUGHTS, ANSWER, usage={"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18})


@dataclass
class Running:
    upstream: ScriptedUpstream
    url: str


@pytest.fixture(scope="module")
def running() -> Iterator[Running]:
    upstream = ScriptedUpstream(default=lambda request: stream_reply(agent_chunks()))
    with serve(upstream) as upstream_url:
        text = CONFIG.format(
            client=CLIENT, admin=ADMIN, upstream=upstream_url, provider_key=PROVIDER_KEY, limited=LIMITED
        )
        with serve(create_app(parse_config(text, "c.yaml", env={}))) as url:
            yield Running(upstream, url)


def admin(url: str, path: str, key: str = ADMIN, **options: Any) -> httpx.Response:
    return httpx.request(
        options.pop("method", "GET"), url + path, headers={"authorization": f"Bearer {key}"}, timeout=10, **options
    )


def test_the_root_is_the_console_for_a_browser_and_200_for_a_probe(running: Running) -> None:
    page = httpx.get(running.url + "/", headers={"accept": "text/html,application/xhtml+xml"})
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert '<label for="key">Admin key</label>' in page.text and "/console/console.js" in page.text
    probe = httpx.get(running.url + "/")
    assert probe.status_code == 200 and probe.json() == {"service": "agent-gateway", "api": "/v1"}
    assert httpx.head(running.url + "/").status_code == 200
    script = httpx.get(running.url + "/console/console.js")
    assert script.status_code == 200 and script.headers["content-type"].startswith("text/javascript")


@pytest.mark.parametrize("path", ["routes", "keys", "deployments", "requests"])
def test_the_data_takes_an_admin_key(running: Running, path: str) -> None:
    assert httpx.get(f"{running.url}/console/api/{path}").status_code == 401
    assert admin(running.url, f"/console/api/{path}", key="not-a-key").status_code == 401
    refused = admin(running.url, f"/console/api/{path}", key=CLIENT)
    assert refused.status_code == 403 and refused.json()["error"]["type"]
    assert admin(running.url, f"/console/api/{path}", key=LIMITED).status_code == 403
    assert admin(running.url, f"/console/api/{path}").status_code == 200


def test_routes_show_their_rewrite(running: Running) -> None:
    routes = {route["name"]: route for route in admin(running.url, "/console/api/routes").json()["routes"]}
    assert routes["agent"]["rewrite"] == "agent (no tools)" and routes["agent"]["reasoning"] == "hidden"
    assert routes["agent"]["inner_thoughts"] == "kwarg" and "<think>…</think>" in routes["agent"]["think_tags"]
    assert routes["plain"]["rewrite"] == "none (pass-through)" and routes["plain"]["providers"] == ["spare"]


def test_routes_name_the_wire_each_provider_speaks() -> None:
    config = f"""
server: {{admin_keys: ["{ADMIN}"]}}
providers:
  claude: {{api: anthropic, base_url: "http://127.0.0.1:9/v1"}}
  openai: {{base_url: "http://127.0.0.1:9/v1", responses: native}}
  codex: {{api: responses, base_url: "http://127.0.0.1:9/v1"}}
models:
  - {{name: claude, provider: claude}}
  - {{name: mixed, provider: [openai, codex]}}
"""
    with serve(create_app(parse_config(config, "c.yaml", env={}))) as url:
        routes = {route["name"]: route["wire"] for route in admin(url, "/console/api/routes").json()["routes"]}
    assert routes == {"claude": "Messages", "mixed": "Responses, chat completions (Responses native)"}


def test_a_keys_use_and_its_request_show_without_content(running: Running) -> None:
    body = {"model": "agent", "messages": [{"role": "user", "content": SECRET_TEXT}], "stream": True}
    for _ in range(2):
        sent = httpx.post(
            running.url + "/v1/chat/completions", json=body, headers={"authorization": f"Bearer {LIMITED}"}
        )
        assert sent.status_code == 200

    def team_row() -> dict[str, Any]:
        keys = {key["name"]: key for key in admin(running.url, "/console/api/keys").json()["keys"]}
        return cast(dict[str, Any], keys["team-a"])

    # What the key has used now: both requests this minute, both answers' 18 tokens charged once each settled.
    assert eventually(lambda: team_row()["tokens_this_minute"] == 36), team_row()
    team = team_row()
    assert team["rpm"] == 100 and team["tpm"] == 10000 and team["budget"] == "50000 per day"
    assert team["requests_this_minute"] == 2 and team["budget_used"] == 36 and team["in_flight"] is None
    assert team["requests"] >= 2 and team["tokens"] >= 36
    keys = {key["name"]: key for key in admin(running.url, "/console/api/keys").json()["keys"]}
    assert keys["api_keys[0]"]["rpm"] is None and keys["api_keys[0]"]["requests_this_minute"] is None
    requests = admin(running.url, "/console/api/requests").json()["requests"]
    mine = [r for r in requests if r["key"] == "team-a"][-1]
    assert mine["route"] == "agent" and mine["door"] == "chat" and mine["status"] == 200 and mine["stream"]
    assert mine["prompt_tokens"] == 11 and mine["completion_tokens"] == 7 and mine["ttft_ms"] > 0
    newer = admin(running.url, f"/console/api/requests?since={mine['seq']}").json()["requests"]
    assert all(r["seq"] > mine["seq"] for r in newer)
    everything = admin(running.url, "/console/api/keys").text + admin(running.url, "/console/api/requests").text
    for secret in (SECRET_TEXT, THOUGHTS, ANSWER, CLIENT, LIMITED, ADMIN, PROVIDER_KEY):
        assert secret not in everything


def test_a_deployment_cooling_down_shows_its_seconds_left(running: Running) -> None:
    running.upstream.reply(json_reply({"error": {"message": "down"}}, status=503))
    body = {"model": "plain", "messages": [{"role": "user", "content": "hi"}]}
    failed = httpx.post(running.url + "/v1/chat/completions", json=body, headers={"authorization": f"Bearer {CLIENT}"})
    assert failed.status_code == 503
    rows = {row["name"]: row for row in admin(running.url, "/console/api/deployments").json()["deployments"]}
    assert 0 < rows["spare"]["cooling_down_s"] <= 60 and rows["spare"]["max_failures"] == 1
    assert rows["up"]["cooling_down_s"] is None and rows["up"]["in_flight"] == 0
    assert PROVIDER_KEY not in json.dumps(rows)


@pytest.mark.parametrize(
    ("door", "answer_of", "thoughts_of"),
    [
        (
            "chat",
            lambda e: "".join(c["delta"].get("content") or "" for c in e.get("choices", [])),
            lambda e: "".join(c["delta"].get("reasoning_content") or "" for c in e.get("choices", [])),
        ),
        (
            "responses",
            lambda e: e.get("delta", "") if e.get("type") == "response.output_text.delta" else "",
            lambda e: e.get("delta", "") if e.get("type") == "response.reasoning_summary_text.delta" else "",
        ),
        (
            "messages",
            lambda e: e["delta"].get("text", "") if e.get("type") == "content_block_delta" else "",
            lambda e: e["delta"].get("thinking", "") if e.get("type") == "content_block_delta" else "",
        ),
    ],
)
def test_the_playground_streams_a_door_with_the_hidden_thoughts_shown(
    running: Running, door: str, answer_of: Any, thoughts_of: Any
) -> None:
    ask = {"route": "agent", "door": door, "prompt": SECRET_TEXT}
    assert admin(running.url, "/console/api/playground", key=CLIENT, method="POST", json=ask).status_code == 403
    response = admin(running.url, "/console/api/playground", method="POST", json=ask)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
    events = sse_payloads(response.content)
    assert "".join(map(answer_of, events)) == ANSWER
    assert THOUGHTS in "".join(map(thoughts_of, events))
    sent = orjson.loads(running.upstream.requests[-1].body)
    assert sent["messages"][-1]["content"] == SECRET_TEXT and sent["stream"] is True
    assert "authorization" in running.upstream.requests[-1].headers
    assert ADMIN not in running.upstream.requests[-1].headers["authorization"]
    requests = admin(running.url, "/console/api/requests").json()["requests"]
    assert requests[-1]["door"] == "playground" and requests[-1]["route"] == "agent"


def test_the_playground_names_what_it_cannot_take(running: Running) -> None:
    bad = admin(
        running.url, "/console/api/playground", method="POST", json={"route": "agent", "door": "x", "prompt": "hi"}
    )
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "door"
    empty = admin(running.url, "/console/api/playground", method="POST", json={"route": "agent", "door": "chat"})
    assert empty.status_code == 400 and empty.json()["error"]["param"] == "prompt"
    unknown = admin(
        running.url, "/console/api/playground", method="POST", json={"route": "nope", "door": "chat", "prompt": "hi"}
    )
    assert unknown.status_code == 404
