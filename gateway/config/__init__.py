"""The gateway's YAML configuration: the schema, reading a file, the no-file default, the human summary.

A config names the upstream providers and the routes that map a requested
model name to one of them, optionally with the agent rewrite. Loading is
strict on purpose: an unknown key, a dangling provider reference or a missing
environment variable is an error naming the file, the line and the path to
the field, so a typo never silently changes what the gateway does.
"""

from gateway.config.checks import key_digest
from gateway.config.defaults import THINKER_MODEL, default_config
from gateway.config.describe import describe
from gateway.config.loading import ConfigError, load_config, parse_config
from gateway.config.schema import (
    DEMO_BASE_URL,
    Config,
    KeyConfig,
    ModelRoute,
    OtelConfig,
    ProviderConfig,
    ResponsesConfig,
    RewriteConfig,
    ServerConfig,
    TimeoutOverrides,
    Timeouts,
)

__all__ = [
    "DEMO_BASE_URL",
    "THINKER_MODEL",
    "Config",
    "ConfigError",
    "KeyConfig",
    "ModelRoute",
    "OtelConfig",
    "ProviderConfig",
    "ResponsesConfig",
    "RewriteConfig",
    "ServerConfig",
    "TimeoutOverrides",
    "Timeouts",
    "default_config",
    "describe",
    "key_digest",
    "load_config",
    "parse_config",
]
