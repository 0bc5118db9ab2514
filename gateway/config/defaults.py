"""The config used without a file, so the README's examples (``model="assistant"``) work as written."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, Final

from gateway.config.loading import validate
from gateway.config.schema import Config

__all__ = ["ASSISTANT_MODEL", "ASSISTANT_ROUTE", "OPENAI_BASE_URL", "THINKER_MODEL", "THINKER_ROUTE", "default_config"]

OPENAI_BASE_URL: Final = "https://api.openai.com/v1"
# The route the README's examples name, and where it goes without a config file.
ASSISTANT_ROUTE: Final = "assistant"
ASSISTANT_MODEL: Final = "gpt-4o-mini"
THINKER_ROUTE: Final = "thinker"
THINKER_MODEL: Final = "demo-thinker"
"""The demo model that thinks in ``<think>`` tags in its content."""
_THINKER_REWRITE: Final = {"inject_tools": False, "inner_thoughts": "none"}


def default_config(env: Mapping[str, str] | None = None) -> Config:
    """With ``OPENAI_API_KEY``: ``assistant`` goes to ``$GATEWAY_ASSISTANT_MODEL`` (default gpt-4o-mini) and every
    other model to OpenAI (``$OPENAI_BASE_URL``) under its own name, all in agent mode. Without a key: the same
    routes on the demo provider, which answers under the requested name, and ``thinker`` and ``thinker-exposed``,
    its model that thinks in tags, with the reasoning hidden and exposed.
    """
    env = os.environ if env is None else env
    assistant: dict[str, Any] = {"name": ASSISTANT_ROUTE, "rewrite": {}}
    provider: dict[str, Any]
    if key := env.get("OPENAI_API_KEY"):
        name, provider = "openai", {"base_url": env.get("OPENAI_BASE_URL") or OPENAI_BASE_URL, "api_key": key}
        assistant["model"] = env.get("GATEWAY_ASSISTANT_MODEL") or ASSISTANT_MODEL
    else:
        name, provider = "demo", {"api": "demo"}
    models = [{**assistant, "provider": name}]
    if name == "demo":
        # A reasoning model rather than an agent: no tools injected, its think blocks hidden or exposed.
        models += [
            {
                "name": route,
                "provider": name,
                "model": THINKER_MODEL,
                "rewrite": {**_THINKER_REWRITE, "reasoning": shown},
            }
            for route, shown in ((THINKER_ROUTE, "hide"), (THINKER_ROUTE + "-exposed", "expose"))
        ]
    models.append({"name": "*", "provider": name, "rewrite": {}})
    return validate({"providers": {name: provider}, "models": models}, "default config (from the environment)")
