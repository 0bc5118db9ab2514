"""Benchmark of the think-tag filter: cost per feed with a think block and on plain answers, across sizes.

Run by hand: ``python bench/bench_think.py``. Compare ratios within one run;
the machine is shared and absolute figures drift.

Each size is the length of the reasoning block and of the answer, fed in
4-character pieces: ``think`` is ``<think>`` + reasoning + ``</think>`` + answer,
``block`` the think block alone (never closed), ``worst`` that block with a
``<`` in every feed (each one may begin ``</think>``), ``plain`` the answer alone.
``floor`` runs the plain answer through a stand-in with the filter's interface
that does nothing but wrap each feed, so it shows what the loop, the list of
feeds and the collected output cost by themselves. Every timed sample holds
the same number of feeds at every size (a small text is run many times), so
the sizes are compared like for like; a flat cost per feed across sizes shows
the filter does not re-scan what it has seen.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_core import FRAGMENT, SIZES, message_of
from gateway.core.think import Piece, ThinkFilter, Visible

SAMPLE_FEEDS = 1 << 16
"""Feeds per timed sample, at every size."""


class _Floor:
    """The filter's interface with no filtering: every feed is visible as it is."""

    def feed(self, text: str) -> list[Piece]:
        return [Visible(text)]

    def close(self) -> list[Piece]:
        return []


def feeds_of(text: str) -> list[str]:
    return [text[i : i + FRAGMENT] for i in range(0, len(text), FRAGMENT)]


def run(feeds: list[str], filtering: bool = True) -> tuple[str, str]:
    """Every feed through one filter, as a caller would; returns the visible text and the reasoning."""
    think: ThinkFilter | _Floor = ThinkFilter() if filtering else _Floor()
    visible: list[str] = []
    thoughts: list[str] = []
    for feed in feeds:
        for piece in think.feed(feed):
            (visible if isinstance(piece, Visible) else thoughts).append(piece.text)
    for piece in think.close():
        (visible if isinstance(piece, Visible) else thoughts).append(piece.text)
    return "".join(visible), "".join(thoughts)


def us_per_feed(feeds: list[str], filtering: bool, samples: int) -> float:
    """Best CPU time per feed over ``samples`` samples of about ``SAMPLE_FEEDS`` feeds each, after a warm-up.

    CPU time of this process, not wall time: on a shared machine the wall clock also counts other processes' turns.
    """
    streams = max(1, SAMPLE_FEEDS // len(feeds))
    run(feeds, filtering)
    best = float("inf")
    for _ in range(samples):
        start = time.process_time()
        for _ in range(streams):
            run(feeds, filtering)
        best = min(best, time.process_time() - start)
    return best / (streams * len(feeds)) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=7)
    options = parser.parse_args()

    rows: list[tuple[str, dict[str, float]]] = []
    for label, size in SIZES.items():
        answer = message_of(size)
        reasoning = message_of(size + 1)[:size]
        angled = "".join(f"<{reasoning[i + 1 : i + FRAGMENT]}" for i in range(0, size, FRAGMENT))
        cases = {
            "think": (feeds_of(f"<think>\n{reasoning}\n</think>\n\n{answer}"), True, (answer, f"\n{reasoning}\n")),
            "block": (feeds_of(f"<think>\n{reasoning}"), True, ("", f"\n{reasoning}")),
            "worst": (feeds_of(f"<think>\n{angled}"), True, ("", f"\n{angled}")),
            "plain": (feeds_of(answer), True, (answer, "")),
            "floor": (feeds_of(answer), False, (answer, "")),
        }
        row: dict[str, float] = {}
        for name, (feeds, filtering, expected) in cases.items():
            assert run(feeds, filtering) == expected
            row[f"{name}_feeds"] = len(feeds)
            row[f"{name}_us_per_feed"] = us_per_feed(feeds, filtering, options.samples)
        rows.append((label, row))

    print(f"{FRAGMENT}-character feeds, {SAMPLE_FEEDS} feeds per sample, best of {options.samples} samples")
    print(
        f"{'size':>7} {'think feeds':>11} {'think µs/feed':>14} {'block µs/feed':>14} {'worst µs/feed':>14}"
        f" {'plain µs/feed':>14}"
        f" {'floor µs/feed':>14} {'think/plain':>12}"
    )
    for label, row in rows:
        print(
            f"{label:>7} {row['think_feeds']:>11.0f} {row['think_us_per_feed']:>14.3f}"
            f" {row['block_us_per_feed']:>14.3f} {row['worst_us_per_feed']:>14.3f}"
            f" {row['plain_us_per_feed']:>14.3f} {row['floor_us_per_feed']:>14.3f}"
            f" {row['think_us_per_feed'] / row['plain_us_per_feed']:>11.2f}x"
        )
    (small_label, small), (large_label, large) = rows[0], rows[-1]
    for name in ("think", "block", "worst", "plain", "floor"):
        ratio = large[f"{name}_us_per_feed"] / small[f"{name}_us_per_feed"]
        print(f"flatness: {name} cost per feed at {large_label} / at {small_label} = {ratio:.2f}x")
    print(
        json.dumps({"bench": "think", "feed_chars": FRAGMENT, "rows": [{"size": label, **row} for label, row in rows]})
    )


if __name__ == "__main__":
    main()
