"""The ``gateway`` command, run as a real process."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import openai

from tests.servers import clean_env, gateway_process

ROOT = Path(__file__).resolve().parents[1]


def gateway(*args: str, env: dict[str, str] | None = None, **options: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway", *args], capture_output=True, text=True, env=env, timeout=60, **options)  # type: ignore[call-overload]


def test_check_config_prints_routes_with_secrets_masked(tmp_path: Path) -> None:
    result = gateway("check-config", str(ROOT / "config.example.yaml"), env=clean_env(OPENAI_API_KEY="sk-example-secret-1234"))
    assert result.returncode == 0, result.stderr
    assert "assistant" in result.stdout and "sk-example-secret" not in result.stdout


def test_check_config_rejects_a_bad_file_with_status_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("providers:\n  p: {base_url: 'http://x'}\nmodels:\n  - {name: a, provider: p, rewrite: {reasoning: shout}}\n")
    result = gateway("check-config", str(bad), env=clean_env())
    assert result.returncode == 2
    assert str(bad) in result.stderr and "models[0].rewrite.reasoning" in result.stderr
    assert "Traceback" not in result.stderr


def test_serve_with_a_bad_config_exits_2_without_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("providers: {}\nmodels: []\nunknown: 1\n")
    result = gateway("serve", "--config", str(bad), env=clean_env())
    assert result.returncode == 2 and "Traceback" not in result.stderr and str(bad) in result.stderr
    missing_var = tmp_path / "env.yaml"
    missing_var.write_text("providers:\n  p: {base_url: 'http://x', api_key: '${NOT_SET_ANYWHERE}'}\nmodels: [{name: a, provider: p}]\n")
    result = gateway("serve", env=clean_env(GATEWAY_CONFIG=str(missing_var)))
    assert result.returncode == 2 and "NOT_SET_ANYWHERE" in result.stderr


def test_serve_without_config_starts_the_demo() -> None:
    """The README's first command: no config, no key."""
    with gateway_process() as running:
        sdk = openai.OpenAI(base_url=running.url + "/v1", api_key="anything", max_retries=0)
        text = "".join(
            c.choices[0].delta.content or ""
            for c in sdk.chat.completions.create(model="demo", messages=[{"role": "user", "content": "ping"}], stream=True)
            if c.choices
        )
        stderr = running.stderr()
    assert "demo" in text and "ping" in text and "Thinking" not in text
    assert "DEMO" in stderr and "WARNING: no server.api_keys" in stderr


def test_check_config_into_a_closed_pipe_exits_quietly() -> None:
    """Like `gateway check-config ... | head` when head has already gone: no traceback, status 0."""
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway", "check-config", str(ROOT / "config.example.yaml")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=clean_env(OPENAI_API_KEY="sk-1234567890abcdef"),
    )
    assert process.stdout is not None and process.stderr is not None
    process.stdout.close()  # nobody will read: the write fails with EPIPE
    stderr = process.stderr.read().decode()
    assert process.wait(60) == 0 and "Traceback" not in stderr
