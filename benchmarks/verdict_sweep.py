"""Verdicts at the hard inputs: no proven statement may come out "contradicted".

Runs the θ_π analysis (local minimum, saddle or degenerate, as the theory predicts) and the θ_*
analysis at |p + q - 1| = 1e-1 .. 1e-10 on both sides, at p = q (five values) and with p or q
at 1e-6, each tied and untied, in float64 and float32 (232 runs), and prints the count of
confirmed / inconclusive / contradicted per band and dtype, then every run that was not confirmed
with the checks that were not passed and why.  Target: no run contradicted.  Exit 0: none;
1: some (MISS); 2: bad input (--d and --seq-len are checked as the theorem commands check them).
Progress goes to stderr; one thread by default (about 4 s a run on 2 busy cores, 5x faster than two).
Run:  python benchmarks/verdict_sweep.py [--d 4] [--seq-len 8]
"""

from __future__ import annotations

import argparse
from collections import Counter
from collections.abc import Sequence
from dataclasses import replace

from _common import Target, add_threads, entry, parser, positive_int, progress, report, set_threads

from verify.analysis import analyse_bigram, analyse_unigram
from verify.cli import Config, config_from
from verify.cli import parser as theorem_parser

VERDICTS = ("confirmed", "inconclusive", "contradicted")


def cases() -> list[tuple[str, float, float]]:
    """(band, p, q) for every hard input of the sweep."""
    out = [(f"|p+q-1|=1e-{k}", 0.5, 0.5 + side * 10.0**-k) for k in range(1, 11) for side in (1, -1)]
    out += [("p = q", v, v) for v in (1e-3, 0.1, 0.5, 0.9, 0.999)]
    out += [("p or q = 1e-6", p, q) for p, q in ((1e-6, 1e-6), (0.5, 1e-6), (1e-6, 0.5), (0.999999, 1e-6))]
    return out


def base_config(d: int, seq_len: int) -> Config:
    """The sweep's d and N validated by the theorem commands' own rules (sizes the dense Hessian can take)."""
    return config_from(theorem_parser("", {}).parse_args(["--d", str(d), "--seq-len", str(seq_len), "--device", "cpu"]))


def contradiction_target(verdicts: Counter) -> Target:
    """No run may be contradicted."""
    return Target("runs contradicted", verdicts["contradicted"], 0, at_least=False)


def build_parser() -> argparse.ArgumentParser:
    ap = parser(__doc__, prog="python benchmarks/verdict_sweep.py")
    ap.add_argument("--d", type=positive_int, default=4, help="embedding dimension d of every run (default 4)")
    ap.add_argument("--seq-len", type=positive_int, default=8, help="sequence length N of every run (default 8)")
    add_threads(ap, default=1)
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    base = base_config(args.d, args.seq_len)
    set_threads(args.threads)
    counts: Counter = Counter()
    unconfirmed = []
    runs = [(band, p, q, tying, dtype, analyse) for band, p, q in cases() for tying in (True, False)
            for dtype in ("float64", "float32") for analyse in (analyse_unigram, analyse_bigram)]
    for band, p, q, tying, dtype, analyse in progress(runs, "verdict sweep"):
        result = analyse(replace(base, p=p, q=q, tying=tying, dtype=dtype), analyse.__name__, 0)
        counts[band, dtype, result.verdict] += 1
        if result.verdict != "confirmed":
            why = "; ".join(f"{c.name}: {c.detail.split(';')[-1].strip()}"
                            for c in result.checks if c.passed is not True)
            unconfirmed.append(f"{result.verdict:<12} p={p:<12g} q={q:<12g} tying={tying!s:<5} {dtype} "
                               f"{analyse.__name__}: {why}")
    bands = list(dict.fromkeys(band for band, *_ in cases()))
    print(f"\n{'inputs':<16} {'dtype':<8} " + " ".join(f"{v:>13}" for v in VERDICTS))
    for band in bands:
        for dtype in ("float64", "float32"):
            print(f"{band:<16} {dtype:<8} " + " ".join(f"{counts[band, dtype, v]:>13}" for v in VERDICTS))
    total = Counter(v for (_, _, v), n in counts.items() for _ in range(n))
    print("total: " + ", ".join(f"{v} {total[v]}" for v in VERDICTS))
    print("\nnot confirmed:\n" + "\n".join(unconfirmed))
    return report([contradiction_target(total)])


if __name__ == "__main__":
    entry(main)
