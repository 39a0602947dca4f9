"""Checks and reports: what was measured, against what, with which tolerance, and the verdict."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any

#: Width of the check-name column of the text report; longer names get a line of their own.
NAME_WIDTH = 40
#: Exit code of each verdict; 2 is bad input or usage.
EXIT_CODES = {"confirmed": 0, "contradicted": 1, "inconclusive": 3}


@dataclass
class Check:
    """One comparison. ``passed`` is None when the measurement cannot decide (inconclusive).

    A measurement that is not finite (NaN or inf anywhere in ``measured``) fails the check,
    whatever the comparison said: a broken computation never passes, nor vanishes.  ``inputs``
    are those of the run that produced the check (``Report`` fills them in); ``comparison`` states
    the test that ``passed`` reports, e.g. "m >= -tol" for a one-sided one.
    """

    name: str
    passed: bool | None
    measured: Any
    expected: Any
    tolerance: float | None
    detail: str = ""
    inputs: dict[str, Any] = field(default_factory=dict)
    comparison: str = "|m - e| <= tol"  # what "pass" means, m measured, e expected

    def __post_init__(self) -> None:
        if _nonfinite(self.measured):
            self.passed = False
            self.detail = ("measurement is not finite; " + self.detail).rstrip("; ")


def _shown(value: Any) -> str:
    """An input as the text report prints it: a matrix as rows 'a,b;c,d' with 6 significant digits."""
    if isinstance(value, list) and value and isinstance(value[0], list):
        return ";".join(",".join(f"{x:.6g}" for x in row) for row in value)
    return str(value)


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

    def __post_init__(self) -> None:
        for check in self.checks:
            check.inputs = check.inputs or dict(self.inputs)

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
        """``EXIT_CODES`` of the verdict: 0 confirmed, 1 contradicted, 3 inconclusive."""
        return EXIT_CODES[self.verdict]

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON-ready data: NaN and ±inf become null, their paths listed under
        ``nonfinite`` (e.g. "checks[3].measured")."""
        data = asdict(self)
        data["verdict"] = self.verdict
        found: list[str] = []
        data = _finite(data, "", found)
        data["nonfinite"] = found
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def to_text(self) -> str:
        lines = [
            f"{self.theorem}  (claims: {', '.join(self.claims)})",
            "inputs: " + ", ".join(f"{k}={_shown(v)}" for k, v in self.inputs.items() if v is not None),
            f"prediction of the theory: {self.prediction}",
            f"closed form: loss = {fmt(self.closed_form['loss'])}, nonzero Hessian eigenvalues = "
            f"{fmt(self.closed_form['hessian_eigenvalues'])}",
            "",
            f"  {'check':<{NAME_WIDTH}} {'result':<9} {'test':<21} {'measured (m)':>14} {'expected (e)':>14} "
            f"{'tol':>9}",
        ]
        for c in self.checks:
            result = {True: "pass", False: "FAIL", None: "undecided"}[c.passed]
            measured, expected = fmt(c.measured), fmt(c.expected)
            # a long name or list value gets its own line rather than pushing the columns apart
            name = c.name if len(c.name) <= NAME_WIDTH else c.name + "\n  " + " " * NAME_WIDTH
            row = f"  {name:<{NAME_WIDTH}} {result:<9} {c.comparison:<21} "
            if max(len(measured), len(expected)) <= 14:
                lines.append(row + f"{measured:>14} {expected:>14} {fmt(c.tolerance):>9}")
            else:
                lines += [row + f"{'':>14} {'':>14} {fmt(c.tolerance):>9}",
                          f"      m = {measured}", f"      e = {expected}"]
            if c.detail:
                lines.append(f"      {c.detail}")
        lines += [f"note: {n}" for n in self.notes]
        lines.append(f"verdict: {self.verdict.upper()}")
        return "\n".join(lines)


def fmt(value: Any) -> str:
    """A number in 6 significant digits; a list of more than six values by its ends and length."""
    if isinstance(value, float):
        return f"{value:.6g}" if abs(value) >= 1e-3 or value == 0 else f"{value:.3e}"
    if isinstance(value, list):
        shown = value if len(value) <= 6 else [*value[:3], "…", *value[-2:]]
        return "[" + ", ".join(fmt(v) for v in shown) + "]" + ("" if shown is value else f" ({len(value)} values)")
    return "-" if value is None else str(value)


def _nonfinite(value: Any) -> bool:
    """Is there a NaN or ±inf anywhere in ``value`` (a number, or lists and dicts of them)?"""
    found: list[str] = []
    _finite(value, "", found)
    return bool(found)


def _finite(value: Any, path: str, found: list[str]) -> Any:
    """JSON has no NaN or inf: write them as null and record where they were."""
    if isinstance(value, float) and not math.isfinite(value):
        found.append(path)
        return None
    if isinstance(value, dict):
        return {k: _finite(v, f"{path}.{k}" if path else k, found) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v, f"{path}[{i}]", found) for i, v in enumerate(value)]
    return value


def combined_exit_code(reports: list[Report]) -> int:
    """One exit code for several reports: contradicted anywhere wins, then inconclusive."""
    verdicts = {r.verdict for r in reports}
    return next((EXIT_CODES[v] for v in ("contradicted", "inconclusive") if v in verdicts), 0)
