"""Stored responses end to end: the openai SDK and the Agents SDK against a real gateway on a socket.

The gateway runs under uvicorn in front of the scripted agent-style model of ``test_responses`` (it answers
through ``send_message`` with inner thoughts and provider reasoning, and calls the client's tool when asked
about the weather). Every answer on ``/v1/responses`` is recorded as it left and checked with the SDK's types
afterwards, as there. Two keys call it, so that what one key stored can be asked for by the other.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import statistics
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import agents
import httpx
import openai
import orjson
import pytest

from gateway.config import parse_config
from gateway.server.app import create_app
from tests.e2e.test_responses import HIDDEN, PROVIDER_REASONING, WEATHER, Tap, agent_model, check_answer
from tests.helpers.responses import parse_sse
from tests.helpers.servers import ScriptedUpstream, gateway_process, serve

KEY, OTHER_KEY = "gw-stored-key-a-0123456789", "gw-stored-key-b-0123456789"
SECRET = "stored-test-secret-0123456789abcdef"
CONFIG = """
server:
  api_keys: [{key}, {other}]
  secret: {secret}
providers:
  up: {{base_url: "{up}/v1", timeout: {{connect: 1, read: 5, first_byte: 2, idle: 2}}}}
models:
  - {{name: assistant, provider: up, model: tool-model, rewrite: {{}}, max_retries: 0}}
  - {{name: thinker, provider: up, model: tool-model, rewrite: {{reasoning: expose}}, max_retries: 0}}
responses: {responses}
"""


class Requests:
    """The gateway's ASGI app, recording the body of every request to ``/v1/responses``."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.bodies: list[dict[str, Any]] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] != "/v1/responses":
            await self.app(scope, receive, send)
            return
        body = b""

        async def recorded() -> Any:
            nonlocal body
            message = await receive()
            body += message.get("body", b"")
            if message["type"] == "http.request" and not message.get("more_body"):
                self.bodies.append(orjson.loads(body))
            return message

        await self.app(scope, recorded, send)


@dataclass
class Gateway:
    url: str
    upstream: ScriptedUpstream
    tap: Tap
    requests: Requests

    @property
    def bodies(self) -> list[dict[str, Any]]:
        return self.requests.bodies

    def client(self, key: str = KEY) -> openai.OpenAI:
        return openai.OpenAI(
            base_url=self.url + "/v1", api_key=key, max_retries=0, timeout=10, _strict_response_validation=True
        )

    def sent(self) -> list[dict[str, Any]]:
        """The chat requests the upstream received since the last call."""
        sent = [request.json for request in self.upstream.requests]
        self.upstream.requests.clear()
        return sent

    def call(self, method: str, path: str, key: str = KEY, **options: Any) -> httpx.Response:
        headers = {"authorization": f"Bearer {key}"}
        return httpx.request(method, self.url + path, headers=headers, timeout=10, **options)


@contextlib.contextmanager
def started(responses: str = "{}") -> Iterator[Gateway]:
    upstream = ScriptedUpstream(default=agent_model)
    with serve(upstream) as up_url:
        text = CONFIG.format(key=KEY, other=OTHER_KEY, secret=SECRET, up=up_url, responses=responses)
        tap = Tap(create_app(parse_config(text, "stored.yaml", env={})))
        requests = Requests(tap)
        with serve(requests) as url:
            yield Gateway(url, upstream, tap, requests)


@pytest.fixture(scope="module")
def running() -> Iterator[Gateway]:
    with started() as gateway:
        yield gateway


@pytest.fixture
def gateway(running: Gateway) -> Iterator[Gateway]:
    """A clean record before each test; afterwards every answer must be one the SDK's types accept."""
    running.upstream.requests.clear()
    running.tap.answers.clear()
    running.bodies.clear()
    yield running
    for answer in running.tap.answers:
        check_answer(answer)


def user(text: str) -> dict[str, Any]:
    return {"role": "user", "content": text}


# Continuing by previous_response_id.


def test_three_turns_by_id_reach_the_upstream_as_the_whole_conversation_would(gateway: Gateway) -> None:
    client = gateway.client()
    first = client.responses.create(model="assistant", input="One", instructions="Be brief.")
    second = client.responses.create(
        model="assistant", input="Two", instructions="Be brief.", previous_response_id=first.id
    )
    third = client.responses.create(
        model="assistant", input=[user("Three")], instructions="Be brief.", previous_response_id=second.id
    )
    assert (first.store, second.previous_response_id, third.previous_response_id) == (True, first.id, second.id)
    assert third.output_text == "You said: Three"
    by_id = gateway.sent()
    whole = client.responses.create(
        model="assistant",
        instructions="Be brief.",
        input=[user("One"), *first.output, user("Two"), *second.output, user("Three")],  # type: ignore[list-item]
    )
    [sent_whole] = gateway.sent()
    assert by_id[2]["messages"] == sent_whole["messages"] and whole.output_text == third.output_text
    said = [message for message in by_id[2]["messages"] if message["role"] == "user"]
    assert said == [user("One"), user("Two"), user("Three")]
    assert "You said: One" in json.dumps(by_id[2]) and "You said: Two" in json.dumps(by_id[2])
    # The earlier turns went back as the client saw them: no inner thoughts, no reasoning.
    assert not any(c in json.dumps(by_id, ensure_ascii=False) for c in HIDDEN)


@pytest.mark.parametrize("streaming", [False, True], ids=["create", "stream"])
def test_a_stored_response_is_retrieved_as_the_create_call_returned_it(gateway: Gateway, streaming: bool) -> None:
    body = {"model": "assistant", "input": "Hello", "stream": streaming}
    created = gateway.call("POST", "/v1/responses", json=body)
    # Streamed, it is retrieved the moment the stream has ended: the object of its response.completed.
    returned = parse_sse(created.content)[-1]["response"] if streaming else created.json()
    retrieved = gateway.call("GET", f"/v1/responses/{returned['id']}")
    assert retrieved.status_code == 200 and retrieved.json() == returned
    sdk = gateway.client().responses.retrieve(returned["id"])
    assert sdk.output_text == "You said: Hello" and sdk.status == "completed" and sdk.store is True


def test_a_streamed_response_is_continued_at_once(gateway: Gateway) -> None:
    client = gateway.client()
    with client.responses.stream(model="assistant", input="First") as stream:
        first = stream.get_final_response()
    with client.responses.stream(model="assistant", input="Next", previous_response_id=first.id) as stream:
        second = stream.get_final_response()
    assert second.output_text == "You said: Next"
    continued = gateway.sent()[1]["messages"]
    assert user("First") in continued and "You said: First" in json.dumps(continued)


def test_a_deleted_response_is_gone_everywhere(gateway: Gateway) -> None:
    client = gateway.client()
    response = client.responses.create(model="assistant", input="Forget me")
    assert client.responses.delete(response.id) is None
    deleted = gateway.call("DELETE", f"/v1/responses/{response.id}")
    assert deleted.status_code == 404
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(response.id)
    with pytest.raises(openai.NotFoundError) as caught:
        client.responses.create(model="assistant", input="Hi", previous_response_id=response.id)
    assert caught.value.param == "previous_response_id"


def test_input_items_are_listed_newest_first_and_in_pages(gateway: Gateway) -> None:
    client = gateway.client()
    first = client.responses.create(model="assistant", input="One")
    second = client.responses.create(
        model="assistant", input=[user("Two"), user("Three")], previous_response_id=first.id
    )
    page = client.responses.input_items.list(second.id, limit=2)
    assert [item.type for item in page.data] == ["message", "message"] and page.has_more
    assert [item.content[0].text for item in page.data] == ["Three", "Two"]  # type: ignore[union-attr]
    everything = list(client.responses.input_items.list(second.id, limit=2))  # the SDK follows `after`
    texts = [item.content[0].text for item in everything]  # type: ignore[union-attr]
    assert texts == ["Three", "Two", "You said: One", "One"]
    assert [item.role for item in everything] == ["user", "user", "assistant", "user"]  # type: ignore[union-attr]
    oldest = client.responses.input_items.list(second.id, order="asc", limit=1)
    assert oldest.data[0].id == everything[-1].id and oldest.has_more
    raw = gateway.call("GET", f"/v1/responses/{second.id}/input_items", params={"limit": 500})
    assert raw.status_code == 400 and raw.json()["error"]["param"] == "limit"


def test_store_false_keeps_nothing(gateway: Gateway) -> None:
    client = gateway.client()
    response = client.responses.create(model="assistant", input="Ephemeral", store=False)
    assert response.store is False
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(response.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model="assistant", input="Hi", previous_response_id=response.id)


# A multi-step tool loop that refers to its earlier items by id, as the Vercel AI SDK's OpenAI provider does.


@pytest.mark.parametrize("streaming", [False, True], ids=["create", "stream"])
def test_item_references_in_a_multi_step_tool_loop(gateway: Gateway, streaming: bool) -> None:
    client = gateway.client()
    question = user("What is the weather in Oslo?")
    if streaming:
        with client.responses.stream(model="assistant", input=[question], tools=[WEATHER]) as stream:
            step = stream.get_final_response()
    else:
        step = client.responses.create(model="assistant", input=[question], tools=[WEATHER])
    message, call = step.output
    assert call.type == "function_call" and json.loads(call.arguments) == {"city": "Oslo"}
    step_two: list[Any] = [
        question,
        {"type": "item_reference", "id": message.id},
        {"type": "item_reference", "id": call.id},
        {"type": "function_call_output", "call_id": call.call_id, "output": "sunny"},
    ]
    final = client.responses.create(model="assistant", input=step_two, tools=[WEATHER])
    assert final.output_text == "It is sunny in Oslo."
    by_reference = gateway.sent()[1]
    client.responses.create(
        model="assistant",
        input=[*step_two[:1], message, call, step_two[-1]],
        tools=[WEATHER],  # type: ignore[list-item]
    )
    [whole] = gateway.sent()
    assert by_reference["messages"] == whole["messages"]
    assert by_reference["messages"][-1] == {"role": "tool", "tool_call_id": call.call_id, "content": "sunny"}
    assert any(c["id"] == call.call_id for m in by_reference["messages"] for c in m.get("tool_calls") or ())
    # The stored input lists the items referred to, not the references.
    items = client.responses.input_items.list(final.id, order="asc")
    assert [item.type for item in items.data] == ["message", "message", "function_call", "function_call_output"]
    with pytest.raises(openai.NotFoundError) as caught:
        client.responses.create(model="assistant", input=[{"type": "item_reference", "id": "fc_nothing"}])
    assert caught.value.param == "input[0]"


# The Agents SDK, continuing by id inside a run and across runs.


def test_the_agents_sdk_continues_by_previous_response_id(gateway: Gateway) -> None:
    calls: list[str] = []

    @agents.function_tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        calls.append(city)
        return "sunny"

    async def run() -> tuple[str, str, str | None]:
        client = openai.AsyncOpenAI(base_url=gateway.url + "/v1", api_key=KEY, max_retries=0, timeout=10)
        model = agents.OpenAIResponsesModel(model="assistant", openai_client=client)
        agent = agents.Agent(name="Weather", instructions="Answer briefly.", tools=[get_weather], model=model)
        config = agents.RunConfig(tracing_disabled=True)
        first = await agents.Runner.run(
            agent, "What is the weather in Oslo?", run_config=config, auto_previous_response_id=True
        )
        second = await agents.Runner.run(
            agent, "Thanks!", run_config=config, previous_response_id=first.last_response_id
        )
        return str(first.final_output), str(second.final_output), first.last_response_id

    first, second, first_id = asyncio.run(run())
    assert (first, second, calls) == ("It is sunny in Oslo.", "You said: Thanks!", ["Oslo"])
    _, answered, thanked = gateway.sent()
    # Within the run and into the next the SDK sent only what was new, and the id of what came before.
    sent = gateway.bodies
    assert [body.get("previous_response_id") for body in sent] == [None, sent[1]["previous_response_id"], first_id]
    assert [item["type"] for item in sent[1]["input"]] == ["function_call_output"]
    assert answered["messages"][-1] == {"role": "tool", "tool_call_id": "call_w1", "content": "sunny"}
    assert thanked["messages"][-1] == user("Thanks!")
    assert thanked["messages"][: len(answered["messages"])] == answered["messages"]
    assert "It is sunny in Oslo." in json.dumps(thanked["messages"][len(answered["messages"]) :])


# Ownership: another key's response is, to every endpoint, a response that never existed.


def never_existed() -> str:
    return "resp_" + uuid.uuid4().hex + uuid.uuid4().hex[:16]


def answers_about(gateway: Gateway, response_id: str, item_id: str, key: str) -> list[tuple[int, str]]:
    """What ``key`` is told about a response and one of its items, on every endpoint, with the ids blanked."""
    told = [
        gateway.call("GET", f"/v1/responses/{response_id}", key),
        gateway.call("DELETE", f"/v1/responses/{response_id}", key),
        gateway.call("GET", f"/v1/responses/{response_id}/input_items", key),
        gateway.call(
            "POST",
            "/v1/responses",
            key,
            json={"model": "assistant", "input": "Hi", "previous_response_id": response_id},
        ),
        gateway.call(
            "POST",
            "/v1/responses",
            key,
            json={"model": "assistant", "input": [{"type": "item_reference", "id": item_id}]},
        ),
    ]
    return [(answer.status_code, answer.text.replace(response_id, "ID").replace(item_id, "ITEM")) for answer in told]


def test_another_keys_response_is_answered_as_one_that_never_existed(gateway: Gateway) -> None:
    mine = gateway.client().responses.create(model="assistant", input="Mine alone")
    item = mine.output[0].id
    theirs = answers_about(gateway, mine.id, item, OTHER_KEY)
    missing = answers_about(gateway, never_existed(), "msg_" + uuid.uuid4().hex, OTHER_KEY)
    assert theirs == missing
    assert [status for status, _ in theirs] == [404] * 5
    assert all(orjson.loads(body)["error"]["type"] == "invalid_request_error" for _, body in theirs)
    # Nothing the other key did touched it.
    assert gateway.client().responses.retrieve(mine.id).output_text == "You said: Mine alone"
    assert gateway.upstream.requests[1:] == [], "nothing the other key asked reached the upstream"


def test_another_keys_response_takes_as_long_to_miss_as_one_that_never_existed(gateway: Gateway) -> None:
    mine = gateway.client().responses.create(model="assistant", input="Mine")
    timings: dict[str, list[float]] = {"theirs": [], "missing": []}
    with httpx.Client(base_url=gateway.url, headers={"authorization": f"Bearer {OTHER_KEY}"}) as other:
        for _ in range(60):  # interleaved, so that the machine's moods fall on both alike
            for kind, response_id in (("theirs", mine.id), ("missing", never_existed())):
                began = time.perf_counter()
                assert other.get(f"/v1/responses/{response_id}").status_code == 404
                timings[kind].append(time.perf_counter() - began)
    theirs, missing = statistics.median(timings["theirs"]), statistics.median(timings["missing"])
    # One class of timing: the same lookup that finds nothing, never a decryption or a comparison of owners.
    assert abs(theirs - missing) < max(0.5 * min(theirs, missing), 0.002), (theirs, missing)


# Encrypted reasoning for clients that store nothing.


def test_sealed_reasoning_comes_back_to_the_upstream_and_nothing_else_opens(gateway: Gateway) -> None:
    client = gateway.client()
    question = user("Hi")
    first = client.responses.create(
        model="thinker", input=[question], store=False, include=["reasoning.encrypted_content"]
    )
    reasoning, message = first.output
    assert reasoning.type == "reasoning" and reasoning.encrypted_content
    thought = "".join(part.text for part in reasoning.summary)
    assert PROVIDER_REASONING in thought
    sent_back = {**reasoning.model_dump(exclude_none=True), "summary": [{"type": "summary_text", "text": "edited"}]}
    turn = [question, sent_back, message.model_dump(exclude_none=True), user("And?")]
    client.responses.create(model="thinker", input=turn, store=False)
    assert gateway.sent()[1]["messages"][2]["reasoning_content"] == thought, "the sealed text, not the edited summary"
    # A route that hides reasoning sends none of it back.
    client.responses.create(model="assistant", input=turn, store=False)
    assert "reasoning_content" not in json.dumps(gateway.sent())
    # Altered, or sent by another key: a 400 naming the item.
    blob = reasoning.encrypted_content
    altered = {**sent_back, "encrypted_content": blob[:-6] + ("A" if blob[-6] != "A" else "B") + blob[-5:]}
    for key, item in ((KEY, altered), (OTHER_KEY, sent_back)):
        with pytest.raises(openai.BadRequestError) as caught:
            gateway.client(key).responses.create(model="thinker", input=[question, item, user("And?")])
        assert caught.value.param == "input[1].encrypted_content" and caught.value.status_code == 400
    assert gateway.sent() == []


# Expiry and the size of a stored response.


def test_a_stored_response_expires_after_store_ttl() -> None:
    with started("{store_ttl: 1s}") as gateway:
        client = gateway.client()
        response = client.responses.create(model="assistant", input="Soon gone")
        assert client.responses.retrieve(response.id).id == response.id
        time.sleep(1.2)
        with pytest.raises(openai.NotFoundError):
            client.responses.retrieve(response.id)
        with pytest.raises(openai.NotFoundError):
            client.responses.create(model="assistant", input="Hi", previous_response_id=response.id)


def test_a_response_over_max_stored_bytes_is_answered_and_not_stored(caplog: pytest.LogCaptureFixture) -> None:
    with started("{max_stored_bytes: 4000}") as gateway, caplog.at_level(logging.WARNING, "gateway.responses"):
        client = gateway.client()
        small = client.responses.create(model="assistant", input="Short")
        large = client.responses.create(model="assistant", input="x" * 3000)
        assert large.status == "completed" and large.output_text.startswith("You said: xxx")
        assert client.responses.retrieve(small.id).id == small.id
        with pytest.raises(openai.NotFoundError):
            client.responses.retrieve(large.id)
    [line] = [r.getMessage() for r in caplog.records if r.name == "gateway.responses"]
    assert line.startswith(f"response {large.id} not stored") and "responses.max_stored_bytes (4000)" in line


# Several processes on one Redis.

DEMO_CONFIG = {
    "providers": {"demo": {"api": "demo"}},
    "models": [
        {"name": "assistant", "provider": "demo", "rewrite": {}},
        {
            "name": "thinker",
            "provider": "demo",
            "model": "demo-thinker",
            "rewrite": {"inject_tools": False, "inner_thoughts": "none", "reasoning": "expose"},
        },
    ],
}


def test_gateways_sharing_a_redis_share_their_stored_responses(tmp_path: Path, redis_url: str) -> None:
    key = f"sk-shared-stored-{uuid.uuid4().hex}"
    config = {**DEMO_CONFIG, "server": {"api_keys": [key], "state": redis_url, "secret": SECRET}}
    path = tmp_path / "gateway.yaml"
    path.write_text(json.dumps(config))
    with gateway_process("--config", str(path)) as east, gateway_process("--config", str(path)) as west:
        here, there = (
            openai.OpenAI(base_url=g.url + "/v1", api_key=key, max_retries=0, timeout=30) for g in (east, west)
        )
        with here.responses.stream(model="assistant", input="Stored in the east") as stream:
            first = stream.get_final_response()
        assert there.responses.retrieve(first.id).output_text == first.output_text
        second = there.responses.create(model="assistant", input="Continued in the west", previous_response_id=first.id)
        texts = [item.content[0].text for item in here.responses.input_items.list(second.id, order="asc")]  # type: ignore[union-attr]
        assert texts == ["Stored in the east", first.output_text, "Continued in the west"]
        # Sealed by one, opened by the other: they share the secret.
        sealed = here.responses.create(
            model="thinker", input="Think", store=False, include=["reasoning.encrypted_content"]
        )
        back = [user("Think"), *(item.model_dump(exclude_none=True) for item in sealed.output), user("More")]
        assert there.responses.create(model="thinker", input=back, store=False).status == "completed"
        there.responses.delete(first.id)
        with pytest.raises(openai.NotFoundError):
            here.responses.retrieve(first.id)
