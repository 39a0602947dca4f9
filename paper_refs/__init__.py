"""The paper's claims with IDs, where they stand in the paper, and the checks that verify them."""

from __future__ import annotations

import tomllib
from functools import cache
from importlib import resources


@cache
def claims() -> list[dict]:
    """The registry: a list of {id, where, statement, checks}, plus ``experiment`` (a
    ``verify.experiments`` NAME) for the empirical claims, whose checks are training runs, and
    ``command`` with ``command_checks`` for claims checked by a command of their own (the basins of
    the canonical model: ``python -m verify.theorem_basins``), not by the transformer theorems."""
    return tomllib.loads(resources.files(__name__).joinpath("claims.toml").read_text("utf-8"))["claim"]
