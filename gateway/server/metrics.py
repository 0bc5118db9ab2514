"""Prometheus metrics: what the gateway does, without any content, with low-cardinality labels.

Labels are route names, provider names, client key names (from the config,
never the keys themselves) and small fixed vocabularies, never request ids or
model names a client made up. With ``--workers N`` the
CLI sets ``PROMETHEUS_MULTIPROC_DIR`` before the workers start, and a scrape
of any worker adds up all of them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
    multiprocess,
)

from gateway.core.rewriter import RewriteStats
from gateway.core.usage import TokenUsage

__all__ = ["Metrics", "RequestRecord"]

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
_OVERHEAD_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1)

# A `*_created` series per labelled child doubles what a scrape carries and says only when a
# worker first saw that label set; rate() and increase() do not need it.
disable_created_metrics()  # type: ignore[no-untyped-call]  # prometheus-client leaves it unannotated


def multiprocess_mode() -> bool:
    return "PROMETHEUS_MULTIPROC_DIR" in os.environ


@dataclass(slots=True)
class RequestRecord:
    """What one request did, filled in along the way and reported once at its end."""

    request_id: str
    started: float
    # The model the client named (a route's name, or a name a glob route serves); ``route`` is the route that served.
    model: str | None = None
    route: str | None = None
    provider: str | None = None
    upstream_model: str | None = None
    stream: bool = False
    reasoning_exposed: bool = False
    upstream_seconds: float = 0.0
    retries: int = 0
    fallbacks: int = 0
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    # The client key's name (never the key), when the config names keys.
    key: str | None = None
    # Tokens charged to the key's limits by estimate: an answer that ended without usage.
    estimated_tokens: int | None = None
    error_kind: str | None = None
    disconnected: bool = False
    rewrite: RewriteStats = field(default_factory=RewriteStats)
    # The answer as it went out: its status, when its first body byte left (seconds after the start), and
    # whether its last one did.
    status: int = 0
    first_byte: float | None = None
    complete: bool = False

    def usage(self, usage: TokenUsage | None) -> None:
        """Take the token counts of the answer's usage, when it reported one."""
        if usage is not None:
            self.prompt_tokens, self.completion_tokens = usage.prompt, usage.completion


class Metrics:
    def __init__(self) -> None:
        self.registry = registry = CollectorRegistry(auto_describe=True)
        route_stream = ["route", "stream"]
        self.requests = Counter(
            "gateway_requests",
            "Requests answered, by route, status and streaming.",
            ["route", "status", "stream"],
            registry=registry,
        )
        self.duration = Histogram(
            "gateway_request_duration_seconds",
            "Total time per request.",
            route_stream,
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.first_byte = Histogram(
            "gateway_time_to_first_byte_seconds",
            "Time until the first body byte was sent.",
            route_stream,
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.overhead = Histogram(
            "gateway_overhead_seconds",
            "The gateway's own time per request: total minus time waiting on the upstream.",
            route_stream,
            buckets=_OVERHEAD_BUCKETS,
            registry=registry,
        )
        self.upstream_errors = Counter(
            "gateway_upstream_errors",
            "Upstream failures, by provider and kind (connect, timeout, status, mid_stream).",
            ["provider", "kind"],
            registry=registry,
        )
        self.retries = Counter(
            "gateway_retries", "Attempts repeated after a retryable failure.", ["route"], registry=registry
        )
        self.fallbacks = Counter(
            "gateway_fallbacks", "Requests handed to a fallback route.", ["route", "fallback"], registry=registry
        )
        self.in_flight = Gauge(
            "gateway_in_flight_requests", "Requests being handled.", registry=registry, multiprocess_mode="livesum"
        )
        self.streams = Gauge(
            "gateway_in_flight_streams", "Streams being relayed.", registry=registry, multiprocess_mode="livesum"
        )
        self.disconnects = Counter(
            "gateway_client_disconnects",
            "Clients that went away before their answer was complete.",
            ["route"],
            registry=registry,
        )
        self.tokens = Counter(
            "gateway_tokens",
            "Tokens reported by the upstream usage, by route and kind (prompt, completion).",
            ["route", "kind"],
            registry=registry,
        )
        self.message_calls = Counter(
            "gateway_rewrite_message_calls", "Message-tool calls turned into content.", ["route"], registry=registry
        )
        self.client_calls = Counter(
            "gateway_rewrite_client_calls", "Client tool calls passed through.", ["route"], registry=registry
        )
        self.reasoning_chars = Counter(
            "gateway_rewrite_reasoning_chars",
            "Characters of model reasoning, by what happened to them (hidden, exposed).",
            ["route", "action"],
            registry=registry,
        )
        self.invalid_arguments = Counter(
            "gateway_rewrite_invalid_arguments",
            "Tool calls whose arguments were not a valid JSON object.",
            ["route"],
            registry=registry,
        )
        self.key_requests = Counter(
            "gateway_key_requests", "Requests by client key name and status.", ["key", "status"], registry=registry
        )
        self.key_tokens = Counter(
            "gateway_key_tokens",
            "Tokens by client key name and kind (prompt, completion: from the upstream usage; estimated: charged"
            " without usage).",
            ["key", "kind"],
            registry=registry,
        )
        self.key_rejections = Counter(
            "gateway_key_rejections",
            "Requests refused by a client key's limits, by key name and limit (requests, tokens, budget, concurrency).",
            ["key", "limit"],
            registry=registry,
        )
        self.state_failures = Counter(
            "gateway_state_failures",
            "Round trips to the shared state that failed or timed out, by operation.",
            ["operation"],
            registry=registry,
        )
        # Labelled children, found once: prometheus-client's labels() validates and locks on every call.
        self._children: dict[tuple[object, tuple[str, ...]], Any] = {}

    def _child(self, metric: Counter | Histogram, *labels: str) -> Any:
        key = (metric, labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def observe(self, record: RequestRecord, status: int, duration: float, first_byte: float | None) -> None:
        route = record.route or "none"
        stream = "true" if record.stream else "false"
        child = self._child
        child(self.requests, route, str(status), stream).inc()
        child(self.duration, route, stream).observe(duration)
        if first_byte is not None:
            child(self.first_byte, route, stream).observe(first_byte)
        child(self.overhead, route, stream).observe(max(0.0, duration - record.upstream_seconds))
        if record.disconnected:
            child(self.disconnects, route).inc()
        if record.error_kind == "mid_stream" and record.provider:
            child(self.upstream_errors, record.provider, "mid_stream").inc()
        if record.prompt_tokens:
            child(self.tokens, route, "prompt").inc(record.prompt_tokens)
        if record.completion_tokens:
            child(self.tokens, route, "completion").inc(record.completion_tokens)
        if record.key is not None:
            self._observe_key(record, record.key, status)
        stats = record.rewrite
        if stats.message_calls:
            child(self.message_calls, route).inc(stats.message_calls)
        if stats.client_calls:
            child(self.client_calls, route).inc(stats.client_calls)
        if stats.reasoning_chars:
            action = "exposed" if record.reasoning_exposed else "hidden"
            child(self.reasoning_chars, route, action).inc(stats.reasoning_chars)
        if stats.invalid_arguments:
            child(self.invalid_arguments, route).inc(stats.invalid_arguments)

    def _observe_key(self, record: RequestRecord, key: str, status: int) -> None:
        child = self._child
        child(self.key_requests, key, str(status)).inc()
        for kind, tokens in (
            ("prompt", record.prompt_tokens),
            ("completion", record.completion_tokens),
            ("estimated", record.estimated_tokens),
        ):
            if tokens:
                child(self.key_tokens, key, kind).inc(tokens)

    def render(self) -> tuple[bytes, str]:
        """The scrape body: this process's metrics, or every worker's in multiprocess mode."""
        if multiprocess_mode():
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            return generate_latest(registry), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
