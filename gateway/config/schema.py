"""The config's schema: what a YAML config may say, strictly, and the defaults of what it leaves out.

Unknown keys are typos, so every model forbids them; a loaded config never
changes under a running server, so every model is frozen. Checks across
fields (a route naming a provider that does not exist, a key's glob that
matches no route) are in ``gateway.config.checks``, run on the raw data with
every other problem.
"""

from __future__ import annotations

import dataclasses
import re
from fnmatch import fnmatchcase
from typing import Annotated, Any, Final, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from gateway.config.checks import SHA256_HEX, cross_problems, glob_problem, key_digest, path
from gateway.core.forwarding import (
    DEFAULT_ANTHROPIC_FORWARD_HEADERS,
    DEFAULT_FORWARD,
    DEFAULT_FORWARD_HEADERS,
    forwardable_header,
    parse_pattern,
)
from gateway.core.options import Reasoning, RewriteOptions, Thoughts
from gateway.core.think import DEFAULT_TAGS, ThinkFilter
from gateway.state.base import Budget

__all__ = [
    "CHECKED",
    "DEMO_BASE_URL",
    "Config",
    "KeyConfig",
    "ModelRoute",
    "OtelConfig",
    "ProviderConfig",
    "ResponsesConfig",
    "RewriteConfig",
    "ServerConfig",
    "TimeoutOverrides",
    "Timeouts",
    "key_digest",
]

# Where a demo provider's requests are addressed; its transport answers them, so nothing is sent.
DEMO_BASE_URL: Final = "http://demo.invalid/v1"

NonEmptyStr = Annotated[str, Field(min_length=1)]
# The validation context of a loaded file, whose checks across fields were made on its raw data beforehand.
CHECKED: Final[dict[str, bool]] = {"cross_checked": True}


class _Strict(BaseModel):
    """Unknown keys are typos, and a loaded config never changes under a running server."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class OtelConfig(_Strict):
    """Where traces go (``server.otel``); what it leaves out, the standard ``OTEL_*`` variables say."""

    # The collector's OTLP/HTTP base URL, like OTEL_EXPORTER_OTLP_ENDPOINT: spans go to <endpoint>/v1/traces.
    endpoint: NonEmptyStr | None = None
    service_name: NonEmptyStr | None = None
    # The share of new traces recorded; a continued trace follows its caller's choice.
    sample_ratio: float | None = Field(default=None, ge=0, le=1)


class ServerConfig(_Strict):
    """Where the gateway listens and who may call it."""

    host: NonEmptyStr = "127.0.0.1"
    port: int = Field(default=8080, ge=1, le=65535)
    # Plain strings for cheap comparison, but kept out of reprs all the same.
    api_keys: tuple[NonEmptyStr, ...] = Field(default=(), repr=False)
    max_body_bytes: int = Field(default=10 * 1024 * 1024, gt=0)
    # Slow clients: a request's head must arrive within header_timeout seconds (from the connection, or a
    # later request's first byte), its body within body_timeout seconds of the head; else 408 and close.
    header_timeout: float = Field(default=10, gt=0)
    body_timeout: float = Field(default=60, gt=0)
    # Open client connections per worker process; a connection beyond it gets 503 and is closed.
    max_connections: int = Field(default=2048, gt=0)
    # One line per request on stderr: a JSON object, or key=value text.
    log_format: Literal["json", "text"] = "json"
    # With --log-level debug, also log request messages. Off by default: content stays out of logs.
    log_content: bool = False
    # OpenTelemetry traces: off unless this or the OTEL_* variables name a collector (gateway.server.tracing).
    otel: OtelConfig | None = None
    # The operators' keys: the console at / and its JSON endpoints (gateway.server.console); not client keys.
    admin_keys: tuple[NonEmptyStr, ...] = Field(default=(), repr=False)
    # Bounded memory per stream: one upstream event, or one tool call's arguments, beyond these ends the stream.
    max_event_bytes: int = Field(default=4 * 1024 * 1024, gt=0)
    max_arguments_chars: int = Field(default=4 * 1024 * 1024, gt=0)
    # On SIGTERM, /readyz and new requests answer 503 for this long before the listener closes.
    drain_delay: float = Field(default=5, ge=0)
    # Once the listener closes, in-flight streams may run this long before they are ended with an error event.
    shutdown_grace: float = Field(default=30, ge=0)
    # Retries: exponential backoff from `retry_backoff` seconds, capped at `retry_backoff_max`, with jitter;
    # an upstream Retry-After is honoured up to `retry_after_max`.
    retry_backoff: float = Field(default=0.25, ge=0)
    retry_backoff_max: float = Field(default=8, ge=0)
    retry_after_max: float = Field(default=30, ge=0)
    # Where limits, budgets and deployment cool-downs live: "memory" (this process) or a redis:// or
    # rediss:// URL shared by every worker and replica. Held out of reprs: the URL may carry a password.
    state: NonEmptyStr = Field(default="memory", repr=False)
    # The Redis password, when it is not in the URL: any characters, nothing to encode (from the environment).
    state_password: SecretStr | None = None
    # When the shared state cannot be reached within `state_timeout` seconds: serve anyway, or answer 503.
    state_failure: Literal["open", "closed"] = "open"
    state_timeout: float = Field(default=0.05, gt=0)
    # Connections to the shared state per worker, opened at start; a round trip waits up to
    # `state_queue_timeout` seconds for one of them (connecting one counts there, not in state_timeout).
    state_pool_size: int = Field(default=16, gt=0, le=1024)
    state_queue_timeout: float = Field(default=1.0, gt=0)
    # A key's concurrency slot is a lease, renewed while its request runs: one left by a worker that died
    # comes back this many seconds after its last renewal.
    slot_lease: float = Field(default=30, ge=1)
    # What seals the reasoning handed to stateless Responses clients (encrypted_content), shared by every
    # replica; GATEWAY_SECRET in the environment when unset. `previous_secrets` still open, never seal.
    secret: SecretStr | None = None
    previous_secrets: tuple[SecretStr, ...] = ()

    @field_validator("secret", mode="before")
    @classmethod
    def _empty_secret_is_none(cls, value: Any) -> Any:
        # `${GATEWAY_SECRET:-}` unset means "no secret here", not an empty one.
        return None if value == "" else value

    @field_validator("secret", "previous_secrets")
    @classmethod
    def _long_secret(cls, value: Any) -> Any:
        for secret in value if isinstance(value, tuple) else (value,):
            if secret is not None and len(secret.get_secret_value()) < MIN_SECRET_CHARS:
                raise ValueError(f"expected at least {MIN_SECRET_CHARS} characters (such as `openssl rand -hex 32`)")
        return value

    @field_validator("state")
    @classmethod
    def _state_url(cls, value: str) -> str:
        if value == "memory":
            return value
        expected = "expected 'memory' or a redis:// or rediss:// URL such as redis://host:6379/0"
        # A password holding one of these breaks the URL apart somewhere else than its author meant.
        userinfo = value.partition("://")[2].rpartition("@")[0]
        hint = (
            "; a password with '@', '/', '?' or '#' in it must be percent-encoded (%40, %2F, %3F, %23), or given"
            " as server.state_password"
            if any(char in userinfo for char in "/@?#")
            else ""
        )
        try:
            parts = urlsplit(value)
            parts.port  # noqa: B018 - a port that is not a number raises here
        except ValueError:
            raise ValueError(expected + hint) from None
        if parts.scheme not in ("redis", "rediss") or not parts.hostname:
            raise ValueError(expected + hint)
        database = parts.path.removeprefix("/")
        if database and not database.isdigit():
            raise ValueError("expected a database number after the host, as in redis://host:6379/0" + hint)
        return value


_KEY_NAME: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


_DURATION: Final = re.compile(r"(?:(\d+(?:\.\d+)?)([smhdw]))+")
_DURATION_PART: Final = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")
_UNIT_SECONDS: Final = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
# The least a sealing secret may hold: a short one could be guessed offline from any sealed blob.
MIN_SECRET_CHARS: Final = 16


def seconds_of(value: Any) -> Any:
    """A duration as seconds: a number already is; ``30d``, ``12h``, ``1h30m``, ``45s`` are read."""
    if isinstance(value, str) and _DURATION.fullmatch(value.strip()):
        return sum(float(n) * _UNIT_SECONDS[unit] for n, unit in _DURATION_PART.findall(value.strip()))
    return value


class ResponsesConfig(_Strict):
    """Stored responses of the Responses door: how long they are kept and how much one may take."""

    # Seconds, or a duration such as 30d, 12h, 90m; also the lifetime of sealed reasoning (encrypted_content).
    store_ttl: float = Field(default=30 * 86400, ge=1)
    # A response whose stored record (input and output items) is larger is answered but not stored.
    max_stored_bytes: int = Field(default=1024 * 1024, gt=0)
    # What one client key may hold in all; storing more forgets that key's responses closest to expiry first.
    max_bytes_per_key: int = Field(default=64 * 1024 * 1024, gt=0)

    @field_validator("store_ttl", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> Any:
        if isinstance(value, str) and seconds_of(value) is value:
            raise ValueError("expected seconds, or a duration such as 30d, 12h, 90m or 45s")
        return seconds_of(value)

    @model_validator(mode="after")
    def _one_fits(self) -> ResponsesConfig:
        if self.max_stored_bytes > self.max_bytes_per_key:
            raise ValueError("max_stored_bytes must not exceed max_bytes_per_key")
        return self


class KeyConfig(_Strict):
    """One application's key: which routes it may use and the limits it is held to."""

    # Shown in logs, metrics and state keys in place of the secret, so its alphabet is small.
    name: str
    key: SecretStr | None = None
    # The key's SHA-256 as hex, so the config need not hold the secret itself.
    key_sha256: str | None = Field(default=None, repr=False)
    # Globs (fnmatch, case-sensitive) over route names.
    models: tuple[NonEmptyStr, ...] = Field(default=("*",), min_length=1)
    rpm: int | None = Field(default=None, gt=0)
    tpm: int | None = Field(default=None, gt=0)
    max_concurrency: int | None = Field(default=None, gt=0)
    budget: Budget | None = None  # the state's own type: tokens above 0 and a period, validated as it says

    @field_validator("name")
    @classmethod
    def _short_name(cls, value: str) -> str:
        if not _KEY_NAME.fullmatch(value):
            raise ValueError("expected up to 64 letters, digits, '.', '_' or '-', starting with a letter or digit")
        return value

    @field_validator("key_sha256")
    @classmethod
    def _hex_digest(cls, value: str) -> str:
        if not SHA256_HEX.fullmatch(value):
            raise ValueError("expected 64 hexadecimal digits (the output of `sha256sum`)")
        return value.lower()

    @field_validator("models")
    @classmethod
    def _valid_globs(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for glob in value:
            if problem := glob_problem(glob):
                raise ValueError(f"{glob!r}: {problem}")
        return value

    @model_validator(mode="after")
    def _one_secret(self) -> KeyConfig:
        if (self.key is None) == (self.key_sha256 is None):
            raise ValueError("expected exactly one of key and key_sha256")
        if self.key is not None and not self.key.get_secret_value():
            raise ValueError("key: expected a non-empty string")
        return self

    @property
    def digest(self) -> bytes:
        """The key's SHA-256, which is all the gateway keeps of it."""
        if self.key is not None:
            return key_digest(self.key.get_secret_value())
        assert self.key_sha256 is not None  # _one_secret
        return bytes.fromhex(self.key_sha256)

    @property
    def limited(self) -> bool:
        return any(limit is not None for limit in (self.rpm, self.tpm, self.max_concurrency, self.budget))


class Timeouts(_Strict):
    """Upstream timeouts in seconds; long by default because agent turns can think for minutes."""

    connect: float = Field(default=10, gt=0)
    read: float = Field(default=600, gt=0)  # longest wait for any bytes
    first_byte: float = Field(default=600, gt=0)  # until the response headers
    idle: float = Field(default=600, gt=0)  # longest gap between two stream events
    total: float | None = Field(default=None, gt=0)  # the whole exchange; null = no limit


class TimeoutOverrides(_Strict):
    """A route's changes to its providers' timeouts; fields left out keep the provider's value."""

    connect: float | None = Field(default=None, gt=0)
    read: float | None = Field(default=None, gt=0)
    first_byte: float | None = Field(default=None, gt=0)
    idle: float | None = Field(default=None, gt=0)
    total: float | None = Field(default=None, gt=0)

    def apply(self, timeouts: Timeouts) -> Timeouts:
        return timeouts.model_copy(update=self.model_dump(exclude_none=True))


class ProviderConfig(_Strict):
    """One upstream: a server speaking one of the APIs the gateway reads (``api``), or the built-in demo."""

    # The wire the provider speaks. chat: chat completions at {base_url}/chat/completions. responses: OpenAI's
    # Responses API at {base_url}/responses (always store: false). anthropic: Anthropic's Messages API at
    # {base_url}/messages (x-api-key, anthropic-version). demo: the built-in, offline demo model (no base_url).
    api: Literal["chat", "responses", "anthropic", "demo"] = "chat"
    base_url: str = DEMO_BASE_URL
    api_key: SecretStr | None = None
    headers: dict[str, str] = {}
    timeout: Timeouts = Timeouts()
    # Concurrent upstream requests; beyond it requests wait up to `queue_timeout` seconds, then get 503.
    max_concurrency: int | None = Field(default=None, gt=0)
    queue_timeout: float = Field(default=10, ge=0)
    # Open connections to the provider (in use, idle or opening); beyond it a request waits, in order, up to
    # `queue_timeout` seconds for one to come back, then gets 503. Keep it at or above max_concurrency.
    max_connections: int = Field(default=2048, gt=0)
    # The HTTP client: the gateway's own HTTP/1.1 transport, or httpx's (httpcore), the escape hatch.
    transport: Literal["gateway", "httpx"] = "gateway"
    # After `max_failures` failures in a row, a deployment is skipped for `cooldown` seconds.
    max_failures: int = Field(default=3, gt=0)
    cooldown: float = Field(default=30, ge=0)
    # Pass-through endpoints, below base_url: `*` is one path segment, a final `**` any number of them.
    forward: tuple[str, ...] = DEFAULT_FORWARD
    # Client request headers a pass-through request carries besides content-type and accept. Default:
    # [openai-beta]; on an `api: anthropic` provider [anthropic-beta].
    forward_headers: tuple[str, ...] = DEFAULT_FORWARD_HEADERS
    # "native": the provider serves the Responses API itself, so /v1/responses on a plain route to it is
    # forwarded unchanged (stored state, built-in tools). "translate": answered through chat completions.
    responses: Literal["translate", "native"] = "translate"
    # The field the provider reads the output-token limit from: with "max_tokens", a request's
    # max_completion_tokens (sent by the Responses and Messages front doors too) goes there instead.
    token_limit: Literal["max_completion_tokens", "max_tokens"] = "max_completion_tokens"
    # Whether the provider takes reasoning_effort: then a translated request's effort (Responses'
    # reasoning.effort, a Messages thinking budget) is sent as one; otherwise it is dropped.
    reasoning_effort: bool = False
    # api: anthropic: the max_tokens sent when a request sets no output limit (the Messages API requires one).
    max_tokens: int = Field(default=4096, gt=0)

    @field_validator("forward")
    @classmethod
    def _patterns(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for pattern in value:
            parse_pattern(pattern)
        return value

    @field_validator("forward_headers")
    @classmethod
    def _safe_headers(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for name in value:
            if not re.fullmatch(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+", name):
                raise ValueError(f"expected header names, got {name!r}")
            if not forwardable_header(name):
                raise ValueError(
                    f"{name!r} is never forwarded: it carries credentials, is hop-by-hop, or the gateway sets it"
                )
        return tuple(name.lower() for name in value)

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("expected an http:// or https:// URL")
        return value.rstrip("/")

    @model_validator(mode="before")
    @classmethod
    def _base_url_unless_demo(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("api", "chat") != "demo" and "base_url" not in data:
            raise PydanticCustomError("missing_base_url", "base_url: required, but missing (or api: demo)")
        return data

    @model_validator(mode="before")
    @classmethod
    def _anthropic_forward_headers(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("api") == "anthropic" and "forward_headers" not in data:
            return {**data, "forward_headers": DEFAULT_ANTHROPIC_FORWARD_HEADERS}
        return data

    @field_validator("api_key", mode="before")
    @classmethod
    def _empty_key_is_none(cls, value: Any) -> Any:
        # `${KEY:-}` with KEY unset means "no key", not "send an empty bearer token".
        return None if value == "" else value


class RewriteConfig(_Strict):
    """The agent rewrite: tools injected into the request, answers turned back into plain chat."""

    inject_tools: bool = True
    message_tool: NonEmptyStr = "send_message"
    message_arg: NonEmptyStr = "message"
    inner_thoughts: Literal["kwarg", "content", "none"] = "kwarg"
    inner_thoughts_arg: NonEmptyStr = "inner_thoughts"
    reasoning: Literal["hide", "expose"] = "hide"
    system_prompt: str | None = None
    message_tool_description: str | None = None
    message_arg_description: str | None = None
    inner_thoughts_description: str | None = None
    # Reasoning inside the visible text, between tags; [] turns it off.
    think_tags: tuple[tuple[NonEmptyStr, NonEmptyStr], ...] = DEFAULT_TAGS
    think_open: bool = False

    @field_validator("think_tags")
    @classmethod
    def _usable_tags(cls, value: tuple[tuple[str, str], ...]) -> tuple[tuple[str, str], ...]:
        if value:
            ThinkFilter(value)  # the filter says what it cannot tell apart (a tag that begins another, ...)
        return value

    @model_validator(mode="after")
    def _distinct_arguments(self) -> RewriteConfig:
        if self.inner_thoughts == "kwarg" and self.message_arg == self.inner_thoughts_arg:
            raise ValueError("message_arg and inner_thoughts_arg must differ when inner_thoughts is 'kwarg'")
        return self

    def to_options(self, server: ServerConfig) -> RewriteOptions:
        """This rewrite in the form the core takes, with the server's limits on a stream."""
        return RewriteOptions(
            message_tool=self.message_tool,
            message_arg=self.message_arg,
            inner_thoughts=Thoughts(self.inner_thoughts),
            inner_thoughts_arg=self.inner_thoughts_arg,
            reasoning=Reasoning(self.reasoning),
            inject_tools=self.inject_tools,
            system_prompt=self.system_prompt,
            message_tool_description=self.message_tool_description,
            message_arg_description=self.message_arg_description,
            inner_thoughts_description=self.inner_thoughts_description,
            think_tags=self.think_tags,
            think_open=self.think_open,
            max_event_bytes=server.max_event_bytes,
            max_arguments_chars=server.max_arguments_chars,
        )


class ModelRoute(_Strict):
    """Maps a requested model name (or glob) to a provider, with or without the rewrite."""

    name: NonEmptyStr
    # One provider, or several deployments of the same model spread by least in-flight requests.
    provider: NonEmptyStr | tuple[NonEmptyStr, ...]
    model: NonEmptyStr | None = None
    rewrite: RewriteConfig | None = None
    timeout: TimeoutOverrides = TimeoutOverrides()
    max_retries: int = Field(default=2, ge=0)
    # Other routes tried in order once this one's attempts are exhausted by retryable failures.
    fallbacks: tuple[NonEmptyStr, ...] = ()
    # Hosted tools (Responses' web_search, file_search, mcp, ...) in a translated request: left out of it and
    # named in the x-gateway-dropped-tools header ("drop"), or the request refused with a 400 ("refuse").
    hosted_tools: Literal["drop", "refuse"] = "drop"

    @field_validator("provider")
    @classmethod
    def _some_provider(cls, value: str | tuple[str, ...]) -> str | tuple[str, ...]:
        if isinstance(value, tuple) and not value:
            raise ValueError("expected a provider name or a non-empty list of them")
        return value

    @property
    def providers(self) -> tuple[str, ...]:
        return (self.provider,) if isinstance(self.provider, str) else self.provider

    @property
    def is_glob(self) -> bool:
        """Whether the name is a pattern (fnmatch's ``*``, ``?`` or ``[``) rather than one model name."""
        return any(char in self.name for char in "*?[")

    def upstream_model(self, requested: str) -> str:
        """The name sent upstream: a glob route without ``model`` forwards what the client asked for."""
        return self.model or requested


class Config(_Strict):
    """The whole gateway config."""

    server: ServerConfig = ServerConfig()
    providers: dict[NonEmptyStr, ProviderConfig] = Field(min_length=1)
    models: tuple[ModelRoute, ...] = Field(min_length=1)
    keys: tuple[KeyConfig, ...] = ()
    responses: ResponsesConfig = ResponsesConfig()
    # Each route's rewrite options, built once from the route and the server's limits.
    _options: dict[str, RewriteOptions] = PrivateAttr(default_factory=dict)

    def model_post_init(self, context: Any) -> None:
        plain = RewriteOptions.plain(
            max_event_bytes=self.server.max_event_bytes, max_arguments_chars=self.server.max_arguments_chars
        )
        for route in self.models:
            self._options[route.name] = route.rewrite.to_options(self.server) if route.rewrite else plain

    def options(self, route: ModelRoute) -> RewriteOptions:
        """How ``route`` rewrites (``RewriteOptions.plain()`` for a route without ``rewrite``)."""
        return self._options[route.name]

    def exposing_reasoning(self) -> Config:
        """This config with every rewriting route's reasoning shown: what the console's playground answers with."""
        shown = self.model_copy()
        shown._options = {
            name: options if options.passthrough else dataclasses.replace(options, reasoning=Reasoning.EXPOSE)
            for name, options in self._options.items()
        }
        return shown

    @model_validator(mode="after")
    def _consistent(self, info: ValidationInfo) -> Config:
        """Cross-field checks, for a config built in code; a loaded file's are made, with positions, beforehand."""
        if info.context is CHECKED:
            return self
        problems = cross_problems(self.model_dump())
        if problems:
            raise ValueError("\n".join(f"{path(problem.loc)}: {problem.message}" for problem in problems))
        return self

    @property
    def is_demo(self) -> bool:
        """Whether every provider is the built-in demo, so nothing leaves the machine."""
        return all(provider.api == "demo" for provider in self.providers.values())

    def route_named(self, name: str) -> ModelRoute:
        return next(route for route in self.models if route.name == name)

    def route(self, requested_model: str) -> ModelRoute | None:
        """The route for a requested model: an exact name wins, else the first matching glob in file order."""
        for route in self.models:
            if route.name == requested_model:
                return route
        return next((route for route in self.models if fnmatchcase(requested_model, route.name)), None)
