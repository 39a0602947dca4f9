"""Run every verification and print one table: `python -m verify` (add --list for the claims).

Runs the symbolic identities (SymPy, exact reduction to 0), then theorem_local_min,
theorem_saddle and theorem_global_min on their own default inputs (the common flags --d,
--seq-len, --device, --dtype and --seed apply to all three).  Exit code 0 when everything
agrees with the theory, 1 when something disagrees, 2 on bad input.
"""

from __future__ import annotations

import argparse
import json
import sys

from numerics.markov import InvalidInputError
from paper_refs import claims
from verify import theorem_global_min, theorem_local_min, theorem_saddle
from verify.analysis import analyse_bigram, analyse_unigram
from verify.cli import config_from, parser
from verify.report import Check, Report

THEOREMS = [
    (theorem_local_min, analyse_unigram),
    (theorem_saddle, analyse_unigram),
    (theorem_global_min, analyse_bigram),
]


def symbolic_report() -> Report:
    """The SymPy identities as one report: each check passes iff the difference reduces to 0."""
    from theory.landscape import identities

    checks = [Check(r.name, bool(r.proven), str(r.form)[:40], str(r.expected)[:40], 0.0,
                    f"claim {r.claim}; assumes {'; '.join(r.assumptions)}") for r in identities()]
    return Report("symbolic identities", sorted({r.claim for r in identities()}), {}, "identities hold",
                  {"loss": None, "hessian_eigenvalues": None}, {}, checks)


def claim_status(reports: list[Report]) -> list[dict]:
    """Each registered claim with the results of its checks across the reports."""
    results: dict[str, list[bool | None]] = {}
    for report in reports:
        for check in report.checks:
            results.setdefault(check.name, []).append(check.passed)
    table = []
    for claim in claims():
        seen = [r for name in claim["checks"] for r in results.get(name, [])]
        status = ("contradicted" if False in seen else "inconclusive" if None in seen else "confirmed" if seen
                  else f"see python -m verify.experiments {claim['experiment']}" if "experiment" in claim
                  else "not run")
        table.append({"id": claim["id"], "where": claim["where"], "status": status, "checks": len(seen)})
    return table


def main(argv: list[str] | None = None) -> int:
    ap = parser(__doc__, {})
    ap.add_argument("--list", action="store_true", help="print the paper's claims with their status")
    try:
        args = ap.parse_args(argv)
        reports = [symbolic_report()]
        for module, analyse in THEOREMS:
            defaults = argparse.Namespace(**(vars(args) | module.DEFAULTS))
            reports.append(analyse(config_from(defaults), module.THEOREM, args.scan_manifold))
    except InvalidInputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    status = claim_status(reports)
    if args.json:
        print(json.dumps({"reports": [json.loads(r.to_json()) for r in reports], "claims": status}, indent=2))
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
            print(f"\n{'claim':<19} {'status':<13} {'checks':>6}  where in the paper")
            for row in status:
                print(f"{row['id']:<19} {row['status']:<13} {row['checks']:>6}  {row['where']}")
    return max(r.exit_code for r in reports)


if __name__ == "__main__":
    sys.exit(main())
