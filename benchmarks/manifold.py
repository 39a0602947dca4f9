"""M_π curvature: the closed form against the dense Hessian, its cost at long N, and the Monte-Carlo route.

1. d = 4, N = 10, tied and untied, at a random point of M_π (every weight but e, a, b drawn N(0, std²)):
   the median time of ``manifold_curvature`` against the package's own dense Hessian of the exact loss
   (``numerics.curvature.hessian``, without its eigendecomposition, so the ratio is if anything
   understated), both in this process (target ≥ 100×).  Agreement: the dense spectrum against the
   formula's eigenvalues merged with D - m zeros, the dense normal block against the formula's, and the
   dense Hessian's largest |entry| outside that block (target for all three: ≤ 1e-10 max(1, ‖H‖₂), the
   tolerance of the property test in tests/test_manifold.py).
2. d = 8, N = 256 and 1024: the median wall time of ``manifold_curvature`` on the CPU (target: N = 1024
   under 1 s for one layer, under 10 s for two) and, when CUDA is available, on the GPU (synchronised before
   and after every call): tied and untied one layer on the first-order chain, then (SPEC §12) one layer with
   memory W = 40 on the second-order chain, two layers with and without W = 40 on the first-order chain and
   two layers on the second-order chain.
3. The Monte-Carlo check's per-sequence Hessians (``numerics.manifold.sequence_hessians``: the block's
   Jacobian once, then one product for all sequences) against the route it replaced, forward-over-reverse
   through the whole model for every sequence (``sequence_hessians_reference``), on the same 128
   sequences at d = 4, N = 256, tied, in this process: ratio of the median times (target ≥ 10×; it grows
   with N and the number of sequences, since the reference repeats an O(N² d) pass of the model per sequence
   and coordinate, the batched route only O(N d²) products per sequence after one O(N² d³) Jacobian) and
   the largest difference (target ≤ 1e-12 max(1, max |h|)).
4. The command as a user runs it: ``python -m verify.theorem_manifold --seq-len N --json`` at N = 512
   and 1024 (d = 4, the automatic sample size), one subprocess each: wall time (targets 60 s and 180 s on
   2 CPU cores), verdict and the sample size it chose.
Every in-process timing is preceded by an untimed warm-up call.  One thread by default: on a loaded machine
two OpenMP threads wait for each other and times inflate several-fold (measured on 2 busy cores: part 3's
batched side 0.55 s on one thread, 7.2 s on two); the command of part 4 runs its Monte-Carlo stage on one
thread whatever ``--threads`` says.  A note under the header says when the machine was busy.
Exit 0: every target met; 1: a target missed (its line says MISS); 2: bad input (one line on stderr).
Progress goes to stderr.  Run:  python benchmarks/manifold.py [--quick] [--json] [--threads 1]
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TypeVar

import torch
from _common import Target, add_threads, count, entry, parser, positive_float, progress, report, set_threads, stage

from numerics.autocovariance import Source
from numerics.curvature import block_names, flatten, hessian
from numerics.manifold import manifold_curvature, project_to_manifold, sequence_hessians, sequence_hessians_reference
from numerics.markov import MarkovChain, SecondOrderChain
from numerics.population import population_loss
from numerics.transformer import Params, init_params
from verify.cli import binary_pair

RATIO_TARGET = 100.0
LONG_TARGET_S = 1.0
#: two layers at N = 1024, d = 8 on 2 CPU cores (issue 20)
DEEP_TARGET_S = 10.0
#: part 2's general cases: a mask in one layer (closed form), two layers with and without a mask, both sources
DEEP_CASES = ({"second_order": True, "memory": 40}, {"layers": 2}, {"layers": 2, "memory": 40},
              {"layers": 2, "second_order": True})
AGREEMENT_TOLERANCE = 1e-10  # relative to max(1, ‖H‖₂); justified next to DENSE_TOLERANCE in tests/test_manifold.py
#: part 3: batched per-sequence Hessians against forward-over-reverse through the whole model
SAMPLED_RATIO_TARGET = 10.0
SAMPLED_SEQ_LEN, SAMPLED_SEQUENCES = 256, 128
#: both routes sum the same products in another order: float64 rounding, ~1e-14 observed
SAMPLED_AGREEMENT = 1e-12
#: part 4: the command's wall time at each N (issue 19: N = 512 under 60 s, N = 1024 under 3 minutes)
COMMAND_TARGETS_S = {512: 60.0, 1024: 180.0}
ROOT = Path(__file__).resolve().parent.parent

T = TypeVar("T")


@dataclass(frozen=True)
class DenseComparison:
    """Formula vs dense Hessian at one small point: times (median seconds) and agreement."""

    tying: bool
    d: int
    seq_len: int
    D: int
    formula_s: float
    dense_s: float
    ratio: float
    spectrum_gap: float  # max |sorted dense spectrum - sorted(formula eigenvalues ∪ zeros)|
    block_gap: float  # max |dense block - formula block|
    outside_max: float  # max |dense entry| outside the block
    hessian_norm: float  # ‖H‖₂ of the dense Hessian
    error_bound: float  # the formula's own rounding estimate
    classification: str


@dataclass(frozen=True)
class LongTiming:
    """Median wall time of ``manifold_curvature`` at one long N on one device, for a source, depth and memory."""

    device: str
    tying: bool
    d: int
    seq_len: int
    seconds: float
    repeats: int
    classification: str
    source: str = "first-order"
    layers: int = 1
    memory: int | None = None


@dataclass(frozen=True)
class SampledComparison:
    """Per-sequence Hessians of the normal block: the batched route against the whole-model reference."""

    d: int
    seq_len: int
    sequences: int
    batched_s: float
    reference_s: float
    ratio: float
    max_gap: float  # max |batched - reference| over all sequences and entries
    scale: float  # max(1, max |reference|)


@dataclass(frozen=True)
class CommandRun:
    """One run of ``python -m verify.theorem_manifold --seq-len N --json``."""

    seq_len: int
    seconds: float
    exit_code: int
    verdict: str | None
    samples: int | None
    sample_rule: str | None


def median_seconds(fn: Callable[[], T], repeats: int, *, cuda: bool = False) -> tuple[float, T]:
    """(median wall time of ``repeats`` calls after one untimed warm-up, the last call's result).

    The median resists the outliers of a shared machine.  On CUDA the queue is drained before and
    after each call so the time covers the kernels, not just their launch.
    """
    out = fn()
    times = []
    for _ in range(repeats):
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        out = fn()
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def random_manifold_point(d: int, seq_len: int, p: float, q: float, *, tying: bool, std: float, seed: int,
                          device: str = "cpu", source: Source | None = None, layers: int = 1) -> Params:
    """A point of M_π with every other weight (pos, W_Q .. W_2) drawn N(0, std²), in float64; M_π of the chain
    (p, q), or of ``source`` when given."""
    params = init_params(d, seq_len, tying=tying, std=std, seed=seed, device=device, layers=layers)
    if source is not None:
        return project_to_manifold(params, tying=tying, source=source)
    return project_to_manifold(params, p, q, tying=tying)


def block_index(params: Params, tying: bool) -> torch.Tensor:
    """Flat indices of e, b (tied) or e, a, b (untied) in ``flatten`` order: the formula's block order."""
    names = block_names(flatten(params)[1])
    order = ("e", "b") if tying else ("e", "a", "b")
    return torch.tensor([i for name in order for i, n in enumerate(names) if n == name])


def compare_with_dense(p: float, q: float, *, tying: bool, d: int, seq_len: int, std: float, seed: int,
                       repeats: int, formula_repeats: int) -> DenseComparison:
    """Time both routes at one random point of M_π and measure how far the dense Hessian is from the formula."""
    params = random_manifold_point(d, seq_len, p, q, tying=tying, std=std, seed=seed)

    def dense() -> torch.Tensor:
        return hessian(lambda P: population_loss(P, p, q, tying=tying), params)

    formula_s, mc = median_seconds(lambda: manifold_curvature(params, p, q, tying=tying), formula_repeats)
    dense_s, H = median_seconds(dense, repeats)
    spectrum = torch.linalg.eigvalsh((H + H.T) / 2)
    zeros = torch.zeros(H.shape[0] - mc.eigenvalues.numel(), dtype=H.dtype)
    merged = torch.sort(torch.cat([mc.eigenvalues, zeros])).values
    index = block_index(params, tying)
    outside = H.clone()
    outside[index[:, None], index[None, :]] = 0.0
    return DenseComparison(
        tying=tying, d=d, seq_len=seq_len, D=H.shape[0], formula_s=formula_s, dense_s=dense_s,
        ratio=dense_s / formula_s,
        spectrum_gap=(spectrum - merged).abs().max().item(),
        block_gap=(H[index][:, index] - mc.block).abs().max().item(),
        outside_max=outside.abs().max().item(),
        hessian_norm=spectrum.abs().max().item(),
        error_bound=mc.error_bound,
        classification=mc.classification,
    )


def time_long(p: float, q: float, *, device: str, tying: bool, d: int, seq_len: int, std: float, seed: int,
              repeats: int, second_order: bool = False, layers: int = 1, memory: int | None = None) -> LongTiming:
    """Median time of ``manifold_curvature`` at one long N, parameters already on ``device``: the chain (p, q), or
    the lagged second-order chain of (p, q), ``layers`` deep with attention memory ``memory``."""
    source = SecondOrderChain.lagged(p, q) if second_order else MarkovChain(p, q)
    params = random_manifold_point(d, seq_len, p, q, tying=tying, std=std, seed=seed, device=device, source=source,
                                   layers=layers)
    seconds, mc = median_seconds(lambda: manifold_curvature(params, tying=tying, source=source, memory=memory),
                                 repeats, cuda=device == "cuda")
    return LongTiming(device, tying, d, seq_len, seconds, repeats, mc.classification,
                      "second-order" if second_order else "first-order", layers, memory)


def compare_sampled(p: float, q: float, *, std: float, seed: int, repeats: int) -> SampledComparison:
    """Both per-sequence Hessian routes on the same sequences at d = 4, N = ``SAMPLED_SEQ_LEN``, tied.

    The warm-ups run on 4 sequences (the reference's full size is the slow side being measured)."""
    d, chain = 4, MarkovChain(p, q)
    params = random_manifold_point(d, SAMPLED_SEQ_LEN, p, q, tying=True, std=std, seed=seed)
    x = chain.sample(SAMPLED_SEQUENCES, SAMPLED_SEQ_LEN, seed=seed)
    for fn in (sequence_hessians, sequence_hessians_reference):
        fn(params, chain, x[:4], tying=True)
    batched_s, batched = median_seconds(lambda: sequence_hessians(params, chain, x, tying=True), repeats)
    reference_s, reference = median_seconds(lambda: sequence_hessians_reference(params, chain, x, tying=True),
                                            max(1, repeats // 2))
    return SampledComparison(d, SAMPLED_SEQ_LEN, SAMPLED_SEQUENCES, batched_s, reference_s, reference_s / batched_s,
                             (batched - reference).abs().max().item(), max(1.0, reference.abs().max().item()))


def run_command(seq_len: int) -> CommandRun:
    """``python -m verify.theorem_manifold --seq-len N --json`` in a subprocess from the repository root:
    wall time from start to exit, and what its report says (its stderr is discarded: under --json it has
    none unless something broke, which the exit code then shows)."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "verify.theorem_manifold", "--seq-len", str(seq_len), "--json"],
                          cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    try:
        found = json.loads(done.stdout)
    except json.JSONDecodeError:
        return CommandRun(seq_len, seconds, done.returncode, None, None, None)
    size = found["numeric"].get("sample_size", {})
    return CommandRun(seq_len, seconds, done.returncode, found["verdict"], size.get("samples"), size.get("rule"))


def targets(dense: list[DenseComparison], long: list[LongTiming], sampled: SampledComparison,
            commands: list[CommandRun]) -> list[Target]:
    """Each target with its measured value."""
    out = []
    for c in dense:
        kind = "tied" if c.tying else "untied"
        out.append(Target(f"formula vs dense Hessian ({kind}, N={c.seq_len}), speed-up", c.ratio, RATIO_TARGET,
                          unit="×"))
        out.append(Target(f"formula vs dense Hessian ({kind}, N={c.seq_len}), largest gap / max(1, ‖H‖₂)",
                          max(c.spectrum_gap, c.block_gap, c.outside_max) / max(1.0, c.hessian_norm),
                          AGREEMENT_TOLERANCE, at_least=False))
    for t in long:
        if t.device == "cpu" and t.seq_len == 1024:
            kind = f"{'tied' if t.tying else 'untied'}, {t.source}, L={t.layers}, W={t.memory or 'full'}"
            out.append(Target(f"M_π curvature at N=1024 on CPU ({kind}, d={t.d}), seconds", t.seconds,
                              LONG_TARGET_S if t.layers == 1 else DEEP_TARGET_S, at_least=False, unit=" s"))
    out.append(Target(f"per-sequence Hessians, batched vs whole model (N={sampled.seq_len}, {sampled.sequences} "
                      "sequences), speed-up", sampled.ratio, SAMPLED_RATIO_TARGET, unit="×"))
    out.append(Target("per-sequence Hessians, batched vs whole model, largest gap / max(1, max |h|)",
                      sampled.max_gap / sampled.scale, SAMPLED_AGREEMENT, at_least=False))
    for run in commands:
        command = f"python -m verify.theorem_manifold --seq-len {run.seq_len}"
        out.append(Target(f"{command}, wall seconds", run.seconds, COMMAND_TARGETS_S[run.seq_len], at_least=False,
                          unit=" s"))
        # 0 confirmed or 3 inconclusive; anything else (1 a check disagrees, 2 refused) fails whatever the time
        out.append(Target(f"{command}, failed (exit not 0 or 3)", float(run.exit_code not in (0, 3)), 0.0,
                          at_least=False))
    return out


def print_table(config: dict, dense: list[DenseComparison], long: list[LongTiming], sampled: SampledComparison,
                commands: list[CommandRun]) -> None:
    """The human-readable report (the targets follow it, from ``_common.report``)."""
    print(f"M_π curvature: closed form vs dense Hessian   (p, q) = ({config['p']}, {config['q']}), "
          f"weights N(0, {config['std']}²), seed {config['seed']}, torch {config['torch']}, "
          f"{config['threads']} thread(s) on {config['cpus']} CPUs")
    if config["load_average"] > 0.5 * config["cpus"]:
        # other processes on the cores: every time inflates, and more so with threads waiting for each other
        advice = " (try --threads 1)" if config["threads"] > 1 else ""
        print(f"note: load average {config['load_average']:.1f} on {config['cpus']} CPUs before the run: "
              f"the machine is shared and the times below are inflated{advice}")
    print(f"\n1. d={dense[0].d}, N={dense[0].seq_len}: median of {config['dense_repeats']} dense / "
          f"{config['formula_repeats']} formula runs")
    print(f"{'tying':<7} {'D':>4} {'formula s':>10} {'dense s':>9} {'ratio':>8} {'|Δ spectrum|':>13} "
          f"{'|Δ block|':>10} {'max |H| off':>12} {'‖H‖₂':>8} {'est. error':>11}  verdict")
    for c in dense:
        print(f"{'tied' if c.tying else 'untied':<7} {c.D:>4} {c.formula_s:>10.5f} {c.dense_s:>9.3f} "
              f"{c.ratio:>7.0f}× {c.spectrum_gap:>13.1e} {c.block_gap:>10.1e} {c.outside_max:>12.1e} "
              f"{c.hessian_norm:>8.3g} {c.error_bound:>11.1e}  {c.classification}")
    print(f"\n2. long sequences, d={long[0].d}: median wall time of manifold_curvature (one layer without layer norm: "
          "the closed form; deeper: forward mode plus its float32 shadow)")
    print(f"{'device':<7} {'tying':<7} {'source':<13} {'L':>2} {'W':>5} {'N':>5} {'seconds':>9} {'repeats':>8}  "
          "verdict")
    for t in long:
        print(f"{t.device:<7} {'tied' if t.tying else 'untied':<7} {t.source:<13} {t.layers:>2} "
              f"{t.memory or 'full':>5} {t.seq_len:>5} {t.seconds:>9.4f} {t.repeats:>8}  {t.classification}")
    if not torch.cuda.is_available():
        print("(no CUDA device: GPU timings skipped)")
    s = sampled
    print(f"\n3. per-sequence Hessians of the normal block, d={s.d}, N={s.seq_len}, {s.sequences} sequences, tied")
    print(f"   batched (block Jacobian once) {s.batched_s:.3f} s, whole model per sequence {s.reference_s:.3f} s: "
          f"{s.ratio:.1f}×; largest gap {s.max_gap:.1e} (max |h| {s.scale:.3g})")
    print("\n4. python -m verify.theorem_manifold --seq-len N --json (d=4, automatic sample size)")
    print(f"{'N':>5} {'seconds':>9} {'exit':>5} {'verdict':<13} {'samples':>8}  size rule")
    for run in commands:
        print(f"{run.seq_len:>5} {run.seconds:>9.1f} {run.exit_code:>5} {run.verdict or '-':<13} "
              f"{run.samples if run.samples is not None else '-':>8}  {run.sample_rule or '-'}")


def main(argv: Sequence[str] | None = None) -> int:
    ap = parser(__doc__, prog="python benchmarks/manifold.py")
    ap.add_argument("--quick", action="store_true",
                    help="fewer repeats of the in-process timings (parts 1-3); part 4 runs each command once anyway")
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of the table and targets")
    ap.add_argument("--p", type=float,
                    help="switching probability P(0→1) of parts 1-3, in (0, 1), given with --q (default 0.5; "
                         "part 4 runs the command's defaults)")
    ap.add_argument("--q", type=float, help="switching probability P(1→0) of parts 1-3, in (0, 1), given with --p "
                                            "(default 0.8)")
    ap.add_argument("--std", type=positive_float, default=1.0,
                    help="scale of every random weight of parts 1-3, > 0 (default 1)")
    ap.add_argument("--seed", type=count, default=0, help="seed of the random points of parts 1-3, >= 0 (default 0)")
    add_threads(ap, default=1)
    args = ap.parse_args(argv)
    chain = MarkovChain(*binary_pair(args.p, args.q, (0.5, 0.8)))  # bad or lone p, q: one line and exit 2
    threads = set_threads(args.threads)
    dense_repeats, formula_repeats, long_repeats = (3, 7, 3) if args.quick else (5, 21, 7)
    config = {"p": chain.p, "q": chain.q, "std": args.std, "seed": args.seed, "quick": args.quick,
              "dense_repeats": dense_repeats, "formula_repeats": formula_repeats, "long_repeats": long_repeats,
              "torch": torch.__version__, "threads": threads, "cpus": os.cpu_count(),
              "load_average": os.getloadavg()[0],
              "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None}
    common = {"std": args.std, "seed": args.seed}
    dense = [compare_with_dense(chain.p, chain.q, tying=tying, d=4, seq_len=10, repeats=dense_repeats,
                                formula_repeats=formula_repeats, **common)
             for tying in progress([True, False], "1. formula vs dense Hessian")]
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    cases = [(device, tying, seq_len, {}) for device in devices for tying in (True, False) for seq_len in (256, 1024)]
    cases += [(device, True, seq_len, deep) for device in devices for seq_len in (256, 1024) for deep in DEEP_CASES]
    long = [time_long(chain.p, chain.q, device=device, tying=tying, d=8, seq_len=seq_len, repeats=long_repeats,
                      **common, **deep)
            for device, tying, seq_len, deep in progress(cases, "2. M_π curvature at long N")]
    with stage(f"3. per-sequence Hessians, batched vs whole model (N={SAMPLED_SEQ_LEN}, {SAMPLED_SEQUENCES} "
               "sequences)"):
        sampled = compare_sampled(chain.p, chain.q, repeats=1 if args.quick else 3, **common)
    commands = [run_command(seq_len) for seq_len in progress(list(COMMAND_TARGETS_S), "4. the command")]
    goals = targets(dense, long, sampled, commands)
    if args.json:
        print(json.dumps({"config": config, "dense": [asdict(c) for c in dense], "long": [asdict(t) for t in long],
                          "sampled": asdict(sampled), "commands": [asdict(c) for c in commands],
                          "targets": [asdict(g) | {"met": g.met} for g in goals]}, indent=2))
        return 0 if all(g.met for g in goals) else 1
    print_table(config, dense, long, sampled, commands)
    return report(goals)


if __name__ == "__main__":
    entry(main)
