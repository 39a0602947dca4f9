"""Checks and reports: what was measured, against what, with which tolerance, and the verdict."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class Check:
    """One comparison. ``passed`` is None when the measurement cannot decide (inconclusive)."""

    name: str
    passed: bool | None
    measured: Any
    expected: Any
    tolerance: float | None
    detail: str = ""


@dataclass
class Report:
    theorem: str
    claims: list[str]
    inputs: dict[str, Any]
    prediction: str
    closed_form: dict[str, Any]
    numeric: dict[str, Any]
    checks: list[Check] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def verdict(self) -> str:
        """contradicted if any check failed, else inconclusive if any is undecided, else confirmed."""
        if any(c.passed is False for c in self.checks):
            return "contradicted"
        if any(c.passed is None for c in self.checks):
            return "inconclusive"
        return "confirmed"

    @property
    def exit_code(self) -> int:
        return 1 if self.verdict == "contradicted" else 0

    def to_json(self) -> str:
        data = asdict(self)
        data["verdict"] = self.verdict
        return json.dumps(_finite(data), indent=2)

    def to_text(self) -> str:
        lines = [
            f"{self.theorem}  (claims: {', '.join(self.claims)})",
            "inputs: " + ", ".join(f"{k}={v}" for k, v in self.inputs.items()),
            f"prediction of the theory: {self.prediction}",
            f"closed form: loss = {_fmt(self.closed_form['loss'])}, nonzero Hessian eigenvalues = "
            f"{_fmt(self.closed_form['hessian_eigenvalues'])}",
            "",
            f"  {'check':<38} {'result':<12} {'measured':>14} {'expected':>14} {'tolerance':>10}",
        ]
        for c in self.checks:
            result = {True: "pass", False: "FAIL", None: "undecided"}[c.passed]
            lines.append(f"  {c.name:<38} {result:<12} {_fmt(c.measured):>14} {_fmt(c.expected):>14} "
                         f"{_fmt(c.tolerance):>10}")
            if c.detail:
                lines.append(f"      {c.detail}")
        lines += [f"note: {n}" for n in self.notes]
        lines.append(f"verdict: {self.verdict.upper()}")
        return "\n".join(lines)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}" if abs(value) >= 1e-3 or value == 0 else f"{value:.3e}"
    if isinstance(value, list):
        return "[" + ", ".join(_fmt(v) for v in value) + "]"
    return "-" if value is None else str(value)


def _finite(value: Any) -> Any:
    """JSON has no inf/nan: write them as strings."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value
