"""Reproduce the paper's training experiments: where does gradient training end? (claims TRAIN-*)

    python -m verify.experiments NAME [--quick] [--seeds K] [--optimizer adamw|sgd] [--json] [--out DIR]

NAME is one of
  tying         1 layer, tied vs untied, on p=0.5, q=0.8 (p+q > 1) and p=0.2, q=0.3 (p+q < 1)
  depth         1 vs 2 layers, tied, on p=0.5, q=0.8
  second-order  1, 2, 3 layers on the lagged second-order chain x_{n+1} ~ P(. | x_{n-1}), p=0.2, q=0.3
  masking       1 layer on that chain with attention restricted to the last W symbols
  init          1 layer, tied, p=0.5, q=0.8, from the companion paper's (L2G) rank-one initialisation and
                from Gaussian ones of scale 0.002, 0.02 (standard) and 0.2; also measures, at random points
                of the canonical model embedded in the full model, the loss gap and the part of the full
                gradient that leaves the embedded family (numerics.canonical_flow)
  multi-state   1 layer, one-hot model (the released code's), tied and untied, on three k-state chains:
                the paper's sticky5 (theta_pi a saddle: both reach the bigram loss 0.4637), switching3
                (M_s negative definite on 1^perp: tied predicted trapped at H(pi)) and rotating3 (complex
                eigenvalues with negative real part, yet M_s indefinite: a saddle, tied predicted to escape)
  all           every one of the above
  escape        why tied 1-layer runs at p=0.5, q=0.8 leave the H(pi) plateau (not part of "all"):
                the curvature of theta(t)'s projection onto the unigram manifold M_pi along each
                run (numerics.escape), for AdamW and for plain SGD (or the one --optimizer names)

Each run trains on fresh samples (``numerics.train``) and ends with a test loss, which is
compared, on the same test sequences, with the loss of the reference predictors: unigram (the
stationary law, H(π)), bigram (the best order-1 predictor, H_rate for a first-order chain)
and, for the second-order chain, trigram (its true kernel).  A run is labelled by the nearest
reference if its gap to it is within the tolerance (``label``), else ``other``.  Output: a
summary table (fraction of seeds per label, mean final loss, references, the paper's
expectation), training curves as PNG and PDF with the references as horizontal lines, and
JSON, all under --out/NAME.  Exit code 0 when every setting's majority label is the one the
paper reports, 1 otherwise, 2 on bad input.

Settings: full runs use N = 256 (the paper used 512-1024; attention costs N² and these
defaults are sized for 2 CPU cores: raise --seq-len on a GPU), 800 steps, 3 seeds;
--quick uses N = 128, 600 steps, 2 seeds.  Everything else is the paper's code's default
(AdamW with warm-up and cosine decay; --optimizer sgd: plain SGD, lr 1, constant).

init: 4 settings × 4 seeds at N = 64, 800 steps (--quick: 400 steps, 2 seeds; a smaller N slows the
rank-one runs' descent, whose start is ~20 nats).  The table adds, per initialisation, the loss above
the kernel per position at the first 4 positions and at the rest (fresh sequences) and the fraction of
seeds trapped at H(π): those whose loss above the kernel beyond position 4 is the unigram
predictor's, H(π) - H_rate, within the label tolerance; the embedding
section gives, at 4 random points (d = 4, N = 8, random W_Q, W_K, W_V), |L(φ(e, w, b)) - L_can| and
‖g_⊥‖/‖g‖ with its largest parts.  Exit code 1 also when the embedding misses the canonical loss by
more than the rounding of the two losses.  With several experiments (all), --json prints
{"experiments": {NAME: summary}}.

multi-state: 6 settings × 3 seeds at N = 64, 1000 steps (--quick: N = 32, 300 steps, 2 seeds; too few
for sticky5 and rotating3 to reach the bigram loss, a smoke test).  The
"expected" column there is the k-state theory's prediction (θ_π a local minimum: unigram; a saddle:
bigram), which for sticky5 is also what the paper's figure shows.

tying --embedding onehot: every tying setting twice, with the theory's scalar model and with the
released code's one-hot model at k = 2 (default 6 seeds), and the fraction trapped at H(π) of each.

escape: 8 seeds per optimizer at N = 256, 800 steps (--quick: N = 64, 300 steps, 3 seeds).  Per
run: λ_min(S) of the projection at the plateau (the evaluation closest to H(π) before the loss
leaves it) and at the last plateau point (the last evaluation within the band before it leaves,
or the end), the prediction from each (saddle: escapes; local minimum: trapped), the observed
outcome (escaped iff the test loss fell more than the band below the unigram loss on the same
test sequences; the band is the unigram tolerance of ``label`` without standard errors) and
label, the step where the projection first became a saddle, the escape step, and which block
of the lag Jacobian (attention to earlier symbols, or the symbol's own path: feed-forward and
self-attention) contributes most negatively to λ_min(S).  Exit code 0 when the last-plateau
prediction matches the outcome in every run where it is decided, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from itertools import pairwise
from pathlib import Path

import torch

from numerics.canonical_flow import Tangency, random_tangencies
from numerics.escape import EscapeRun, track_escape
from numerics.markov import InvalidInputError, MarkovChain, SecondOrderChain, check_positive_int, preset
from numerics.population import memory_budget_bytes
from numerics.train import (
    DEFAULT_LR,
    Source,
    TrainConfig,
    TrainResult,
    excess_by_position,
    reference_entropies,
    train,
)
from verify.cli import Parser, exit_now, resolve_device
from verify.figures import curves_figure, save_figure

FIRST_ABOVE = MarkovChain(0.5, 0.8)  # p + q > 1
FIRST_BELOW = MarkovChain(0.2, 0.3)  # p + q < 1
SECOND = SecondOrderChain.lagged(0.2, 0.3)
#: Largest allowed gap to a reference for a label, before adding 3 standard errors (nats).
MAX_TOLERANCE = 0.01


@dataclass(frozen=True)
class Setting:
    """One trained configuration: the source (a plot panel), the variant, what the paper reports."""

    experiment: str
    panel: str
    variant: str
    source: Source
    overrides: dict = field(default_factory=dict)
    expected: str | None = None  # the paper's reported label; None where it reports none
    claim: str = ""


def _tying(embeddings: tuple[str, ...] = ("scalar",)) -> list[Setting]:
    """Tied vs untied on both first-order chains; with several ``embeddings`` each setting once per model."""
    out = []
    for chain, expected_tied in ((FIRST_ABOVE, "unigram"), (FIRST_BELOW, "bigram")):
        panel = f"first order, p={chain.p}, q={chain.q}"
        for embedding in embeddings:
            suffix = ", one-hot" if embedding == "onehot" else ""
            model = {"embedding": embedding}
            out += [Setting("tying", panel, f"tied, 1 layer{suffix}", chain, {"tying": True, **model}, expected_tied,
                            "TRAIN-TYING"),
                    Setting("tying", panel, f"untied, 1 layer{suffix}", chain, {"tying": False, **model}, "bigram",
                            "TRAIN-TYING")]
    return out


def _multi_state() -> list[Setting]:
    """The one-hot model on k-state chains; expected: the k-state theory's class of tied θ_π
    (``theory.multistate.predicted_class``), bigram for untied (a saddle unless P = 1πᵀ)."""
    from theory.multistate import predicted_class

    out = []
    for name in ("sticky5", "switching3", "rotating3"):
        chain = preset(name)
        tied = "unigram" if predicted_class(chain.transition) == "local minimum" else "bigram"
        panel = f"{name} (k = {chain.k})"
        out += [Setting("multi-state", panel, "tied, 1 layer, one-hot", chain, {"tying": True, "embedding": "onehot"},
                        tied, "TRAIN-MULTI-STATE"),
                Setting("multi-state", panel, "untied, 1 layer, one-hot", chain,
                        {"tying": False, "embedding": "onehot"}, "bigram", "TRAIN-MULTI-STATE")]
    return out


def _depth() -> list[Setting]:
    panel = "first order, p=0.5, q=0.8, tied"
    return [Setting("depth", panel, f"{n} layer{'s' * (n > 1)}", FIRST_ABOVE, {"layers": n}, label, "TRAIN-DEPTH")
            for n, label in ((1, "unigram"), (2, "bigram"))]


def _second_order() -> list[Setting]:
    panel = "second order (lagged), p=0.2, q=0.3"
    return [Setting("second-order", panel, f"{n} layer{'s' * (n > 1)}", SECOND, {"layers": n}, "unigram",
                    "TRAIN-SECOND-ORDER") for n in (1, 2, 3)]


def _masking() -> list[Setting]:
    panel = "second order (lagged), p=0.2, q=0.3, 1 layer"
    return [Setting("masking", panel, "memory W=2", SECOND, {"memory": 2}, "trigram", "TRAIN-MASKING"),
            Setting("masking", panel, "memory W=32", SECOND, {"memory": 32}, None, "TRAIN-MASKING"),
            Setting("masking", panel, "full attention", SECOND, {}, "unigram", "TRAIN-MASKING")]


#: Gaussian scales of the init experiment; the package's standard initialisation is the middle one.
INIT_SCALES = (0.002, TrainConfig.init_std, 0.2)


def _init() -> list[Setting]:
    """L2G's rank-one initialisation (the paper: reaches the bigram) and Gaussian ones (standard: unigram)."""
    panel = "first order, p=0.5, q=0.8, tied, 1 layer"
    rank_one = Setting("init", panel, "rank-one", FIRST_ABOVE, {"init": "rank-one"}, "bigram", "L2G-INIT")
    standard = TrainConfig.init_std
    return [rank_one, *(Setting("init", panel, f"Gaussian {scale:g}" + " (std)" * (scale == standard), FIRST_ABOVE,
                                {"init_std": scale}, "unigram" if scale == standard else None, "L2G-INIT")
                        for scale in INIT_SCALES)]


EXPERIMENTS = {"tying": _tying, "depth": _depth, "second-order": _second_order, "masking": _masking, "init": _init,
               "multi-state": _multi_state}
SCHEDULES = {"full": {"seq_len": 256, "steps": 800, "seeds": 3}, "quick": {"seq_len": 128, "steps": 600, "seeds": 2}}
#: The escape study: the source and its own run sizes.
ESCAPE_SOURCE = FIRST_ABOVE
ESCAPE_SCHEDULES = {"full": {"seq_len": 256, "steps": 800, "seeds": 8},
                    "quick": {"seq_len": 64, "steps": 300, "seeds": 3}}
#: Experiments with run sizes of their own (the others use SCHEDULES); init trains 4 settings × 4 seeds.
OWN_SCHEDULES = {"escape": ESCAPE_SCHEDULES,
                 "init": {"full": {"seq_len": 64, "steps": 800, "seeds": 4},
                          "quick": {"seq_len": 64, "steps": 400, "seeds": 2}},
                 "multi-state": {"full": {"seq_len": 64, "steps": 1000, "seeds": 3},
                                 "quick": {"seq_len": 32, "steps": 300, "seeds": 2}}}
#: Seeds of the tying experiment with --embedding onehot (each model, side by side).
ONEHOT_TYING_SEEDS = 6
#: The first positions, whose excess loss over the kernel the init experiment reports apart from the rest.
HEAD_POSITIONS = 4
#: A run estimated to take longer than this is refused (hours).
MAX_HOURS = 24.0
#: Cost of a training step (batch 16, d = 8, float64), measured on 2 busy CPU cores at N = 32 .. 2048: drawing
#: the batch, a Python loop over positions on the CPU whatever the device (4.9e-5 s a position), ...
SAMPLE_SECONDS = 4.9e-5
#: ... and, on the CPU (one thread), attention forward and backward per layer with its share of the
#: evaluations: 3.5e-7 N² s (N = 2048: 1.37 s a step without evaluations; N = 1024: 0.58 s).
ATTENTION_SECONDS = 3.5e-7
#: Sequences whose N × N attention scores and weights are alive at once: evaluation holds both for its
#: 64 test sequences (1.0 kB N² measured at N = 1024 and 2048 in float64), the init experiment's
#: loss by position for 256; training holds about 3 per sequence of the batch and layer.
EXCESS_SEQUENCES = 256
#: The embedding measurement of the init experiment: random points, d, N, and its exactness bound (nats).
EMBEDDING_POINTS, EMBEDDING_D, EMBEDDING_SEQ_LEN = 4, 4, 8


def tolerance(references: dict[str, float], stderr: float) -> float:
    """Gap allowed for a label: a quarter of the smallest distance between distinct references,
    at most ``MAX_TOLERANCE``, plus three standard errors of the measured gap."""
    values = sorted(set(round(v, 9) for v in references.values()))
    spacing = min((b - a for a, b in pairwise(values)), default=math.inf)
    return min(MAX_TOLERANCE, spacing / 4) + 3 * stderr


def label(result: TrainResult, references: dict[str, float]) -> str:
    """The reference whose test-set loss is nearest to the run's, if within ``tolerance``; else "other".

    References of equal population value (order 0 and 1 of the lagged chain) resolve to the
    lower order, listed first.
    """
    name = min(result.gap, key=lambda k: (round(abs(result.gap[k][0]), 9), list(references).index(k)))
    gap, stderr = result.gap[name]
    return name if abs(gap) <= tolerance(references, stderr) else "other"


@dataclass
class Run:
    setting: Setting
    seed: int
    result: TrainResult
    label: str


def run_setting(setting: Setting, base: TrainConfig, seeds: int, progress=None) -> list[Run]:
    """Train ``seeds`` models of one setting (seeds 0..K-1) and label each."""
    references = reference_entropies(setting.source)
    runs = []
    for seed in range(seeds):
        result = train(setting.source, replace(base, seed=seed, **setting.overrides), progress=progress)
        runs.append(Run(setting, seed, result, label(result, references)))
    return runs


def summarise(runs: list[Run]) -> list[dict]:
    """One row per setting: labels over seeds, mean final loss, references, agreement with the paper."""
    rows = []
    for setting in {id(r.setting): r.setting for r in runs}.values():
        mine = [r for r in runs if r.setting is setting]
        labels = Counter(r.label for r in mine)
        majority, count = labels.most_common(1)[0]
        rows.append({
            "experiment": setting.experiment, "claim": setting.claim, "panel": setting.panel,
            "variant": setting.variant, "seeds": len(mine),
            "labels": {k: v / len(mine) for k, v in labels.items()},
            "final_loss": sum(r.result.final_loss for r in mine) / len(mine),
            "add_beta_loss": sum(r.result.add_beta_loss for r in mine) / len(mine),
            "references": reference_entropies(setting.source),
            "expected": setting.expected,
            "agrees": None if setting.expected is None else (majority == setting.expected and count * 2 > len(mine)),
            "runs": [{"seed": r.seed, "label": r.label, "final_loss": r.result.final_loss,
                      "final_stderr": r.result.final_stderr, "gap": r.result.gap,
                      "exact_loss": r.result.exact_loss, "add_beta_loss": r.result.add_beta_loss,
                      "seconds": r.result.seconds, "steps": r.result.steps, "test_loss": r.result.test_loss}
                     for r in mine],
        })
    return rows


def table(rows: list[dict]) -> str:
    """The summary as text: one line per setting."""
    width = max(18, *(len(row["variant"]) for row in rows))
    head = (f"{'setting':<{width}} {'seeds':>5}  {'labels':<24} {'final':>7} {'add-1':>7}  "
            f"{'references (nats)':<34} {'paper':<8} agrees")
    lines, panel = [], None
    for row in rows:
        if row["panel"] != panel:
            panel = row["panel"]
            lines += ["", f"{row['experiment']}: {panel}", head]
        labels = ", ".join(f"{k} {v:.0%}" for k, v in sorted(row["labels"].items()))
        refs = " ".join(f"{k[:3]}={v:.4f}" for k, v in row["references"].items())
        agrees = {True: "yes", False: "NO", None: "-"}[row["agrees"]]
        lines.append(f"{row['variant']:<{width}} {row['seeds']:>5}  {labels:<24} {row['final_loss']:>7.4f} "
                     f"{row['add_beta_loss']:>7.4f}  {refs:<34} {row['expected'] or '-':<8} {agrees}")
    return "\n".join(lines[1:])


def run_escape(optimizers: list[str], base: TrainConfig, seeds: int, progress=None) -> dict[str, list[EscapeRun]]:
    """Track ``seeds`` tied one-layer runs on ``ESCAPE_SOURCE`` per optimiser (``numerics.escape``).

    The band β of the escape step is the unigram tolerance of ``label`` without standard errors.
    """
    band = tolerance(reference_entropies(ESCAPE_SOURCE), 0.0)
    return {name: [track_escape(ESCAPE_SOURCE, replace(base, optimizer=name, seed=seed, tying=True), band,
                                progress=progress) for seed in range(seeds)]
            for name in optimizers}


def escape_rows(runs: dict[str, list[EscapeRun]]) -> dict[str, dict]:
    """Per optimiser: its learning rate, one row per seed (``EscapeRun.as_dict`` plus seed and label), match rates."""
    references = reference_entropies(ESCAPE_SOURCE)
    out = {}
    for name, mine in runs.items():
        rows = [{"seed": run.result.config.seed, "label": label(run.result, references)} | run.as_dict()
                for run in mine]
        rates = {}
        for where in ("first_plateau", "plateau", "last_plateau"):
            decided = [row[where]["matches"] for row in rows if row[where] and row[where]["matches"] is not None]
            rates[where] = {"matches": sum(decided), "decided": len(decided), "runs": len(rows)}
        out[name] = {"lr": mine[0].result.config.learning_rate, "runs": rows, "match": rates}
    return out


def _cell(value, fmt: str = "", missing: str = "-") -> str:
    return missing if value is None else format(value, fmt)


def escape_table(summary: dict[str, dict]) -> str:
    """One block per optimiser: a line per seed, then the match rates of the three prediction points.

    λ_min(S) and the prediction at the plateau and at the last plateau point (step of each), the
    observed outcome and label, the final test loss, the crossing and escape steps, the block that
    drives λ_min(S) at the last plateau point (its most negative part in brackets) and |cos(e, w)| there.
    """
    head = (f"{'seed':>4} | {'plateau: step':>13} {'λmin':>7} {'pred':>7} | {'last: step':>10} {'λmin':>7} "
            f"{'pred':>7} | {'observed':>8} {'label':>7} {'final':>6} | {'cross':>5} {'escape':>6} | "
            f"{'driver@last':<26} {'cos(e,w)':>8}")
    lines = []
    for name, block in summary.items():
        lines += ["", f"{name} (lr {block['lr']:g}):", head]
        for row in block["runs"]:
            plateau, last = row["plateau"] or {}, row["last_plateau"] or {}
            parts = last.get("parts") or {}
            driver = f"{parts['driver']} ({parts['leading'].replace('_', '-')})" if parts else "-"
            lines.append(
                f"{row['seed']:>4} | {_cell(plateau.get('step')):>13} {_cell(plateau.get('lambda_min'), '.4f'):>7} "
                f"{plateau.get('prediction') or '-':>7} | {_cell(last.get('step')):>10} "
                f"{_cell(last.get('lambda_min'), '.4f'):>7} {last.get('prediction') or '-':>7} | "
                f"{row['observed']:>8} {row['label']:>7} {row['final_loss']:>6.4f} | "
                f"{_cell(row['crossing_step']):>5} {_cell(row['escape_step']):>6} | "
                f"{driver:<26} {_cell(last.get('alignment'), '.3f'):>8}")
        for where, rate in block["match"].items():
            lines.append(f"prediction at the {where.replace('_', ' ')} point matches the outcome in "
                         f"{rate['matches']}/{rate['decided']} decided runs (of {rate['runs']})")
    return "\n".join(lines[1:])


def escape_plot(summary: dict[str, dict], path: Path) -> list[Path]:
    """λ_min(S)(t), its attention and diagonal parts, |e|, the FF weights' drift, the test loss; PNG and PDF.

    One column per optimiser; circles mark the crossing (first saddle), crosses the escape step.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    references = reference_entropies(ESCAPE_SOURCE)
    fig, axes = plt.subplots(5, len(summary), figsize=(6 * len(summary), 16), squeeze=False, sharex="col")
    for column, (name, block) in enumerate(summary.items()):
        colours = plt.get_cmap("tab10" if len(block["runs"]) <= 10 else "viridis", max(10, len(block["runs"])))
        for i, row in enumerate(block["runs"]):
            steps = [point["step"] for point in row["trajectory"]]
            series = {"lambda_min": [point["lambda_min"] for point in row["trajectory"]],
                      "attention": [point["parts"]["attention"] for point in row["trajectory"]],
                      "e_norm": [point["e_norm"] for point in row["trajectory"]],
                      "drift": [point["drift"]["feed_forward"] for point in row["trajectory"]],
                      "test_loss": [point["test_loss"] for point in row["trajectory"]]}
            for ax, key in zip(axes[:, column], series):
                ax.plot(steps, series[key], color=colours(i), lw=1.2, label=f"seed {row['seed']}")
                for event, marker in (("crossing_step", "o"), ("escape_step", "x")):
                    if row[event] is not None:
                        ax.plot(row[event], series[key][steps.index(row[event])], marker, color=colours(i))
            diagonal = [point["parts"]["diagonal"] for point in row["trajectory"]]
            axes[1, column].plot(steps, diagonal, color=colours(i), lw=1.2, ls="--")
        top, parts, middle, moved, bottom = axes[:, column]
        for ax in (top, parts):
            ax.axhline(0.0, color="black", lw=1)
        top.set(title=f"{name} (lr {block['lr']:g}): tied, 1 layer, p={ESCAPE_SOURCE.p}, q={ESCAPE_SOURCE.q}",
                ylabel="λ_min(S) of the projection onto M_π")
        parts.set(ylabel="share of λ_min(S): attention i<n (solid),\nown position i=n beyond θ_π (dashed)")
        middle.set(yscale="log", ylabel="|e|")
        moved.set(yscale="log", ylabel="‖(W_1, W_2)(t) - (W_1, W_2)(0)‖")
        for style, (ref, value) in zip(("--", ":"), references.items()):
            bottom.axhline(value, color="black", ls=style, lw=1, label=f"{ref} {value:.4f}")
        low = min(references.values())
        bottom.set(ylim=(low - 0.02, max(references.values()) + 0.04), xlabel="training step",
                   ylabel="test loss (nats)")
        bottom.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return save_figure(fig, path)


def position_summary(runs: list[Run]) -> dict[str, dict[str, float]]:
    """Per setting: the loss above the kernel (``excess_by_position``, nats per position) at the first
    ``HEAD_POSITIONS`` positions ("head") and at the rest ("bulk"), averaged over seeds, and the fraction
    of seeds trapped at H(π): bulk excess within ``tolerance`` of the unigram predictor's, H(π) - H_rate.

    The bulk, not the average loss, decides "trapped": a run that predicts the kernel beyond the first
    few positions but not at them (the rank-one runs, whose attention averages few symbols there)
    can have an average loss near H(π) at small N without predicting the stationary law.
    """
    out: dict[str, dict[str, list[float]]] = {}
    for run in runs:
        excess = excess_by_position(run.result.params, run.setting.source, run.result.config,
                                    sequences=EXCESS_SEQUENCES)
        references = reference_entropies(run.setting.source)
        unigram_excess = references["unigram"] - references["bigram"]
        mine = out.setdefault(run.setting.variant, {"head": [], "bulk": [], "trapped": []})
        mine["head"].append(excess[:HEAD_POSITIONS].mean().item())
        mine["bulk"].append(excess[HEAD_POSITIONS:].mean().item())
        mine["trapped"].append(float(abs(mine["bulk"][-1] - unigram_excess) <= tolerance(references, 0.0)))
    return {variant: {k: sum(v) / len(v) for k, v in parts.items()} for variant, parts in out.items()}


def embedding_rows(tangencies: list[Tangency]) -> list[dict]:
    """One row per measured point: (e, w, b), |L(φ) - L_can|, ‖g‖, ‖g_⊥‖/‖g‖ and ‖g_⊥‖ per parameter."""
    return [{"e": t.point[0], "w": t.point[1], "b": t.point[2], "loss_gap": abs(t.loss - t.canonical_loss),
             "loss_tolerance": t.loss_tolerance,
             "gradient_norm": t.gradient_norm, "normal_fraction": t.normal_fraction,
             "normal_blocks": t.normal_blocks} for t in tangencies]


def embedding_exact(rows: list[dict]) -> bool:
    """Does the embedded model reproduce the canonical loss at every measured point, within the rounding of
    both (``Tangency.loss_tolerance``)?"""
    return all(row["loss_gap"] <= row["loss_tolerance"] for row in rows)


def init_text(summary: dict) -> str:
    """The init experiment's extra lines: trapped fraction per initialisation, then the embedding table."""
    positions = summary["positions"]
    trapped = ", ".join(f"{name} {parts['trapped']:.0%}" for name, parts in positions.items())
    excess = ", ".join(f"{name} {parts['head']:.3f} / {parts['bulk']:.4f}" for name, parts in positions.items())
    lines = [f"loss above the kernel per position, first {HEAD_POSITIONS} / the rest (nats): {excess}",
             f"trapped at H(pi) (beyond position {HEAD_POSITIONS} the loss above the kernel is the unigram's, "
             f"H(pi) - H_rate, within the label tolerance): {trapped}", "",
             f"canonical model embedded in the full model (d={EMBEDDING_D}, N={EMBEDDING_SEQ_LEN}, random W_Q, W_K, "
             "W_V, alpha, v): the full gradient g at phi(e, w, b) and its part g_perp normal to the family",
             f"{'e':>6} {'w':>7} {'b':>7}  {'|L - L_can|':>11} {'|g|':>8} {'|g_perp|/|g|':>12}  "
             f"{'|g_perp| in W_O':>15} {'e':>7} {'pos':>7}"]
    for row in summary["embedding"]:
        blocks = row["normal_blocks"]
        lines.append(f"{row['e']:>6.3f} {row['w']:>7.3f} {row['b']:>7.3f}  {row['loss_gap']:>11.1e} "
                     f"{row['gradient_norm']:>8.4f} {row['normal_fraction']:>12.3f}  {blocks['W_O']:>15.4f} "
                     f"{blocks['e']:>7.4f} {blocks['pos']:>7.4f}")
    rest = max(v for row in summary["embedding"] for k, v in row["normal_blocks"].items()
               if k not in ("W_O", "e", "pos"))
    smallest = min(row["normal_fraction"] for row in summary["embedding"])
    verdict = ("not invariant under the full gradient flow: g_perp != 0 at every point measured" if smallest > 1e-8
               else "tangent to the full gradient at some point measured")
    lines.append(f"largest |g_perp| in any other parameter: {rest:.1e}.  The family is {verdict}.")
    return "\n".join(lines)


class PlainProgress:
    """Progress for a non-terminal stderr: a plain line every ``fraction`` of the work or ``seconds``."""

    def __init__(self, total: int, stream=None, *, fraction: float = 0.1, seconds: float = 30.0) -> None:
        self.total, self.stream = total, stream if stream is not None else sys.stderr
        self.every, self.seconds = max(1, math.ceil(fraction * total)), seconds
        self.done, self.start = 0, time.monotonic()
        self.last_count, self.last_time = 0, self.start

    def update(self, n: int = 1) -> None:
        self.done += n
        now = time.monotonic()
        if self.done - self.last_count >= self.every or now - self.last_time >= self.seconds or self.done == self.total:
            self.last_count, self.last_time = self.done, now
            elapsed = now - self.start
            left = elapsed * (self.total - self.done) / self.done
            print(f"training: {self.done}/{self.total} steps ({self.done / self.total:.0%}), "
                  f"{elapsed:.0f} s elapsed, about {left:.0f} s left", file=self.stream, flush=True)

    def __enter__(self) -> PlainProgress:
        return self

    def __exit__(self, *exc) -> None:
        return None


def progress_bar(total: int):
    """A tqdm bar on a terminal, else ``PlainProgress`` lines (so logs of background runs show progress)."""
    if sys.stderr.isatty():
        from tqdm import tqdm

        return tqdm(total=total, desc="training", unit="step")
    return PlainProgress(total)


def prepare_output(out: Path, names: list[str]) -> list[Path]:
    """Create out/NAME for every name and prove each writable by writing a scratch file: before any training.

    Raises OSError (the caller turns it into one line and exit 2).
    """
    folders = []
    for name in names:
        folder = out / name
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
        folders.append(folder)
    return folders


def _parser() -> Parser:
    ap = Parser(prog="python -m verify.experiments", description=__doc__.split("\n\n")[0],
                epilog=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("name", choices=[*EXPERIMENTS, "all", "escape"], help="which experiment")
    ap.add_argument("--quick", action="store_true",
                    help="small settings (N=128, 600 steps, 2 seeds; escape: N=64, 300 steps, 3 seeds; "
                         "init: N=64, 400 steps, 2 seeds)")
    ap.add_argument("--seeds", type=int,
                    help="seeds per setting (default: 3, or 2 with --quick; escape: 8, or 3; init: 4, or 2)")
    ap.add_argument("--steps", type=int, help="training steps (default: 800, or 600 with --quick; init: 800, or 400)")
    ap.add_argument("--seq-len", type=int,
                    help="sequence length N (default: 256, or 128 with --quick; init: 64).  Refused when the N × N "
                         "attention scores of the sequences held at once (64 evaluated; init: 256) pass the memory "
                         "budget (half the RAM, or 80%% of free GPU memory: N <= ~3500 in float64 with 24 GB of "
                         f"RAM), or when the run's estimate passes {MAX_HOURS:g} h: a step costs "
                         f"{SAMPLE_SECONDS:g} N s to sample plus, on the CPU, {ATTENTION_SECONDS:g} N² s a layer "
                         "(measured on 2 CPU cores; N = 1024: 0.58 s)")
    ap.add_argument("--optimizer", choices=list(DEFAULT_LR),
                    help="adamw (the paper's, with its schedule) or sgd (plain, lr 1, constant); "
                         "default: adamw, and both for escape")
    ap.add_argument("--layer-norm", action="store_true", help="GPT-2 pre-norm blocks (default: off, as in the theory)")
    ap.add_argument("--embedding", choices=["scalar", "onehot"], default="scalar",
                    help="tying only: onehot also trains the released code's one-hot model (k = 2) beside the "
                         "theory's scalar one, 6 seeds each by default (default: %(default)s)")
    ap.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    ap.add_argument("--dtype", choices=["float64", "float32"], default="float64")
    ap.add_argument("--out", default="runs", help="output folder (default: %(default)s)")
    ap.add_argument("--json", action="store_true", help="print the summary as JSON instead of the table")
    return ap


def _given(value: int | None, default: int) -> int:
    """The flag's value if given (0 included, so that validation refuses it), else the default."""
    return default if value is None else value


def _sizes(args: argparse.Namespace, name: str) -> tuple[TrainConfig, int]:
    """The base configuration and seed count of experiment ``name``: its schedule, overridden by the flags."""
    schedule = OWN_SCHEDULES.get(name, SCHEDULES)["quick" if args.quick else "full"]
    if name == "tying" and args.embedding == "onehot" and not args.quick:
        schedule = schedule | {"seeds": ONEHOT_TYING_SEEDS}
    base = TrainConfig(
        seq_len=check_positive_int("seq-len", _given(args.seq_len, schedule["seq_len"])),
        steps=check_positive_int("steps", _given(args.steps, schedule["steps"])),
        optimizer=args.optimizer or "adamw", layer_norm=args.layer_norm,
        device=resolve_device(args.device), dtype=getattr(torch, args.dtype))
    return base, check_positive_int("seeds", _given(args.seeds, schedule["seeds"]))


def peak_sequences(config: TrainConfig, experiment: str) -> int:
    """How many N × N attention matrices a run of ``experiment`` holds at its peak (``EXCESS_SEQUENCES``)."""
    return max(2 * config.eval_sequences, 3 * config.batch * config.layers,
               2 * EXCESS_SEQUENCES if experiment == "init" else 0)


def step_seconds(config: TrainConfig) -> float:
    """Estimated seconds of one training step: sampling everywhere, attention counted on the CPU only (on a
    GPU the estimate is a lower bound)."""
    attention = ATTENTION_SECONDS * config.layers * config.seq_len**2 if config.device == "cpu" else 0.0
    return SAMPLE_SECONDS * (config.seq_len + 1) + attention


def check_feasible(plan: list[tuple[str, TrainConfig, int]]) -> None:
    """Refuse (InvalidInputError) a plan of (experiment, run configuration, runs) that cannot finish: one
    whose attention matrices pass the memory budget, or whose estimated time passes ``MAX_HOURS``.
    Decided before any training, so that a run too large says so at once instead of hanging."""
    for experiment, config, _ in plan:
        itemsize = torch.tensor([], dtype=config.dtype).element_size()
        need = peak_sequences(config, experiment) * itemsize * config.seq_len**2
        budget = memory_budget_bytes(torch.device(config.device))
        if need > budget:
            largest = math.isqrt(budget // (peak_sequences(config, experiment) * itemsize))
            raise InvalidInputError(
                f"--seq-len {config.seq_len}: {experiment} holds about {need / 2**30:,.3g} GiB of N × N attention "
                f"matrices ({peak_sequences(config, experiment)} of them in {str(config.dtype)[6:]}), more than the "
                f"memory budget of {budget / 2**30:.1f} GiB; use --seq-len <= {largest}")
    steps = sum(runs * config.steps for _, config, runs in plan)
    hours = sum(runs * config.steps * step_seconds(config) for _, config, runs in plan) / 3600
    if hours > MAX_HOURS:
        cpu = all(config.device == "cpu" for _, config, _ in plan)
        raise InvalidInputError(
            f"{steps:,} training steps at N = {plan[0][1].seq_len} would take {'about' if cpu else 'at least'} "
            f"{hours:,.3g} h (estimated from steps measured on 2 CPU cores), more than the {MAX_HOURS:g} h limit: "
            "lower --steps, --seeds or --seq-len")


def _settings_json(base: TrainConfig, dtype: str) -> dict:
    """The run settings as JSON: the dtype as the flag spells it, the learning rate resolved."""
    settings = asdict(base)
    del settings["seed"]
    return settings | {"dtype": dtype, "lr": base.learning_rate}


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


def main(argv: list[str] | None = None) -> int:
    try:
        args = _parser().parse_args(argv)
        escape = args.name == "escape"
        if escape and args.layer_norm:
            raise InvalidInputError("escape tracks the model without layer norm (the M_π formula's model)")
        names = ["escape"] if escape else list(EXPERIMENTS) if args.name == "all" else [args.name]
        sizes = {name: _sizes(args, name) for name in names}
        if args.embedding == "onehot" and names != ["tying"]:
            raise InvalidInputError("--embedding onehot applies to the tying experiment (multi-state always "
                                    "trains the one-hot model)")
        settings = {name: EXPERIMENTS[name]() for name in names if name in EXPERIMENTS}
        if args.embedding == "onehot":
            settings["tying"] = _tying(("scalar", "onehot"))
        check_feasible(_plan(args, sizes, settings))
        folders = prepare_output(Path(args.out), names)
    except InvalidInputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        print(f"error: cannot write to --out {args.out}: {err.strerror or err}", file=sys.stderr)
        return 2
    with cpu_threads(sizes[names[0]][0].device):
        return _train_and_report(args, names, sizes, settings, folders)


def _plan(args: argparse.Namespace, sizes: dict[str, tuple[TrainConfig, int]],
          settings: dict[str, list[Setting]]) -> list[tuple[str, TrainConfig, int]]:
    """(experiment, run configuration, runs) of everything ``main`` will train: each setting's seeds, or the
    escape study's seeds per optimiser."""
    if "escape" in sizes:
        base, seeds = sizes["escape"]
        return [("escape", base, seeds * (1 if args.optimizer else len(DEFAULT_LR)))]
    return [(name, replace(sizes[name][0], **setting.overrides), sizes[name][1])
            for name, mine in settings.items() for setting in mine]


def _train_and_report(args: argparse.Namespace, names: list[str], sizes: dict[str, tuple[TrainConfig, int]],
                      settings: dict[str, list[Setting]], folders: list[Path]) -> int:
    """Train every setting of ``names``, write the summaries and plots, print the table; the exit code."""
    if names == ["escape"]:
        return _main_escape(args, *sizes["escape"], folders[0])
    with progress_bar(sum(len(settings[n]) * sizes[n][1] * sizes[n][0].steps for n in names)) as bar:
        counted = _counting(bar)
        runs = {name: [run for s in settings[name] for run in run_setting(s, *sizes[name], counted)] for name in names}
    rows = {name: summarise(mine) for name, mine in runs.items()}
    summaries, files, texts, exact = {}, [], [], True
    for name, folder in zip(names, folders):
        base, seeds = sizes[name]
        summary = summaries[name] = {"settings": _settings_json(base, args.dtype), "seeds": seeds, "rows": rows[name]}
        texts.append(f"settings{f' ({name})' * (len(names) > 1)}: N={base.seq_len}, {base.steps} steps, "
                     f"batch {base.batch}, d={base.d}, {seeds} seeds, layer norm {'on' if base.layer_norm else 'off'}, "
                     f"{base.optimizer}, {base.device}/{args.dtype}")
        if name == "tying" and args.embedding == "onehot":
            summary["trapped"] = {f"{row['panel']}, {row['variant']}": row["labels"].get("unigram", 0.0)
                                  for row in rows[name]}
            texts.insert(0, "fraction trapped at H(pi) (label unigram), scalar vs one-hot model:\n" + "\n".join(
                f"  {setting}: {fraction:.0%}" for setting, fraction in summary["trapped"].items()))
        if name == "init":
            summary["positions"] = position_summary(runs[name])
            summary["embedding"] = embedding_rows(random_tangencies(FIRST_ABOVE, EMBEDDING_POINTS, EMBEDDING_D,
                                                                    EMBEDDING_SEQ_LEN))
            exact = embedding_exact(summary["embedding"])
            texts.insert(0, init_text(summary))
        (folder / "summary.json").write_text(json.dumps(summary, indent=2))
        files += [folder / "summary.json", *save_figure(curves_figure(rows[name]), folder / "curves")]
    every_row = [row for name in names for row in rows[name]]
    _emit(args.json, summaries[names[0]] if len(names) == 1 else {"experiments": summaries},
          "\n\n".join([table(every_row), *texts]) +
          "\n'add-1' is the add-1 (Laplace) kernel estimate from the same samples", files)
    return 0 if exact and all(row["agrees"] is not False for row in every_row) else 1


def _emit(as_json: bool, summary: dict, text: str, files: list[Path]) -> None:
    """The summary as JSON, or the text and the list of files written."""
    if as_json:
        print(json.dumps(summary, indent=2))
    else:
        print(text)
        print("wrote " + ", ".join(str(f) for f in files))


def _counting(bar) -> Callable[[Iterable[int]], Iterator[int]]:
    """Wrap a run's step iterator so that every step advances ``bar``."""
    def counted(steps: Iterable[int]) -> Iterator[int]:
        for step in steps:
            yield step
            bar.update(1)

    return counted


def _main_escape(args: argparse.Namespace, base: TrainConfig, seeds: int, folder: Path) -> int:
    """The escape study: train, summarise, write JSON, plot and parameters, print the table."""
    optimizers = [args.optimizer] if args.optimizer else list(DEFAULT_LR)
    with progress_bar(len(optimizers) * seeds * base.steps) as bar:
        counted = _counting(bar)
        runs = run_escape(optimizers, base, seeds, counted)
    by_optimizer = escape_rows(runs)
    summary = {"settings": _settings_json(base, args.dtype) | {"lr": {k: v["lr"] for k, v in by_optimizer.items()},
                                                             "p": ESCAPE_SOURCE.p, "q": ESCAPE_SOURCE.q},
               "seeds": seeds, "band": tolerance(reference_entropies(ESCAPE_SOURCE), 0.0),
               "references": reference_entropies(ESCAPE_SOURCE), "optimizers": by_optimizer}
    (folder / "summary.json").write_text(json.dumps(summary, indent=2))
    # θ before projection at the plateau, the last plateau point and the end, for follow-up analysis
    torch.save({name: {run.result.config.seed: run.params for run in mine} for name, mine in runs.items()},
               folder / "params.pt")
    files = [folder / "summary.json", folder / "params.pt", *escape_plot(by_optimizer, folder / "escape")]
    _emit(args.json, summary, escape_table(by_optimizer) + (
        f"\n\nsettings: tied, 1 layer, p={ESCAPE_SOURCE.p}, q={ESCAPE_SOURCE.q}, N={base.seq_len}, "
        f"{base.steps} steps, batch {base.batch}, d={base.d}, {seeds} seeds, {base.device}/{args.dtype}; "
        f"band {summary['band']:g} nats.\n"
        "plateau: the evaluation closest to the unigram test loss before the escape; last: the last one "
        "within the band before the escape (or the end); escape: the first evaluation more than the band "
        "below it;\ncross: the first evaluation whose projection onto M_π is a saddle; driver: the block "
        "most negative in λ_min(S) at the last plateau point (its most negative part); cos(e,w): "
        "|cos| of e and S's bottom eigenvector there"), files)
    decided = [row["last_plateau"]["matches"] for block in by_optimizer.values() for row in block["runs"]
               if row["last_plateau"] and row["last_plateau"]["matches"] is not None]
    return 0 if all(decided) else 1


if __name__ == "__main__":
    exit_now(main())
