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

from numerics.markov import InvalidInputError
from paper_refs import claims
from verify import theorem_global_min, theorem_local_min, theorem_manifold, theorem_saddle
from verify.analysis import analyse_bigram, analyse_unigram
from verify.cli import check_writable, config_from, exit_now, parser, show_stages, stage
from verify.report import Check, Report, combined_exit_code

THEOREMS = [
    (theorem_local_min, analyse_unigram),
    (theorem_saddle, analyse_unigram),
    (theorem_global_min, analyse_bigram),
    (theorem_manifold, theorem_manifold.analyse_default),
]


SYMBOLIC = "symbolic identities"


def symbolic_report() -> Report:
    """The SymPy identities as one report: each check passes iff the difference reduces to 0.

    Inputs are symbols (p, q in (0, 1); tied and untied; d and N as each identity states), so the
    contract's input keys say so; ``numeric`` carries every identity's two sides in LaTeX.
    """
    import sympy as sp

    from theory.landscape import identities

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
        given = {k: v for k, v in vars(args).items() if k in ("p", "q", "tying") and v is not None}
        if args.latex:
            check_writable(args.latex)
        configs = [config_from(argparse.Namespace(**(vars(args) | {k: module.DEFAULTS[k] for k in ("p", "q", "tying")}
                                                     | given))) for module, _ in THEOREMS]  # d, N, ...: shared flags
        show_stages(enabled=not args.json)
        with stage("symbolic identities (all of them)"):
            reports = [symbolic_report()]
        for (module, analyse), config in zip(THEOREMS, configs):
            with stage(f"{module.THEOREM} (all of it)"):
                reports.append(analyse(config, module.THEOREM, args.scan_manifold))
        if args.latex:
            from theory.latex import write_document

            write_document(args.latex, p=given.get("p"), q=given.get("q"))
    except (InvalidInputError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    status = claim_status(reports)
    if args.json:
        print(json.dumps({"reports": [r.to_dict() for r in reports], "claims": status}, indent=2))
    else:
        print(f"{'theorem':<22} {'inputs':<34} {'prediction':<16} {'checks':>7} {'verdict':<13}")
        for r in reports:
            inputs = " ".join(f"{k}={r.inputs[k]}" for k in ("p", "q", "tying") if k in r.inputs)
            passed = sum(c.passed is True for c in r.checks)
            print(f"{r.theorem:<22} {inputs:<34} {r.prediction[:16]:<16} {passed:>3}/{len(r.checks):<3} {r.verdict}")
            for c in r.checks:
                if c.passed is not True:
                    print(f"    {'FAIL' if c.passed is False else 'undecided'}: {c.name} (measured {c.measured})")
        if args.list:
            print(f"\n{'claim':<19} {'checks':>6}  status (where in the paper)")
            for row in status:
                print(f"{row['id']:<19} {row['checks']:>6}  {row['status']}\n{'':<27}({row['where']})")
    return combined_exit_code(reports)


if __name__ == "__main__":
    exit_now(main())
