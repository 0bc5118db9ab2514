"""The deployment files: valid manifests, and names, ports, probes and secrets that agree with the gateway."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml

import gateway
from gateway.config import Config, ServerConfig, parse_config
from tests.helpers.paths import ROOT

DEPLOY = ROOT / "deploy"
KUBERNETES = DEPLOY / "kubernetes"
# The oldest Kubernetes still commonly run, and the newest the validator knows.
KUBERNETES_VERSIONS = ("1.28.0", kubernetes_validate.latest_version())
VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(:-[^}]*)?\}")


def manifests() -> Iterator[tuple[str, dict[str, Any]]]:
    for path in sorted(KUBERNETES.glob("*.yaml")):
        if path.name != "kustomization.yaml":
            for document in yaml.safe_load_all(path.read_text(encoding="utf-8")):
                yield path.name, document


def resource(kind: str, name: str) -> dict[str, Any]:
    [found] = [doc for _, doc in manifests() if doc["kind"] == kind and doc["metadata"]["name"] == name]
    return found


DEPLOYMENT = resource("Deployment", "agent-gateway")
POD = DEPLOYMENT["spec"]["template"]
[CONTAINER] = POD["spec"]["containers"]
CONFIG_TEXT = (DEPLOY / "gateway.yaml").read_text(encoding="utf-8")
COMPOSE = yaml.safe_load((DEPLOY / "compose.yaml").read_text(encoding="utf-8"))
README = (ROOT / "README.md").read_text(encoding="utf-8")
STOP_TIMEOUT = 45  # what the README gives docker run


def required_variables(text: str) -> set[str]:
    """The environment variables a config needs: those referenced without a default."""
    return {match.group(1) for match in VARIABLE.finditer(text) if match.group(2) is None}


def deployed_config() -> Config:
    """The deployed config, with each variable it needs set to a value of its own (as distinct keys must be)."""
    return parse_config(
        CONFIG_TEXT, "deploy/gateway.yaml", {name: f"{name}-value" for name in required_variables(CONFIG_TEXT)}
    )


def container_env() -> dict[str, dict[str, Any]]:
    return {entry["name"]: entry for entry in CONTAINER["env"]}


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize(
    ("source", "document"), list(manifests()), ids=lambda value: value if isinstance(value, str) else ""
)
def test_every_manifest_is_valid_kubernetes(source: str, document: dict[str, Any], version: str) -> None:
    kubernetes_validate.validate(document, version, strict=True)  # strict: an unknown (misspelt) field is an error


def test_the_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((KUBERNETES / "kustomization.yaml").read_text(encoding="utf-8"))
    files = {path.name for path in KUBERNETES.glob("*.yaml")} - {"kustomization.yaml"}
    assert sorted(kustomization["resources"]) == sorted(files)


def test_the_config_map_holds_the_deployed_config_and_it_is_valid() -> None:
    config_map = resource("ConfigMap", "agent-gateway-config")
    assert config_map["data"]["config.yaml"] == CONFIG_TEXT
    config = deployed_config()
    assert config.server.state == "redis://redis:6379/0"
    assert config.server.state_password is not None
    assert config.server.state_password.get_secret_value() == "REDIS_PASSWORD-value"
    assert config.server.host == "0.0.0.0"  # reachable from outside the container
    assert config.keys and all(key.key is not None for key in config.keys)


def test_the_gateway_finds_the_mounted_config() -> None:
    env = container_env()
    mount = next(m for m in CONTAINER["volumeMounts"] if m["name"] == "config")
    volume = next(v for v in POD["spec"]["volumes"] if v["name"] == "config")
    assert volume["configMap"]["name"] == "agent-gateway-config" and mount["readOnly"]
    assert env["GATEWAY_CONFIG"]["value"] == f"{mount['mountPath']}/config.yaml"


def test_probes_and_ports_agree_with_the_gateway() -> None:
    port = deployed_config().server.port
    assert port == ServerConfig().port
    [container_port] = CONTAINER["ports"]
    assert container_port == {"name": "http", "containerPort": port, "protocol": "TCP"}
    assert CONTAINER["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert CONTAINER["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    annotations = POD["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(port) and annotations["prometheus.io/path"] == "/metrics"
    service = resource("Service", "agent-gateway")
    assert service["spec"]["selector"] == POD["metadata"]["labels"]
    assert [p["targetPort"] for p in service["spec"]["ports"]] == ["http"]


def test_termination_waits_longer_than_the_gateway_drains() -> None:
    server = deployed_config().server.model_dump()
    # What the gateway takes from SIGTERM to exit: its drain delay (a setting of the shutdown work, counted
    # once present), its grace period for streams in flight, and uvicorn's 5 s margin past both.
    stopping = server.get("drain_delay", 0) + server["shutdown_grace"] + 5
    assert POD["spec"]["terminationGracePeriodSeconds"] > stopping
    assert int(COMPOSE["services"]["gateway"]["stop_grace_period"].removesuffix("s")) > stopping


def test_the_pod_runs_as_the_image_user_without_privileges() -> None:
    uid = re.search(r"--uid (\d+)", (ROOT / "Dockerfile").read_text(encoding="utf-8"))
    assert uid is not None
    security = POD["spec"]["securityContext"]
    assert security["runAsNonRoot"] and security["runAsUser"] == int(uid.group(1))
    container = CONTAINER["securityContext"]
    assert container["allowPrivilegeEscalation"] is False and container["capabilities"]["drop"] == ["ALL"]
    assert container["readOnlyRootFilesystem"] and any(m["mountPath"] == "/tmp" for m in CONTAINER["volumeMounts"])


def test_the_gateway_has_resource_requests_and_limits() -> None:
    resources = CONTAINER["resources"]
    assert {"cpu", "memory"} <= resources["requests"].keys() and "memory" in resources["limits"]


def test_every_variable_the_config_needs_comes_from_a_secret_or_a_value() -> None:
    env = container_env()
    secrets = {name for name, entry in env.items() if "valueFrom" in entry}
    assert required_variables(CONFIG_TEXT) <= env.keys()
    # The keys themselves never sit in a manifest: they come from the one Secret.
    assert {n for n in required_variables(CONFIG_TEXT) if n.endswith(("_KEY", "PASSWORD"))} <= secrets
    assert {env[name]["valueFrom"]["secretKeyRef"]["name"] for name in secrets} == {"agent-gateway-keys"}
    assert all(env[name]["valueFrom"]["secretKeyRef"]["key"] == name for name in secrets)


def test_scaling_keeps_at_least_two_and_a_drain_can_proceed() -> None:
    autoscaler = resource("HorizontalPodAutoscaler", "agent-gateway")
    assert autoscaler["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "agent-gateway",
    }
    # The autoscaler alone says how many: a replica count in the Deployment would fight it on every apply.
    assert autoscaler["spec"]["minReplicas"] >= 2 and "replicas" not in DEPLOYMENT["spec"]
    budget = resource("PodDisruptionBudget", "agent-gateway")
    assert budget["spec"]["selector"]["matchLabels"] == POD["metadata"]["labels"]
    assert budget["spec"]["minAvailable"] < autoscaler["spec"]["minReplicas"]


def test_the_redis_the_config_names_is_deployed() -> None:
    redis = resource("Service", "redis")
    assert container_env()["REDIS_HOST"]["value"] == redis["metadata"]["name"]
    assert [p["port"] for p in redis["spec"]["ports"]] == [6379] and ":6379/" in CONFIG_TEXT


def test_compose_runs_two_replicas_with_redis_and_the_mounted_config() -> None:
    services = COMPOSE["services"]
    gateway = services["gateway"]
    assert gateway["deploy"]["replicas"] == 2
    assert "redis" in services and gateway["depends_on"]["redis"]["condition"] == "service_healthy"
    assert gateway["environment"]["REDIS_HOST"] == "redis"
    assert "./gateway.yaml:/etc/gateway/config.yaml:ro" in gateway["volumes"]
    assert gateway["environment"]["GATEWAY_CONFIG"] == "/etc/gateway/config.yaml"
    # Every secret the config needs is taken from the environment docker compose runs in, and required there.
    for name in required_variables(CONFIG_TEXT):
        assert gateway["environment"][name] == f"${{{name}:?set {name}}}"
    published = gateway["ports"][0].rsplit(":", 1)[1]
    assert published == str(ServerConfig().port)


def test_the_image_the_pods_run_is_the_one_the_readme_builds() -> None:
    [container] = [c for c in POD["spec"]["containers"] if c["name"] == "gateway"]
    image = container["image"]
    assert image == f"agent-gateway:{gateway.__version__}" and container["imagePullPolicy"] == "IfNotPresent"
    assert f"docker build -t {image} " in README
    kustomization = yaml.safe_load((DEPLOY / "kubernetes" / "kustomization.yaml").read_text())
    assert kustomization["images"] == [{"name": "agent-gateway", "newTag": gateway.__version__}]


def test_no_secret_is_on_a_command_line_or_in_a_url() -> None:
    """ps shows a process's arguments to everyone on the host; a URL breaks on a password's '@' or '/'."""
    redis = resource("Deployment", "redis")["spec"]["template"]["spec"]["containers"][0]
    compose_redis = COMPOSE["services"]["redis"]
    for command in (redis["command"], compose_redis["command"]):
        assert command[:2] == ["sh", "-c"] and "| exec redis-server -" in command[2]
        assert "requirepass" in command[2] and "--requirepass" not in command[2]
    assert "args" not in redis
    assert "${REDIS_PASSWORD}@" not in CONFIG_TEXT and "state_password: ${REDIS_PASSWORD}" in CONFIG_TEXT
    assert "${REDIS_PASSWORD}@" not in (DEPLOY / "gateway.yaml").read_text()


def test_docker_run_waits_for_the_drain_before_it_kills() -> None:
    server = ServerConfig()
    lines = [line for line in README.splitlines() if line.startswith("docker run")]
    assert lines and all(f"--stop-timeout {STOP_TIMEOUT}" in line for line in lines)
    assert server.drain_delay + server.shutdown_grace < STOP_TIMEOUT
