"""The gateway's YAML configuration: schema, loading, and the no-file default.

A config names the upstream providers and the routes that map a requested
model name to one of them, optionally with the agent rewrite. Loading is
strict on purpose: an unknown key, a dangling provider reference or a missing
environment variable is an error naming the file and the path to the field,
so a typo never silently changes what the gateway does.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterator, Mapping
from fnmatch import fnmatchcase
from pathlib import Path
from types import NoneType, UnionType
from typing import Annotated, Any, Final, Literal, Union, get_args, get_origin
from urllib.parse import urlsplit

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    ValidatorFunctionWrapHandler,
    field_validator,
    model_validator,
)

from gateway.core.options import Reasoning, RewriteOptions, Thoughts
from gateway.core.think import DEFAULT_TAGS, ThinkFilter
from gateway.demo import THINKER_MODEL
from gateway.upstream.forwarding import DEFAULT_FORWARD, DEFAULT_FORWARD_HEADERS, forwardable_header, parse_pattern

__all__ = [
    "Budget",
    "Config",
    "ConfigError",
    "KeyConfig",
    "ModelRoute",
    "ProviderConfig",
    "RewriteConfig",
    "ServerConfig",
    "Timeouts",
    "default_config",
    "load_config",
    "parse_config",
]

OPENAI_BASE_URL: Final = "https://api.openai.com/v1"
DEMO_BASE_URL: Final = "http://demo.invalid/v1"
# The route the README's examples name, and where it goes without a config file.
ASSISTANT_ROUTE: Final = "assistant"
ASSISTANT_MODEL: Final = "gpt-4o-mini"
THINKER_ROUTE: Final = "thinker"
THINKER_REWRITE: Final = {"inject_tools": False, "inner_thoughts": "none"}

NonEmptyStr = Annotated[str, Field(min_length=1)]
Loc = tuple[int | str, ...]


class ConfigError(Exception):
    """A config that cannot be used; the message has one ``source: path: problem`` line per problem."""


class _Strict(BaseModel):
    """Unknown keys are typos, and a loaded config never changes under a running server."""

    model_config = ConfigDict(extra="forbid", frozen=True)


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

    @field_validator("state")
    @classmethod
    def _state_url(cls, value: str) -> str:
        if value == "memory":
            return value
        expected = "expected 'memory' or a redis:// or rediss:// URL such as redis://host:6379/0"
        try:
            parts = urlsplit(value)
            parts.port  # noqa: B018 - a port that is not a number raises here
        except ValueError:
            raise ValueError(expected) from None
        if parts.scheme not in ("redis", "rediss") or not parts.hostname:
            raise ValueError(expected)
        database = parts.path.removeprefix("/")
        if database and not database.isdigit():
            raise ValueError("expected a database number after the host, as in redis://host:6379/0")
        return value


class Budget(_Strict):
    """A key's token allowance per calendar period, in UTC (weeks start on Monday)."""

    tokens: int = Field(gt=0)
    period: Literal["day", "week", "month"]


_KEY_NAME: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_SHA256_HEX: Final = re.compile(r"[0-9A-Fa-f]{64}")


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
    budget: Budget | None = None

    @field_validator("name")
    @classmethod
    def _short_name(cls, value: str) -> str:
        if not _KEY_NAME.fullmatch(value):
            raise ValueError("expected up to 64 letters, digits, '.', '_' or '-', starting with a letter or digit")
        return value

    @field_validator("key_sha256")
    @classmethod
    def _hex_digest(cls, value: str) -> str:
        if not _SHA256_HEX.fullmatch(value):
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


def key_digest(key: str) -> bytes:
    """A client key as the gateway compares it: its SHA-256."""
    return hashlib.sha256(key.encode()).digest()


def glob_problem(glob: str) -> str | None:
    """Why a glob cannot mean what its author wrote, or None; fnmatch would take an unclosed '[' literally."""
    i = 0
    while (i := glob.find("[", i)) != -1:
        j = i + 1
        if glob[j : j + 1] == "!":
            j += 1
        if glob[j : j + 1] == "]":
            j += 1
        end = glob.find("]", j)
        if end == -1:
            return f"expected a ']' to close the '[' at position {i}"
        i = end + 1
    return None


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
    """One OpenAI-compatible upstream."""

    base_url: str
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
    # Client request headers a pass-through request carries besides content-type and accept.
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

    @model_validator(mode="wrap")
    @classmethod
    def _consistent_keys(cls, data: Any, handler: ValidatorFunctionWrapHandler) -> Config:
        """Duplicate keys and globs that match no route, found on the raw data so they join every other problem."""
        problems = _key_problems(data)
        try:
            config: Config = handler(data)
        except ValidationError as exc:
            if not problems:
                raise
            cross = {"type": "value_error", "loc": (), "input": data, "ctx": {"error": ValueError("\n".join(problems))}}
            raise ValidationError.from_exception_data(exc.title, [*exc.errors(), cross]) from None  # type: ignore[list-item]
        if problems:
            raise ValueError("\n".join(problems))
        return config

    @model_validator(mode="after")
    def _consistent_routes(self) -> Config:
        """Cross-field checks; raised at the top level, so each line names its own path."""
        if problems := _reference_problems(self.model_dump()):
            raise ValueError("\n".join(problems))
        return self

    @property
    def is_demo(self) -> bool:
        """Whether this is default_config's keyless fallback, which has no real upstream to call."""
        demo = self.providers.get("demo")
        return len(self.providers) == 1 and demo is not None and urlsplit(demo.base_url).hostname == "demo.invalid"

    def route_named(self, name: str) -> ModelRoute:
        return next(route for route in self.models if route.name == name)

    def route(self, requested_model: str) -> ModelRoute | None:
        """The route for a requested model: an exact name wins, else the first matching glob in file order."""
        for route in self.models:
            if route.name == requested_model:
                return route
        return next((route for route in self.models if fnmatchcase(requested_model, route.name)), None)

    def describe(self) -> str:
        """The resolved config for humans (``gateway check-config``); secrets are masked."""
        server = self.server
        keys = len(server.api_keys) + len(self.keys)
        auth = f"on ({keys} key{'s' if keys != 1 else ''})" if keys else "off"
        state = "memory (this process)" if server.state == "memory" else _redact_url(server.state)
        lines = [
            f"server: {server.host}:{server.port}, auth {auth}, max body {server.max_body_bytes} bytes",
            f"state: {state}, on failure {server.state_failure}, timeout {server.state_timeout * 1000:g} ms",
        ]
        if self.keys:
            lines.append("keys:")
            lines += [f"  {_key_summary(key)}" for key in self.keys]
        lines.append("providers:")
        for name, provider in self.providers.items():
            key = _mask(provider.api_key.get_secret_value()) if provider.api_key else "(none)"
            lines.append(f"  {name}: {_redact_url(provider.base_url)}, api key {key}")
            t = provider.timeout
            total = f"{t.total:g}s" if t.total else "none"
            lines.append(
                f"    timeout: connect {t.connect:g}s, read {t.read:g}s, first byte {t.first_byte:g}s,"
                f" idle {t.idle:g}s, total {total}"
            )
            if provider.headers:
                headers = ", ".join(f"{header}: {_mask(value)}" for header, value in provider.headers.items())
                lines.append(f"    headers: {headers}")
            forward = ", ".join(provider.forward)
            if provider.forward == DEFAULT_FORWARD:
                forward = "the default OpenAI endpoints"
            lines.append(
                f"    forwards: {forward or 'nothing'}; client headers: {', '.join(provider.forward_headers) or 'none'}"
            )
        lines.append("routes:")
        for route in self.models:
            upstream = route.model or "(requested name)"
            behaviour = _rewrite_summary(route.rewrite) if route.rewrite else "pass-through"
            extras = f", fallbacks {', '.join(route.fallbacks)}" if route.fallbacks else ""
            lines.append(f"  {route.name} -> {', '.join(route.providers)} / {upstream}: {behaviour}{extras}")
        return "\n".join(lines)


def load_config(path: str | os.PathLike[str], env: Mapping[str, str] | None = None) -> Config:
    """Reads and parses a config file; every failure, including I/O, is a ConfigError."""
    source = os.fspath(path)
    try:
        text = Path(source).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{source}: file not found") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{source}: not valid UTF-8 ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise ConfigError(f"{source}: cannot read the file ({exc.strerror})") from None
    return parse_config(text, source, env)


def parse_config(text: str, source: str, env: Mapping[str, str] | None = None) -> Config:
    """Parses config text; ``source`` names it in error messages."""
    try:
        data = yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as exc:
        raise ConfigError(_yaml_problem(exc, source)) from None
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping with server, providers and models, got {_show(data)}")
    problems: list[str] = []
    data = _expand(data, os.environ if env is None else env, (), problems)
    if problems:
        raise ConfigError("\n".join(f"{source}: {problem}" for problem in problems))
    return _validate(data, source)


def default_config(env: Mapping[str, str] | None = None) -> Config:
    """The config used without a file, so the README's examples (``model="assistant"``) work as written.

    With ``OPENAI_API_KEY``: ``assistant`` goes to ``$GATEWAY_ASSISTANT_MODEL`` (default gpt-4o-mini) and every
    other model to OpenAI (``$OPENAI_BASE_URL``) under its own name, all in agent mode. Without a key: the same
    routes on the demo provider, which answers under the requested name, and ``thinker`` and ``thinker-exposed``,
    its model that thinks in tags, with the reasoning hidden and exposed.
    """
    env = os.environ if env is None else env
    assistant: dict[str, Any] = {"name": ASSISTANT_ROUTE, "rewrite": {}}
    if key := env.get("OPENAI_API_KEY"):
        name, provider = "openai", {"base_url": env.get("OPENAI_BASE_URL") or OPENAI_BASE_URL, "api_key": key}
        assistant["model"] = env.get("GATEWAY_ASSISTANT_MODEL") or ASSISTANT_MODEL
    else:
        name, provider = "demo", {"base_url": DEMO_BASE_URL}
    models = [{**assistant, "provider": name}]
    if name == "demo":
        # A reasoning model rather than an agent: no tools injected, its think blocks hidden or exposed.
        models += [
            {
                "name": route,
                "provider": name,
                "model": THINKER_MODEL,
                "rewrite": {**THINKER_REWRITE, "reasoning": shown},
            }
            for route, shown in ((THINKER_ROUTE, "hide"), (THINKER_ROUTE + "-exposed", "expose"))
        ]
    models.append({"name": "*", "provider": name, "rewrite": {}})
    return _validate({"providers": {name: provider}, "models": models}, "default config (from the environment)")


class _Loader(yaml.SafeLoader):
    """A SafeLoader that rejects duplicate keys, which PyYAML would otherwise let the last one win."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[tuple[str, str]] = set()
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                key = (key_node.tag, key_node.value)
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {key_node.value!r}", key_node.start_mark
                    )
                seen.add(key)
        return super().construct_mapping(node, deep)


def _yaml_problem(exc: yaml.YAMLError, source: str) -> str:
    mark = getattr(exc, "problem_mark", None)
    where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else source
    problem = getattr(exc, "problem", None) or str(exc)
    return f"{where}: invalid YAML: {problem}"


_VARIABLE: Final = re.compile(r"\$\{(?:([^}]*)\})?")
_REFERENCE: Final = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)(?::-(.*))?", re.DOTALL)


def _expand(node: Any, env: Mapping[str, str], loc: Loc, problems: list[str]) -> Any:
    """Expands ``${VAR}`` and ``${VAR:-default}`` in every string value (keys are names, left alone)."""
    if isinstance(node, str):
        return _expand_string(node, env, loc, problems)
    if isinstance(node, dict):
        return {key: _expand(value, env, (*loc, key), problems) for key, value in node.items()}
    if isinstance(node, list):
        items = [_expand(value, env, (*loc, index), problems) for index, value in enumerate(node)]
        if loc == ("server", "api_keys"):
            # A key variable that is set but empty means "no such key", so `${KEY:-}` can switch auth off.
            items = [new for old, new in zip(node, items, strict=True) if not (new == "" and old != "")]
        return items
    return node


def _expand_string(text: str, env: Mapping[str, str], loc: Loc, problems: list[str]) -> str:
    def substitute(match: re.Match[str]) -> str:
        body = match.group(1)
        if body is None:
            problems.append(f"{_path(loc)}: expected '}}' to close '${{'")
            return ""
        reference = _REFERENCE.fullmatch(body)
        if reference is None:
            problems.append(f"{_path(loc)}: expected ${{NAME}} or ${{NAME:-default}}, got {match.group(0)!r}")
            return ""
        name, default = reference.groups()
        value = env.get(name)
        if value is None or (value == "" and default is not None):  # shell `:-` semantics
            if default is None:
                problems.append(f"{_path(loc)}: environment variable {name} is not set")
                return ""
            return default
        return value

    return _VARIABLE.sub(substitute, text)


def _validate(data: Any, source: str) -> Config:
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        lines = _problems(exc, source)
        # Pydantic runs the cross-field checks only once every field is valid; run them on the
        # plain data too, so a dangling reference is reported with every other problem at once.
        if all(error["loc"] for error in exc.errors(include_url=False)):
            lines += [f"{source}: {problem}" for problem in _reference_problems(data)]
        raise ConfigError("\n".join(lines)) from None


def _reference_problems(data: Any) -> list[str]:
    """Routes naming a provider or a fallback that does not exist, and duplicate route names.

    Works on unvalidated data: a part of the wrong shape is skipped, since its own error says why.
    """
    if not isinstance(data, Mapping) or not isinstance(routes := data.get("models"), list | tuple):
        return []
    providers = data.get("providers")
    providers = providers if isinstance(providers, Mapping) and providers else None
    known = ", ".join(map(repr, providers or ()))
    routes = [route if isinstance(route, Mapping) else {} for route in routes]
    names = {name for route in routes if isinstance(name := route.get("name"), str)}
    problems = []
    first: dict[str, int] = {}
    for i, route in enumerate(routes):
        listed = route.get("provider")
        for provider in (listed,) if isinstance(listed, str) else listed if isinstance(listed, list | tuple) else ():
            if providers is not None and isinstance(provider, str) and provider and provider not in providers:
                problems.append(f"models[{i}].provider: expected one of the providers {known}, got {provider!r}")
        name = route.get("name")
        if isinstance(name, str) and (earlier := first.setdefault(name, i)) != i:
            problems.append(f"models[{i}].name: duplicate route name {name!r}, first at models[{earlier}]")
        fallbacks = route.get("fallbacks")
        for j, fallback in enumerate(fallbacks if isinstance(fallbacks, list | tuple) else ()):
            if isinstance(fallback, str) and fallback and (fallback not in names or fallback == name):
                problems.append(f"models[{i}].fallbacks[{j}]: expected the name of another route, got {fallback!r}")
    return problems


# Fields whose values must not be echoed back in an error message.
_SECRET_FIELDS: Final = frozenset(("api_key", "api_keys", "headers", "key", "key_sha256", "state"))
_BOUNDS: Final = frozenset(("greater_than", "greater_than_equal", "less_than", "less_than_equal"))
_EXPECTATIONS: Final = {
    "missing": "required, but missing",
    "model_type": "expected a mapping",
    "model_attributes_type": "expected a mapping",
    "dict_type": "expected a mapping",
    "tuple_type": "expected a list",
    "list_type": "expected a list",
    "string_too_short": "expected a non-empty string",
    "too_short": "expected at least one entry",
}


def _problems(exc: ValidationError, source: str) -> list[str]:
    """Pydantic's errors as ``source: path: expected ..., got ...`` lines."""
    lines = []
    for error in exc.errors(include_url=False):
        loc, kind, given = error["loc"], error["type"], error["input"]
        if kind == "too_short" and given:
            continue  # pydantic counts only the valid items; the invalid ones have their own errors
        if kind == "value_error" and not loc:
            # A cross-field check: each line already starts with its own path.
            lines += [f"{source}: {line}" for line in str(error["ctx"]["error"]).splitlines()]
            continue
        if kind == "value_error":
            expected = str(error["ctx"]["error"])
        elif kind == "literal_error":
            expected = "expected one of " + error["ctx"]["expected"].replace("' or '", "', '")
        elif kind == "extra_forbidden":
            model = _model_at(loc[:-1])
            expected = "unknown key" + (f"; expected one of: {', '.join(model.model_fields)}" if model else "")
        else:
            phrase = "expected a number" if kind in _BOUNDS else "expected"
            expected = _EXPECTATIONS.get(kind) or error["msg"].replace("Input should be", phrase, 1)
        lines.append(f"{source}: {_path(loc) or '(top level)'}: {expected}{_got(kind, given, loc)}")
    return lines


def _got(kind: str, given: Any, loc: Loc) -> str:
    """What was found instead, unless that is noise or a secret."""
    if kind in ("missing", "extra_forbidden", "too_short"):
        return ""
    if _is_scalar(given):
        return "" if _SECRET_FIELDS.intersection(loc) else f", got {_show(given)}"
    return f", got {_show(given)}" if kind.endswith("_type") else ""


def _model_at(loc: Loc) -> type[BaseModel] | None:
    """The model class an error location points into, found by walking the annotations from Config."""
    node: Any = Config
    for part in loc:
        if get_origin(node) is None and isinstance(node, type) and issubclass(node, BaseModel):
            field = node.model_fields.get(str(part))
            if field is None:
                return None
            node = field.annotation
        elif get_origin(node) in (dict, tuple):
            node = get_args(node)[1 if get_origin(node) is dict else 0]
        else:
            return None
        if get_origin(node) in (Union, UnionType):
            node = next(arg for arg in get_args(node) if arg is not NoneType)
    return node if isinstance(node, type) and issubclass(node, BaseModel) else None


def _path(loc: Loc) -> str:
    """``("models", 0, "rewrite")`` as ``models[0].rewrite``; odd keys are quoted."""
    path = ""
    for part in loc:
        if part == "[key]":  # pydantic's marker for a bad mapping key
            path += " (key)"
        elif isinstance(part, int) and not isinstance(part, bool):
            path += f"[{part}]"
        elif isinstance(part, str) and re.fullmatch(r"[\w-]+", part):
            path += f".{part}" if path else part
        else:
            path += f"[{part!r}]"
    return path


def _is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, str | int | float | bool)


def _show(value: Any) -> str:
    """A value as it would be written in YAML, for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str | int | float):
        return repr(value)
    names: dict[type, str] = {dict: "a mapping", list: "a list"}
    return names.get(type(value), type(value).__name__)


def _key_problems(data: Any) -> list[str]:
    """Cross-checks of ``keys`` on data not yet validated: whatever cannot be read here has its own error."""
    keys = _read(data, "keys")
    if not isinstance(keys, list | tuple):
        return []
    problems: list[str] = []
    seen_names: dict[str, int] = {}
    seen_keys: dict[bytes, str] = {}
    api_keys = _read(_read(data, "server"), "api_keys")
    for i, api_key in enumerate(api_keys if isinstance(api_keys, list | tuple) else ()):
        if isinstance(api_key, str) and api_key:
            seen_keys.setdefault(key_digest(api_key), f"server.api_keys[{i}]")
    routes = _read(data, "models")
    names = [_read(route, "name") for route in routes] if isinstance(routes, list | tuple) else []
    route_names = names if all(isinstance(name, str) for name in names) else []
    for i, entry in enumerate(keys):
        name = _read(entry, "name")
        if isinstance(name, str) and (first := seen_names.setdefault(name, i)) != i:
            problems.append(f"keys[{i}].name: duplicate key name {name!r}, first at keys[{first}]")
        for field, digest in _raw_digests(entry):
            if (earlier := seen_keys.setdefault(digest, f"keys[{i}].{field}")) != f"keys[{i}].{field}":
                problems.append(f"keys[{i}].{field}: the same key as {earlier}")
        globs = _read(entry, "models")
        for j, glob in enumerate(globs if isinstance(globs, list | tuple) and route_names else ()):
            if (
                isinstance(glob, str)
                and glob
                and not glob_problem(glob)
                and not any(fnmatchcase(r, glob) for r in route_names)
            ):
                problems.append(
                    f"keys[{i}].models[{j}]: {glob!r} matches no route; expected a glob over the route names"
                    f" {', '.join(map(repr, route_names))}"
                )
    return problems


def _raw_digests(entry: Any) -> Iterator[tuple[str, bytes]]:
    """The SHA-256 of a raw key entry's secret, under the field it came from, when it is readable."""
    key = _read(entry, "key")
    if isinstance(key, SecretStr):
        key = key.get_secret_value()
    if isinstance(key, str) and key:
        yield "key", key_digest(key)
    hexdigest = _read(entry, "key_sha256")
    if isinstance(hexdigest, str) and _SHA256_HEX.fullmatch(hexdigest):
        yield "key_sha256", bytes.fromhex(hexdigest)


def _read(node: Any, field: str) -> Any:
    """A field of raw config data: a mapping from YAML, or a model instance passed to a constructor."""
    if isinstance(node, Mapping):
        return node.get(field)
    return getattr(node, field, None) if isinstance(node, BaseModel) else None


def _key_summary(key: KeyConfig) -> str:
    secret = _mask(key.key.get_secret_value()) if key.key is not None else f"sha256 {key.digest.hex()[:8]}..."
    limits = [
        f"{label} {value}"
        for label, value in (("rpm", key.rpm), ("tpm", key.tpm), ("concurrency", key.max_concurrency))
        if value is not None
    ]
    if key.budget is not None:
        limits.append(f"budget {key.budget.tokens} tokens per {key.budget.period}")
    return f"{key.name}: key {secret}, models {', '.join(key.models)}, limits {', '.join(limits) or 'none'}"


def _rewrite_summary(rewrite: RewriteConfig) -> str:
    prompt = {None: "default", "": "none"}.get(rewrite.system_prompt, "custom")
    return (
        f"agent mode: {rewrite.message_tool}({rewrite.message_arg}), inner thoughts {rewrite.inner_thoughts},"
        f" reasoning {rewrite.reasoning}, tools {'injected' if rewrite.inject_tools else 'not injected'},"
        f" system prompt {prompt}"
    )


def _redact_url(url: str) -> str:
    password = urlsplit(url).password
    return url.replace(f":{password}@", ":***@", 1) if password else url


def _mask(secret: str) -> str:
    """Enough of a secret to tell keys apart: ``sk-...abcd``, or nothing at all when it is short."""
    if len(secret) < 16:
        return "***"
    return f"{'sk-' if secret.startswith('sk-') else ''}...{secret[-4:]}"
