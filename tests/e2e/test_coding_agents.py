"""The real coding agents through the gateway: Claude Code on the Messages door, Codex CLI on the Responses door.

The pinned binaries (``tests/agents``, installed by ``.ci/run``; ``scripts/agents-latest`` runs this file against
the newest published ones) run non-interactively with the README's settings, in a throw-away home, behind a
proxy that refuses everything (``tests.helpers.coding_agents``). The gateway serves a scripted model
(``CodingModel``) on an agent route under names the agents know and do not know, and on a think route that
hides or exposes its reasoning. Each agent says hello, and runs a tool loop: the model calls the agent's
shell tool to read a file, the agent runs it, the model answers with what it returned.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from gateway.config import parse_config
from gateway.server.app import create_app
from tests.helpers.coding_agents import (
    ENCRYPTED,
    FILE_TEXT,
    GATEWAY_KEY,
    HELLO,
    SIGNATURE,
    THINKING,
    ClaudeModel,
    CodingModel,
    ResponsesModel,
    answer_to,
    run_claude,
    run_codex,
)
from tests.helpers.readme import code_blocks, section
from tests.helpers.servers import ScriptedUpstream, serve

CONFIG = """
server:
  api_keys: ["{key}"]
providers:
  up: {{base_url: "{upstream}/v1", reasoning_effort: true}}
models:
  - {{name: assistant, provider: up, model: tool-model, rewrite: {{}}}}
  - {{name: claude-sonnet-4-5, provider: up, model: tool-model, rewrite: {{}}}}
  - {{name: gpt-5.5, provider: up, model: tool-model, rewrite: {{}}}}
  - {{name: thinker, provider: up, model: think-model, rewrite: {{inject_tools: false, inner_thoughts: none}}}}
  - name: thinker-exposed
    provider: up
    model: think-model
    rewrite: {{inject_tools: false, inner_thoughts: none, reasoning: expose}}
"""
ANSWER = answer_to(FILE_TEXT)


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[CodingModel, str]]:
    model = CodingModel()
    with serve(ScriptedUpstream(default=model)) as upstream:
        config = parse_config(CONFIG.format(key=GATEWAY_KEY, upstream=upstream), "agents.yaml", env={})
        with serve(create_app(config)) as url:
            yield model, url


@pytest.fixture
def gateway(served: tuple[CodingModel, str]) -> tuple[CodingModel, str]:
    model, url = served
    model.requests.clear()
    return model, url


def tool_result(model: CodingModel) -> str:
    """What the agent's shell tool returned, as the model received it."""
    [result] = [
        m["content"] for body in model.requests[-1:] for m in body["messages"] if m.get("tool_call_id") == "call_shell"
    ]
    return str(result)


# Claude Code, on the Messages door.


def test_claude_code_says_hello_under_a_model_name_it_does_not_know(gateway: tuple[CodingModel, str]) -> None:
    model, url = gateway
    run = run_claude(url, "-p", "say hi", "--model", "assistant").check()
    assert run.stdout.strip() == HELLO
    [sent] = model.requests
    # Its agent types arrive as a system message where it put them; its effort as the provider's reasoning effort.
    assert [m["role"] for m in sent["messages"]][:3] == ["system", "user", "system"]
    assert sent["reasoning_effort"] == "high" and "Agent" in {t["function"]["name"] for t in sent["tools"]}


def test_claude_code_streams_json_under_a_model_name_it_knows(gateway: tuple[CodingModel, str]) -> None:
    model, url = gateway
    run = run_claude(url, "-p", "say hi", "--model", "claude-sonnet-4-5", "--output-format", "stream-json", "--verbose")
    [result] = [e for e in run.check().events() if e["type"] == "result"]
    assert (result["subtype"], result["is_error"], result["result"]) == ("success", False, HELLO)
    assert (result["usage"]["input_tokens"], result["usage"]["output_tokens"]) == (50, 9)
    assert len(model.requests) == 1


@pytest.mark.parametrize("route", ["assistant", "thinker"])
def test_claude_code_runs_its_shell_tool_in_a_loop(gateway: tuple[CodingModel, str], route: str) -> None:
    model, url = gateway
    run = run_claude(url, "-p", "show me hello.txt", "--model", route).check()
    assert run.stdout.strip().endswith(ANSWER)
    assert FILE_TEXT in tool_result(model) and len(model.requests) == 2


def test_claude_code_shows_exposed_reasoning_and_sends_it_back(gateway: tuple[CodingModel, str]) -> None:
    model, url = gateway
    run = run_claude(
        url, "-p", "show me hello.txt", "--model", "thinker-exposed", "--output-format", "stream-json", "--verbose"
    ).check(reasoning_shown=True)
    blocks = [b for e in run.events() if e["type"] == "assistant" for b in e["message"]["content"]]
    assert [b["thinking"] for b in blocks if b["type"] == "thinking"] == [THINKING, THINKING]
    [result] = [e for e in run.events() if e["type"] == "result"]
    assert result["result"] == ANSWER and FILE_TEXT in tool_result(model)
    # The next turn, with the reasoning of the first, was accepted: what the gateway sent on has it.
    assistant = [m for m in model.requests[1]["messages"] if m["role"] == "assistant"]
    assert THINKING in assistant[0].get("reasoning_content", "")


def test_claude_code_on_claude_itself_is_passed_through_thinking_signatures_and_all() -> None:
    """On a plain route to an ``api: anthropic`` provider, Claude Code talks to Claude through the gateway as it
    would directly: it shows the thinking, runs its tool, and sends the signed thinking block back first in its
    turn, as Anthropic requires; its beta flags reach the provider, its key does not."""
    model = ClaudeModel()
    scripted = ScriptedUpstream(default=model)
    with serve(scripted) as upstream:
        config = f"""
server: {{api_keys: ["{GATEWAY_KEY}"]}}
providers:
  anthropic: {{api: anthropic, base_url: "{upstream}/v1", api_key: "sk-ant-provider-key"}}
models:
  - {{name: "claude-*", provider: anthropic}}
"""
        with serve(create_app(parse_config(config, "claude.yaml", env={}))) as url:
            args = ("-p", "show me hello.txt", "--model", "claude-sonnet-4-5", "--output-format", "stream-json")
            run = run_claude(url, *args, "--verbose").check(reasoning_shown=True)
    [result] = [e for e in run.events() if e["type"] == "result"]
    assert (result["subtype"], result["result"]) == ("success", ANSWER)
    blocks = [b for e in run.events() if e["type"] == "assistant" for b in e["message"]["content"]]
    assert [b["thinking"] for b in blocks if b["type"] == "thinking"] == [THINKING, THINKING]
    [answered] = [body for body in model.requests if "toolu_shell" in str(body["messages"][-1]["content"])]
    [turn] = [m for m in answered["messages"] if m["role"] == "assistant"]
    assert turn["content"][0] == {"type": "thinking", "thinking": THINKING, "signature": SIGNATURE}
    assert [b["type"] for b in turn["content"][1:]] == ["text", "tool_use"]
    assert FILE_TEXT in str(answered["messages"][-1]["content"]) and HELLO not in result["result"]
    for sent in scripted.requests:
        assert sent.headers["x-api-key"] == "sk-ant-provider-key" and GATEWAY_KEY not in str(sent.headers)
        assert sent.headers.get("anthropic-beta"), "Claude Code's beta flags did not reach the provider"


# Codex CLI, on the Responses door.


def agent_messages(events: list[dict[str, Any]]) -> list[str]:
    return [e["item"]["text"] for e in events if e["type"] == "item.completed" and e["item"]["type"] == "agent_message"]


def test_codex_says_hello_under_a_model_name_it_does_not_know(gateway: tuple[CodingModel, str]) -> None:
    model, url = gateway
    run = run_codex(url, "assistant", "--json", "say hi").check()
    assert agent_messages(run.events()) == [HELLO]
    [usage] = [e["usage"] for e in run.events() if e["type"] == "turn.completed"]
    assert (usage["input_tokens"], usage["output_tokens"]) == (50, 9)
    [sent] = model.requests
    # Its namespaced tools arrive flattened; its web search is left out.
    names = {t["function"]["name"] for t in sent["tools"]}
    assert "exec_command" in names and any(name.startswith("multi_agent_v1__") for name in names)


def test_codex_says_hello_under_a_model_name_it_knows(gateway: tuple[CodingModel, str]) -> None:
    model, url = gateway
    run = run_codex(url, "gpt-5.5", "say hi").check()
    assert HELLO in run.stdout
    [sent] = model.requests
    assert "apply_patch" in {t["function"]["name"] for t in sent["tools"]} and sent["reasoning_effort"] == "medium"


@pytest.mark.parametrize("route", ["assistant", "thinker"])
def test_codex_runs_its_shell_tool_in_a_loop(gateway: tuple[CodingModel, str], route: str) -> None:
    model, url = gateway
    events = run_codex(url, route, "--json", "show me hello.txt").check().events()
    [command] = [
        e["item"] for e in events if e["type"] == "item.completed" and e["item"]["type"] == "command_execution"
    ]
    assert "cat hello.txt" in command["command"] and FILE_TEXT in command["aggregated_output"]
    assert agent_messages(events)[-1] == ANSWER
    assert FILE_TEXT in tool_result(model) and len(model.requests) == 2


def test_codex_shows_exposed_reasoning_and_sends_it_back(gateway: tuple[CodingModel, str]) -> None:
    model, url = gateway
    events = run_codex(url, "thinker-exposed", "--json", "show me hello.txt").check(reasoning_shown=True).events()
    reasoning = [
        e["item"]["text"] for e in events if e["type"] == "item.completed" and e["item"]["type"] == "reasoning"
    ]
    assert reasoning and all(THINKING in text for text in reasoning)
    assert agent_messages(events)[-1] == ANSWER
    assistant = [m for m in model.requests[1]["messages"] if m["role"] == "assistant"]
    assert THINKING in assistant[0].get("reasoning_content", "")


def test_codex_on_a_responses_provider_is_passed_through_encrypted_reasoning_and_all() -> None:
    """Codex sends ``store: false`` and asks for encrypted reasoning: on a plain route to an ``api: responses``
    provider nothing needs translating, so it talks to the provider through the gateway as it would directly,
    and sends the provider's own encrypted reasoning back with its tool's output."""
    model = ResponsesModel()
    with serve(ScriptedUpstream(default=model)) as upstream:
        config = f"""
server: {{api_keys: ["{GATEWAY_KEY}"]}}
providers:
  openai: {{api: responses, base_url: "{upstream}/v1", api_key: "sk-openai-provider-key"}}
models:
  - {{name: gpt-5.5, provider: openai, model: gpt-5.5-upstream}}
"""
        with serve(create_app(parse_config(config, "codex.yaml", env={}))) as url:
            run = run_codex(url, "gpt-5.5", "--json", "show me hello.txt").check(reasoning_shown=True)
    assert agent_messages(run.events())[-1] == ANSWER
    asked, answered = model.requests
    assert asked["store"] is False and asked["model"] == "gpt-5.5-upstream"
    # Its hosted tools reach a provider that runs them (a translated route drops them).
    assert "web_search" in {tool["type"] for tool in asked["tools"]}
    [reasoning] = [item for item in answered["input"] if item.get("type") == "reasoning"]
    assert reasoning["encrypted_content"] == ENCRYPTED
    [output] = [item for item in answered["input"] if item.get("type") == "function_call_output"]
    assert output["call_id"] == "call_shell" and FILE_TEXT in str(output["output"])


def test_the_readme_config_for_the_agents_own_vendors_passes_them_through() -> None:
    [block] = code_blocks(section("Coding agents"), "yaml")
    config = parse_config(block, "README.md", env={"ANTHROPIC_API_KEY": "sk-ant", "OPENAI_API_KEY": "sk-oai"})
    for model, api in [("claude-sonnet-4-5", "anthropic"), ("gpt-5.5", "responses")]:
        route = config.route(model)
        assert route is not None and route.rewrite is None
        assert [config.providers[name].api for name in route.providers] == [api]
