"""The gateway's speed shortcuts, in one place, each beside the general path it stands for.

Most chunks of an agent-style answer are argument fragments, and most chunks of
a plain route need no rewrite: decoding, rewriting and encoding each of them
whole costs more than the rest of the stream (``bench/bench_core.py``). The
shortcuts take the upstream's bytes instead, where they provably stand for
the chunk: ``stream`` on the translator's side (fragments recognised by their
bytes, the relay of a plain route), ``encoding`` on the encoder's (a chunk as
its upstream bytes, a fragment's bytes around its new delta, the client's
model name put in them), ``items`` on the Responses and Messages doors' (a
chunk that only adds to the open item's text as that item's delta event, a
template filled in). ``Shortcuts.CHECK`` runs the general path beside every
shortcut and raises ``ShortcutMismatch`` where they differ; the tests run
with it.
"""

from gateway.core.passthrough.encoding import ChunkBytes, ModelName, same_chunks
from gateway.core.passthrough.items import ItemBytes
from gateway.core.passthrough.stream import ChatPassThrough, ShortcutMismatch, Shortcuts

__all__ = ["ChatPassThrough", "ChunkBytes", "ItemBytes", "ModelName", "ShortcutMismatch", "Shortcuts", "same_chunks"]
