"""Hypothesis profiles: ``ci`` (the built-in CI profile, extended; loaded when CI is set),
``dev`` (the default elsewhere) and ``thorough``.  Choose with HYPOTHESIS_PROFILE=name."""

import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    settings.get_profile("ci"),
    max_examples=15,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("dev", max_examples=30, deadline=None)
settings.register_profile("thorough", max_examples=500, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))
