"""The real coding agents in the tests: Claude Code and Codex CLI run non-interactively against a gateway.

Each run gets a fresh ``HOME`` (and ``CODEX_HOME``) in a temporary directory, a work directory holding
``hello.txt``, the settings of the README's "Coding agents" section as written there (which also turn the
agents' telemetry, update checks and plugin sync off), and an HTTP(S) proxy on loopback that refuses
everything and records what tried it (``RefusingProxy``), so nothing leaves the machine.
``CodingModel`` is the scripted model behind the gateway's routes: it says hello, or calls the agent's
shell tool to read ``hello.txt`` and then answers with what the tool returned, as an agent-style model
(through ``send_message``, with inner thoughts) or as a reasoning model (``<think>`` blocks in its
content); its private words are marked, so a test can tell that none reached the agent.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import socket
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.paths import ROOT
from tests.helpers.readme import code_blocks, section
from tests.helpers.servers import Received, Reply, stream_reply
from tests.helpers.streams import agent_stream, call, choice, chunk, split_evenly, typed_events

# Where .ci/run installs the pinned agents (tests/agents/package-lock.json); another directory of their
# binaries (scripts/agents-latest installs the newest published ones) can be named instead.
AGENTS_BIN = Path(os.environ.get("GATEWAY_TEST_AGENTS_BIN") or ROOT / "tests" / "agents" / "node_modules" / ".bin")
FILE_TEXT = "hello world from hello.txt"
# What the model keeps to itself: never in what an agent shows, on a route that hides reasoning.
INNER = "SECRET-INNER the user wants the file"
THINKING = "SECRET-THINK reading the file first"
GATEWAY_KEY = "sk-gateway-agents"
HELLO = "Hi from the scripted model."
# An Anthropic thinking block's signature and OpenAI's encrypted reasoning: opaque, checked by their
# provider when the client sends them back.
SIGNATURE = "EqQBCkgIARABGAIiQL2signed-by-the-provider"
ENCRYPTED = "gAAAAABencrypted-by-the-provider"
# A run that takes longer has hung (both agents answer these prompts in a few seconds).
RUN_TIMEOUT = 120


def binary(name: str) -> Path:
    """An agent's binary; without it the test is skipped with the reason, or fails under CI (``.ci/run`` installs
    it)."""
    path = AGENTS_BIN / name
    if not path.exists():
        reason = f"{path} is not installed: npm ci --prefix tests/agents (see .ci/run)"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return path


class RefusingProxy:
    """An HTTP(S) proxy on loopback that answers every request (``CONNECT host:443`` or an absolute URI) with 403,
    recording its first line: what an agent tried to reach beyond the gateway."""

    def __init__(self) -> None:
        self.attempts: list[str] = []
        self._socket = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._socket.getsockname()[1]}"
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> RefusingProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._socket.close()
        self._thread.join(5)

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self._socket.accept()
            except OSError:
                return
            with connection:
                connection.settimeout(5)
                head = b""
                with contextlib.suppress(OSError):
                    while b"\r\n" not in head and len(head) < 65536 and (data := connection.recv(4096)):
                        head += data
                if head:
                    self.attempts.append(head.split(b"\r\n", 1)[0].decode("latin-1"))
                    with contextlib.suppress(OSError):
                        connection.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")


@dataclass
class Run:
    """One agent run: its exit status and output, and the proxy attempts it made."""

    returncode: int
    stdout: str
    stderr: str
    attempts: list[str]

    def events(self) -> list[dict[str, Any]]:
        """The JSON lines of ``--output-format stream-json`` or ``--json``."""
        return [json.loads(line) for line in self.stdout.splitlines() if line.startswith("{")]

    def check(self, *, reasoning_shown: bool = False) -> Run:
        """The run ended well, reached nothing but the gateway, and showed no private word of the model: never its
        inner thoughts nor a think tag, and its reasoning only on a route that exposes it."""
        assert self.returncode == 0, f"exit status {self.returncode}\n{self.stdout}\n{self.stderr}"
        assert self.attempts == [], f"tried to leave the machine: {self.attempts}"
        for secret in ("SECRET-INNER", "<think>", "</think>", *(() if reasoning_shown else ("SECRET-THINK",))):
            assert secret not in self.stdout + self.stderr, f"{secret} reached the agent's output"
        return self


def _proxy_env(proxy: str) -> dict[str, str]:
    names = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")
    return {
        **dict.fromkeys(names, proxy),
        **{name.lower(): proxy for name in names},
        "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
    }


@contextlib.contextmanager
def agent_home() -> Iterator[Path]:
    """A throw-away home with a work directory holding ``hello.txt``."""
    home = Path(tempfile.mkdtemp(prefix="gateway-agent-"))
    try:
        (home / "work").mkdir()
        (home / "work" / "hello.txt").write_text(FILE_TEXT + "\n")
        yield home
    finally:
        shutil.rmtree(home, ignore_errors=True)


def _run(command: list[str], env: dict[str, str], home: Path, proxy: RefusingProxy) -> Run:
    base = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home), "TERM": "dumb", "LANG": "C.UTF-8"}
    done = subprocess.run(
        command,
        env={**base, **_proxy_env(proxy.url), **env},
        cwd=home / "work",
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        check=False,
    )
    return Run(done.returncode, done.stdout, done.stderr, list(proxy.attempts))


# The README's settings, as written: Claude Code's environment, Codex's config.toml.
_README = section("Coding agents")
_CLAUDE_SETTINGS, *_ = code_blocks(_README)
_CODEX_PROVIDER, _CODEX_LOCAL = code_blocks(_README, "toml")
README_URL = "http://127.0.0.1:8080"
README_KEY = "your-gateway-key"


def claude_environment(gateway: str) -> dict[str, str]:
    """The variables the README exports for Claude Code, for the gateway at ``gateway`` and the tests' key."""
    env: dict[str, str] = {}
    for line in _CLAUDE_SETTINGS.splitlines():
        if line.startswith("export "):
            for word in shlex.split(line)[1:]:
                name, value = word.split("=", 1)
                env[name] = value
    return {name: value.replace(README_URL, gateway).replace(README_KEY, GATEWAY_KEY) for name, value in env.items()}


def codex_config(gateway: str, model: str) -> str:
    """The README's config.toml for Codex, both blocks, for the gateway at ``gateway`` and this model."""
    provider = _CODEX_PROVIDER.replace(README_URL, gateway).replace('model = "assistant"', f'model = "{model}"')
    return provider + "\n" + _CODEX_LOCAL


def run_claude(gateway: str, *args: str) -> Run:
    """``claude -p ...`` against the gateway at ``gateway`` (its root URL, without ``/v1``)."""
    with agent_home() as home, RefusingProxy() as proxy:
        return _run(
            [str(binary("claude")), *args, "--allowedTools", "Bash Read"], claude_environment(gateway), home, proxy
        )


def run_codex(gateway: str, model: str, *args: str) -> Run:
    """``codex exec ...`` against the gateway; its sandbox is off, so the shell tool runs wherever the tests do."""
    with agent_home() as home, RefusingProxy() as proxy:
        (home / ".codex").mkdir()
        (home / ".codex" / "config.toml").write_text(codex_config(gateway, model))
        env = {"CODEX_HOME": str(home / ".codex"), "GATEWAY_API_KEY": GATEWAY_KEY}
        command = [str(binary("codex")), "exec", "--strict-config", "--skip-git-repo-check"]
        command += ["--dangerously-bypass-approvals-and-sandbox", *args]
        return _run(command, env, home, proxy)


# The scripted model.

SHELL_CALLS = {
    "Bash": {"command": "cat hello.txt", "description": "Show hello.txt"},  # Claude Code
    "exec_command": {"cmd": "cat hello.txt"},  # Codex
}


def answer_to(tool_output: str) -> str:
    """The model's last answer: what the tool said, upper-cased, so that only a real round trip can produce it."""
    return f"The file says: {FILE_TEXT.upper()}." if FILE_TEXT in tool_output else "The tool said nothing I know."


@dataclass
class CodingModel:
    """An upstream model for the agents: agent-style on routes that inject tools, a ``<think>`` model elsewhere.

    A request whose last user message mentions ``hello.txt`` gets a call to the agent's shell tool; the request
    that carries its result gets ``answer_to`` it; anything else gets a greeting. ``requests`` keeps every body.
    """

    requests: list[dict[str, Any]] = field(default_factory=list)

    def __call__(self, request: Received) -> Reply:
        body = request.json
        self.requests.append(body)
        tools = {tool["function"]["name"] for tool in body.get("tools", ())}
        agent = "send_message" in tools
        # Claude Code ends its first request with a system message (its agent types): the turn is the one before.
        last = next(m for m in reversed(body["messages"]) if m["role"] != "system")
        shell = next((name for name in SHELL_CALLS if name in tools), None)
        if last["role"] == "tool":
            text, calls = answer_to(str(last["content"])), None
        elif shell is not None and "hello.txt" in _text(last):
            text, calls = "Let me read it.", (shell, SHELL_CALLS[shell])
        else:
            text, calls = HELLO, None
        chunks = self._agent(text, calls) if agent else self._thinker(text, calls)
        return stream_reply([*chunks, chunk(usage={"prompt_tokens": 50, "completion_tokens": 9, "total_tokens": 59})])

    def _agent(self, text: str, calls: tuple[str, dict[str, Any]] | None) -> list[dict[str, Any]]:
        message = json.dumps({"inner_thoughts": INNER, "message": text})
        if calls is None:
            return agent_stream(split_evenly(message, 7))
        name, arguments = calls
        tool = json.dumps({"inner_thoughts": INNER, **arguments})
        chunks = agent_stream(split_evenly(message, 7))[:-1]
        chunks.append(chunk(choice(tool_calls=[call(1, "", id="call_shell", name=name)])))
        chunks += [chunk(choice(tool_calls=[call(1, piece)])) for piece in split_evenly(tool, 9)]
        return [*chunks, chunk(choice(finish="tool_calls"))]

    def _thinker(self, text: str, calls: tuple[str, dict[str, Any]] | None) -> list[dict[str, Any]]:
        content = f"<think>{THINKING}</think>{text}"
        chunks = [chunk(choice(role="assistant", content=""))]
        chunks += [chunk(choice(content=piece)) for piece in split_evenly(content, 5)]
        if calls is None:
            return [*chunks, chunk(choice(finish="stop"))]
        name, arguments = calls
        chunks.append(chunk(choice(tool_calls=[call(0, json.dumps(arguments), id="call_shell", name=name)])))
        return [*chunks, chunk(choice(finish="tool_calls"))]


@dataclass
class ClaudeModel:
    """Claude itself, as Anthropic's Messages API streams it, for Claude Code on a route passed through.

    The same script as ``CodingModel``'s: hello, or the ``Bash`` tool on ``hello.txt`` and then ``answer_to``
    its result; each answer opens with a thinking block and its signature, which only an Anthropic client
    reads and must send back as it came.
    """

    requests: list[dict[str, Any]] = field(default_factory=list)

    def __call__(self, request: Received) -> Reply:
        body = request.json
        self.requests.append(body)
        last = body["messages"][-1]
        results = [b for b in last["content"] if isinstance(b, dict) and b.get("type") == "tool_result"]
        tools = {tool.get("name") for tool in body.get("tools", ())}
        if results:
            text, use = answer_to(json.dumps(results)), False
        else:
            text, use = ("Let me read it.", True) if "Bash" in tools and "hello.txt" in _text(last) else (HELLO, False)
        blocks: list[tuple[dict[str, Any], list[dict[str, Any]]]] = [
            (
                {"type": "thinking", "thinking": ""},
                [{"type": "thinking_delta", "thinking": THINKING}, {"type": "signature_delta", "signature": SIGNATURE}],
            ),
            ({"type": "text", "text": ""}, [{"type": "text_delta", "text": piece} for piece in split_evenly(text, 4)]),
        ]
        if use:
            arguments = json.dumps(SHELL_CALLS["Bash"])
            deltas = [{"type": "input_json_delta", "partial_json": piece} for piece in split_evenly(arguments, 5)]
            blocks.append(({"type": "tool_use", "id": "toolu_shell", "name": "Bash", "input": {}}, deltas))
        message = {"id": "msg_1", "type": "message", "role": "assistant", "model": body["model"], "content": []}
        usage = {"input_tokens": 50, "output_tokens": 1}
        events: list[dict[str, Any]] = [{"type": "message_start", "message": {**message, "usage": usage}}]
        for index, (block, deltas) in enumerate(blocks):
            events.append({"type": "content_block_start", "index": index, "content_block": block})
            events += [{"type": "content_block_delta", "index": index, "delta": delta} for delta in deltas]
            events.append({"type": "content_block_stop", "index": index})
        stop = {"stop_reason": "tool_use" if use else "end_turn", "stop_sequence": None}
        events += [{"type": "message_delta", "delta": stop, "usage": {"output_tokens": 9}}, {"type": "message_stop"}]
        return Reply(typed_events(events))


@dataclass
class ResponsesModel:
    """A model of OpenAI's Responses API, as it streams, for Codex on a route passed through.

    The same script again, for Codex's shell tool (``exec_command``); each answer opens with a reasoning item,
    its summary and its ``encrypted_content`` (the provider's, opaque to everyone else), which Codex sends
    back in its next request as it came.
    """

    requests: list[dict[str, Any]] = field(default_factory=list)

    def __call__(self, request: Received) -> Reply:
        body = request.json
        self.requests.append(body)
        items = body["input"]
        results = [item for item in items if item.get("type") == "function_call_output"]
        tools = {tool.get("name") for tool in body.get("tools", ())}
        user = next(item for item in reversed(items) if item.get("role") == "user")
        if results:
            output = [_message(answer_to(json.dumps(results)))]
        elif "exec_command" in tools and "hello.txt" in _text(user):
            call = {"type": "function_call", "id": "fc_1", "call_id": "call_shell", "name": "exec_command"}
            output = [{**call, "arguments": json.dumps(SHELL_CALLS["exec_command"]), "status": "completed"}]
        else:
            output = [_message(HELLO)]
        summary = [{"type": "summary_text", "text": THINKING}]
        reasoning = {"type": "reasoning", "id": "rs_1", "summary": summary, "encrypted_content": ENCRYPTED}
        output = [reasoning, *output]
        response = {"id": "resp_provider", "object": "response", "created_at": 1, "model": body["model"]}
        events: list[dict[str, Any]] = [
            {"type": "response.created", "response": {**response, "status": "in_progress", "output": []}}
        ]
        for index, item in enumerate(output):
            events.append({"type": "response.output_item.added", "output_index": index, "item": item})
            events.append({"type": "response.output_item.done", "output_index": index, "item": item})
        usage = {
            "input_tokens": 50,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": 9,
            "output_tokens_details": {"reasoning_tokens": 3},
            "total_tokens": 59,
        }
        done = {**response, "status": "completed", "output": output, "usage": usage}
        events.append({"type": "response.completed", "response": done})
        numbered = [{**event, "sequence_number": number} for number, event in enumerate(events)]
        return Reply(typed_events(numbered))


def _message(text: str) -> dict[str, Any]:
    content = [{"type": "output_text", "text": text, "annotations": []}]
    return {"type": "message", "id": "msg_1", "role": "assistant", "status": "completed", "content": content}


def _text(message: dict[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, list):
        return " ".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return str(content or "")
