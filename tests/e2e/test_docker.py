"""The Docker image's recipe, checked without a container engine.

The commands the image runs (``CMD``, ``HEALTHCHECK``) are run here as
processes, the way the image runs them; the lock the image installs from is
compared with ``pyproject.toml``; the Dockerfile's layers are read for their
order. Building the image itself needs an engine, which this suite does not
assume.
"""

from __future__ import annotations

import importlib.metadata
import json
import subprocess
import sys
import tomllib
from collections import deque
from pathlib import Path

import httpx
import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import NormalizedName, canonicalize_name
from packaging.version import Version

from tests.helpers.paths import ROOT
from tests.helpers.servers import clean_env, free_port, gateway_process

DOCKERFILE = (ROOT / "Dockerfile").read_text()
LOCK = ROOT / "requirements.lock"
DEMO_CONFIG = "providers: {demo: {api: demo}}\nmodels: [{name: assistant, provider: demo, rewrite: {}}]\n"


def instruction(name: str) -> str:
    [line] = [line.removeprefix(f"{name} ") for line in DOCKERFILE.splitlines() if line.startswith(f"{name} ")]
    return line


CMD: list[str] = json.loads(instruction("CMD"))
IMAGE_PYTHON = instruction("FROM").removeprefix("python:").split("-")[0]
HEALTHCHECK: list[str] = json.loads(instruction("HEALTHCHECK").split(" CMD ", 1)[1])


def as_process(argv: list[str]) -> list[str]:
    """The image's ``gateway ...`` command, run with this interpreter."""
    assert argv[0] == "gateway"
    return [sys.executable, "-m", "gateway", *argv[1:]]


def health(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(as_process(HEALTHCHECK), env=env, capture_output=True, text=True, timeout=60, check=False)


def test_the_image_serves_without_a_config_file() -> None:
    """The CMD names no config file, so a container started with no mount runs the demo (or key-only mode)."""
    assert CMD[:2] == ["gateway", "serve"] and "--config" not in CMD and "--port" not in CMD
    with gateway_process(*CMD[2:]) as running:
        answer = httpx.post(
            running.url + "/v1/chat/completions",
            json={"model": "assistant", "messages": [{"role": "user", "content": "ping"}]},
            timeout=30,
        )
    assert answer.status_code == 200 and "You said: ping" in answer.json()["choices"][0]["message"]["content"]


def test_the_healthcheck_follows_the_configured_port(tmp_path: Path) -> None:
    """A mounted config named by GATEWAY_CONFIG moves the port; the HEALTHCHECK reads the same config and follows."""
    port = free_port()
    config = tmp_path / "config.yaml"
    config.write_text(f"server: {{port: {port}}}\n" + DEMO_CONFIG)
    env = clean_env(GATEWAY_CONFIG=str(config))
    with gateway_process(*CMD[2:], env=env, choose_port=False) as running:
        assert running.url == f"http://127.0.0.1:{port}"
        up = health(env)
    down = health(env)
    assert (up.returncode, up.stderr) == (0, "")
    assert down.returncode == 1
    assert down.stderr.startswith(f"gateway health: http://127.0.0.1:{port}/healthz: ") and down.stderr.count("\n") == 1


def test_dependencies_are_installed_from_the_lock_before_the_code_is_copied() -> None:
    """So a code change rebuilds only the last layers, and the dependencies are the locked ones."""
    steps = [line for line in DOCKERFILE.splitlines() if line.startswith(("COPY ", "RUN pip"))]
    assert steps == [
        "COPY requirements.lock ./",
        "RUN pip install --no-deps -r requirements.lock",
        "COPY pyproject.toml README.md ./",
        "COPY gateway ./gateway",
        "RUN pip install --no-deps . && pip check",
    ]


def test_the_build_context_has_what_the_dockerfile_copies() -> None:
    allowed = {
        line.removeprefix("!").rstrip("/")
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.startswith("!")
    }
    copied = {source for line in DOCKERFILE.splitlines() if line.startswith("COPY ") for source in line.split()[1:-1]}
    assert copied == allowed


# The lock (scripts/lock writes it) against pyproject.toml.


def locked() -> dict[NormalizedName, Version]:
    pins: dict[NormalizedName, Version] = {}
    for line in LOCK.read_text().splitlines():
        if not line or line.startswith("#"):
            continue
        requirement = Requirement(line)
        [pin] = requirement.specifier
        assert pin.operator == "==" and not requirement.extras and requirement.marker is None, line
        name = canonicalize_name(requirement.name)
        assert name not in pins, f"{name} is pinned twice"
        pins[name] = Version(pin.version)
    return pins


def declared() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return [Requirement(line) for line in project["dependencies"]]


def test_every_runtime_dependency_is_pinned_within_its_declared_range() -> None:
    pins = locked()
    for requirement in declared():
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{requirement} is not in requirements.lock: run scripts/lock"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"{name}=={pins[name]} is outside {requirement}: run scripts/lock"
        )


@pytest.fixture(scope="module")
def locked_metadata(tmp_path_factory: pytest.TempPathFactory) -> dict[NormalizedName, importlib.metadata.Distribution]:
    """Each pinned package's own metadata, at its pinned version: the lock installed apart (no dependencies
    resolved, nothing of this environment's versions), as the image installs it."""
    target = tmp_path_factory.mktemp("locked")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--no-deps",
            "--target",
            str(target),
            "-r",
            str(LOCK),
        ],
        check=True,
        capture_output=True,
    )
    found = {canonicalize_name(d.metadata["Name"]): d for d in importlib.metadata.distributions(path=[str(target)])}
    pins = locked()
    assert {name: Version(found[name].version) for name in found} == pins, "the lock installs as pinned"
    return found


def test_the_lock_holds_the_dependencies_of_the_dependencies(
    locked_metadata: dict[NormalizedName, importlib.metadata.Distribution],
) -> None:
    """Walks the requirements (with extras such as uvicorn[standard]) through each pinned package's own metadata,
    whatever this environment has installed: every package needed is pinned within its range, and the walk
    reaches every pin (a pin nothing needs is left over from an old dependency)."""
    pins = locked()
    environment = {key: str(value) for key, value in default_environment().items()}
    environment["python_version"] = IMAGE_PYTHON
    queue = deque((requirement, "") for requirement in declared())  # a requirement, and the extra it came with
    reached: set[NormalizedName] = set()
    walked: set[tuple[NormalizedName, str]] = set()
    while queue:
        requirement, extra = queue.popleft()
        if requirement.marker is not None and not requirement.marker.evaluate({**environment, "extra": extra}):
            continue
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{requirement} is needed but not in requirements.lock: run scripts/lock"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"{name}=={pins[name]} is outside {requirement}"
        )
        reached.add(name)
        for wanted in ("", *sorted(requirement.extras)):
            if (name, wanted) not in walked:
                walked.add((name, wanted))
                queue.extend((Requirement(line), wanted) for line in locked_metadata[name].requires or ())
    assert reached == set(pins), f"pinned but needed by nothing: {sorted(set(pins) - reached)}"
