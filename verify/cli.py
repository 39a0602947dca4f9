"""Command-line plumbing shared by the theorem commands: flags, input validation, exit codes.

Exit codes: 0 every check agrees with the theory's prediction; 1 some check disagrees;
2 bad input or usage (one line on stderr, no traceback).
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass

import torch

from numerics.markov import InvalidInputError, check_positive_int, check_probability
from verify.report import Report


@dataclass(frozen=True)
class Config:
    p: float
    q: float
    tying: bool
    d: int
    seq_len: int
    device: str
    dtype: str
    seed: int

    @property
    def torch_dtype(self) -> torch.dtype:
        return getattr(torch, self.dtype)

    def inputs(self) -> dict:
        return {k: getattr(self, k) for k in ("p", "q", "tying", "d", "seq_len", "device", "dtype")}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2
        raise InvalidInputError(message)


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None


def parser(description: str, defaults: dict) -> argparse.ArgumentParser:
    ap = _Parser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--p", type=_number, default=defaults.get("p", 0.5), help="P(x_{n+1}=1 | x_n=0), in (0, 1)")
    ap.add_argument("--q", type=_number, default=defaults.get("q", 0.8), help="P(x_{n+1}=0 | x_n=1), in (0, 1)")
    ap.add_argument("--tying", action=argparse.BooleanOptionalAction, default=defaults.get("tying", True),
                    help="weight tying a = e (default: %(default)s)")
    ap.add_argument("--d", type=int, default=defaults.get("d", 4), help="embedding dimension (default: %(default)s)")
    ap.add_argument("--seq-len", type=int, default=defaults.get("seq_len", 8),
                    help="sequence length N of the exact population loss (default: %(default)s)")
    ap.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    ap.add_argument("--dtype", choices=["float64", "float32"], default="float64")
    ap.add_argument("--seed", type=int, default=0, help="seed of every random draw (default: %(default)s)")
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of the text report")
    ap.add_argument("--latex", metavar="FILE", help="also write the LaTeX derivation for these inputs to FILE")
    return ap


def config_from(args: argparse.Namespace) -> Config:
    p, q = check_probability("p", args.p), check_probability("q", args.q)
    check_positive_int("d", args.d)
    check_positive_int("seq-len", args.seq_len)
    if args.seq_len > 16:
        raise InvalidInputError(f"--seq-len {args.seq_len} is too large for the dense full-space Hessian "
                                "(D grows with N and the exact loss with 2^N); use --seq-len <= 16")
    if args.d > 16:
        raise InvalidInputError(f"--d {args.d} is too large for the dense full-space Hessian; use --d <= 16")
    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    elif device == "cuda" and not torch.cuda.is_available():
        raise InvalidInputError("--device cuda requested but no CUDA device is available")
    if not math.isfinite(p + q):
        raise InvalidInputError("p and q must be finite")
    return Config(p, q, args.tying, args.d, args.seq_len, device, args.dtype, args.seed)


def main(description: str, defaults: dict, analyse: Callable[[Config], Report], argv: list[str] | None = None) -> int:
    """Parse, run, print; return the exit code (bad input: one stderr line and 2)."""
    try:
        args = parser(description, defaults).parse_args(argv)
        config = config_from(args)
        report = analyse(config)
        if args.latex:
            from theory.latex import write_document

            write_document(args.latex, p=config.p, q=config.q)
    except InvalidInputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(report.to_json() if args.json else report.to_text())
    return report.exit_code
