"""A resolved config for humans (``gateway check-config``), secrets masked."""

from __future__ import annotations

from urllib.parse import urlsplit

from gateway.config.schema import Config, KeyConfig, RewriteConfig
from gateway.core.forwarding import DEFAULT_FORWARD

__all__ = ["describe", "mask"]


def describe(config: Config) -> str:
    """The resolved config for humans (``gateway check-config``); secrets are masked."""
    server = config.server
    keys = len(server.api_keys) + len(config.keys)
    auth = f"on ({keys} key{'s' if keys != 1 else ''})" if keys else "off"
    state = "memory (this process)" if server.state == "memory" else _redact_url(server.state)
    lines = [
        f"server: {server.host}:{server.port}, auth {auth}, max body {server.max_body_bytes} bytes",
        f"state: {state}, on failure {server.state_failure}, timeout {server.state_timeout * 1000:g} ms",
        _stored_summary(config),
    ]
    if config.keys:
        lines.append("keys:")
        lines += [f"  {_key_summary(key)}" for key in config.keys]
    lines.append("providers:")
    for name, provider in config.providers.items():
        key = mask(provider.api_key.get_secret_value()) if provider.api_key else "(none)"
        if provider.api == "demo":
            lines.append(f"  {name}: the built-in demo model (api: demo), in process, no network")
            continue
        wire = "" if provider.api == "chat" else f" (api: {provider.api})"
        lines.append(f"  {name}: {_redact_url(provider.base_url)}{wire}, api key {key}")
        t = provider.timeout
        total = f"{t.total:g}s" if t.total else "none"
        lines.append(
            f"    timeout: connect {t.connect:g}s, read {t.read:g}s, first byte {t.first_byte:g}s,"
            f" idle {t.idle:g}s, total {total}"
        )
        if provider.headers:
            headers = ", ".join(f"{header}: {mask(value)}" for header, value in provider.headers.items())
            lines.append(f"    headers: {headers}")
        forward = ", ".join(provider.forward)
        if provider.forward == DEFAULT_FORWARD:
            forward = "the default OpenAI endpoints"
        lines.append(
            f"    forwards: {forward or 'nothing'}; client headers: {', '.join(provider.forward_headers) or 'none'}"
        )
    lines.append("routes:")
    for route in config.models:
        upstream = route.model or "(requested name)"
        behaviour = _rewrite_summary(route.rewrite) if route.rewrite else "pass-through"
        extras = f", fallbacks {', '.join(route.fallbacks)}" if route.fallbacks else ""
        lines.append(f"  {route.name} -> {', '.join(route.providers)} / {upstream}: {behaviour}{extras}")
    return "\n".join(lines)


def _stored_summary(config: Config) -> str:
    responses, server = config.responses, config.server
    if server.secret is not None:
        secret = f"server.secret {mask(server.secret.get_secret_value())}"
    else:
        secret = "the environment's secret if set, else a key of each process's own"
    older = f" (+{len(server.previous_secrets)} older)" if server.previous_secrets else ""
    return (
        f"stored responses: {responses.store_ttl:g}s, at most {responses.max_stored_bytes} bytes each and"
        f" {responses.max_bytes_per_key} per key; sealed with {secret}{older}"
    )


def _key_summary(key: KeyConfig) -> str:
    secret = mask(key.key.get_secret_value()) if key.key is not None else f"sha256 {key.digest.hex()[:8]}..."
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


def mask(secret: str) -> str:
    """Enough of a secret to tell keys apart: ``sk-...abcd``, or nothing at all when it is short."""
    if len(secret) < 16:
        return "***"
    return f"{'sk-' if secret.startswith('sk-') else ''}...{secret[-4:]}"
