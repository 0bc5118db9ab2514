"""Test configuration shared by every test module."""

from hypothesis import settings

# No per-example deadline: the machine is shared, and a timing bound is not a behaviour.
settings.register_profile("gateway", deadline=None)
settings.load_profile("gateway")
