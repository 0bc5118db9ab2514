"""Real servers on 127.0.0.1 for end-to-end tests: a scripted upstream, and uvicorn in a thread."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any

import httpx
import orjson
import uvicorn

from tests.helpers.streams import chunk as make_chunk

Scope = dict[str, Any]


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    client_port: int = 0
    raw_path: bytes = b""

    @property
    def json(self) -> Any:
        return orjson.loads(self.body)


@dataclass
class Reply:
    """One scripted answer.

    ``pieces`` are written one by one, ``delay`` seconds apart. ``then`` says how
    the answer ends: ``"end"`` normally, ``"break"`` by dropping the connection
    mid-body, ``"hang"`` by sending nothing more until the peer goes away.
    With a ``gate``, nothing from piece number ``gate_at`` on (0: not even the
    head) is sent until the test sets it, or the peer goes away.
    """

    pieces: list[bytes]
    status: int = 200
    content_type: str = "text/event-stream"
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    first_delay: float = 0.0
    then: str = "end"
    gate: threading.Event | None = None
    gate_at: int = 1


def sse(chunks: list[Any], done: bool = True) -> list[bytes]:
    """SSE events, one piece per chunk."""
    pieces = [b"data: " + orjson.dumps(c) + b"\n\n" for c in chunks]
    return [*pieces, b"data: [DONE]\n\n"] if done else pieces


def stream_reply(chunks: list[Any], **options: Any) -> Reply:
    return Reply(sse(chunks, done=options.pop("done", True)), **options)


def json_reply(body: Any, status: int = 200, **options: Any) -> Reply:
    return Reply([orjson.dumps(body)], status=status, content_type="application/json", **options)


def completion_of(chunks: list[dict[str, Any]]) -> dict[str, Any]:
    """The non-streaming answer equivalent to an agent stream (one choice)."""
    message: dict[str, Any] = {"role": "assistant", "content": None}
    calls: dict[int, dict[str, Any]] = {}
    finish = None
    for c in chunks:
        for ch in c.get("choices", []):
            finish = ch.get("finish_reason") or finish
            for position, tc in enumerate(ch.get("delta", {}).get("tool_calls") or ()):
                slot = calls.setdefault(
                    tc.get("index", position),
                    {"id": tc.get("id"), "type": "function", "function": {"name": "", "arguments": ""}},
                )
                slot["function"]["name"] += tc.get("function", {}).get("name") or ""
                slot["function"]["arguments"] += tc.get("function", {}).get("arguments") or ""
            if ch.get("delta", {}).get("content"):
                message["content"] = (message["content"] or "") + ch["delta"]["content"]
    if calls:
        message["tool_calls"] = [calls[i] for i in sorted(calls)]
    base = make_chunk()
    return {
        **base,
        "object": "chat.completion",
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8},
    }


class ScriptedUpstream:
    """An OpenAI-compatible upstream that replays scripted replies and records every request.

    Replies are taken from the queue filled by ``reply()``; when it is empty,
    ``default(request)`` answers. ``hangups`` records, for each reply that was
    cut short by the gateway, how long after the last byte it noticed.
    """

    def __init__(self, default: Callable[[Received], Reply] | None = None) -> None:
        self.requests: list[Received] = []
        self.script: deque[Reply] = deque()
        self.default = default
        self.active = 0
        self.hangups: list[float] = []

    def reply(self, *replies: Reply) -> None:
        self.script.extend(replies)

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await receive()  # lifespan.startup
            await send({"type": "lifespan.startup.complete"})
            await receive()  # lifespan.shutdown
            await send({"type": "lifespan.shutdown.complete"})
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode(): v.decode() for k, v in scope["headers"]}
        request = Received(
            scope["method"],
            scope["path"],
            headers,
            body,
            (scope.get("client") or ("", 0))[1],
            scope.get("raw_path", b""),
        )
        self.requests.append(request)
        if self.script:
            reply = self.script.popleft()
        elif self.default is not None:
            reply = self.default(request)
        else:
            reply = json_reply({"error": {"message": "no scripted reply", "type": "test"}}, 500)
        self.active += 1
        try:
            await self._play(reply, receive, send)
        finally:
            self.active -= 1

    async def _play(self, reply: Reply, receive: Any, send: Any) -> None:
        disconnected = asyncio.Event()

        async def watch() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            disconnected.set()

        watcher = asyncio.ensure_future(watch())
        headers = [(b"content-type", reply.content_type.encode())]
        headers += [(k.encode(), v.encode()) for k, v in reply.headers.items()]
        last = time.monotonic()

        async def hung_up_during(pause: float) -> bool:
            """Wait, noting how long after the last byte (or the request) the peer went away, if it did."""
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(disconnected.wait(), pause)
            if disconnected.is_set():
                self.hangups.append(time.monotonic() - last)
            return disconnected.is_set()

        async def held_until_gone() -> bool:
            """Wait for the gate; True when the peer went away first."""
            assert reply.gate is not None
            while not reply.gate.is_set():
                if await hung_up_during(0.01):
                    return True
            return False

        try:
            if reply.first_delay and await hung_up_during(reply.first_delay):
                return
            if reply.gate is not None and reply.gate_at == 0 and await held_until_gone():
                return
            await send({"type": "http.response.start", "status": reply.status, "headers": headers})
            for number, piece in enumerate(reply.pieces):
                if await hung_up_during(reply.delay if number else 0):
                    return
                if reply.gate is not None and number == reply.gate_at and number and await held_until_gone():
                    return
                await send({"type": "http.response.body", "body": piece, "more_body": True})
                last = time.monotonic()
            if reply.then == "break":
                raise ConnectionAbortedError("scripted break mid-body")
            if reply.then == "hang":
                await disconnected.wait()
                self.hangups.append(time.monotonic() - last)
                return
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            watcher.cancel()


class RecordingTransport(httpx.AsyncBaseTransport):
    """An in-process upstream for ``create_app``: records every request exactly as sent, and answers
    with a streamed body, an agent stream when the request accepts one, else ``body``."""

    def __init__(self, body: bytes = b'{"ok": true}', headers: dict[str, str] | None = None) -> None:
        self.requests: list[httpx.Request] = []
        self.body = body
        self.headers = {"content-type": "application/json", **(headers or {})}

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        await request.aread()
        self.requests.append(request)
        if request.headers.get("accept") == "text/event-stream":
            chunks = [make_chunk({"index": 0, "delta": {"content": "Hi"}, "finish_reason": "stop"})]
            events = b"".join(sse(chunks))
            return httpx.Response(200, headers={"content-type": "text/event-stream"}, stream=httpx.ByteStream(events))
        return httpx.Response(200, headers=self.headers, stream=httpx.ByteStream(self.body))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def serve(app: Any, **options: Any) -> Iterator[str]:
    """Run an ASGI app under uvicorn in a thread; yields its base URL."""
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="critical", lifespan="on", **options)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("server did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without what would change how a gateway process configures itself (OTEL_* too)."""
    ignored = ("OPENAI_API_KEY", "OPENAI_BASE_URL", "GATEWAY_CONFIG", "PROMETHEUS_MULTIPROC_DIR")
    kept = {k: v for k, v in os.environ.items() if k not in ignored and not k.startswith("OTEL_")}
    return {**kept, **extra}


@dataclass
class Running:
    """A gateway process started by ``gateway_process``."""

    url: str
    process: subprocess.Popen[bytes]
    log: IO[bytes]

    def stderr(self) -> str:
        """What the process has written to stderr so far, in whole lines while it runs.

        The file's offset is shared with the child, so it is read with ``pread``: a
        ``seek(0)`` here would make the child's next line overwrite its first.
        """
        fd = self.log.fileno()
        written = os.pread(fd, os.fstat(fd).st_size, 0).decode(errors="replace")
        if self.process.poll() is None:
            return written[: written.rfind("\n") + 1]
        return written


@contextlib.contextmanager
def gateway_process(*args: str, env: dict[str, str] | None = None, choose_port: bool = True) -> Iterator[Running]:
    """``gateway serve`` as a real process, once /readyz answers 200.

    It listens on a free port given as ``--port``; with ``choose_port=False`` the
    args or the config choose, and the URL is read from the gateway's first log line.
    Its stderr goes to a file, not a pipe nobody reads, so a chatty process never blocks.
    """
    port = ["--port", str(free_port())] if choose_port else []
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "gateway", "serve", *port, *args],
            env=env if env is not None else clean_env(),
            stderr=log,
        )
        running = Running(f"http://127.0.0.1:{port[1]}" if port else "", process, log)
        try:
            deadline = time.monotonic() + 30
            while True:
                if not running.url and (announced := re.search(r"serving on http://[^:]+:(\d+)/v1", running.stderr())):
                    running.url = f"http://127.0.0.1:{announced[1]}"
                try:
                    if running.url and httpx.get(running.url + "/readyz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if process.poll() is not None or time.monotonic() > deadline:
                    process.kill()
                    process.wait()
                    raise RuntimeError(f"the gateway did not start: {running.stderr()}")
                time.sleep(0.1)
            yield running
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGINT)  # stopped as a developer would: no drain delay
                try:
                    process.wait(30)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
