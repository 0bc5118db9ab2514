"""agent-gateway: an OpenAI-compatible gateway for agent-style models."""

__version__ = "0.1.0"
