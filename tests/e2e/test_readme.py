"""The README's examples are what the gateway really does, in every mode the README says they work in.

The examples under "Using it" are run as written (only the port changes)
against a real ``gateway serve`` process in each mode: the built-in demo (no
config, no key), key-only (``OPENAI_API_KEY``, no config; ``OPENAI_BASE_URL``
points at a scripted OpenAI-compatible upstream, which records what it got)
and ``config.example.yaml`` with the same variables.
"""

from __future__ import annotations

import ast
import contextlib
import io
import json
import re
import shlex
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import openai
import orjson
import pytest

from gateway.core.forwarding import DEFAULT_FORWARD, DEFAULT_FORWARD_HEADERS
from gateway.core.options import RewriteOptions
from gateway.core.translator import StreamTranslator
from gateway.dialects.chat import ChatStreamEncoder
from tests.helpers.paths import FIXTURES, ROOT
from tests.helpers.readme import PROVIDER_KEY, README, REPLY, THOUGHTS, code_blocks, scripted_gateway, section
from tests.helpers.servers import (
    Running,
    ScriptedUpstream,
    clean_env,
    gateway_process,
)
from tests.helpers.streams import sse_payloads

README_URL = "http://127.0.0.1:8080/v1"


USING = section("Using it")
OPENAI_EXAMPLE, LANGCHAIN_EXAMPLE = code_blocks(USING, "python")
[CURL_EXAMPLE] = code_blocks(USING)
RESPONSES_EXAMPLE, AGENTS_EXAMPLE, STORED_EXAMPLE = code_blocks(section("Responses API"), "python")
[THINKER_EXAMPLE] = code_blocks(section("Quick start"), "python")


def test_before_and_after_stream_example() -> None:
    upstream_block = README.split("upstream:  ", 1)[1].split("client:", 1)[0]
    client_block = README.split("client:    ", 1)[1].split("```", 1)[0]
    upstream = [orjson.loads(line.strip().removeprefix("data: ")) for line in upstream_block.strip().splitlines()]
    body = b"".join(b"data: " + orjson.dumps(chunk) + b"\n\n" for chunk in upstream) + b"data: [DONE]\n\n"
    translator = StreamTranslator(RewriteOptions(), "openai")
    sent = ChatStreamEncoder().encode(translator.feed(body)).decode()
    assert [line for line in sent.split("\n") if line] == [line.strip() for line in client_block.strip().splitlines()]


def test_the_test_command_is_what_ci_runs() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    assert '.venv/bin/pip install -e ".[test]" && .venv/bin/pytest -q' in README
    assert 'pip install --quiet -e ".[test]"' in ci and "pytest -q" in ci


def test_the_forwarded_endpoints_listed_are_the_defaults() -> None:
    section = README.split("The default is the OpenAI API besides chat completions", 1)[1].split("`forward: []`", 1)[0]
    example = (ROOT / "config.example.yaml").read_text()
    listed = example.split("# Default: the OpenAI API endpoints:", 1)[1].split("]", 1)[0]
    assert re.findall(r"`(/[^`]+)`", section) == list(DEFAULT_FORWARD)
    assert re.findall(r"/[\w/*]+", listed) == list(DEFAULT_FORWARD)
    assert "forward_headers: [openai-beta]" in example and list(DEFAULT_FORWARD_HEADERS) == ["openai-beta"]


# The examples under "Using it", in each zero-config mode and with the example config.


@dataclass
class Mode:
    name: str
    running: Running
    upstream: ScriptedUpstream | None  # None: the demo provider, inside the gateway
    assistant_model: str  # what the `assistant` route sends upstream


@pytest.fixture(scope="module", params=["demo", "key-only", "example config", "offline config"])
def mode(request: pytest.FixtureRequest) -> Iterator[Mode]:
    if request.param in ("demo", "offline config"):
        args = ("--config", str(ROOT / "config.offline.yaml")) if request.param == "offline config" else ()
        with gateway_process(*args) as running:
            yield Mode(request.param, running, None, "assistant")
        return
    args = ("--config", str(ROOT / "config.example.yaml")) if request.param == "example config" else ()
    with scripted_gateway(*args) as (running, upstream):
        yield Mode(request.param, running, upstream, "gpt-4o-mini")


def run_example(code: str, url: str) -> str:
    """Runs a README example as written, but against ``url``; returns what it printed."""
    assert code.count(README_URL) == 1
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        # the README's own code
        exec(compile(code.replace(README_URL, url + "/v1"), "README.md", "exec"), {"__name__": "readme_example"})
    return out.getvalue()


def json_line(line: str) -> dict[str, Any]:
    try:
        entry = orjson.loads(line)
    except orjson.JSONDecodeError:
        pytest.fail(f"the gateway wrote a line that is not JSON: {line!r}")
    assert isinstance(entry, dict), line
    return entry


def chat_log(running: Running, path: str = "/v1/chat/completions") -> list[dict[str, Any]]:
    """The gateway's access-log lines for chat completions (or another path) so far (stderr is JSON lines, one
    format)."""
    lines = [json_line(line) for line in running.stderr().splitlines()]
    return [line for line in lines if line.get("logger") == "gateway.access" and line.get("path") == path]


@dataclass
class Before:
    """Where the upstream's record and the access log stood before an example ran."""

    upstream: int
    logged: int


def before(mode: Mode, path: str = "/v1/chat/completions") -> Before:
    return Before(len(mode.upstream.requests) if mode.upstream else 0, len(chat_log(mode.running, path)))


def assert_served_by_assistant(mode: Mode, since: Before, requests: int, path: str = "/v1/chat/completions") -> None:
    """The access log shows the `assistant` route with its upstream model, and so does what the upstream received."""
    deadline = time.monotonic() + 10
    while len(logged := chat_log(mode.running, path)[since.logged :]) < requests and time.monotonic() < deadline:
        time.sleep(0.05)  # a line is written as its request ends, just after the client has the last byte
    assert [(line["route"], line["upstream_model"], line["status"]) for line in logged] == [
        ("assistant", mode.assistant_model, 200)
    ] * requests
    if mode.upstream is None:
        return
    sent = mode.upstream.requests[since.upstream :]
    assert len(sent) == requests
    for request in sent:
        assert request.path == "/v1/chat/completions" and request.json["model"] == mode.assistant_model
        # The provider's key goes upstream; the client's "your-gateway-key" does not.
        assert request.headers["authorization"] == f"Bearer {PROVIDER_KEY}"
        assert "your-gateway-key" not in request.body.decode() + str(request.headers)
        assert request.json["tools"][-1]["function"]["name"] == "send_message"


def test_openai_sdk_example(mode: Mode) -> None:
    since = before(mode)
    printed = run_example(OPENAI_EXAMPLE, mode.running.url)
    if mode.upstream is None:
        assert printed.startswith('Hi! This is the "agent-gateway" demo provider') and "You said: Hi!\n" in printed
    else:
        assert printed == REPLY
        [request] = mode.upstream.requests[since.upstream :]
        assert request.json["stream"] is True
    assert THOUGHTS not in printed and "inner_thoughts" not in printed
    assert_served_by_assistant(mode, since, 1)


def test_langchain_example_with_a_tool(mode: Mode) -> None:
    since = before(mode)
    printed = run_example(LANGCHAIN_EXAMPLE, mode.running.url)
    *text, calls_line = printed.rstrip("\n").split("\n")
    calls = ast.literal_eval(calls_line)
    assert [call["name"] for call in calls] == ["get_weather"]
    if mode.upstream is None:
        assert "You said: Hello\n" in "\n".join(text) + "\n"
        assert list(calls[0]["args"]) == ["city"]
    else:
        assert text == [REPLY]
        assert calls == [{"name": "get_weather", "args": {"city": "Oslo"}, "id": "call_w", "type": "tool_call"}]
        _, with_tool = mode.upstream.requests[since.upstream :]
        weather = next(tool for tool in with_tool.json["tools"] if tool["function"]["name"] == "get_weather")
        assert weather["function"]["parameters"]["required"] == ["inner_thoughts", "city"]
    assert_served_by_assistant(mode, since, 2)


def test_curl_example(mode: Mode) -> None:
    """The curl command's URL, headers and body, sent by httpx (no curl binary needed), read unbuffered like -N."""
    argv = shlex.split(CURL_EXAMPLE.replace("\\\n", " "))
    assert argv[:2] == ["curl", "-N"]
    options = dict(zip(argv[3::2], argv[4::2], strict=True))
    headers = [argv[i + 1] for i in range(3, len(argv), 2) if argv[i] == "-H"]
    assert set(options) == {"-H", "-d"} and argv[2].startswith(README_URL)
    since = before(mode)
    url = argv[2].replace(README_URL, mode.running.url + "/v1")
    with httpx.stream(
        "POST", url, content=options["-d"], headers=dict(header.split(": ", 1) for header in headers), timeout=30
    ) as response:
        body = b"".join(response.iter_raw())
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
    assert body.rstrip().endswith(b"data: [DONE]")
    text = "".join(
        choice["delta"].get("content") or "" for payload in sse_payloads(body) for choice in payload["choices"]
    )
    if mode.upstream is None:
        assert "You said: Hi!\n" in text
    else:
        assert text == REPLY
    assert THOUGHTS.encode() not in body
    assert_served_by_assistant(mode, since, 1)


def test_responses_example(mode: Mode) -> None:
    """The Responses API section's openai-python example: one answer, then one streamed with its usage."""
    since = before(mode, "/v1/responses")
    printed = run_example(RESPONSES_EXAMPLE, mode.running.url)
    if mode.upstream is None:
        assert printed.startswith('Hi! This is the "agent-gateway" demo provider') and "You said: Hi!\n" in printed
        assert "You said: Tell me a short story.\n" in printed and "\n ResponseUsage(input_tokens=" in printed
        assert "(demo) Thinking" not in printed
    else:
        # The scripted upstream reports usage only in non-streaming answers.
        assert printed == f"{REPLY}\n{REPLY}\n None\n"
        answered, streamed = mode.upstream.requests[since.upstream :]
        assert "stream_options" not in answered.json
        assert streamed.json["stream"] is True and streamed.json["stream_options"] == {"include_usage": True}
    assert THOUGHTS not in printed and "inner_thoughts" not in printed
    assert_served_by_assistant(mode, since, 2, "/v1/responses")


def test_agents_sdk_example(mode: Mode) -> None:
    """The Responses API section's agent: the model calls get_weather, the SDK runs it and sends its output back."""
    since = before(mode, "/v1/responses")
    printed = run_example(AGENTS_EXAMPLE, mode.running.url)
    if mode.upstream is None:
        assert "The tool returned: sunny" in printed
    else:
        assert printed == REPLY + "\n"
        asked, answered = mode.upstream.requests[since.upstream :]
        assert [tool["function"]["name"] for tool in asked.json["tools"]] == ["get_weather", "send_message"]
        assert answered.json["messages"][-1] == {"role": "tool", "tool_call_id": "call_w", "content": "sunny"}
    assert "(demo) Thinking" not in printed and THOUGHTS not in printed
    assert_served_by_assistant(mode, since, 2, "/v1/responses")


def test_stored_responses_example(mode: Mode) -> None:
    """The stored responses example: a second turn by previous_response_id, its input items, a delete."""
    since = before(mode, "/v1/responses")
    printed = run_example(STORED_EXAMPLE, mode.running.url)
    assert printed.endswith("['user', 'assistant', 'user']\n")
    if mode.upstream is None:
        assert "You said: What is my name?" in printed
    else:
        assert printed.startswith(REPLY + "\n")
        _, continued = mode.upstream.requests[since.upstream :]
        said = [m["content"] for m in continued.json["messages"] if m["role"] == "user"]
        assert said == ["My name is Ada.", "What is my name?"]
    assert_served_by_assistant(mode, since, 2, "/v1/responses")


def test_models_lists_the_assistant_route(mode: Mode) -> None:
    client = openai.OpenAI(base_url=mode.running.url + "/v1", api_key="your-gateway-key", max_retries=0)
    ids = [model.id for model in client.models.list().data]
    expected = {
        "demo": ["assistant", "thinker", "thinker-exposed"],
        "offline config": ["assistant", "thinker", "thinker-exposed"],
        "key-only": ["assistant"],
        "example config": ["assistant", "assistant-local", "assistant-thinking"],
    }[mode.name]
    assert ids == expected


@pytest.mark.parametrize("mode", ["demo", "offline config"], indirect=True)  # the thinker routes are the demo's
def test_the_demo_thinker_example_shows_the_reasoning_only_where_the_route_exposes_it(mode: Mode) -> None:
    """The Quick start's example: the same answer on both routes, no tag in it, reasoning only from
    ``thinker-exposed``."""
    said = {}
    for line in run_example(THINKER_EXAMPLE, mode.running.url).splitlines():
        model, rest = line.split(": ", 1)
        kind, value = rest.split(" ", 1)
        said[model, kind] = ast.literal_eval(value)
    assert list(said) == [
        ("thinker", "reasoning"),
        ("thinker", "answer"),
        ("thinker-exposed", "reasoning"),
        ("thinker-exposed", "answer"),
    ]
    answer = said["thinker", "answer"]
    assert answer == said["thinker-exposed", "answer"]
    assert answer.startswith("Hi! This is the demo thinker") and answer.endswith("You said: Hi!")
    assert "</think>" not in answer and "(demo) Thinking" not in answer
    assert said["thinker", "reasoning"] == ""
    assert said["thinker-exposed", "reasoning"].startswith('(demo) Thinking: the user wrote "Hi!".')
    assert "think>" not in said["thinker-exposed", "reasoning"]


def test_key_only_mode_assistant_model_is_overridable_and_other_models_keep_their_names() -> None:
    with scripted_gateway(GATEWAY_ASSISTANT_MODEL="gpt-4.1-nano") as (running, upstream):
        assert run_example(OPENAI_EXAMPLE, running.url) == REPLY
        client = openai.OpenAI(base_url=running.url + "/v1", api_key="your-gateway-key", max_retries=0)
        other = client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "Hi!"}])
        assert other.choices[0].message.content == REPLY
        assert [request.json["model"] for request in upstream.requests] == ["gpt-4.1-nano", "gpt-4o"]
        # Every model is in agent mode: send_message injected, the answer turned back into plain text.
        assert all(request.json["tools"][-1]["function"]["name"] == "send_message" for request in upstream.requests)


def test_the_recordings_ship_with_the_tests_and_say_where_they_come_from() -> None:
    """A fresh clone runs every test: the recordings are in the repository, each named in its provenance, and
    nothing in the project reads outside it."""
    provenance = (FIXTURES / "PROVENANCE.md").read_text()
    recorded = [path for path in FIXTURES.rglob("*") if path.is_file() and path.suffix != ".md"]
    assert len(recorded) >= 20 and [path.name for path in recorded if path.name not in provenance] == []
    # A path out of the repository: a sibling "shared" folder, or a Path.parents index that climbs above the root
    # from where the file is (both spelt so that this file does not match itself).
    climbs = re.compile(r"parents\[(\d+)\]")
    for source in [
        *ROOT.glob("gateway/**/*.py"),
        *ROOT.glob("tests/**/*.py"),
        *ROOT.glob("bench/**/*.py"),
        ROOT / ".ci/run",
    ]:
        text = source.read_text()
        depth = len(source.relative_to(ROOT).parts)  # parents[depth - 1] of the file is the root
        assert "../" + "shared" not in text, source
        assert all(int(up) < depth for up in climbs.findall(text)), source


def test_the_offline_config_walkthrough_runs_as_written() -> None:
    """``config.offline.yaml`` serves with nothing beside it, and the walkthrough's commands say what they do."""
    walkthrough = section("Trying a config offline")
    [serve_command] = code_blocks(walkthrough)
    assert serve_command.strip() == ".venv/bin/gateway serve --config config.offline.yaml"
    [commands] = code_blocks(walkthrough, "bash")
    with gateway_process("--config", str(ROOT / "config.offline.yaml"), env=clean_env()) as running:
        script = commands.replace("http://127.0.0.1:8080", running.url)
        result = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=60, check=True)
    head, rest = result.stdout.split("\n\n", 1)  # text mode: curl's header lines end in a plain newline here
    assert head.startswith("HTTP/1.1 200") and "x-ratelimit-limit-requests: 3" in head
    *codes, refusal = rest.split("\n", 3)
    assert codes == ["200", "200", "429"]
    assert json.loads(refusal)["error"]["code"] == "permission_denied"
