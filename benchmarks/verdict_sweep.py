"""Verdicts at the hard inputs: no proven statement may come out "contradicted".

    python benchmarks/verdict_sweep.py [--d 4] [--seq-len 8]

Runs the θ_π analysis (local minimum, saddle or degenerate, as the theory predicts) and the θ_*
analysis at |p + q - 1| = 1e-1 .. 1e-10 on both sides, at p = q (five values) and with p or q
at 1e-6, each tied and untied, in float64 and float32, and prints the count of confirmed /
inconclusive / contradicted per band and dtype, then every run that was not confirmed with the
checks that were not passed and why.  Exit code 1 if any run is contradicted.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter

from tqdm import tqdm

from verify.analysis import analyse_bigram, analyse_unigram
from verify.cli import Config

VERDICTS = ("confirmed", "inconclusive", "contradicted")


def cases() -> list[tuple[str, float, float]]:
    """(band, p, q) for every hard input of the sweep."""
    out = [(f"|p+q-1|=1e-{k}", 0.5, 0.5 + side * 10.0**-k) for k in range(1, 11) for side in (1, -1)]
    out += [("p = q", v, v) for v in (1e-3, 0.1, 0.5, 0.9, 0.999)]
    out += [("p or q = 1e-6", p, q) for p, q in ((1e-6, 1e-6), (0.5, 1e-6), (1e-6, 0.5), (0.999999, 1e-6))]
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--d", type=int, default=4)
    ap.add_argument("--seq-len", type=int, default=8)
    args = ap.parse_args()
    counts: Counter = Counter()
    unconfirmed = []
    runs = [(band, p, q, tying, dtype, analyse) for band, p, q in cases() for tying in (True, False)
            for dtype in ("float64", "float32") for analyse in (analyse_unigram, analyse_bigram)]
    for band, p, q, tying, dtype, analyse in tqdm(runs, desc="verdict sweep", mininterval=5):
        report = analyse(Config(p, q, tying, args.d, args.seq_len, "cpu", dtype, 0), analyse.__name__, 0)
        counts[band, dtype, report.verdict] += 1
        if report.verdict != "confirmed":
            why = "; ".join(f"{c.name}: {c.detail.split(';')[-1].strip()}"
                            for c in report.checks if c.passed is not True)
            unconfirmed.append(f"{report.verdict:<12} p={p:<12g} q={q:<12g} tying={tying!s:<5} {dtype} "
                               f"{analyse.__name__}: {why}")
    bands = list(dict.fromkeys(band for band, *_ in cases()))
    print(f"\n{'inputs':<16} {'dtype':<8} " + " ".join(f"{v:>13}" for v in VERDICTS))
    for band in bands:
        for dtype in ("float64", "float32"):
            print(f"{band:<16} {dtype:<8} " + " ".join(f"{counts[band, dtype, v]:>13}" for v in VERDICTS))
    total = Counter(v for (_, _, v), n in counts.items() for _ in range(n))
    print("total: " + ", ".join(f"{v} {total[v]}" for v in VERDICTS))
    print("\nnot confirmed:\n" + "\n".join(unconfirmed))
    return 1 if total["contradicted"] else 0


if __name__ == "__main__":
    sys.exit(main())
