"""The YAML config: env expansion, error messages, route lookup, defaults, masking, the example file."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from textwrap import dedent

import pytest
from pydantic import SecretStr, ValidationError

from gateway.config import (
    Config,
    ConfigError,
    KeyConfig,
    ModelRoute,
    ProviderConfig,
    RewriteConfig,
    default_config,
    describe,
    load_config,
    parse_config,
)
from gateway.core.options import Reasoning, RewriteOptions, Thoughts
from tests.helpers.paths import ROOT

EXAMPLE = ROOT / "config.example.yaml"
SECRET = "sk-proj-0123456789abcdefSECRET"

MINIMAL = """\
providers:
  openai:
    base_url: https://api.openai.com/v1
models:
  - name: assistant
    provider: openai
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gateway.yaml"
    path.write_text(dedent(text), encoding="utf-8")
    return path


def unplaced(message: str) -> list[str]:
    """A ConfigError's lines without their line and column (the tests of those are below)."""
    return [re.sub(r":\d+:\d+: ", ": ", line, count=1) for line in message.splitlines()]


def problems(tmp_path: Path, text: str, env: dict[str, str] | None = None, *, placed: bool = False) -> list[str]:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path, env or {})
    return str(info.value).splitlines() if placed else unplaced(str(info.value))


def routes(*names: str, provider: str = "p", **settings: str) -> Config:
    """One provider, and a pass-through route to it per name."""
    return Config(
        providers={provider: {"base_url": "http://up", **settings}},
        models=[{"name": name, "provider": provider} for name in names],
    )


# Environment expansion


def test_env_variables_and_defaults_are_expanded_in_string_values() -> None:
    text = """\
        server:
          host: ${HOST}
          port: ${PORT:-9000}
        providers:
          openai:
            base_url: ${BASE:-https://api.openai.com/v1}
            api_key: ${KEY}
            headers: {X-Team: "team-${TEAM:-none}"}
        models:
          - {name: assistant, provider: openai, model: "${MODEL:-gpt-4o}"}
    """
    config = parse_config(dedent(text), "c.yaml", {"HOST": "0.0.0.0", "KEY": SECRET, "MODEL": "", "TEAM": "x"})
    assert config.server.host == "0.0.0.0"
    assert config.server.port == 9000  # the default is a string, validated to int
    provider = config.providers["openai"]
    assert provider.base_url == "https://api.openai.com/v1"
    assert provider.api_key is not None and provider.api_key.get_secret_value() == SECRET
    assert provider.headers == {"X-Team": "team-x"}
    assert config.models[0].model == "gpt-4o"  # `:-` also replaces an empty value


def test_set_variable_overrides_default() -> None:
    config = parse_config(MINIMAL + "server: {port: '${PORT:-9000}'}\n", "c.yaml", {"PORT": "7000"})
    assert config.server.port == 7000


def test_missing_variable_names_variable_path_and_file(tmp_path: Path) -> None:
    lines = problems(tmp_path, MINIMAL.replace("base_url: https://api.openai.com/v1", "base_url: ${UPSTREAM}"))
    path = tmp_path / "gateway.yaml"
    assert lines == [f"{path}: providers.openai.base_url: environment variable UPSTREAM is not set"]


def test_every_missing_variable_is_reported() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(MINIMAL + "server: {host: '${A}', api_keys: ['${B}']}\n", "c.yaml", {})
    assert unplaced(str(info.value)) == [
        "c.yaml: server.host: environment variable A is not set",
        "c.yaml: server.api_keys[0]: environment variable B is not set",
    ]


@pytest.mark.parametrize("value", ["${NOT-A-NAME}", "${}", "key-${OPEN"])
def test_malformed_reference_is_an_error(value: str) -> None:
    with pytest.raises(ConfigError, match=r"c\.yaml:\d+:\d+: server\.host: expected"):
        parse_config(MINIMAL + f"server: {{host: '{value}'}}\n", "c.yaml", {"OPEN": "x"})


def test_expansion_is_not_recursive() -> None:
    config = parse_config(MINIMAL + "server: {host: '${HOST}'}\n", "c.yaml", {"HOST": "${OTHER}"})
    assert config.server.host == "${OTHER}"


# API keys


@pytest.mark.parametrize("env", [{}, {"GATEWAY_API_KEY": ""}])
def test_api_key_expanding_to_empty_is_dropped(env: dict[str, str]) -> None:
    text = MINIMAL + "server: {api_keys: ['${GATEWAY_API_KEY:-}', '${OTHER_KEY}']}\n"
    config = parse_config(text, "c.yaml", {**env, "OTHER_KEY": "k2"})
    assert config.server.api_keys == ("k2",)


def test_api_keys_from_the_environment_are_kept() -> None:
    text = MINIMAL + "server: {api_keys: ['${GATEWAY_API_KEY:-}']}\n"
    assert parse_config(text, "c.yaml", {"GATEWAY_API_KEY": "k1"}).server.api_keys == ("k1",)


def test_literal_empty_api_key_is_an_error() -> None:
    with pytest.raises(ConfigError, match=r"c\.yaml:\d+:\d+: server\.api_keys\[0\]: expected a non-empty string"):
        parse_config(MINIMAL + "server: {api_keys: ['']}\n", "c.yaml", {})


def test_provider_api_key_expanding_to_empty_means_no_key() -> None:
    text = MINIMAL.replace("base_url:", "api_key: ${LOCAL_KEY:-}\n    base_url:")
    assert parse_config(text, "c.yaml", {}).providers["openai"].api_key is None


# Error messages


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (
            "    rewrite: {inner_thoughts: thoughts}\n",
            "models[0].rewrite.inner_thoughts: expected one of 'kwarg', 'content', 'none', got 'thoughts'",
        ),
        ("    rewrite: {reasoning: 3}\n", "models[0].rewrite.reasoning: expected one of 'hide', 'expose', got 3"),
        ("    rewrite: {inject_tools: maybe}\n", "models[0].rewrite.inject_tools: expected a valid boolean"),
        ("    rewrite: {reasonning: expose}\n", "models[0].rewrite.reasonning: unknown key; expected one of:"),
        ("    modle: gpt-4o\n", "models[0].modle: unknown key; expected one of: name, provider, model, rewrite"),
        ("    model: ''\n", "models[0].model: expected a non-empty string, got ''"),
        (
            "    rewrite: {message_arg: x, inner_thoughts_arg: x}\n",
            "models[0].rewrite: message_arg and inner_thoughts_arg must differ when inner_thoughts is 'kwarg'",
        ),
        (
            "  - {name: chat, provider: opnai}\n",
            "models[1].provider: expected one of the providers 'openai', got 'opnai'",
        ),
        (
            "  - {name: assistant, provider: openai}\n",
            "models[1].name: duplicate route name 'assistant', first at models[0]",
        ),
        (
            "server: {port: eighty}\n",
            "server.port: expected a valid integer, unable to parse string as an integer, got 'eighty'",
        ),
        ("server: {port: 70000}\n", "server.port: expected a number less than or equal to 65535, got 70000"),
        ("server: {prot: 8080}\n", "server.prot: unknown key; expected one of: host, port, api_keys, max_body_bytes"),
        ("server: [8080]\n", "server: expected a mapping, got a list"),
        ("sever: {}\n", "sever: unknown key; expected one of: server, providers, models"),
    ],
)
def test_error_names_file_path_and_expectation(tmp_path: Path, extra: str, expected: str) -> None:
    lines = problems(tmp_path, MINIMAL + extra)
    assert len(lines) == 1
    assert lines[0].startswith(f"{tmp_path / 'gateway.yaml'}: {expected}")


@pytest.mark.parametrize(
    ("provider", "expected"),
    [
        ("{base_url: ftp://example.com}", "base_url: expected an http:// or https:// URL, got 'ftp://example.com'"),
        ("{base_url: api.openai.com/v1}", "base_url: expected an http:// or https:// URL, got 'api.openai.com/v1'"),
        ("{base_url: 'http://u', timeout: {read: 0}}", "timeout.read: expected a number greater than 0, got 0"),
        (
            "{base_url: 'http://u', timeout: {conect: 1}}",
            "timeout.conect: unknown key; expected one of: connect, read, first_byte, idle, total",
        ),
        ("{api_key: x}", "base_url: required, but missing (or api: demo for the built-in demo)"),
        ("{base_url: 'http://u', transport: curl}", "transport: expected one of 'gateway', 'httpx', got 'curl'"),
        ("{base_url: 'http://u', max_connections: 0}", "max_connections: expected a number greater than 0, got 0"),
    ],
)
def test_provider_errors(tmp_path: Path, provider: str, expected: str) -> None:
    text = f"providers:\n  openai: {provider}\nmodels:\n  - {{name: a, provider: openai}}\n"
    lines = problems(tmp_path, text)
    assert lines == [f"{tmp_path / 'gateway.yaml'}: providers.openai.{expected}"]


def test_every_problem_gets_its_own_line(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    lines = problems(tmp_path, MINIMAL + "    rewrite: {inner_thoughts: x, reasoning: y}\nserver: {port: -1}\n")
    assert sorted(lines) == sorted(
        [
            f"{path}: models[0].rewrite.inner_thoughts: expected one of 'kwarg', 'content', 'none', got 'x'",
            f"{path}: models[0].rewrite.reasoning: expected one of 'hide', 'expose', got 'y'",
            f"{path}: server.port: expected a number greater than or equal to 1, got -1",
        ]
    )


def test_dangling_references_are_reported_with_every_other_problem(tmp_path: Path) -> None:
    """Cross-field problems come in the same run as field problems, not after those are fixed."""
    path = tmp_path / "gateway.yaml"
    text = (
        MINIMAL + "    fallbacks: [nowhere]\n"
        "  - {name: b, provider: opnai, rewrite: {reasoning: y}}\n"
        "  - {name: b, provider: openai, model: ''}\n"
    )
    lines = problems(tmp_path, text + "server: {port: -1}\n")
    assert sorted(lines) == sorted(
        [
            f"{path}: models[0].fallbacks[0]: expected the name of another route, got 'nowhere'",
            f"{path}: models[1].provider: expected one of the providers 'openai', got 'opnai'",
            f"{path}: models[1].rewrite.reasoning: expected one of 'hide', 'expose', got 'y'",
            f"{path}: models[2].name: duplicate route name 'b', first at models[1]",
            f"{path}: models[2].model: expected a non-empty string, got ''",
            f"{path}: server.port: expected a number greater than or equal to 1, got -1",
        ]
    )


@pytest.mark.parametrize(
    "text",
    [
        "providers: []\nmodels: [{name: a, provider: p}]\n",
        "providers: {}\nmodels: [{name: a, provider: p}]\n",
        "models: [{name: a, provider: p}]\n",
        "providers: {p: {base_url: 'http://up'}}\n"
        "models: [7, {name: a, provider: [p, 3]}, {name: [x], fallbacks: a}]\n",
    ],
)
def test_references_in_a_broken_shape_add_no_noise(tmp_path: Path, text: str) -> None:
    """Without a usable providers mapping, its own error is the one to fix; no line per route repeats it."""
    assert not [
        line for line in problems(tmp_path, text) if "expected one of the providers" in line or "another route" in line
    ]


def test_providers_and_models_are_required(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    assert problems(tmp_path, "providers: {}\nmodels: []\n") == [
        f"{path}: providers: expected at least one entry",
        f"{path}: models: expected at least one entry",
    ]
    assert problems(tmp_path, "server: {}\n") == [
        f"{path}: providers: required, but missing",
        f"{path}: models: required, but missing",
    ]


@pytest.mark.parametrize("text", ["", "- just\n- a list\n"])
def test_top_level_must_be_a_mapping(tmp_path: Path, text: str) -> None:
    [line] = problems(tmp_path, text)
    assert line.startswith(f"{tmp_path / 'gateway.yaml'}: expected a mapping with server, providers and models")


def test_secrets_are_not_echoed_in_errors(tmp_path: Path) -> None:
    text = MINIMAL.replace("base_url:", "headers: {X-Token: 987654321}\n    base_url:")
    [line] = problems(tmp_path, text)
    assert "providers.openai.headers.X-Token: expected a valid string" in line
    assert "987654321" not in line


def test_yaml_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    [line] = problems(tmp_path, "providers:\n  openai:\n    base_url: [unclosed\nmodels: []\n", placed=True)
    assert line.startswith(f"{tmp_path / 'gateway.yaml'}:4:")
    assert "invalid YAML" in line


def test_duplicate_yaml_key_is_an_error(tmp_path: Path) -> None:
    [line] = problems(tmp_path, MINIMAL + "providers: {}\n", placed=True)
    assert line == f"{tmp_path / 'gateway.yaml'}:7:1: invalid YAML: duplicate key 'providers'"


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match=f"^{path}: file not found$"):
        load_config(path)


def test_direct_construction_is_validated_too() -> None:
    with pytest.raises(ValidationError, match=r"models\[0\]\.provider"):
        Config(providers={"p": {"base_url": "http://up"}}, models=[{"name": "a", "provider": "q"}])


# Route lookup


def test_exact_name_beats_an_earlier_glob() -> None:
    config = routes("gpt-*", "gpt-4o")
    assert config.route("gpt-4o") is config.models[1]


def test_first_matching_glob_in_file_order_wins() -> None:
    config = routes("gpt-4*", "gpt-*", "*")
    assert config.route("gpt-4o") is config.models[0]
    assert config.route("gpt-3.5") is config.models[1]
    assert config.route("claude") is config.models[2]


def test_glob_matching_is_case_sensitive_and_unmatched_is_none() -> None:
    config = routes("gpt-*", "assistant")
    assert config.route("GPT-4o") is None
    assert config.route("assistant-2") is None
    assert routes("model-[ab]").route("model-c") is None


@pytest.mark.parametrize(
    ("name", "is_glob"),
    [("gpt-*", True), ("model-?", True), ("model-[ab]", True), ("assistant", False), ("gpt-4.1", False)],
)
def test_glob_names_are_told_from_concrete_ones(name: str, is_glob: bool) -> None:
    assert ModelRoute(name=name, provider="p").is_glob is is_glob


def test_upstream_model() -> None:
    assert ModelRoute(name="gpt-*", provider="p").upstream_model("gpt-4o") == "gpt-4o"
    assert ModelRoute(name="assistant", provider="p", model="gpt-4o-mini").upstream_model("assistant") == "gpt-4o-mini"


# Defaults


def test_defaults() -> None:
    config = parse_config(MINIMAL, "c.yaml", {})
    server, provider, route = config.server, config.providers["openai"], config.models[0]
    assert (server.host, server.port, server.api_keys, server.max_body_bytes) == ("127.0.0.1", 8080, (), 10485760)
    assert (provider.api_key, provider.headers, provider.timeout.connect, provider.timeout.read) == (None, {}, 10, 600)
    assert (provider.transport, provider.max_connections, provider.queue_timeout) == ("gateway", 2048, 10)
    assert route.model is None and route.rewrite is None
    assert parse_config(MINIMAL + "    rewrite: {}\n", "c.yaml", {}).models[0].rewrite == RewriteConfig(
        inject_tools=True,
        message_tool="send_message",
        message_arg="message",
        inner_thoughts="kwarg",
        inner_thoughts_arg="inner_thoughts",
        reasoning="hide",
    )


def test_base_url_trailing_slash_is_stripped() -> None:
    config = parse_config(MINIMAL.replace("/v1", "/v1/"), "c.yaml", {})
    assert config.providers["openai"].base_url == "https://api.openai.com/v1"


def test_default_config_with_openai_key() -> None:
    config = default_config({"OPENAI_API_KEY": SECRET})
    [(name, provider)] = config.providers.items()
    assert name == "openai"
    assert provider.base_url == "https://api.openai.com/v1"
    assert provider.api_key is not None and provider.api_key.get_secret_value() == SECRET
    assistant, other = config.models
    assert (assistant.name, assistant.provider, assistant.model, assistant.rewrite) == (
        "assistant",
        "openai",
        "gpt-4o-mini",
        RewriteConfig(),
    )
    assert (other.name, other.provider, other.model, other.rewrite) == ("*", "openai", None, RewriteConfig())
    assert config.route("assistant") is assistant and assistant.upstream_model("assistant") == "gpt-4o-mini"
    assert config.route("anything") is other and other.upstream_model("gpt-4o") == "gpt-4o"
    assert not config.is_demo


@pytest.mark.parametrize(("value", "upstream"), [("gpt-4.1-nano", "gpt-4.1-nano"), ("", "gpt-4o-mini")])
def test_default_assistant_model_is_overridable(value: str, upstream: str) -> None:
    config = default_config({"OPENAI_API_KEY": SECRET, "GATEWAY_ASSISTANT_MODEL": value})
    route = config.route("assistant")
    assert route is not None and route.upstream_model("assistant") == upstream


def test_default_config_honours_openai_base_url() -> None:
    config = default_config({"OPENAI_API_KEY": SECRET, "OPENAI_BASE_URL": "http://127.0.0.1:8000/v1/"})
    assert config.providers["openai"].base_url == "http://127.0.0.1:8000/v1"


def test_default_config_reports_a_bad_openai_base_url() -> None:
    expected = r"^default config \(from the environment\): providers\.openai\.base_url: expected an http"
    with pytest.raises(ConfigError, match=expected):
        default_config({"OPENAI_API_KEY": SECRET, "OPENAI_BASE_URL": "localhost:8000"})


@pytest.mark.parametrize("env", [{}, {"OPENAI_API_KEY": ""}])
def test_default_config_without_key_is_demo(env: dict[str, str]) -> None:
    config = default_config(env)
    assert config.is_demo
    assert list(config.providers) == ["demo"]
    assert config.providers["demo"].api == "demo" and config.providers["demo"].api_key is None
    assistant, thinker, exposed, other = config.models
    assert config.route("assistant") is assistant and assistant.upstream_model("assistant") == "assistant"
    assert config.route("gpt-4o") is other and other.upstream_model("gpt-4o") == "gpt-4o"
    assert assistant.rewrite == other.rewrite == RewriteConfig()
    # The demo's model that thinks in tags, as a reasoning model: no agent mode, the reasoning hidden or exposed.
    for route, name, reasoning in ((thinker, "thinker", "hide"), (exposed, "thinker-exposed", "expose")):
        assert config.route(name) is route and route.upstream_model(name) == "demo-thinker"
        assert route.rewrite == RewriteConfig(inject_tools=False, inner_thoughts="none", reasoning=reasoning)


def test_the_demo_provider_is_named_plainly() -> None:
    """``api: demo`` is the built-in demo model: no base_url to give, none to guess from a host name."""
    demo = parse_config("providers: {local: {api: demo}}\nmodels: [{name: a, provider: local}]\n", "c.yaml", env={})
    assert demo.is_demo and demo.providers["local"].api == "demo"
    assert not routes("*", provider="demo", base_url="http://demo.invalid/v1").is_demo
    with pytest.raises(
        ConfigError, match=r"c\.yaml:1:17: providers\.up\.base_url: required, but missing \(or api: demo"
    ):
        parse_config("providers: {up: {api: chat}}\nmodels: [{name: a, provider: up}]\n", "c.yaml", env={})


# Secrets stay out of reprs and describe()


def secret_config() -> Config:
    text = """\
        server: {api_keys: ["${GATEWAY_API_KEY}"]}
        providers:
          openai:
            base_url: https://api.openai.com/v1
            api_key: ${OPENAI_API_KEY}
            headers: {X-Custom-Auth: "${HEADER_SECRET}"}
          local: {base_url: "http://127.0.0.1:11434/v1"}
        models:
          - {name: assistant, provider: openai, model: gpt-4o-mini, rewrite: {reasoning: expose}}
          - {name: "llama*", provider: local}
    """
    env = {
        "GATEWAY_API_KEY": "gw-client-key-SECRET-1",
        "OPENAI_API_KEY": SECRET,
        "HEADER_SECRET": "hdr-value-SECRET-42",
    }
    return parse_config(dedent(text), "c.yaml", env)


def test_describe_masks_every_secret() -> None:
    text = describe(secret_config())
    for secret in (SECRET, "gw-client-key-SECRET-1", "hdr-value-SECRET-42", "SECRET"):
        assert secret not in text
    assert "sk-...CRET" in text
    assert "auth on (1 key)" in text
    assert "X-Custom-Auth: ...T-42" in text
    assert "local: http://127.0.0.1:11434/v1, api key (none)" in text
    assert "assistant -> openai / gpt-4o-mini: agent mode" in text and "reasoning expose" in text
    assert "llama* -> local / (requested name): pass-through" in text


def test_describe_hides_a_password_in_the_base_url() -> None:
    text = describe(routes("*", base_url="https://gateway:hunter2hunter2@proxy.example/v1"))
    assert "https://gateway:***@proxy.example/v1" in text and "hunter2" not in text


def test_describe_hides_short_secrets_entirely() -> None:
    text = describe(routes("*", api_key="abc123"))
    assert "api key ***" in text and "abc123" not in text and "c123" not in text
    assert "auth off" in text


def test_repr_hides_secrets() -> None:
    text = repr(secret_config())
    assert SECRET not in text and "gw-client-key-SECRET-1" not in text


def test_config_is_frozen() -> None:
    config = secret_config()
    with pytest.raises(ValidationError):
        config.server.port = 1  # type: ignore[misc]


# Rewrite options


def test_each_route_gets_its_rewrite_options_once_with_the_server_limits() -> None:
    config = parse_config(
        """
server: {max_event_bytes: 1000, max_arguments_chars: 2000}
providers: {p: {base_url: "http://x/v1"}}
models:
  - name: agent
    provider: p
    rewrite:
      inject_tools: false
      message_tool: reply
      message_arg: text
      inner_thoughts: content
      inner_thoughts_arg: thinking
      reasoning: expose
      system_prompt: ""
      message_tool_description: Reply.
  - name: plain
    provider: p
""",
        "t.yaml",
        env={},
    )
    agent, plain = config.models
    assert config.options(agent) == RewriteOptions(
        message_tool="reply",
        message_arg="text",
        inner_thoughts=Thoughts.CONTENT,
        inner_thoughts_arg="thinking",
        reasoning=Reasoning.EXPOSE,
        inject_tools=False,
        system_prompt="",
        message_tool_description="Reply.",
        max_event_bytes=1000,
        max_arguments_chars=2000,
    )
    assert config.options(agent) is config.options(agent)
    assert config.options(plain) == RewriteOptions.plain(max_event_bytes=1000, max_arguments_chars=2000)
    assert config.options(plain).passthrough and not config.options(agent).passthrough


# The example file


def test_example_config_loads() -> None:
    config = load_config(EXAMPLE, {"OPENAI_API_KEY": SECRET})
    assert config.server.api_keys == ()
    assert config.providers["openai"].api_key is not None
    assert config.providers["openai"].api_key.get_secret_value() == SECRET
    assistant = config.route("assistant")
    assert assistant is not None and assistant.rewrite is not None and assistant.rewrite.inject_tools
    thinking = [route for route in config.models if route.rewrite and route.rewrite.reasoning == "expose"]
    assert thinking and thinking[0].name != "assistant"
    passthrough = config.route("gpt-4.1")
    assert passthrough is not None and passthrough.name == "gpt-*" and passthrough.rewrite is None
    assert passthrough.upstream_model("gpt-4.1") == "gpt-4.1"
    assert load_config(EXAMPLE, {"OPENAI_API_KEY": SECRET, "GATEWAY_API_KEY": "k"}).server.api_keys == ("k",)


def test_example_config_needs_the_openai_key() -> None:
    message = "providers.openai.api_key: environment variable OPENAI_API_KEY is not set"
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(EXAMPLE, {})


def test_example_local_provider_is_valid_when_uncommented(tmp_path: Path) -> None:
    lines = EXAMPLE.read_text(encoding="utf-8").splitlines()
    start = lines.index("  # local:")
    block = [line.replace("# ", "", 1) for line in lines[start : start + 3]]
    path = tmp_path / "local.yaml"
    path.write_text("\n".join([*lines[:start], *block, *lines[start + 3 :]]), encoding="utf-8")
    local = load_config(path, {"OPENAI_API_KEY": SECRET}).providers["local"]
    assert local.base_url == "http://127.0.0.1:11434/v1" and local.api_key is None and local.timeout.read == 900


# Client keys and shared state

KEYS = """\
providers:
  openai:
    base_url: https://api.openai.com/v1
models:
  - {name: assistant, provider: openai}
  - {name: "gpt-4o*", provider: openai}
  - {name: embeddings, provider: openai}
"""
APP_KEY = "app-key-0123456789-SECRET"


def test_keys_with_every_field() -> None:
    text = KEYS + dedent(
        """\
        server:
          api_keys: [plain-key-SECRET]
          state: "redis://:${REDIS_PASSWORD}@redis:6379/2"
          state_failure: closed
          state_timeout: 0.1
        keys:
          - name: support-bot
            key: ${SUPPORT_BOT_KEY}
            models: ["assistant", "gpt-4o*"]
            rpm: 600
            tpm: 200000
            max_concurrency: 20
            budget: {tokens: 5000000, period: month}
          - name: batch.v2
            key_sha256: "{BATCH_SHA256}"
        """
    ).replace("{BATCH_SHA256}", hashlib.sha256(b"batch-key").hexdigest().upper())
    config = parse_config(text, "c.yaml", {"SUPPORT_BOT_KEY": APP_KEY, "REDIS_PASSWORD": "pa ss"})
    server = config.server
    assert (server.state, server.state_failure, server.state_timeout) == ("redis://:pa ss@redis:6379/2", "closed", 0.1)
    bot, batch = config.keys
    assert bot.name == "support-bot" and bot.models == ("assistant", "gpt-4o*")
    assert (bot.rpm, bot.tpm, bot.max_concurrency) == (600, 200000, 20)
    assert bot.budget is not None and (bot.budget.tokens, bot.budget.period) == (5000000, "month")
    assert bot.digest == hashlib.sha256(APP_KEY.encode()).digest() and bot.limited
    assert batch.digest == hashlib.sha256(b"batch-key").digest() and batch.key_sha256 == batch.digest.hex()
    assert batch.models == ("*",) and not batch.limited  # every route, no limits
    assert server.api_keys == ("plain-key-SECRET",)


def test_state_defaults_to_this_process() -> None:
    server = parse_config(MINIMAL, "c.yaml", {}).server
    assert (server.state, server.state_failure, server.state_timeout) == ("memory", "open", 0.05)


@pytest.mark.parametrize(
    "url", ["redis://localhost", "rediss://user:pw@cache.internal:6380/15", "redis://[::1]:6379/0"]
)
def test_state_takes_redis_urls(url: str) -> None:
    assert parse_config(MINIMAL + f"server: {{state: '{url}'}}\n", "c.yaml", {}).server.state == url


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (
            "keys: [{name: a, key: k, rpmm: 5}]\n",
            "keys[0].rpmm: unknown key; expected one of: name, key, key_sha256, models",
        ),
        (
            "keys: [{name: a, key: k, budget: {tokens: 5, period: year}}]\n",
            "keys[0].budget.period: expected one of 'day', 'week', 'month', got 'year'",
        ),
        ("keys: [{name: a, key: k, budget: {tokens: 5}}]\n", "keys[0].budget.period: required, but missing"),
        (
            "keys: [{name: a, key: k, budget: {tokens: 0, period: day}}]\n",
            "keys[0].budget.tokens: expected a number greater than 0, got 0",
        ),
        ("keys: [{name: a, key: k, rpm: 0}]\n", "keys[0].rpm: expected a number greater than 0, got 0"),
        (
            "keys: [{name: a, key: k, max_concurrency: -1}]\n",
            "keys[0].max_concurrency: expected a number greater than 0, got -1",
        ),
        (
            "keys: [{name: a, key: k, models: ['assist[ant']}]\n",
            "keys[0].models: 'assist[ant': expected a ']' to close the '[' at position 6",
        ),
        ("keys: [{name: a, key: k, models: []}]\n", "keys[0].models: expected at least one entry"),
        (
            "keys: [{name: a, key: k, models: ['asistant']}]\n",
            "keys[0].models[0]: 'asistant' matches no route;"
            " expected a glob over the route names 'assistant', 'gpt-4o*'",
        ),
        (
            "keys: [{name: 'support bot', key: k}]\n",
            "keys[0].name: expected up to 64 letters, digits, '.', '_' or '-', starting with a letter or digit,"
            " got 'support bot'",
        ),
        ("keys: [{name: a}]\n", "keys[0]: expected exactly one of key and key_sha256"),
        (
            "keys: [{name: a, key: k, key_sha256: '%s'}]\n" % ("0" * 64),
            "keys[0]: expected exactly one of key and key_sha256",
        ),
        ("keys: [{name: a, key: ''}]\n", "keys[0]: key: expected a non-empty string"),
        ("keys: [{name: a, key_sha256: abc}]\n", "keys[0].key_sha256: expected 64 hexadecimal digits"),
        ("keys: {name: a}\n", "keys: expected a list"),
        ("server: {state: memcached://x}\n", "server.state: expected 'memory' or a redis:// or rediss:// URL"),
        ("server: {state: 'redis://host:port'}\n", "server.state: expected 'memory' or a redis:// or rediss:// URL"),
        ("server: {state: 'redis://host/zero'}\n", "server.state: expected a database number after the host"),
        ("server: {state_failure: maybe}\n", "server.state_failure: expected one of 'open', 'closed', got 'maybe'"),
        ("server: {state_timeout: 0}\n", "server.state_timeout: expected a number greater than 0, got 0"),
    ],
)
def test_key_and_state_errors(tmp_path: Path, extra: str, expected: str) -> None:
    lines = problems(tmp_path, KEYS.replace("  - {name: embeddings, provider: openai}\n", "") + extra)
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"{tmp_path / 'gateway.yaml'}: {expected}")


def test_duplicate_names_and_keys_are_reported_with_every_other_problem(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    text = KEYS + dedent(
        f"""\
        server: {{api_keys: ["{APP_KEY}"], port: -1}}
        keys:
          - {{name: one, key: other-key-SECRET}}
          - {{name: one, key_sha256: "{hashlib.sha256(b"other-key-SECRET").hexdigest()}"}}
          - {{name: two, key: "{APP_KEY}", rpm: many}}
          - {{name: three, key: k3, models: [nothing-here]}}
        """
    )
    assert sorted(problems(tmp_path, text)) == sorted(
        f"{path}: {line}"
        for line in (
            "server.port: expected a number greater than or equal to 1, got -1",
            "keys[2].rpm: expected a valid integer, unable to parse string as an integer, got 'many'",
            "keys[1].name: duplicate key name 'one', first at keys[0]",
            "keys[1].key_sha256: the same key as keys[0].key",
            "keys[2].key: the same key as server.api_keys[0]",
            (
                "keys[3].models[0]: 'nothing-here' matches no route; expected a glob over the route names"
                " 'assistant', 'gpt-4o*', 'embeddings'"
            ),
        )
    )


def test_key_secrets_are_never_echoed(tmp_path: Path) -> None:
    text = KEYS + dedent(
        """\
        server: {state: "redis://:hunter2hunter2@:6379"}
        keys:
          - {name: a, key: 987654321987}
          - {name: b, key: [list-SECRET]}
          - {name: c, key_sha256: "deadbeef-SECRET"}
        """
    )
    lines = problems(tmp_path, text)
    assert len(lines) == 4, lines
    for secret in ("987654321987", "SECRET", "hunter2"):
        assert all(secret not in line for line in lines)


def test_direct_construction_checks_keys_too() -> None:
    with pytest.raises(ValidationError, match=r"keys\[1\]\.key: the same key as keys\[0\]\.key"):
        Config.model_validate(
            {
                "providers": {"p": {"base_url": "http://up"}},
                "models": [{"name": "a", "provider": "p"}],
                "keys": [KeyConfig(name="x", key=SecretStr("same")), {"name": "y", "key": "same"}],
            }
        )


def test_describe_shows_keys_and_state_without_secrets() -> None:
    text = KEYS + dedent(
        f"""\
        server: {{state: "rediss://gw:pw-SECRET-9@cache:6380/1", state_timeout: 0.2}}
        keys:
          - {{name: support-bot, key: "{APP_KEY}", models: [assistant], rpm: 600, budget: {{tokens: 9, period: week}}}}
          - {{name: batch, key_sha256: "{hashlib.sha256(b"k").hexdigest()}"}}
        """
    )
    described = describe(parse_config(text, "c.yaml", {}))
    assert "SECRET" not in described
    assert "auth on (2 keys)" in described
    assert "state: rediss://gw:***@cache:6380/1, on failure open, timeout 200 ms" in described
    assert "  support-bot: key ...CRET, models assistant, limits rpm 600, budget 9 tokens per week" in described
    assert f"  batch: key sha256 {hashlib.sha256(b'k').hexdigest()[:8]}..., models *, limits none" in described
    assert "state: memory (this process)" in describe(parse_config(MINIMAL, "c.yaml", {}))


def test_example_keys_are_valid_when_uncommented(tmp_path: Path) -> None:
    lines = EXAMPLE.read_text(encoding="utf-8").splitlines()
    start = lines.index("# keys:")
    block = [line.replace("# ", "", 1) for line in lines[start:]]
    path = tmp_path / "keys.yaml"
    path.write_text("\n".join([*lines[:start], *block]), encoding="utf-8")
    config = load_config(path, {"OPENAI_API_KEY": SECRET, "SUPPORT_BOT_KEY": "sk-support-bot"})
    bot, batch = config.keys
    assert (bot.name, bot.rpm, bot.tpm, bot.max_concurrency) == ("support-bot", 600, 200000, 20)
    assert bot.budget is not None and (bot.budget.tokens, bot.budget.period) == (5000000, "month")
    assert bot.digest == hashlib.sha256(b"sk-support-bot").digest() and bot.key_sha256 is None
    assert batch.digest == hashlib.sha256(b"password").digest() and batch.models == ("gpt-*",)


def test_example_reasoning_route_is_valid_when_uncommented(tmp_path: Path) -> None:
    lines = EXAMPLE.read_text(encoding="utf-8").splitlines()
    provider, route = lines.index("  # local:"), lines.index("  # - name: r1")
    uncommented = dict.fromkeys([*range(provider, provider + 3), *range(route, route + 4)])
    text = [line.replace("# ", "", 1) if number in uncommented else line for number, line in enumerate(lines)]
    path = tmp_path / "r1.yaml"
    path.write_text("\n".join(text), encoding="utf-8")
    config = load_config(path, {"OPENAI_API_KEY": SECRET})
    r1 = config.route_named("r1")
    options = config.options(r1)
    assert r1.provider == "local" and r1.upstream_model("r1") == "deepseek-ai/DeepSeek-R1-Distill-Qwen-32B"
    assert not options.inject_tools and options.inner_thoughts.value == "none"
    assert options.think_tags == (("<think>", "</think>"),) and options.think_open


def test_think_tags_from_yaml_reach_the_rewrite_options() -> None:
    text = MINIMAL + '    rewrite: {think_tags: [["◁think▷", "◁/think▷"], ["<think>", "</think>"]], think_open: true}\n'
    config = parse_config(text, "c.yaml", {})
    options = config.options(config.route_named("assistant"))
    assert options.think_tags == (("◁think▷", "◁/think▷"), ("<think>", "</think>")) and options.think_open
    off = parse_config(MINIMAL + "    rewrite: {think_tags: []}\n", "c.yaml", {})
    assert off.options(off.route_named("assistant")).think_tags == ()


@pytest.mark.parametrize(
    ("tags", "problem"),
    [
        ('[["<think>", ""]]', "think_tags[0][1]: expected a non-empty string, got ''"),
        ('[[" <t>", "</t>"]]', "think_tags: a think tag is empty or begins with whitespace: ' <t>', '</t>'"),
        ('[["<t>", "</t>"], ["<t>x", "</x>"]]', "think_tags: the think tag '<t>' is the beginning of another"),
        ('["<think>"]', "think_tags[0]: expected a list, got '<think>'"),
    ],
)
def test_think_tags_the_filter_cannot_tell_apart_are_config_errors(tags: str, problem: str) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_config(MINIMAL + f"    rewrite: {{think_tags: {tags}}}\n", "c.yaml", {})
    assert unplaced(str(raised.value))[0].startswith(f"c.yaml: models[0].rewrite.{problem}")


# Every problem of a file in one run, each with its line and column.


def test_every_problem_is_reported_at_once_with_its_line_and_column(tmp_path: Path) -> None:
    text = """\
        server:
          port: 80.5
          state: "redis://:p@ss/w@cache:6379/0"
        providers:
          openai: {base_url: "${UPSTREAM}", api_key: "${OPENAI_API_KEY}", bogus: 1}
        models:
          - name: assistant
            provider: opnai
        keys: [{name: app, key: k, budget: {tokens: 0, period: year}}]
        """
    path = tmp_path / "gateway.yaml"
    lines = problems(tmp_path, text, placed=True)
    assert lines == [
        f"{path}:2:9: server.port: expected a valid integer, got 80.5",
        f"{path}:3:10: server.state: expected a database number after the host, as in redis://host:6379/0; a password"
        " with '@', '/', '?' or '#' in it must be percent-encoded (%40, %2F, %3F, %23),"
        " or given as server.state_password",
        f"{path}:5:22: providers.openai.base_url: environment variable UPSTREAM is not set",
        f"{path}:5:46: providers.openai.api_key: environment variable OPENAI_API_KEY is not set",
        f"{path}:5:74: providers.openai.bogus: unknown key; expected one of: " + ", ".join(ProviderConfig.model_fields),
        f"{path}:8:15: models[0].provider: expected one of the providers 'openai', got 'opnai'",
        f"{path}:9:45: keys[0].budget.tokens: expected a number greater than 0, got 0",
        f"{path}:9:56: keys[0].budget.period: expected one of 'day', 'week', 'month', got 'year'",
    ]


def test_a_redis_password_can_be_given_apart_from_the_url() -> None:
    config = parse_config(
        MINIMAL + "server: {state: 'redis://cache:6379/0', state_password: '${REDIS_PASSWORD}'}\n",
        "c.yaml",
        {"REDIS_PASSWORD": "p@ss/w:rd?#"},
    )
    assert config.server.state_password is not None and config.server.state_password.get_secret_value() == "p@ss/w:rd?#"
    assert "p@ss" not in describe(config) and "p@ss" not in repr(config.server)


# Stored responses: the responses section and the sealing secret.


@pytest.mark.parametrize(
    ("written", "seconds"), [("30d", 2592000), ("12h", 43200), ("1h30m", 5400), ("1s", 1), (45, 45)]
)
def test_store_ttl_is_seconds_or_a_duration(written: object, seconds: float) -> None:
    text = f"{MINIMAL}responses: {{store_ttl: {written}}}\n"
    assert parse_config(text, "c.yaml", {}).responses.store_ttl == seconds


def test_the_responses_defaults_are_documented_ones() -> None:
    responses = parse_config(MINIMAL, "c.yaml", {}).responses
    assert (responses.store_ttl, responses.max_stored_bytes, responses.max_bytes_per_key) == (
        30 * 86400,
        1024 * 1024,
        64 * 1024 * 1024,
    )


@pytest.mark.parametrize(
    ("section", "path"),
    [
        ("responses: {store_ttl: soon}", "responses.store_ttl"),
        ("responses: {store_ttl: 0.5}", "responses.store_ttl"),
        ("responses: {max_stored_bytes: 0}", "responses.max_stored_bytes"),
        ("responses: {max_stored_bytes: 200, max_bytes_per_key: 100}", "responses"),
        ("responses: {store: forever}", "responses.store"),
        ("server: {secret: short}", "server.secret"),
        ("server: {previous_secrets: [short]}", "server.previous_secrets"),
    ],
)
def test_a_bad_responses_setting_names_its_path(section: str, path: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(f"{MINIMAL}{section}\n", "c.yaml", {})
    assert f" {path}:" in str(caught.value) or f" {path}[0]:" in str(caught.value), str(caught.value)


def test_the_sealing_secret_stays_out_of_reprs_and_describe() -> None:
    config = parse_config(
        f"{MINIMAL}server: {{secret: '${{S}}', previous_secrets: ['${{OLD}}']}}\n",
        "c.yaml",
        {"S": "sealing-secret-SECRET-99", "OLD": "older-secret-SECRET-98"},
    )
    text = describe(config)
    assert "sealing-secret-SECRET-99" not in text + repr(config) and "older-secret" not in text + repr(config)
    assert "sealed with server.secret" in text and "(+1 older)" in text
    assert parse_config(f"{MINIMAL}server: {{secret: '${{S:-}}'}}\n", "c.yaml", {}).server.secret is None
