"""Run every verification and print one table: `python -m verify` (add --list for the claims).

Runs the symbolic identities (SymPy, exact reduction to 0), then theorem_local_min,
theorem_saddle, theorem_global_min and theorem_manifold (a random point of M_π).  Each theorem runs
on its own default inputs unless --p, --q or --tying/--no-tying are given: those apply to all,
and each then verifies what the theory predicts for them.  --d, --seq-len, --device, --dtype,
--seed, --scan-manifold and --latex apply as in the theorem commands; --sweep belongs to the
theorem commands and is refused.
A claim is credited only with checks of runs that test it: the proven identities registered
under it (named), and "confirmed at K points" (listed) from numeric runs.
Exit code 0 when everything agrees with the theory, 1 when something disagrees, 2 on bad input,
3 when nothing disagrees but some check cannot decide (inconclusive).
"""

from __future__ import annotations

import argparse
import json
import sys
import textwrap

from numerics.markov import InvalidInputError
from paper_refs import claims
from verify import theorem_global_min, theorem_local_min, theorem_manifold, theorem_saddle
from verify.analysis import analyse_bigram, analyse_unigram
from verify.cli import check_duration, check_writable, config_from, exit_now, parser, show_stages, stage
from verify.report import Check, Report, combined_exit_code, fmt

THEOREMS = [
    (theorem_local_min, analyse_unigram),
    (theorem_saddle, analyse_unigram),
    (theorem_global_min, analyse_bigram),
    (theorem_manifold, theorem_manifold.analyse_default),
]


SYMBOLIC = "symbolic identities"
#: Longest line of the text output (a terminal's width); --json keeps every value whole.
LINE_WIDTH = 120


def symbolic_report() -> Report:
    """The SymPy identities as one report: each check passes iff the difference reduces to 0.

    Inputs are symbols (p, q in (0, 1); tied and untied; d and N as each identity states), so the
    contract's input keys say so; ``numeric`` carries every identity's two sides in LaTeX.
    """
    import sympy as sp

    from theory.registry import identities

    results = identities()
    checks = [Check(r.name, bool(r.proven), str(r.form), str(r.expected), 0.0,
                    f"claim {r.claim}; assumes {'; '.join(r.assumptions)}", comparison="e - m reduces to 0")
              for r in results]
    inputs = {"p": "symbol in (0, 1)", "q": "symbol in (0, 1)", "tying": "tied and untied",
              "d": "as each identity states", "seq_len": "as each identity states", "device": None, "dtype": "exact"}
    latex = [{"name": r.name, "form": sp.latex(r.form), "expected": sp.latex(r.expected)} for r in results]
    # every claim that registers an identity's name is credited by it, not only the identity's own claim
    return Report(SYMBOLIC, [c["id"] for c in claims()], inputs, "identities hold",
                  {"loss": None, "hessian_eigenvalues": None}, {"identities": len(results), "latex": latex}, checks)


def _point(inputs: dict) -> str:
    source = f"p={inputs['p']:g}, q={inputs['q']:g}" if inputs.get("p") is not None else f"chain {inputs.get('chain')}"
    return f"({source}, {'tied' if inputs['tying'] else 'untied'}, {inputs['dtype']})"


def claim_status(reports: list[Report]) -> list[dict]:
    """Each registered claim with the checks that test it, counted per run.

    A check counts for a claim only if its name is registered under the claim *and* its run
    tests that claim (the claim is in the run's report): a saddle run never credits LOCAL-MIN.
    """
    table = []
    for claim in claims():
        symbolic, numeric, proven = [], {}, []
        for report in reports:
            if claim["id"] not in report.claims:
                continue
            for check in report.checks:
                if check.name not in claim["checks"]:
                    continue
                if report.theorem != SYMBOLIC:
                    numeric.setdefault(_point(check.inputs), []).append(check.passed)
                else:
                    symbolic.append(check.passed)
                    proven.append(check.name)
        seen = symbolic + [r for results in numeric.values() for r in results]
        points = sorted(numeric)
        if False in seen:
            bad = [pt for pt, results in numeric.items() if False in results] + (["symbolic"] if False in symbolic
                                                                                  else [])
            status = "contradicted at " + ", ".join(bad)
        elif None in seen:
            status = "inconclusive at " + ", ".join(pt for pt, results in numeric.items() if None in results)
        elif seen:
            parts = [f"identities proven for all p, q: {', '.join(proven)}"] if symbolic else []
            if points:
                parts.append(f"confirmed at {len(points)} point{'s' if len(points) > 1 else ''}: " + ", ".join(points))
            status = "; ".join(parts)
        elif "experiment" in claim:
            status = f"see python -m verify.experiments {claim['experiment']}"
        else:
            status = "not run"
        table.append({"id": claim["id"], "where": claim["where"], "status": status, "checks": len(seen),
                      "symbolic": bool(symbolic) and False not in symbolic, "points": points})
    return table


def _wrapped(text: str, first: str, indent: str, width: int = LINE_WIDTH) -> list[str]:
    """``text`` after ``first`` in lines of at most ``width`` characters, continued under ``indent``; nothing
    is cut (hyphenated names such as k-state stay whole)."""
    return textwrap.wrap(text, width, initial_indent=first, subsequent_indent=indent, break_on_hyphens=False)


def runs_text(reports: list[Report]) -> str:
    """One row per run (theorem, inputs, prediction, checks passed, verdict), then a line for each check
    that did not pass, its measurement as the text report shows it (a long list by its ends)."""
    lines = [f"{'theorem':<22} {'inputs':<34} {'prediction':<16} {'checks':>7} {'verdict':<13}"]
    for r in reports:
        inputs = "all p, q in (0, 1); tied, untied" if r.theorem == SYMBOLIC else " ".join(
            f"{k}={r.inputs[k]}" for k in ("p", "q", "tying") if k in r.inputs)
        passed = sum(c.passed is True for c in r.checks)
        lines.append(f"{r.theorem:<22} {inputs:<34} {r.prediction[:16]:<16} {passed:>3}/{len(r.checks):<3} {r.verdict}")
        for c in r.checks:
            if c.passed is not True:
                result = "FAIL" if c.passed is False else "undecided"
                lines += _wrapped(f"{c.name} (measured {fmt(c.measured)})", f"    {result}: ", " " * 8)
    return "\n".join(lines)


def claims_text(status: list[dict]) -> str:
    """The --list table: each claim, its number of checks, its status and where in the paper, the last two
    wrapped under the status column (a claim proven by many identities lists them all, over several lines)."""
    column = max(len(row["id"]) for row in status)
    indent = " " * (column + 9)
    lines = [f"{'claim':<{column}} {'checks':>6}  status (where in the paper)"]
    for row in status:
        lines += _wrapped(row["status"], f"{row['id']:<{column}} {row['checks']:>6}  ", indent)
        lines += _wrapped(f"({row['where']})", indent, indent)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = parser(__doc__, {"p": None, "q": None, "tying": None}, prog="python -m verify")
    ap.add_argument("--list", action="store_true", help="print the paper's claims with their status")
    try:
        args = ap.parse_args(argv)
        if args.sweep:
            raise InvalidInputError("python -m verify does not take --sweep; use it with a theorem command, "
                                    "e.g. python -m verify.theorem_local_min --sweep 5")
        if args.transition is not None or args.chain is not None or args.embedding == "onehot":
            raise InvalidInputError("python -m verify runs the binary scalar model; for a k-state chain use a theorem "
                                    "command, e.g. python -m verify.theorem_local_min --chain sticky5")
        if args.latex:
            check_writable(args.latex)
        # each theorem's own (p, q) and tying unless given (--p and --q together: config_from refuses one alone);
        # d, N, ...: the shared flags
        configs = [config_from(argparse.Namespace(**(vars(args) | {
            "default_pair": (module.DEFAULTS["p"], module.DEFAULTS["q"]),
            "tying": module.DEFAULTS["tying"] if args.tying is None else args.tying}))) for module, _ in THEOREMS]
        check_duration(configs[0], 0, args.scan_manifold, theorems=len(configs))
        show_stages(enabled=not args.json)
        with stage("symbolic identities (all of them)"):
            reports = [symbolic_report()]
        for (module, analyse), config in zip(THEOREMS, configs):
            with stage(f"{module.THEOREM} (all of it)"):
                reports.append(analyse(config, module.THEOREM, args.scan_manifold))
        if args.latex:
            from theory.latex import write_document

            write_document(args.latex, p=args.p, q=args.q)
    except (InvalidInputError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    status = claim_status(reports)
    if args.json:
        print(json.dumps({"reports": [r.to_dict() for r in reports], "claims": status}, indent=2))
    else:
        print(runs_text(reports))
        if args.list:
            print("\n" + claims_text(status))
    return combined_exit_code(reports)


if __name__ == "__main__":
    exit_now(main())
