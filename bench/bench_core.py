"""Benchmark of the rewrite core: parser throughput, rewriter cost per chunk, and a re-parse baseline.

Run by hand: ``python bench/bench_core.py``. Compare ratios within one run;
the machine is shared and absolute figures drift.

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

from gateway.core.arguments import ArgumentsParser  # noqa: E402
from gateway.core.fragments import FragmentRecogniser  # noqa: E402
from gateway.core.rewriter import StreamRewriter  # noqa: E402

FRAGMENT = 4
SIZES = {"1 KB": 1024, "16 KB": 16 * 1024, "256 KB": 256 * 1024}


def message_of(size: int) -> str:
    """Prose with the escapes real models write: quotes, newlines, non-ASCII."""
    rng = random.Random(size)
    words = [*("".join(rng.choices(string.ascii_lowercase, k=rng.randint(2, 9))) for _ in range(200)), '"quoted"', "line\nbreak", "café", "😀"]
    out: list[str] = []
    length = 0
    while length < size:
        word = rng.choice(words)
        out.append(word)
        length += len(word) + 1
    return " ".join(out)[:size]


def fragments_of(message: str) -> list[str]:
    document = json.dumps({"inner_thoughts": "Let me answer the question carefully.", "message": message})
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
        for _, text in parser.feed(fragment):
            out.append(text)
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


def wire_chunks(fragments: list[str]) -> list[bytes]:
    """The upstream stream as encoded SSE payloads, one fragment per chunk."""
    head = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 1, "model": "bench"}
    first = {**head, "choices": [{"index": 0, "delta": {"role": "assistant", "content": None, "tool_calls": [
        {"index": 0, "id": "call_1", "type": "function", "function": {"name": "send_message", "arguments": ""}}]}, "finish_reason": None}]}
    body = [orjson.dumps(first)]
    for fragment in fragments:
        body.append(orjson.dumps({**head, "choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": fragment}}]}, "finish_reason": None}]}))
    body.append(orjson.dumps({**head, "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]}))
    return body


def rewrite_stream(payloads: list[bytes]) -> int:
    """Every chunk decoded, fed to the rewriter, and what it sends encoded; returns the bytes sent."""
    rewriter = StreamRewriter()
    sent = 0
    for payload in payloads:
        chunk = orjson.loads(payload)
        for out in rewriter.feed(chunk):
            sent += len(payload if out is chunk else orjson.dumps(out))
    for out in rewriter.finish():
        sent += len(orjson.dumps(out))
    return sent


def rewrite_recognised(payloads: list[bytes]) -> int:
    """``rewrite_stream`` the relay's way: fragment chunks are recognised by their bytes, not decoded."""
    rewriter = StreamRewriter()
    fragments = FragmentRecogniser(rewriter)
    sent = 0
    for payload in payloads:
        recognised = fragments.recognise(payload)
        if recognised is None:
            chunk = orjson.loads(payload)
            for out in rewriter.feed(chunk):
                sent += len(payload if out is chunk else orjson.dumps(out))
            fragments.learn(payload, chunk)
        else:
            sent += sum(map(len, recognised))
    for out in rewriter.finish():
        sent += len(orjson.dumps(out))
    return sent


def _verdict(correct: bool | None) -> str:
    return "-" if correct is None else "exact" if correct else "WRONG"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--baseline-max-kb", type=int, default=16, help="skip the quadratic baseline above this size")
    options = parser.parse_args()

    rows = []
    for label, size in SIZES.items():
        message = message_of(size)
        fragments = fragments_of(message)
        assert parse_incremental(fragments) == message
        chars = sum(map(len, fragments))
        parse_seconds = best_of(options.repeats, lambda: parse_incremental(fragments))
        payloads = wire_chunks(fragments)
        rewrite_seconds = best_of(options.repeats, lambda: rewrite_stream(payloads))
        assert rewrite_recognised(payloads) == rewrite_stream(payloads)
        recognised_seconds = best_of(options.repeats, lambda: rewrite_recognised(payloads))
        row = {
            "size": label,
            "fragments": len(fragments),
            "parser_chars_per_s": chars / parse_seconds,
            "parser_us_per_fragment": parse_seconds / len(fragments) * 1e6,
            "rewriter_us_per_chunk": rewrite_seconds / len(payloads) * 1e6,
            "recognised_us_per_chunk": recognised_seconds / len(payloads) * 1e6,
            "baseline_us_per_fragment": None,
            "speedup_vs_baseline": None,
            "baseline_correct": None,
        }
        if size <= options.baseline_max_kb * 1024:
            row["baseline_correct"] = parse_baseline(fragments) == message
            baseline_seconds = best_of(1, lambda: parse_baseline(fragments), min_seconds=0)
            row["baseline_us_per_fragment"] = baseline_seconds / len(fragments) * 1e6
            row["speedup_vs_baseline"] = baseline_seconds / parse_seconds
        rows.append(row)

    print(f"{'message':>8} {'fragments':>9} {'parser chars/s':>15} {'parser µs/frag':>15} {'rewriter µs/chunk':>18} {'recognised µs/chunk':>20} {'baseline µs/frag':>17} {'speedup':>8} {'baseline output':>16}")
    for row in rows:
        baseline = f"{row['baseline_us_per_fragment']:.1f}" if row["baseline_us_per_fragment"] else "skipped"
        speedup = f"{row['speedup_vs_baseline']:.0f}x" if row["speedup_vs_baseline"] else "-"
        print(
            f"{row['size']:>8} {row['fragments']:>9} {row['parser_chars_per_s']:>15,.0f} {row['parser_us_per_fragment']:>15.2f}"
            f" {row['rewriter_us_per_chunk']:>18.2f} {row['recognised_us_per_chunk']:>20.2f} {baseline:>17} {speedup:>8} {_verdict(row['baseline_correct']):>16}"
        )
    small, large = rows[0], rows[-1]
    print(f"linearity: rewriter cost per chunk at {large['size']} / at {small['size']} = {large['rewriter_us_per_chunk'] / small['rewriter_us_per_chunk']:.2f}x (target <= 1.3x)")
    print(json.dumps({"bench": "core", "fragment_chars": FRAGMENT, "rows": rows}))


if __name__ == "__main__":
    main()
