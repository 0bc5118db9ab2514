"""The console in a real headless browser: Debian's chromium, driven by playwright (no browser is downloaded).

Sign-in with a client key refused and an admin key accepted, the tables, a request appearing live, and the
playground streaming an agent route with its hidden thoughts beside the answer. Screenshots are kept in the
test artifacts.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from gateway.config import parse_config
from gateway.server.app import create_app
from tests.helpers.servers import ScriptedUpstream, serve, stream_reply
from tests.helpers.streams import agent_stream, chunk, split_evenly

CHROMIUM = "/usr/bin/chromium"
ADMIN = "gw-admin-key-abcdef123456"
CLIENT = "gw-client-key-123456"
TEAM = "gw-team-key-654321"
THOUGHTS = "The user greets me; a short, friendly answer will do."
ANSWER = "Hello! How can I help you today?"
CONFIG = """
server: {{api_keys: ["{client}"], admin_keys: ["{admin}"]}}
providers:
  openai: {{base_url: "{upstream}/v1", api_key: "sk-provider-secret"}}
  backup: {{base_url: "{upstream}/backup/v1", api_key: "sk-provider-secret", max_failures: 2, cooldown: 30}}
models:
  - {{name: agent, provider: [openai, backup], model: gpt-4o-mini, rewrite: {{}}, max_retries: 1}}
  - {{name: thinker, provider: openai, model: deepseek-r1, rewrite: {{inject_tools: false, inner_thoughts: none}}}}
  - {{name: plain, provider: openai, model: gpt-4o}}
keys:
  - {{name: support-bot, key: "{team}", rpm: 60, tpm: 20000, budget: {{tokens: 1000000, period: month}}}}
"""


def agent_chunks() -> list[dict[str, Any]]:
    chunks = agent_stream(split_evenly(json.dumps({"inner_thoughts": THOUGHTS, "message": ANSWER}), 6))
    chunks.append(chunk(usage={"prompt_tokens": 42, "completion_tokens": 31, "total_tokens": 73}))
    return chunks


@pytest.fixture(scope="module")
def gateway_url() -> Iterator[str]:
    upstream = ScriptedUpstream(default=lambda request: stream_reply(agent_chunks(), delay=0.01))
    with serve(upstream) as upstream_url:
        text = CONFIG.format(client=CLIENT, admin=ADMIN, team=TEAM, upstream=upstream_url)
        with serve(create_app(parse_config(text, "console.yaml", env={}))) as url:
            yield url


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not os.path.exists(CHROMIUM):
        missing = f"{CHROMIUM} is missing: apt-get install chromium"
        if os.environ.get("CI") == "true":
            pytest.fail(missing)  # .ci/run installs it: under CI its absence is a failure, never a skip
        pytest.skip(missing)
    with sync_playwright() as playwright:
        # As root (CI) chromium runs only without its sandbox; the page is our own, on loopback.
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    opened = browser.new_page(viewport={"width": 1400, "height": 1000})
    yield opened
    opened.close()


def sign_in(page: Page, key: str) -> None:
    page.get_by_label("Admin key").fill(key)
    page.get_by_role("button", name="Sign in").click()


def test_a_client_key_is_refused(gateway_url: str, page: Page, artifacts: Path) -> None:
    page.goto(gateway_url + "/")
    expect(page).to_have_title("agent-gateway console")
    sign_in(page, CLIENT)
    expect(page.get_by_role("status").first).to_contain_text("Refused: 403")
    expect(page.get_by_role("table", name="Routes as configured")).to_be_hidden()
    sign_in(page, "not-any-key")
    expect(page.get_by_role("status").first).to_contain_text("Refused: 401")
    page.screenshot(path=artifacts / "console-refused.png")


def test_the_tables_and_the_playground(gateway_url: str, page: Page, artifacts: Path) -> None:
    for _ in range(2):  # some traffic of a named key, for its row and the recent requests
        body = {"model": "agent", "messages": [{"role": "user", "content": "hi"}], "stream": True}
        sent = httpx.post(gateway_url + "/v1/chat/completions", json=body, headers={"authorization": f"Bearer {TEAM}"})
        assert sent.status_code == 200
    page.goto(gateway_url + "/")
    sign_in(page, ADMIN)
    expect(page.get_by_role("status").first).to_have_text("Signed in.")

    routes = page.get_by_role("table", name="Routes as configured")
    expect(routes.get_by_role("row")).to_have_count(4)  # the head and three routes
    agent = routes.get_by_role("row").filter(has_text="gpt-4o-mini")
    expect(agent).to_contain_text("openai, backup")
    expect(agent).to_contain_text("hidden")
    keys = page.get_by_role("table", name="Limits, and what each key has used")
    team = keys.get_by_role("row").filter(has_text="support-bot")
    expect(team.get_by_role("cell").nth(2)).to_have_text("60")  # its rpm, as text
    expect(team.get_by_role("cell").nth(3)).to_have_text("2")  # used this minute
    expect(team.get_by_role("cell").nth(5)).to_have_text("146")  # both answers' tokens, charged
    # The key's use, live: a request made while the console is open shows within its refresh.
    body = {"model": "agent", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    sent = httpx.post(gateway_url + "/v1/chat/completions", json=body, headers={"authorization": f"Bearer {TEAM}"})
    assert sent.status_code == 200
    expect(team.get_by_role("cell").nth(3)).to_have_text("3", timeout=10_000)
    expect(team.get_by_role("cell").nth(5)).to_have_text("219", timeout=10_000)
    expect(team.get_by_role("cell").nth(7)).to_have_text("219")  # the month's budget used
    deployments = page.get_by_role("table", name="Providers, requests in flight")
    expect(deployments.get_by_role("row").filter(has_text="backup")).to_contain_text("30")
    assert "sk-provider-secret" not in page.content()

    recent = page.get_by_role("table", name="The latest requests of this worker")
    expect(recent.get_by_role("row")).to_have_count(4)
    # A request made while the console is open shows within its refresh.
    body = {"model": "plain", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    sent = httpx.post(gateway_url + "/v1/chat/completions", json=body, headers={"authorization": f"Bearer {CLIENT}"})
    assert sent.status_code == 200
    expect(recent.get_by_role("row").nth(1)).to_contain_text("plain", timeout=10_000)
    expect(recent.get_by_role("row").nth(1)).to_contain_text("api_keys[0]")

    page.get_by_label("Route").select_option("agent")
    page.get_by_label("Door").select_option("messages")
    page.get_by_label("Prompt").fill("Hello there")
    page.get_by_role("button", name="Send").click()
    expect(page.locator("#play-status")).to_contain_text("Done in", timeout=15_000)
    expect(page.locator("#answer")).to_have_text(ANSWER)
    expect(page.locator("#thoughts")).to_contain_text(THOUGHTS)
    chunks = page.get_by_role("table", name="Each chunk as it arrived").get_by_role("row")
    assert chunks.count() > 3
    arrived = [int(chunks.nth(i).get_by_role("cell").first.inner_text()) for i in range(1, chunks.count())]
    assert arrived == sorted(arrived) and arrived[-1] > 0
    kinds = {chunks.nth(i).get_by_role("cell").nth(1).inner_text() for i in range(1, chunks.count())}
    assert kinds == {"answer", "reasoning"}
    expect(recent.get_by_role("row").nth(1)).to_contain_text("playground", timeout=10_000)
    page.screenshot(path=artifacts / "console.png", full_page=True)
