"""Test-wide settings: one deterministic Hypothesis profile, so CI runs the same examples every time."""

from hypothesis import settings

settings.register_profile("repro", deadline=None, max_examples=50, derandomize=True)
settings.load_profile("repro")
