"""What the tests share, and the only test code a test module imports.

``servers``: a scripted upstream, uvicorn in a thread, ``gateway serve`` as a process. ``streams``: building
chat-completion streams and reading them back. ``chat``, ``responses``, ``anthropic``: each front door's answers
read as its clients read them (the SDKs' own types where they exist). ``think``: texts with think tags,
labelled. ``agent_model``: a scripted tool-calling model for agent mode. ``metrics``, ``readme``, ``paths``,
``redis_server``: the rest.
"""
