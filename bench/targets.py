"""What the end-to-end benchmarks send requests to, and how they check the answers before timing anything."""

from __future__ import annotations

import argparse
import asyncio
import functools
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
from common import ServerProcess, machine_busy_seconds
from load import Meters, chat_request, connect, responses_request, sse_payloads
from messages import messages_answer_text, messages_request
from upstream import Script, model_name


@dataclass(frozen=True)
class Target:
    """Where requests go, which process's CPU and memory count, and what a right answer looks like."""

    name: str
    server: ServerProcess
    route: str
    answer: str
    """``rewritten`` (plain content), ``relayed`` (the upstream's tool call untouched) or ``any`` (complete only)."""
    headers: Mapping[str, str] = field(default_factory=dict)
    """Sent with every request: a peer's routing headers (Portkey's provider and custom host)."""
    front_door: str = "chat"
    """``chat`` (``/v1/chat/completions``), ``responses`` (``/v1/responses``) or ``messages`` (``/v1/messages``):
    the same conversation through each front door."""

    @property
    def port(self) -> int:
        return self.server.port

    def request(self, stream: bool, interval_ms: float = 0, first_byte_ms: float = 0) -> bytes:
        build = _REQUESTS[self.front_door]
        return build(self.port, self.model(interval_ms, first_byte_ms), stream, self.headers)

    def model(self, interval_ms: float = 0, first_byte_ms: float = 0) -> str:
        return model_name(self.route, interval_ms, first_byte_ms)

    def answer_text(self, stream: bool, body: bytes) -> tuple[str, str]:
        """The answer's plain content and its tool calls' arguments, read the way its front door writes them."""
        return _ANSWERS[self.front_door](stream, body)


@dataclass(frozen=True)
class Run:
    """What every phase needs: the options, the upstream, and every process the benchmark started."""

    options: argparse.Namespace
    upstream: ServerProcess
    servers: list[ServerProcess]

    def meters(self, target: Target) -> Meters:
        """CPU seconds of the target server (summed over its workers) and of everything else on the machine."""
        meters: dict[str, Callable[[], float]] = {
            "server": target.server.cpu_seconds,
            "upstream": self.upstream.cpu_seconds,
            "driver": time.process_time,
            "others": self._others,
        }
        if target.server.expected_workers > 1:
            for position in range(target.server.expected_workers):
                meters[f"worker{position}"] = functools.partial(_worker_cpu_seconds, target.server, position)
        return meters

    async def settle(self, limit: float = 60.0) -> None:
        """Wait until every server is idle again: a peer still working through a backlog (LiteLLM
        answers for a minute after a window it could not keep up with) would skew what comes next."""
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            before = sum(server.total_cpu_seconds() for server in self.servers)
            await asyncio.sleep(0.25)
            if sum(server.total_cpu_seconds() for server in self.servers) - before < 0.25 * 0.05:
                return

    def _others(self) -> float:
        """What the rest of the machine used: other sessions' work on a shared machine shows up here."""
        ours = time.process_time() + sum(server.total_cpu_seconds() for server in self.servers)
        return machine_busy_seconds() - ours


def _worker_cpu_seconds(server: ServerProcess, position: int) -> float:
    return server.worker_cpu_seconds()[position]


def answer_text(stream: bool, body: bytes) -> tuple[str, str]:
    """The answer's plain content and its tool calls' arguments, each joined up."""
    if stream:
        payloads = sse_payloads(body)
        if payloads[-1:] != [b"[DONE]"]:
            raise ValueError("the stream does not end with [DONE]")
        content, arguments = [], []
        for payload in payloads[:-1]:
            text, calls = delta_text(orjson.loads(payload))
            content.append(text)
            arguments.append(calls)
        return "".join(content), "".join(arguments)
    message = orjson.loads(body)["choices"][0]["message"]
    calls = "".join(call["function"]["arguments"] for call in message.get("tool_calls") or ())
    return message.get("content") or "", calls


def responses_answer_text(stream: bool, body: bytes) -> tuple[str, str]:
    """A Responses answer's text and its function calls' arguments, each joined up; the stream must end
    with ``response.completed``, whose response must hold what the deltas said."""
    if stream:
        events = [orjson.loads(payload) for payload in sse_payloads(body)]
        if not events or events[-1]["type"] != "response.completed":
            raise ValueError(f"the stream does not end with response.completed: {events[-1:]!r}")
        text = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
        arguments = "".join(e["delta"] for e in events if e["type"] == "response.function_call_arguments.delta")
        if (text, arguments) != _output_text(events[-1]["response"]):
            raise ValueError("the deltas differ from the completed response")
        return text, arguments
    response = orjson.loads(body)
    if response["status"] != "completed":
        raise ValueError(f"the response is {response['status']}")
    return _output_text(response)


def _output_text(response: dict[str, Any]) -> tuple[str, str]:
    """The text of a response object's message items and the arguments of its function calls."""
    items = response["output"]
    text = "".join(part["text"] for item in items if item["type"] == "message" for part in item["content"])
    return text, "".join(item["arguments"] for item in items if item["type"] == "function_call")


def delta_text(chunk: dict[str, object]) -> tuple[str, str]:
    """The content and the tool-call arguments that one ``chat.completion.chunk`` adds."""
    content, arguments = [], []
    for choice in chunk.get("choices") or ():  # type: ignore[attr-defined]
        delta = choice.get("delta") or {}
        content.append(delta.get("content") or "")
        arguments += [(call.get("function") or {}).get("arguments") or "" for call in delta.get("tool_calls") or ()]
    return "".join(content), "".join(arguments)


def answer_problem(target: Target, stream: bool, body: bytes, script: Script) -> str | None:
    """What is wrong with an answer, or None."""
    try:
        text, calls = target.answer_text(stream, body)
    except (orjson.JSONDecodeError, KeyError, IndexError, TypeError, AttributeError, ValueError) as exc:
        return f"unexpected answer ({exc!r}): {body[:300]!r}"
    if target.answer == "rewritten" and (text != script.message or calls):
        return f"expected the message as plain content, got content {text[:80]!r} and arguments {calls[:80]!r}"
    if target.answer == "relayed" and calls != script.arguments:
        return f"expected the upstream's arguments untouched, got {calls[:80]!r}"
    return None


async def check_answers(
    targets: list[Target], script: Script, intervals_ms: list[float], first_byte_ms: float = 0
) -> None:
    """Every target answers a burst stream, a paced stream per interval, a plain request (also after
    ``first_byte_ms``, if given) correctly, or the run stops."""
    kinds = [(True, 0.0, 0.0), *((True, interval, 0.0) for interval in intervals_ms), (False, 0.0, 0.0)]
    if first_byte_ms:
        kinds.append((False, 0.0, first_byte_ms))
    for target in targets:
        connection = await connect(target.port, keep_body=True)
        try:
            for stream, interval, first_byte in kinds:
                if connection.closed:
                    connection = await connect(target.port, keep_body=True)
                exchange = await connection.request(target.request(stream, interval, first_byte))
                problem = (
                    f"status {exchange.status}: {(exchange.body or b'')[:300]!r}" if exchange.status != 200 else None
                )
                problem = problem or answer_problem(target, stream, exchange.body or b"", script)
                if problem:
                    kind = "stream" if stream else "request"
                    raise SystemExit(
                        f"{target.name}: wrong answer to a {kind} ({target.model(interval, first_byte)}): {problem}"
                    )
        finally:
            connection.close()


_REQUESTS = {"chat": chat_request, "responses": responses_request, "messages": messages_request}
_ANSWERS = {"chat": answer_text, "responses": responses_answer_text, "messages": messages_answer_text}
