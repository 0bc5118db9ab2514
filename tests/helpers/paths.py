"""Where the tests find the repository's files: its root, and the recorded provider streams."""

from __future__ import annotations

from pathlib import Path

# The repository: this file is tests/helpers/paths.py.
ROOT = Path(__file__).resolve().parents[2]
# Real provider streams, recorded in public repositories; PROVENANCE.md there says where each comes from.
FIXTURES = ROOT / "tests" / "fixtures" / "recorded"
# What the real coding agents (Claude Code, Codex CLI) sent, recorded; PROVENANCE.md there says how.
AGENT_REQUESTS = ROOT / "tests" / "fixtures" / "agents"
