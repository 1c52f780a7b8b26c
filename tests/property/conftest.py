"""Hypothesis profiles for the property tests.

``default`` keeps the suite fast and deterministic (derandomized, no example database:
the same examples on every run); ``STEPKERNEL_PROFILE=soak`` runs many more examples and
longer stateful runs (for a nightly job or before a release).

The crash machines in ``test_crash_stateful.py`` derive their own run sizes from the
loaded profile, with floors the CI must meet (issue 3): at least 300 examples of 60
steps on the in-memory store and 100 of 40 on SQLite under ``default``, and
``soak`` scales them up (3000 x 150 and 500 x 75).
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "default",
    max_examples=60,
    stateful_step_count=40,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "soak",
    max_examples=2_000,
    stateful_step_count=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("STEPKERNEL_PROFILE", "default"))
