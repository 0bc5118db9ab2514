"""Benchmark of the rewrite core: parser throughput, the stream path's cost per chunk, and a re-parse baseline.

Run by hand: ``python bench/bench_core.py``. Compare ratios within one run;
the machine is shared and absolute figures drift.

The think-tag case streams a reasoning model's content without a reasoning
parser: ``<think>``, a reasoning block as long as the answer, ``</think>``,
then the answer, in the same 4-character chunks, through the stream path of a
rewriting route that hides (and one that exposes) the reasoning. It is compared
per chunk with the answer alone as plain content on the same route. These three
are timed in CPU time, in samples taken in turn and holding the same number of
chunks at every size, so that other load on the machine falls on all of them
alike and the sizes compare like for like.

The wires case streams the same ``send_message`` call from an Anthropic Messages and an OpenAI
Responses upstream (``gateway/core/wires/``) to each front door, against the chat upstream, per
chunk in CPU time: the cost of reading another API's events into the rewrite, and of each door's
events; then again with the doors' encoders on their general path (``Shortcuts.OFF``), the
figures their shortcuts are measured against. ``--wires-only`` runs this case alone.

The baseline re-parses the accumulated buffer with ``partial-json-parser``
after every fragment, as earlier proxies did (``pip install partial-json-parser``).
"""

from __future__ import annotations

import argparse
import json
import random
import string
import sys
import time
from collections.abc import Callable
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gateway.core.arguments import ArgumentsParser
from gateway.core.options import Reasoning, RewriteOptions
from gateway.core.passthrough import Shortcuts
from gateway.core.sse import SSEDecoder
from gateway.core.translator import StreamTranslator
from gateway.core.wires import WIRES
from gateway.dialects import StreamEncoder
from gateway.dialects import anthropic as messages_door
from gateway.dialects import responses as responses_door
from gateway.dialects.chat import ChatStreamEncoder

FRAGMENT = 4
SAMPLE_CHUNKS = 1 << 15
"""Chunks per timed sample of the think-tag case, at every size (a small stream is run many times)."""
SIZES = {"1 KB": 1024, "16 KB": 16 * 1024, "256 KB": 256 * 1024}


def message_of(size: int) -> str:
    """Prose with the escapes real models write: quotes, newlines, non-ASCII."""
    rng = random.Random(size)
    words = [
        *("".join(rng.choices(string.ascii_lowercase, k=rng.randint(2, 9))) for _ in range(200)),
        '"quoted"',
        "line\nbreak",
        "café",
        "😀",
    ]
    out: list[str] = []
    length = 0
    while length < size:
        word = rng.choice(words)
        out.append(word)
        length += len(word) + 1
    return " ".join(out)[:size]


def fragments_of(message: str, thoughts: str = "Let me answer the question carefully.") -> list[str]:
    document = json.dumps({"inner_thoughts": thoughts, "message": message})
    return [document[i : i + FRAGMENT] for i in range(0, len(document), FRAGMENT)]


def best_of(repeats: int, run: Callable[[], object], min_seconds: float = 0.3) -> float:
    """Best time of one run, after a warm-up, over enough runs to fill ``min_seconds``."""
    start = time.perf_counter()
    run()
    first = time.perf_counter() - start
    best = float("inf")
    for _ in range(max(repeats, int(min_seconds / max(first, 1e-9)))):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return best


def parse_incremental(fragments: list[str]) -> str:
    parser = ArgumentsParser(capture=("message",))
    out = []
    for fragment in fragments:
        for piece in parser.feed(fragment):
            out.append(piece.text)
    return "".join(out)


def parse_baseline(fragments: list[str]) -> str:
    from partial_json_parser import loads

    buffer = ""
    sent = 0
    out = []
    for fragment in fragments:
        buffer += fragment
        try:
            message = loads(buffer).get("message", "")
        except Exception:
            continue
        if isinstance(message, str) and len(message) > sent:
            out.append(message[sent:])
            sent = len(message)
    return "".join(out)


def wire_events(fragments: list[str]) -> list[bytes]:
    """The upstream stream as SSE events, one fragment per chunk, each event one upstream read."""
    head = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 1, "model": "bench"}
    call = {"index": 0, "id": "call_1", "type": "function", "function": {"name": "send_message", "arguments": ""}}
    delta = {"role": "assistant", "content": None, "tool_calls": [call]}
    chunks = [{**head, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}]
    for fragment in fragments:
        arguments = {"tool_calls": [{"index": 0, "function": {"arguments": fragment}}]}
        chunks.append({**head, "choices": [{"index": 0, "delta": arguments, "finish_reason": None}]})
    chunks.append({**head, "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]})
    return [b"data: " + orjson.dumps(chunk) + b"\n\n" for chunk in chunks] + [b"data: [DONE]\n\n"]


def content_events(message: str) -> list[bytes]:
    """The same message as plain content, in the same fragments: what a plain route relays."""
    head = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 1, "model": "bench"}
    chunks = [{**head, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]}]
    for i in range(0, len(message), FRAGMENT):
        delta = {"content": message[i : i + FRAGMENT]}
        chunks.append({**head, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]})
    chunks.append({**head, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    return [b"data: " + orjson.dumps(chunk) + b"\n\n" for chunk in chunks] + [b"data: [DONE]\n\n"]


def think_events(reasoning: str, answer: str) -> list[bytes]:
    """A reasoning model's content with its think block, in the same fragments as ``content_events``."""
    return content_events(f"<think>\n{reasoning}\n</think>\n\n{answer}")


def client_text(reads: list[bytes], options: RewriteOptions) -> tuple[str, str]:
    """The visible text and the exposed reasoning a chat client gets for these reads."""
    translator = StreamTranslator(options, "bench")
    encoder = ChatStreamEncoder()
    body = b"".join(encoder.encode(translator.feed(read)) for read in reads) + encoder.encode(translator.end())
    deltas = [
        choice["delta"]
        for payload in SSEDecoder(1 << 30).feed(body)
        if isinstance(payload, bytes) and payload != b"[DONE]"
        for choice in orjson.loads(payload)["choices"]
    ]
    return "".join(d.get("content") or "" for d in deltas), "".join(d.get("reasoning_content") or "" for d in deltas)


def relay(reads: list[bytes], options: RewriteOptions) -> int:
    """The relay's work on a stream, one read at a time: translate, then encode; returns the bytes sent."""
    translator = StreamTranslator(options, "bench")
    encoder = ChatStreamEncoder()
    sent = 0
    for read in reads:
        sent += len(encoder.encode(translator.feed(read)))
    return sent + len(encoder.encode(translator.end()))


def framed(events: list[dict[str, object]]) -> list[bytes]:
    """Another API's events as it sends them: an ``event:`` line before each ``data:`` line, one per read."""
    return [b"event: " + str(e["type"]).encode() + b"\ndata: " + orjson.dumps(e) + b"\n\n" for e in events]


def anthropic_events(fragments: list[str]) -> list[bytes]:
    """The send_message call as an Anthropic Messages stream: a tool_use block and its input_json_delta."""
    start = {"id": "msg_bench", "type": "message", "role": "assistant", "model": "bench", "content": []}
    block = {"type": "tool_use", "id": "toolu_1", "name": "send_message", "input": {}}
    events: list[dict[str, object]] = [
        {"type": "message_start", "message": {**start, "usage": {"input_tokens": 5, "output_tokens": 1}}},
        {"type": "content_block_start", "index": 0, "content_block": block},
    ]
    events += [
        {"type": "content_block_delta", "index": 0, "delta": {"type": "input_json_delta", "partial_json": f}}
        for f in fragments
    ]
    events += [
        {"type": "content_block_stop", "index": 0},
        {"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 9}},
        {"type": "message_stop"},
    ]
    return framed(events)


def responses_events(fragments: list[str]) -> list[bytes]:
    """The send_message call as a Responses stream: a function_call item and its argument deltas."""
    item = {"type": "function_call", "id": "fc_1", "call_id": "call_1", "name": "send_message", "arguments": ""}
    response = {"id": "resp_bench", "model": "bench", "status": "in_progress", "output": []}
    events: list[dict[str, object]] = [
        {"type": "response.created", "sequence_number": 0, "response": response},
        {"type": "response.output_item.added", "sequence_number": 1, "output_index": 0, "item": item},
    ]
    events += [
        {
            "type": "response.function_call_arguments.delta",
            "sequence_number": i + 2,
            "item_id": "fc_1",
            "output_index": 0,
            "delta": f,
        }
        for i, f in enumerate(fragments)
    ]
    usage = {"input_tokens": 5, "output_tokens": 9}
    events.append({"type": "response.completed", "response": {**response, "status": "completed", "usage": usage}})
    return framed(events)


RESPONSES_REQUEST = responses_door.parse_request(b'{"model":"m","input":"hi","stream":true}')
MESSAGES_REQUEST = messages_door.parse_request(
    b'{"model":"m","max_tokens":9,"stream":true,"messages":[{"role":"user","content":"hi"}]}'
)
DOORS: dict[str, Callable[[Shortcuts], StreamEncoder]] = {
    "chat": lambda shortcuts: ChatStreamEncoder(shortcuts=shortcuts),
    "responses": lambda shortcuts: responses_door.encoder(RESPONSES_REQUEST, created=1, shortcuts=shortcuts),
    "messages": lambda shortcuts: messages_door.encoder(MESSAGES_REQUEST, created=1, shortcuts=shortcuts),
}


def door_relay(reads: list[bytes], wire: str, door: str, shortcuts: Shortcuts = Shortcuts.ON) -> int:
    """``relay`` from a provider of ``wire`` to a client of ``door``, its encoder's shortcuts taken or not."""
    encoder = DOORS[door](shortcuts)
    reader = WIRES[wire].reader("bench", 1) if wire != "chat" else None
    translator = StreamTranslator(RewriteOptions(), "bench", raw_chunks=encoder.raw_chunks, wire=reader)
    sent = sum(len(encoder.encode(translator.feed(read))) for read in reads)
    assert translator.phase.name == "ENDED"
    return sent + len(encoder.encode(translator.end()))


def wire_us_per_chunk(fragments: list[str], samples: int) -> dict[tuple[str, str, Shortcuts], float]:
    """Best CPU µs per chunk of every door over every wire, the doors' encoders with their shortcuts and
    without, in samples taken in turn."""
    streams = {"chat": wire_events(fragments), "anthropic": anthropic_events(fragments)}
    streams["responses"] = responses_events(fragments)
    best: dict[tuple[str, str, Shortcuts], float] = {}
    for _ in range(samples):
        for shortcuts in (Shortcuts.ON, Shortcuts.OFF):
            for door in DOORS:
                for wire, reads in streams.items():
                    runs = max(1, SAMPLE_CHUNKS // len(reads))
                    start = time.process_time()
                    for _ in range(runs):
                        door_relay(reads, wire, door, shortcuts)
                    seconds = (time.process_time() - start) / (runs * len(reads))
                    cell = (door, wire, shortcuts)
                    best[cell] = min(best.get(cell, float("inf")), seconds * 1e6)
    return best


def print_wires(repeats: int, fragments: list[str], call: str) -> dict[str, float]:
    """The wires table for ``fragments`` of a send_message ``call``: every door over every wire against the
    chat-to-chat path, then the doors without their encoders' shortcuts."""
    for wire, reads in (("anthropic", anthropic_events(fragments)), ("responses", responses_events(fragments))):
        for door in DOORS:
            for shortcuts in (Shortcuts.CHECK, Shortcuts.OFF):
                assert door_relay(reads, wire, door, shortcuts) > len(fragments), (wire, door)
    wires = wire_us_per_chunk(fragments, repeats)
    base = wires["chat", "chat", Shortcuts.ON]
    print(f"wires: CPU µs per chunk, {call} in {FRAGMENT}-character fragments, best of {repeats}")
    print(
        f"{'door':>10} {'chat wire':>10} {'anthropic':>10} {'responses':>10} {'worst / chat-to-chat':>21}"
        f" {'no encoder shortcuts':>21}"
    )
    for door in DOORS:
        row = [wires[door, wire, Shortcuts.ON] for wire in ("chat", "anthropic", "responses")]
        general = max(wires[door, wire, Shortcuts.OFF] for wire in ("chat", "anthropic", "responses")) / base
        print(f"{door:>10} {row[0]:>10.2f} {row[1]:>10.2f} {row[2]:>10.2f} {max(row) / base:>20.2f}x {general:>20.2f}x")
    worst = max(us for (door, wire, shortcuts), us in wires.items() if shortcuts is Shortcuts.ON) / base
    print(f"wires: the costliest cell costs {worst:.2f}x the chat-to-chat path per chunk (target <= 1.2x)")
    return {f"{door}/{wire}/{shortcuts.name.lower()}": us for (door, wire, shortcuts), us in wires.items()}


def wires(repeats: int) -> dict[str, dict[str, float]]:
    """Both wires tables: the usual call (a sentence of inner thoughts, a 16 KB message), and one whose hidden
    inner thoughts are as long as its message (8 KB each), the chunks an agent route's client never sees."""
    message = message_of(SIZES["16 KB"])
    usual = print_wires(repeats, fragments_of(message), "a 16 KB send_message")
    print()
    half, thoughts = message[: len(message) // 2], message_of(len(message) // 2 + 1)[: len(message) // 2]
    hidden = print_wires(repeats, fragments_of(half, thoughts), "an 8 KB message after 8 KB of inner thoughts")
    return {"usual": usual, "hidden thoughts": hidden}


def cpu_us_per_chunk(cases: dict[str, tuple[list[bytes], RewriteOptions]], samples: int) -> dict[str, float]:
    """Best CPU time per chunk of each case through ``relay``, over samples taken in turn, after a warm-up."""
    best = dict.fromkeys(cases, float("inf"))
    for reads, options in cases.values():
        relay(reads, options)
    for _ in range(samples):
        for name, (reads, options) in cases.items():
            streams = max(1, SAMPLE_CHUNKS // len(reads))
            start = time.process_time()
            for _ in range(streams):
                relay(reads, options)
            best[name] = min(best[name], (time.process_time() - start) / (streams * len(reads)))
    return {name: seconds * 1e6 for name, seconds in best.items()}


def _verdict(correct: bool | None) -> str:
    return "-" if correct is None else "exact" if correct else "WRONG"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--baseline-max-kb", type=int, default=16, help="skip the quadratic baseline above this size")
    parser.add_argument("--wires-only", action="store_true", help="only the wires table")
    options = parser.parse_args()
    if options.wires_only:
        print(json.dumps({"bench": "core", "fragment_chars": FRAGMENT, "wires": wires(options.repeats)}))
        return

    rows = []
    # size, chunks, CPU µs per chunk: think tags hidden, exposed, and the answer alone as content
    think_rows: list[tuple[str, int, float, float, float]] = []
    for label, size in SIZES.items():
        message = message_of(size)
        fragments = fragments_of(message)
        assert parse_incremental(fragments) == message
        assert relay(wire_events(fragments), RewriteOptions()) > len(message)
        chars = sum(map(len, fragments))
        parse_seconds = best_of(options.repeats, lambda fragments=fragments: parse_incremental(fragments))
        reads = wire_events(fragments)
        agent_seconds = best_of(options.repeats, lambda reads=reads: relay(reads, RewriteOptions()))
        plain_reads = content_events(message)
        plain_seconds = best_of(options.repeats, lambda reads=plain_reads: relay(reads, RewriteOptions.plain()))
        content_seconds = best_of(options.repeats, lambda reads=plain_reads: relay(reads, RewriteOptions()))
        reasoning = message_of(size + 1)[:size]
        think_reads = think_events(reasoning, message)
        exposing = RewriteOptions(reasoning=Reasoning.EXPOSE)
        assert client_text(think_reads, RewriteOptions()) == (message, "")
        assert client_text(think_reads, exposing) == (message, f"\n{reasoning}\n")
        cases = {
            "think": (think_reads, RewriteOptions()),
            "exposed": (think_reads, exposing),
            "content": (plain_reads, RewriteOptions()),
        }
        cpu = cpu_us_per_chunk(cases, options.repeats)
        think_rows.append((label, len(think_reads), cpu["think"], cpu["exposed"], cpu["content"]))
        row = {
            "size": label,
            "fragments": len(fragments),
            "parser_chars_per_s": chars / parse_seconds,
            "parser_us_per_fragment": parse_seconds / len(fragments) * 1e6,
            "agent_us_per_chunk": agent_seconds / len(reads) * 1e6,
            "content_us_per_chunk": content_seconds / len(plain_reads) * 1e6,
            "plain_us_per_chunk": plain_seconds / len(plain_reads) * 1e6,
            "think_chunks": think_rows[-1][1],
            "think_us_per_chunk": think_rows[-1][2],
            "think_exposed_us_per_chunk": think_rows[-1][3],
            "baseline_us_per_fragment": None,
            "speedup_vs_baseline": None,
            "baseline_correct": None,
        }
        if size <= options.baseline_max_kb * 1024:
            row["baseline_correct"] = parse_baseline(fragments) == message
            baseline_seconds = best_of(1, lambda fragments=fragments: parse_baseline(fragments), min_seconds=0)
            row["baseline_us_per_fragment"] = baseline_seconds / len(fragments) * 1e6
            row["speedup_vs_baseline"] = baseline_seconds / parse_seconds
        rows.append(row)

    print(
        f"{'message':>8} {'fragments':>9} {'parser chars/s':>15} {'parser µs/frag':>15} {'agent µs/chunk':>15}"
        f" {'content µs/chunk':>17} {'plain µs/chunk':>15} {'baseline µs/frag':>17}"
        f" {'speedup':>8} {'baseline output':>16}"
    )
    for row in rows:
        baseline = f"{row['baseline_us_per_fragment']:.1f}" if row["baseline_us_per_fragment"] else "skipped"
        speedup = f"{row['speedup_vs_baseline']:.0f}x" if row["speedup_vs_baseline"] else "-"
        print(
            f"{row['size']:>8} {row['fragments']:>9} {row['parser_chars_per_s']:>15,.0f}"
            f" {row['parser_us_per_fragment']:>15.2f} {row['agent_us_per_chunk']:>15.2f}"
            f" {row['content_us_per_chunk']:>17.2f} {row['plain_us_per_chunk']:>15.2f} {baseline:>17} {speedup:>8}"
            f" {_verdict(row['baseline_correct']):>16}"
        )
    print()
    print(f"think tags: CPU time per chunk, {SAMPLE_CHUNKS} chunks per sample, best of {options.repeats} samples")
    print(
        f"{'size':>8} {'think chunks':>12} {'think µs/chunk':>15} {'exposed µs/chunk':>17} {'content µs/chunk':>17}"
        f" {'think/content':>14} {'exposed/content':>16}"
    )
    for label, chunks, think, exposed, content in think_rows:
        print(
            f"{label:>8} {chunks:>12} {think:>15.2f} {exposed:>17.2f} {content:>17.2f}"
            f" {think / content:>13.2f}x {exposed / content:>15.2f}x"
        )
    small, large = rows[0], rows[-1]
    ratio = large["agent_us_per_chunk"] / small["agent_us_per_chunk"]
    print(f"linearity: agent cost per chunk at {large['size']} / at {small['size']} = {ratio:.2f}x (target <= 1.3x)")
    ratio = think_rows[-1][2] / think_rows[0][2]
    print(f"linearity: think cost per chunk at {large['size']} / at {small['size']} = {ratio:.2f}x (target: flat)")
    worst = max(think / content for _, _, think, _, content in think_rows)
    print(f"think tags: hidden reasoning costs at most {worst:.2f}x plain content per chunk (target <= 1.2x)")
    print()
    table = wires(options.repeats)
    print(json.dumps({"bench": "core", "fragment_chars": FRAGMENT, "rows": rows, "wires": table}))


if __name__ == "__main__":
    main()
