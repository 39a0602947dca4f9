"""Command-line plumbing shared by the theorem commands: flags, input validation, exit codes.

Exit codes: 0 every check agrees with the theory's prediction; 1 some check disagrees;
2 bad input or usage (one line on stderr, no traceback); 3 inconclusive (no check disagrees, some
cannot decide: an eigenvalue within its error bound of 0, a curvature below the loss's rounding).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

from numerics.markov import (
    FiniteChain,
    InvalidInputError,
    MarkovChain,
    SecondOrderChain,
    check_positive_int,
    check_probability,
    num_prefixes,
    parse_number,
    parse_transition,
    preset,
)
from theory.cli import Parser, bad_input, check_writable
from verify.report import Check, Report, combined_exit_code
from verify.runner import RESULTS_FILE, RunResult, add_runner_flags, run_with_args

#: Largest N whose exact loss and dense full-space Hessian the theorem commands compute.
DENSE_MAX_SEQ_LEN = 16
#: A run (--sweep points, --scan-manifold points) estimated to take longer than this is refused.
MAX_HOURS = 24.0
#: Seconds of one theorem run at d = 4, N = 8 (the defaults), the cost of a --sweep point: measured
#: 0.31 s (0.22-0.31 s over runs; local_min and global_min, 2 CPU cores), the floor at any size.
POINT_SECONDS = 0.3
#: Above the defaults a point grows as (D × the exact enumeration's size)^POINT_GROWTH, fitted to the
#: points measured on 2 CPU cores: 0.31 s at d=4, N=8; 59 s at d=4, N=12; 81 s at d=8, N=10.
POINT_GROWTH = 1.74
#: Seconds to classify one --scan-manifold point (a forward pass, O(N² d²)): 63 a second measured at N=8.
SCAN_POINT_SECONDS = 0.016


@dataclass(frozen=True)
class Config:
    """One theorem run's inputs.  ``transition`` set: the one-hot model (claim MULTI-STATE) on that
    k-state chain, with p, q its switching probabilities when k = 2 and None otherwise.  ``order``
    "second-order": the source is the paper's lagged chain of (p, q) (``SecondOrderChain.lagged``);
    ``memory`` = W: attention sees the current symbol and the W before it (None: the whole past).
    Only theorem_manifold sets these two."""

    p: float | None
    q: float | None
    tying: bool
    d: int
    seq_len: int
    device: str
    dtype: str
    seed: int
    transition: tuple[tuple[float, ...], ...] | None = None
    chain_name: str | None = None
    order: str = "first-order"
    memory: int | None = None

    @property
    def torch_dtype(self) -> torch.dtype:
        return getattr(torch, self.dtype)

    @property
    def onehot(self) -> bool:
        return self.transition is not None

    @functools.cached_property
    def source(self) -> MarkovChain | FiniteChain | SecondOrderChain:
        """The chain: the k-state one of the one-hot model, else the binary (p, q) (of first or second order)."""
        if self.onehot:
            return FiniteChain(self.transition, name=self.chain_name)
        if self.order == "second-order":
            return SecondOrderChain.lagged(self.p, self.q)
        return MarkovChain(self.p, self.q)

    def inputs(self) -> dict:
        base = {k: getattr(self, k) for k in ("p", "q", "tying", "d", "seq_len", "device", "dtype")}
        # the lagged second-order chain applies the first-order kernel of (p, q) to x_(n-1): that kernel is shown
        kernel = MarkovChain(self.p, self.q) if self.order == "second-order" else self.source
        matrix = kernel.transition.tolist()
        return base | {"transition": matrix, "chain": self.chain_name,
                       "model": "one-hot (E, A z + b, softmax)" if self.onehot else "scalar (x e, one logit)"}


def resolve_device(name: str) -> str:
    """``auto`` → cuda when available, else cpu; ``cuda`` without a GPU is bad input."""
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise InvalidInputError("--device cuda requested but no CUDA device is available")
    return name


log = logging.getLogger("verify")
log.propagate = False


class _Stderr(logging.Handler):
    """Writes to whatever sys.stderr is when a record arrives (a StreamHandler keeps the stream it
    was created with, which a test harness may have closed since)."""

    def emit(self, record: logging.LogRecord) -> None:
        print(f"  done: {self.format(record)}", file=sys.stderr, flush=True)


_stages = _Stderr()


@contextmanager
def stage(name: str) -> Iterator[None]:
    """Report a stage of a theorem on stderr as it completes: its name and seconds (``log``)."""
    start = time.perf_counter()
    yield
    log.info("%-58s %6.1f s", name, time.perf_counter() - start)


def show_stages(enabled: bool = True) -> None:
    """Send ``stage`` lines to the current stderr, or (``enabled`` False: --json, where a machine reads
    the output and may merge the two streams) nowhere."""
    if _stages not in log.handlers:
        log.addHandler(_stages)
    log.setLevel(logging.INFO if enabled else logging.WARNING)


def _number(text: str) -> float:
    """A float flag's value as written (``parse_number``: 1e-400 is refused, not read as 0)."""
    try:
        return parse_number(text)
    except InvalidInputError as err:  # before ValueError, its base class
        raise argparse.ArgumentTypeError(str(err)) from None
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None


def binary_pair(p: float | None, q: float | None, default: tuple[float, float]) -> tuple[float, float]:
    """(--p, --q) as given, or ``default`` when neither is.  A given value outside (0, 1) is named first;
    one without the other is bad input: it would silently pair with the other's default, a chain the user
    never named."""
    for name, value in (("p", p), ("q", q)):
        if value is not None:
            check_probability(name, value)
    if (p is None) != (q is None):
        raise InvalidInputError("give both --p and --q, or neither")
    return default if p is None else (p, q)


def parser(description: str, defaults: dict, *, prog: str | None = None, sweep: bool = True) -> argparse.ArgumentParser:
    """The flags every theorem command shares; ``sweep`` adds --sweep and --scan-manifold.

    ``prog`` is how the usage line names the command (``python -m verify.theorem_local_min``).
    """
    ap = Parser(prog=prog, description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p, q = defaults.get("p", 0.5), defaults.get("q", 0.8)
    pair = "each theorem's own" if p is None else f"--p {p} --q {q}"
    ap.add_argument("--p", type=_number, help=f"P(x_{{n+1}}=1 | x_n=0), in (0, 1); give --p and --q together "
                                              f"(default: {pair})")
    ap.add_argument("--q", type=_number, help="P(x_{n+1}=0 | x_n=1), in (0, 1); with --p")
    ap.set_defaults(default_pair=(p, q))
    chain = ap.add_mutually_exclusive_group()
    chain.add_argument("--transition", metavar="ROWS",
                       help="a k-state chain instead of (p, q): rows separated by ';', entries by ',', e.g. "
                            "'0.05,0.5,0.45;0.6,0.05,0.35;0.5,0.45,0.05' (the one-hot model of the released code); "
                            "a 2-state chain is the binary one (p = P[0,1], q = P[1,0]) and takes --p's range")
    chain.add_argument("--chain", metavar="NAME",
                       help="a named k-state chain: sticky5 (the paper's 5-state chain), switching3, rotating3, "
                            "uniform3, or dirichlet-K-SEED")
    ap.add_argument("--embedding", choices=["auto", "scalar", "onehot"], default="auto",
                    help="scalar: the theory's x e with one logit; onehot: the released code's E[x] with k logits "
                         "(default auto: scalar for --p/--q, onehot for --transition/--chain)")
    tying = defaults.get("tying", True)
    shown = "each theorem's own" if tying is None else tying
    ap.add_argument("--tying", action=argparse.BooleanOptionalAction, default=tying,
                    help=f"weight tying a = e (default: {shown})")
    ap.add_argument("--d", type=int, default=None,
                    help=f"embedding dimension (default: {defaults.get('d', 4)}; k-state: at least k)")
    ap.add_argument("--seq-len", type=int, default=None,
                    help=defaults.get("seq_len_help", "sequence length N of the exact population loss")
                    + f" (default: {defaults.get('seq_len', 8)}; k-state: the largest N ≤ 8 with k^N ≤ 1024)")
    ap.set_defaults(default_d=defaults.get("d", 4), default_seq_len=defaults.get("seq_len", 8))
    ap.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    ap.add_argument("--dtype", choices=["float64", "float32"], default="float64")
    ap.add_argument("--seed", type=int, default=0, help="seed of every random draw (default: %(default)s)")
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of the text report")
    ap.add_argument("--latex", metavar="FILE", help="also write the LaTeX derivation for these inputs to FILE")
    if sweep:
        ap.add_argument("--scan-manifold", type=int, default=0, metavar="K",
                        help="also classify K random points of the unigram manifold M_π (all weights random)")
        ap.add_argument("--sweep", type=int, default=0, metavar="K",
                        help="run K random (p, q) instead of one (cycling: uniform in (0.02, 0.98)^2, p = q, "
                             "|p+q-1| = 10^-1 .. 10^-10) and print a summary table; refused when the estimate "
                             f"(--sweep and --scan-manifold) passes {MAX_HOURS:g} h: {POINT_SECONDS} s a point at "
                             f"d=4, N=8, growing as (D·2^N)^{POINT_GROWTH}, D parameters (measured on 2 CPU cores), "
                             f"{SCAN_POINT_SECONDS} s a scanned point")
    return ap


def given_flags(argv: list[str] | None, flags: tuple[str, ...]) -> list[str]:
    """Which of ``flags`` appear on the command line ``argv`` (None: sys.argv)."""
    argv = sys.argv[1:] if argv is None else argv
    return [flag for flag in flags if any(a == flag or a.startswith(flag + "=") for a in argv)]


def chain_from(args: argparse.Namespace) -> FiniteChain | None:
    """The k-state chain of --transition / --chain / --embedding onehot, or None for the scalar model.

    A chain given twice (--p/--q and --transition/--chain) is bad input; --p without --q too."""
    if (args.p is not None or args.q is not None) and (args.transition is not None or args.chain is not None):
        raise InvalidInputError("give the chain either as --p/--q or as --transition/--chain, not both")
    pair = binary_pair(args.p, args.q, args.default_pair)
    if args.transition is not None:
        chain = FiniteChain(parse_transition(args.transition), name="custom")
    elif args.chain is not None:
        chain = preset(args.chain)
    elif args.embedding == "onehot":
        chain = FiniteChain.binary(*(check_probability(name, v) for name, v in zip("pq", pair)))
    else:
        return None
    if args.embedding == "scalar":
        if chain.k != 2:
            raise InvalidInputError(f"--embedding scalar is the binary model; this chain has k={chain.k} states")
        args.p, args.q = chain.transition[0, 1], chain.transition[1, 0]
        return None
    return chain


def config_from(args: argparse.Namespace, *, max_seq_len: int = DENSE_MAX_SEQ_LEN) -> Config:
    """Validated inputs; anything out of range raises InvalidInputError (exit 2)."""
    chain = chain_from(args)
    k = 2 if chain is None else chain.k
    if k > 16:
        raise InvalidInputError(f"a chain with k={k} states is too large for the dense full-space Hessian; "
                                "at most 16 states")
    d = args.d if args.d is not None else (args.default_d if chain is None else max(args.default_d, k))
    seq_len = args.seq_len
    if seq_len is None:  # k-state: the largest N with k^N ≤ 1024 (a dense Hessian in seconds)
        seq_len = args.default_seq_len if chain is None else min(args.default_seq_len, max(
            n for n in range(1, 11) if k**n <= 1024 or n == 1))
    check_positive_int("d", d)
    check_positive_int("seq-len", seq_len)
    if seq_len > max_seq_len:
        why = ("too large for the dense full-space Hessian (D grows with N and the exact loss with 2^N)"
               if max_seq_len == DENSE_MAX_SEQ_LEN else "too large (memory grows as N²)")
        raise InvalidInputError(f"--seq-len {seq_len} is {why}; use --seq-len <= {max_seq_len}")
    if chain is not None and num_prefixes(k, seq_len) > num_prefixes(2, DENSE_MAX_SEQ_LEN):
        raise InvalidInputError(f"--seq-len {seq_len} with k={k} states enumerates {num_prefixes(k, seq_len):,} "
                                f"prefixes, too many for the dense full-space Hessian; lower --seq-len")
    if d > 16:
        raise InvalidInputError(f"--d {d} is too large for the dense full-space Hessian; use --d <= 16")
    device = resolve_device(args.device)
    if chain is not None:
        transition = tuple(map(tuple, chain.transition.tolist()))
        # a 2-state chain is the binary (p, q): refused where --p, --q would be, with the same words
        p, q = (check_binary(transition[0][1], transition[1][0], args.dtype, ("p = P[0,1]", "q = P[1,0]"))
                if k == 2 else (None, None))
        return Config(p, q, args.tying, d, seq_len, device, args.dtype, args.seed, transition, chain.name)
    p, q = check_binary(*binary_pair(args.p, args.q, args.default_pair), args.dtype)
    return Config(p, q, args.tying, d, seq_len, device, args.dtype, args.seed)


def check_binary(p: object, q: object, dtype: str, names: tuple[str, str] = ("p", "q")) -> tuple[float, float]:
    """(p, q) of a binary chain as the theorem commands accept it, or InvalidInputError: both in (0, 1),
    and p, q, 1-p, 1-q at least tiny^(1/4) of ``dtype``.  ``names``: how the messages call p and q."""
    p, q = check_probability(names[0], p), check_probability(names[1], q)
    floor = torch.finfo(getattr(torch, dtype)).tiny ** 0.25
    if min(p, q, 1 - p, 1 - q) < floor:
        raise InvalidInputError(f"p, q, 1-p and 1-q must be at least {floor:.1e} in {dtype}: below that the "
                                "curvature π0π1 ~ min(p, q) underflows when squared (got "
                                f"p={p:g}, q={q:g})")
    return p, q


Analysis = Callable[[Config, str, int], Report]


def _dense_work(d: int, seq_len: int, tying: bool) -> int:
    """D × the numbers of the exact enumeration: what the dense Hessian backpropagates."""
    from numerics.population import enumeration_bytes
    from numerics.transformer import init_params

    params = init_params(d, seq_len, tying=tying, std=0.0)
    return sum(v.numel() for v in params.values()) * enumeration_bytes(params, "exact")


def point_seconds(config: Config) -> float:
    """Estimated seconds of one theorem run at ``config`` (one --sweep point): ``POINT_SECONDS`` at the
    defaults, times (work / work at the defaults)^``POINT_GROWTH`` above them on the CPU.  On a GPU only
    the floor is claimed (the per-point overhead of closed forms and checks)."""
    if config.device != "cpu":
        return POINT_SECONDS
    ratio = _dense_work(config.d, config.seq_len, config.tying) / _dense_work(4, 8, True)
    return POINT_SECONDS * max(1.0, ratio) ** POINT_GROWTH


def check_duration(config: Config, sweep: int, scan: int, *, theorems: int = 1) -> None:
    """Refuse (InvalidInputError) ``theorems`` runs at ``config`` per --sweep point (at least one), each with
    ``scan`` scanned points of M_π, when the estimate (``point_seconds``, ``SCAN_POINT_SECONDS``) passes
    ``MAX_HOURS``: such a run cannot finish, and the user learns it now rather than after hours of silence."""
    runs = theorems * max(1, sweep)
    each = point_seconds(config) + scan * SCAN_POINT_SECONDS
    hours = runs * each / 3600
    if hours > MAX_HOURS:
        asked = [f"--{flag} {value}" for flag, value in (("sweep", sweep), ("scan-manifold", scan)) if value]
        raise InvalidInputError(f"{' '.join(asked) or 'this run'} would take about {hours:,.3g} h ({runs:,} "
                                f"run{'s' * (runs > 1)} of about {each:.2g} s, estimated from runs measured on 2 CPU "
                                f"cores), more than the {MAX_HOURS:g} h limit; lower "
                                f"{' or '.join(a.split()[0] for a in asked) or '--d or --seq-len'}")


def sweep_configs(config: Config, count: int) -> list[Config]:
    """``count`` random (p, q), seeded by ``config.seed``, cycling through three kinds of input:
    uniform on (0.02, 0.98)², p = q, and p + q - 1 = ±10^u with u uniform in [-10, -1]."""
    gen = torch.Generator().manual_seed(config.seed)
    u = torch.rand(count, 3, generator=gen, dtype=torch.float64).tolist()
    draws = []
    for i, (a, b, c) in enumerate(u):
        p = 0.02 + 0.96 * a
        if i % 3 == 0:
            draws.append((p, 0.02 + 0.96 * b))
        elif i % 3 == 1:
            draws.append((p, p))
        else:
            p = 0.1 + 0.8 * a
            draws.append((p, 1 - p + (1 if c < 0.5 else -1) * 10 ** (-1 - 9 * b)))
    return [replace(config, p=p, q=q) for p, q in draws]


def sweep_progress(as_json: bool, stream) -> bool:
    """Whether a run of many tasks (--sweep, --scan-manifold, --atlas, theorem_basins) shows the runner's progress
    on ``stream`` (stderr): always for the text report; with --json only on a terminal, so that merged streams
    (2>&1) still parse as JSON."""
    return not as_json or stream.isatty()


def sweep_table(configs: list[Config], outcomes: list[Report | str]) -> str:
    """One row per (p, q) of ``configs``: its report's prediction, checks passed and verdict, or (a str) the
    error of a task that failed; then the count of each verdict."""
    lines = [f"{'p':>8} {'q':>8} {'p+q-1':>9} {'tying':>6}  {'prediction':<16} {'checks':>7}  verdict"]
    for config, outcome in zip(configs, outcomes):
        row = f"{config.p:>8.4f} {config.q:>8.4f} {config.p + config.q - 1:>9.1e} {config.tying!s:>6}  "
        if isinstance(outcome, str):
            lines.append(row + f"task failed: {outcome}")
            continue
        passed = sum(c.passed is True for c in outcome.checks)
        lines.append(row + f"{outcome.prediction[:16]:<16} {passed:>3}/{len(outcome.checks):<3}  {outcome.verdict}")
    verdicts = ["failed" if isinstance(o, str) else o.verdict for o in outcomes]
    shown = ("confirmed", "inconclusive", "contradicted") + (("failed",) if "failed" in verdicts else ())
    lines.append(", ".join(f"{v}: {verdicts.count(v)}" for v in shown))
    return "\n".join(lines)


# --- runs of many tasks (--sweep, --scan-manifold) through verify/runner.py --------------------------------

#: the flags of a run of many tasks, refused on a single run
RUNNER_FLAGS = ("--out", "--workers", "--scheduler", "--resume")
RESUME_WITHOUT_OUT = f"--resume needs --out FOLDER, the folder of the earlier run's {RESULTS_FILE}"


def config_json(config: Config) -> dict:
    """``config`` as a task's JSON-ready config; ``config_of`` reads it back."""
    return asdict(config)


def config_of(data: dict) -> Config:
    """The Config of ``config_json``'s dict, also after a JSON round trip (a transition's rows as lists)."""
    rows = data.get("transition")
    return Config(**(data | {"transition": None if rows is None else tuple(map(tuple, rows))}))


def theorem_task(analyse: Analysis, theorem: str, config: Config) -> dict:
    """The task of ``sweep_task`` that runs ``analyse`` (a module-level function) at ``config`` for ``theorem``."""
    return {"analysis": f"{analyse.__module__}.{analyse.__qualname__}", "theorem": theorem,
            "config": config_json(config)}


def sweep_tasks(analyse: Analysis, theorem: str, configs: list[Config], scan: int) -> list[dict]:
    """The tasks of a theorem command's run of many (``sweep_task``): for each config its report, followed by
    the ``scan`` points of its scan of M_π."""
    return [task for config in configs for task in (
        theorem_task(analyse, theorem, config), *({"scan": i, "config": config_json(config)} for i in range(scan)))]


def sweep_task(task: dict) -> dict:
    """One task of ``sweep_tasks``: ``Report.to_dict`` of the analysis named by ``task["analysis"]`` (module.function,
    run without a scan) at its config, or (``scan`` set) that point of the config's scan of M_π
    (``verify.analysis.scan_point``).  Pure: the config holds every input, the seed included."""
    config = config_of(task["config"])
    if "scan" in task:
        from verify.analysis import scan_point

        return scan_point(config, task["scan"])
    module, _, name = task["analysis"].rpartition(".")
    return getattr(importlib.import_module(module), name)(config, task["theorem"], 0).to_dict()


def sweep_outcomes(result: RunResult, points: int, scan: int) -> list[dict | str]:
    """Per config of ``sweep_tasks``: its report's record with its scan's summary in numeric.manifold_scan
    (and a note), or the error of the first of its tasks that failed."""
    from verify.analysis import scan_note, scan_summary

    outcomes: list[dict | str] = []
    for first in range(0, points * (1 + scan), 1 + scan):
        group = result.entries[first:first + 1 + scan]
        errors = [e["error"] for e in group if e["status"] != "ok"]
        record = group[0].get("record")
        if errors:
            outcomes.append(errors[0])
        elif scan:
            summary = scan_summary([e["record"] for e in group[1:]])
            outcomes.append(record | {"numeric": record["numeric"] | {"manifold_scan": summary},
                                      "notes": [*record["notes"], scan_note(summary)]})
        else:
            outcomes.append(record)
    return outcomes


def report_from_record(record: dict) -> Report:
    """The Report whose ``to_dict`` is ``record`` (its numbers that were not finite come back as None)."""
    fields = {k: record[k] for k in ("theorem", "claims", "inputs", "prediction", "closed_form", "numeric", "notes")}
    return Report(**fields, checks=[Check(**c) for c in record["checks"]])


def check_folder(path: str, flag: str = "--out") -> Path:
    """An output folder must be usable before any computation starts: a writable folder, or a new one (made
    when written to) whose nearest existing parent is a writable folder."""
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise InvalidInputError(f"{flag} {path} is a file, not a folder")
    existing = next(p for p in (folder, *folder.parents) if p.exists())
    if not existing.is_dir():
        raise InvalidInputError(f"cannot make folder {path}: {existing} is a file")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise InvalidInputError(f"cannot write {path}: permission denied")
    return folder


def add_output_flags(ap: argparse.ArgumentParser) -> None:
    """--out FOLDER and the runner's flags (--workers, --scheduler, --resume) of the theorem commands."""
    ap.add_argument("--out", metavar="FOLDER",
                    help=f"with --sweep or --scan-manifold: write each task (a (p, q) run, a scanned point) to "
                         f"FOLDER/{RESULTS_FILE} as it finishes (the folder is made if missing); the table or JSON is "
                         "printed as without it, and without it nothing is written")
    add_runner_flags(ap)


def check_runner_flags(args: argparse.Namespace, many: bool, needs: str) -> None:
    """``RUNNER_FLAGS`` belong to a run of many tasks (``many``; ``needs`` says which flags make one): on a
    single run they are bad input."""
    given = [flag for flag, value in zip(RUNNER_FLAGS, (args.out, args.workers, args.scheduler, args.resume))
             if value is not None and value is not False]
    if given and not many:
        raise InvalidInputError(f"{', '.join(given)} {'is' if len(given) == 1 else 'are'} for runs of many tasks "
                                f"({needs}); this is a single run")


def print_runs(args: argparse.Namespace, configs: list[Config], result: RunResult) -> int:
    """Print a run of many tasks from its records (the table or JSON list of --sweep, the one report of
    --scan-manifold) and return its exit code: 1 when a task failed, else ``combined_exit_code``."""
    outcomes = sweep_outcomes(result, len(configs), args.scan_manifold)
    reports = [o if isinstance(o, str) else report_from_record(o) for o in outcomes]
    if args.json:
        records = [{"inputs": c.inputs(), "error": o} if isinstance(o, str) else o for c, o in zip(configs, outcomes)]
        print(json.dumps(records if args.sweep else records[0], indent=2))
    elif args.sweep:
        print(sweep_table(configs, reports))
    else:
        print(f"task failed: {reports[0]}" if isinstance(reports[0], str) else reports[0].to_text())
    return 1 if result.failed else combined_exit_code(reports)


def exit_now(code: int) -> None:
    """End the process with ``code`` once stdout and stderr are flushed, skipping the interpreter's teardown.

    With torch loaded, finalising its modules takes 0.5-1 s (measured: ``import torch`` alone exits
    0.7 s later than it would with ``os._exit``), a fifth of the main command's wall time.  Only for the
    ``__main__`` entries: every file a command writes is closed by then, and nothing here registers
    ``atexit`` work.
    """
    for stream in (sys.stdout, sys.stderr):
        # None: the descriptor was closed at start (>&-); a reader that left (| head) or a closed stream:
        # nothing left to deliver, and the code must survive
        if stream is not None:
            with contextlib.suppress(BrokenPipeError, ValueError):
                stream.flush()
    os._exit(code)


def write_latex(args: argparse.Namespace, config: Config) -> None:
    if args.latex:
        from theory.latex import write_document

        write_document(args.latex, p=config.p, q=config.q)


def main(description: str, defaults: dict, analyse: Analysis, theorem: str, argv: list[str] | None = None) -> int:
    """Parse, run, print; return the exit code (bad input: one stderr line and 2).

    A single run happens in this process; --sweep and --scan-manifold run their tasks (``sweep_tasks``)
    through verify/runner.py.
    """
    try:
        ap = parser(description, defaults, prog=f"python -m verify.{theorem}")
        add_output_flags(ap)
        args = ap.parse_args(argv)
        config = config_from(args)
        if args.latex:
            check_writable(args.latex)
        if args.sweep < 0 or args.scan_manifold < 0:
            raise InvalidInputError("--sweep and --scan-manifold take a count >= 0")
        if config.onehot and (args.sweep or args.scan_manifold):
            raise InvalidInputError("--sweep and --scan-manifold are for the binary scalar model (--p, --q)")
        check_duration(config, args.sweep, args.scan_manifold)
        many = bool(args.sweep or args.scan_manifold)
        check_runner_flags(args, many, "--sweep K, --scan-manifold K")
        if args.resume and args.out is None:
            raise InvalidInputError(RESUME_WITHOUT_OUT)
        out = None if args.out is None else check_folder(args.out)
        show_stages(enabled=not (args.sweep or args.json))
        if many:
            configs = sweep_configs(config, args.sweep) if args.sweep else [config]
            result = run_with_args(sweep_task, sweep_tasks(analyse, theorem, configs, args.scan_manifold), args,
                                   out=out, progress=sweep_progress(args.json, sys.stderr))
            if result.interrupted:  # the runner said how to resume
                return result.exit_code
        else:
            report = analyse(config, theorem, 0)
        write_latex(args, config)
    except (InvalidInputError, OSError) as err:
        return bad_input(err)
    if many:
        return print_runs(args, configs, result)
    print(report.to_json() if args.json else report.to_text())
    return report.exit_code


@contextmanager
def cpu_threads(device: str) -> Iterator[None]:
    """One intra-op thread while training on the CPU, restored afterwards.

    The models are tiny (d = 8, batch 16): a second thread buys nothing, and when other processes
    share the cores its synchronisation stalls dominate (measured on 2 busy cores: 100 steps at
    N = 64 took 17-20 s on one thread, 75-81 s on two).
    """
    previous = torch.get_num_threads()
    if device == "cpu":
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
