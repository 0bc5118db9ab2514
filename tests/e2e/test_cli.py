"""The ``gateway`` command, run as a real process."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import openai
import pytest

from gateway import __version__
from gateway.cli import main
from tests.helpers.paths import ROOT
from tests.helpers.servers import clean_env, gateway_process


def gateway(*args: str, env: dict[str, str] | None = None, **options: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        **options,
    )  # type: ignore[call-overload]


def test_check_config_prints_routes_with_secrets_masked(tmp_path: Path) -> None:
    result = gateway(
        "check-config", str(ROOT / "config.example.yaml"), env=clean_env(OPENAI_API_KEY="sk-example-secret-1234")
    )
    assert result.returncode == 0, result.stderr
    assert "assistant" in result.stdout and "sk-example-secret" not in result.stdout


def test_check_config_rejects_a_bad_file_with_status_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "providers:\n  p: {base_url: 'http://x'}\nmodels:\n  - {name: a, provider: p, rewrite: {reasoning: shout}}\n"
    )
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
    missing_var.write_text(
        "providers:\n  p: {base_url: 'http://x', api_key: '${NOT_SET_ANYWHERE}'}\nmodels: [{name: a, provider: p}]\n"
    )
    result = gateway("serve", env=clean_env(GATEWAY_CONFIG=str(missing_var)))
    assert result.returncode == 2 and "NOT_SET_ANYWHERE" in result.stderr


def test_serve_without_config_starts_the_demo() -> None:
    """The README's first command: no config, no key. Every stderr line, uvicorn's too, is one JSON object."""
    with gateway_process() as running:
        sdk = openai.OpenAI(base_url=running.url + "/v1", api_key="anything", max_retries=0)
        text = "".join(
            c.choices[0].delta.content or ""
            for c in sdk.chat.completions.create(
                model="demo", messages=[{"role": "user", "content": "ping"}], stream=True
            )
            if c.choices
        )
        lines = [json.loads(line) for line in running.stderr().splitlines()]
    assert "demo" in text and "ping" in text and "Thinking" not in text
    banner, warning = lines[:2]
    assert banner["message"].startswith(f"agent-gateway {__version__} serving on {running.url}/v1 (1 worker)")
    assert banner["url"] == running.url + "/v1" and banner["serving"].startswith("DEMO provider")
    assert banner["routes"] == (
        "assistant -> (requested name), thinker -> demo-thinker, thinker-exposed -> demo-thinker, * -> (requested name)"
    )
    assert (warning["level"], warning["message"]) == (
        "warning",
        "no server.api_keys configured: any client that can reach this port may use it",
    )
    assert {line["logger"] for line in lines} >= {"gateway", "uvicorn.error"}
    assert "Application startup complete." in [line["message"] for line in lines if line["logger"] == "uvicorn.error"]


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["--port", "99999"], "argument --port: expected a port number from 0 (any free port) to 65535, got '99999'"),
        (["--port", "-5"], "argument --port: expected a port number from 0 (any free port) to 65535, got '-5'"),
        (["--port", "http"], "argument --port: expected a port number from 0 (any free port) to 65535, got 'http'"),
        (["--workers", "0"], "argument --workers: expected a whole number of worker processes, at least 1, got '0'"),
        (["--workers", "-1"], "argument --workers: expected a whole number of worker processes, at least 1, got '-1'"),
        (
            ["--workers", "two"],
            "argument --workers: expected a whole number of worker processes, at least 1, got 'two'",
        ),
        (["--host", ""], "argument --host: expected an IP address or host name, got ''"),
        (["--config", ""], "argument --config: expected the path of a YAML file, got ''"),
        (
            ["--log-level", "loud"],
            "argument --log-level: invalid choice: 'loud'"
            " (choose from 'critical', 'error', 'warning', 'info', 'debug')",
        ),
    ],
)
def test_bad_serve_flags_exit_2_with_one_line(
    flags: list[str], expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_status:
        main(["serve", *flags])
    assert exit_status.value.code == 2
    assert capsys.readouterr() == ("", f"gateway serve: {expected} (see 'gateway serve --help')\n")


def test_a_port_in_use_fails_before_claiming_to_start() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = gateway("serve", "--port", str(port), env=clean_env())
    assert result.returncode == 1
    assert result.stderr == f"gateway serve: cannot listen on 127.0.0.1:{port}: Address already in use\n"


def test_port_0_serves_on_the_port_it_prints_with_workers_and_text_logs(tmp_path: Path) -> None:
    """Any free port, announced as bound, shared by two workers; log_format text puts uvicorn's lines in that format
    too."""
    config = tmp_path / "demo.yaml"
    config.write_text(
        "server: {log_format: text}\nproviders: {demo: {api: demo}}\n"
        "models: [{name: assistant, provider: demo, rewrite: {}}]\n"
    )
    with gateway_process("--config", str(config), "--port", "0", "--workers", "2", choose_port=False) as running:
        port = int(running.url.rsplit(":", 1)[1])
        answer = httpx.post(
            running.url + "/v1/chat/completions",
            json={"model": "assistant", "messages": [{"role": "user", "content": "ping"}]},
            timeout=30,
        )
        lines = running.stderr().splitlines()
    assert (
        port not in (0, 8080)
        and answer.status_code == 200
        and "ping" in answer.json()["choices"][0]["message"]["content"]
    )
    assert lines[0].endswith(
        f"INFO agent-gateway {__version__} serving on http://127.0.0.1:{port}/v1 (2 workers); stop with Ctrl+C"
        f' url=http://127.0.0.1:{port}/v1 workers=2 serving="config {config}" routes="assistant -> (requested name)"'
    )
    assert any("Started parent process" in line for line in lines) and any(
        "Application startup complete." in line for line in lines
    )
    assert all(
        re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (DEBUG|INFO|WARNING|ERROR|CRITICAL) ", line) for line in lines
    ), lines


def test_check_config_into_a_closed_pipe_exits_quietly() -> None:
    """Like `gateway check-config ... | head` when head has already gone: no traceback, status 0."""
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway", "check-config", str(ROOT / "config.example.yaml")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=clean_env(OPENAI_API_KEY="sk-1234567890abcdef"),
    )
    assert process.stdout is not None and process.stderr is not None
    process.stdout.close()  # nobody will read: the write fails with EPIPE
    stderr = process.stderr.read().decode()
    assert process.wait(60) == 0 and "Traceback" not in stderr


def test_an_unknown_option_of_a_command_exits_2_with_one_line_pointing_to_its_help() -> None:
    result = gateway("serve", "--prot", "9000", env=clean_env())
    assert result.returncode == 2
    assert result.stderr == "gateway serve: unrecognized arguments: --prot 9000 (see 'gateway serve --help')\n"


def test_health_says_its_address_is_the_one_it_probes() -> None:
    usage = gateway("health", "--help", env=clean_env()).stdout
    assert "to probe" in usage and "listen on" not in usage
