"""Reproduce the paper's training experiments: where does gradient training end? (claims TRAIN-*)

    python -m verify.experiments NAME [--quick] [--seeds K] [--optimizer adamw|sgd] [--json] [--out DIR]
                                      [--workers N | --scheduler ADDRESS] [--resume] [--report-only]

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
  escape        why tied runs leave the H(pi) plateau, or do not (not part of "all"): the curvature
                lambda_min(S)(t) of theta(t)'s projection onto the unigram manifold M_pi along each run
                (numerics.escape, SPEC 12), for AdamW and for plain SGD (or the one --optimizer names),
                on --source first-order (p=0.5, q=0.8) or second-order (the lagged chain, p=0.2, q=0.3),
                for every depth in --layers and attention memory in --memory; e.g. the paper's three
                open questions:
                  escape --source first-order --layers 1 2 4 --optimizer adamw --seeds 6
                  escape --source second-order --layers 1 2 4 --optimizer adamw --seeds 6
                  escape --source second-order --memory 2 8 40 100 full --optimizer adamw --seeds 6

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

Runs (``verify.runner``): every training run, and the init experiment's embedding measurement, is one
task, a pure function of a small JSON config (its seed included), run on --workers local processes (default:
one per core; 1: in this process) or on a Dask cluster (--scheduler ADDRESS, or local:N), one torch thread
each, so the numbers are the same every way.  Each finished run is appended at once to
--out/NAME/results.jsonl (NAME as given: "all" keeps its runs in --out/all); the tables, plots and JSON are
built from those records alone, so after Ctrl-C or a kill --resume runs only the missing runs and gives
the outputs an uninterrupted run gives, and --report-only builds them from whatever is recorded (rows
cover the recorded seeds; exit 1 while runs are missing).  A run that raises is recorded as failed; the
others go on and the exit code is 1.  Ctrl-C keeps the finished runs (exit 130).

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
prediction matches the outcome in every run where it is decided, 1 otherwise.  Each run writes θ
(before projection) at its plateau, last plateau point and end to --out/escape/checkpoints/KEY.pt as it
finishes (KEY: its task key in results.jsonl; on a Dask cluster the workers must see the output folder);
the report gathers them into params.pt.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from itertools import pairwise
from pathlib import Path

import torch

from numerics.canonical_flow import Tangency, random_tangencies
from numerics.escape import track_escape
from numerics.markov import (
    FiniteChain,
    InvalidInputError,
    MarkovChain,
    SecondOrderChain,
    check_positive_int,
    parse_number,
    preset,
)
from numerics.population import memory_budget_bytes
from numerics.train import (
    DEFAULT_LR,
    RECIPES,
    Source,
    TrainConfig,
    TrainResult,
    excess_by_position,
    reference_entropies,
    train,
)
from numerics.transformer import Params
from verify.cli import Parser, exit_now, resolve_device
from verify.figures import curves_figure, save_figure
from verify.runner import (
    RESULTS_FILE,
    RunResult,
    add_runner_flags,
    default_workers,
    importable,
    load_results,
    run_with_args,
    task_key,
)

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
#: The escape study's sources and their default (p, q): the paper's first-order and second-order settings.
ESCAPE_SOURCES = {"first-order": (0.5, 0.8), "second-order": (0.2, 0.3)}
#: Experiments run with layer norm unless --no-layer-norm: the paper's second-order and masking numbers come
#: from its GPT-2 recipe (pre-norm blocks), which the theory's model without layer norm does not reach.
LAYER_NORM_EXPERIMENTS = ("second-order", "masking")
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


# --- tasks: each a pure function of a small JSON config, run by verify.runner ---------------------------------

def source_json(source: Source) -> dict:
    """A source as JSON; ``source_from_json`` reads it back to a source with the same numbers."""
    if isinstance(source, MarkovChain):
        return {"p": source.p, "q": source.q}
    if isinstance(source, SecondOrderChain):
        return {"table": [list(row) for row in source.table]}
    return {"transition": source.transition.tolist(), "name": source.name}


def source_from_json(spec: dict) -> Source:
    if "transition" in spec:
        return FiniteChain(spec["transition"], name=spec["name"])
    if "table" in spec:
        return SecondOrderChain(tuple(tuple(row) for row in spec["table"]))
    return MarkovChain(spec["p"], spec["q"])


def train_config_json(config: TrainConfig) -> dict:
    """A run configuration as JSON: the dtype as the flag spells it ("float64"), the betas a list."""
    return asdict(config) | {"dtype": str(config.dtype).removeprefix("torch."), "betas": list(config.betas)}


def train_config_from_json(spec: dict) -> TrainConfig:
    return TrainConfig(**spec | {"dtype": getattr(torch, spec["dtype"]), "betas": tuple(spec["betas"])})


def run_positions(params: Params, source: Source, config: TrainConfig) -> dict[str, float]:
    """The loss above the kernel (``excess_by_position``, nats per position) at the first ``HEAD_POSITIONS``
    positions ("head") and at the rest ("bulk"), and whether the run is trapped at H(π) (1.0 or 0.0): bulk
    excess within ``tolerance`` of the unigram predictor's, H(π) - H_rate.

    The bulk, not the average loss, decides "trapped": a run that predicts the kernel beyond the first
    few positions but not at them (the rank-one runs, whose attention averages few symbols there)
    can have an average loss near H(π) at small N without predicting the stationary law.
    """
    excess = excess_by_position(params, source, config, sequences=EXCESS_SEQUENCES)
    references = reference_entropies(source)
    bulk = excess[HEAD_POSITIONS:].mean().item()
    trapped = abs(bulk - (references["unigram"] - references["bigram"])) <= tolerance(references, 0.0)
    return {"head": excess[:HEAD_POSITIONS].mean().item(), "bulk": bulk, "trapped": float(trapped)}


def train_task(config: dict) -> dict:
    """One training run (config: "source", "train", "positions"): the summary's row of the run, i.e. its seed,
    label, final test loss with standard error, gaps to the references, exact and add-1 losses and test-loss
    curve; with "positions" also ``run_positions`` (the init experiment)."""
    source, run = source_from_json(config["source"]), train_config_from_json(config["train"])
    result = train(source, run)
    record = {"seed": run.seed, "label": label(result, reference_entropies(source)), "final_loss": result.final_loss,
              "final_stderr": result.final_stderr, "gap": result.gap, "exact_loss": result.exact_loss,
              "add_beta_loss": result.add_beta_loss, "steps": result.steps, "test_loss": result.test_loss}
    if config["positions"]:
        record["positions"] = run_positions(result.params, source, run)
    return record


def escape_task(config: dict) -> dict:
    """One run of the escape study (config: "source", "train", "band", "checkpoints"): its seed, label and
    ``EscapeRun.as_dict``.  θ at its key points goes to CHECKPOINTS/KEY.pt (``checkpoint_path``), not into
    the record."""
    source, run = source_from_json(config["source"]), train_config_from_json(config["train"])
    tracked = track_escape(source, run, config["band"])
    path = checkpoint_path(config)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".part")  # renamed when complete: a killed task leaves no truncated file
    torch.save(tracked.params, partial)
    partial.replace(path)
    return {"seed": run.seed, "label": label(tracked.result, reference_entropies(source))} | tracked.as_dict()


def embedding_task(config: dict) -> list[dict]:
    """The init experiment's embedding measurement (config: "source", "points", "d", "seq_len"): ``embedding_rows``
    at random points."""
    return embedding_rows(random_tangencies(source_from_json(config["source"]), config["points"], config["d"],
                                            config["seq_len"]))


TASKS = {"train": train_task, "escape": escape_task, "embedding": embedding_task}


def experiment_task(config: dict) -> object:
    """The runner's task: ``TASKS[config["task"]]`` of the config (one sweep mixes kinds: init trains and
    measures the embedding)."""
    return TASKS[config["task"]](config)


def key_of(config: dict) -> str:
    """The task key of ``config`` in results.jsonl (``importable``: the same when run as ``python -m``)."""
    return task_key(importable(experiment_task), config)


def checkpoint_path(config: dict) -> Path:
    return Path(config["checkpoints"]) / f"{key_of(config)}.pt"


@dataclass(frozen=True)
class Job:
    """One task of a command: its experiment, the setting it trains (None: init's embedding measurement and
    the escape study's runs) and its config."""

    experiment: str
    setting: Setting | None
    config: dict


def training_jobs(settings: dict[str, list[Setting]], sizes: dict[str, tuple[TrainConfig, int]]) -> list[Job]:
    """Seeds 0..K-1 of every setting (K: the experiment's seeds), and init's embedding measurement."""
    jobs = []
    for name, mine in settings.items():
        base, seeds = sizes[name]
        jobs += [Job(name, setting, {"task": "train", "source": source_json(setting.source),
                                     "train": train_config_json(replace(base, seed=seed, **setting.overrides)),
                                     "positions": name == "init"})
                 for setting in mine for seed in range(seeds)]
        if name == "init":
            jobs.append(Job(name, None, {"task": "embedding", "source": source_json(FIRST_ABOVE),
                                         "points": EMBEDDING_POINTS, "d": EMBEDDING_D, "seq_len": EMBEDDING_SEQ_LEN}))
    return jobs


def escape_variant(train: dict) -> str:
    """The row label of an escape run: optimiser, depth and attention memory of its training configuration."""
    layers, memory = train["layers"], train["memory"]
    return f"{train['optimizer']}, {layers} layer{'s' * (layers > 1)}, W={memory or 'full'}"


def escape_jobs(source: Source, variants: list[dict], base: TrainConfig, seeds: int, folder: Path) -> list[Job]:
    """``seeds`` tied runs on ``source`` per variant (overrides of ``base``: optimiser, layers, memory); the band β of
    the escape step is the unigram tolerance of ``label`` without standard errors.  Checkpoints under
    ``folder``/checkpoints (absolute, so that workers elsewhere write to the same place)."""
    common = {"task": "escape", "source": source_json(source), "band": escape_band(source),
              "checkpoints": str(folder.resolve() / "checkpoints")}
    return [Job("escape", None, common | {"train": train_config_json(replace(base, seed=seed, tying=True, **variant))})
            for variant in variants for seed in range(seeds)]


def escape_band(source: Source) -> float:
    return tolerance(reference_entropies(source), 0.0)


def job_seconds(job: Job) -> float:
    """The estimated cost of a job (``step_seconds``; 0 for the embedding measurement)."""
    if "train" not in job.config:
        return 0.0
    config = train_config_from_json(job.config["train"])
    return config.steps * step_seconds(config)


def run_jobs(jobs: list[Job], args: argparse.Namespace, out: Path) -> RunResult:
    """Run the jobs' tasks with the runner flags of ``args``, results in ``out``/results.jsonl; the entries in
    job order.  Submitted longest first, so that a long run does not start last with the other workers idle."""
    order = sorted(range(len(jobs)), key=lambda i: -job_seconds(jobs[i]))
    result = run_with_args(experiment_task, [jobs[i].config for i in order], args, out=out)
    entries: list[dict | None] = [None] * len(jobs)
    for position, i in enumerate(order):
        entries[i] = result.entries[position]
    return replace(result, entries=entries)


def recorded_entries(jobs: list[Job], out: Path) -> list[dict | None]:
    """The jobs' entries as recorded in ``out``/results.jsonl (None where a job has none)."""
    recorded = load_results(out)
    return [recorded.get(key_of(job.config)) for job in jobs]


def summarise(settings: list[Setting], runs: list[tuple[Setting, dict]]) -> list[dict]:
    """One row per setting with recorded runs (``train_task`` records, in seed order): labels over seeds, mean
    final loss, references, agreement with the paper."""
    rows = []
    for setting in settings:
        mine = sorted((record for s, record in runs if s is setting), key=lambda record: record["seed"])
        if not mine:
            continue
        labels = Counter(r["label"] for r in mine)
        majority, count = labels.most_common(1)[0]
        rows.append({
            "experiment": setting.experiment, "claim": setting.claim, "panel": setting.panel,
            "variant": setting.variant, "seeds": len(mine),
            "labels": {k: v / len(mine) for k, v in labels.items()},
            "final_loss": sum(r["final_loss"] for r in mine) / len(mine),
            "add_beta_loss": sum(r["add_beta_loss"] for r in mine) / len(mine),
            "references": reference_entropies(setting.source),
            "expected": setting.expected,
            "agrees": None if setting.expected is None else (majority == setting.expected and count * 2 > len(mine)),
            "runs": mine,
        })
    return rows


def table(rows: list[dict]) -> str:
    """The summary as text: one line per setting."""
    width = max([18, *(len(row["variant"]) for row in rows)])
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


def escape_rows(runs: list[tuple[Job, dict]]) -> dict[str, dict]:
    """Per variant with recorded runs (``escape_variant``; ``escape_task`` records, rows in seed order): its
    learning rate, depth and memory, the runs, and how often the prediction at each plateau point matches the
    outcome."""
    summary = {}
    for name in dict.fromkeys(escape_variant(job.config["train"]) for job, _ in runs):
        mine = [(job, record) for job, record in runs if escape_variant(job.config["train"]) == name]
        rows = sorted((record for _, record in mine), key=lambda record: record["seed"])
        rates = {}
        for where in ("first_plateau", "plateau", "last_plateau"):
            decided = [row[where]["matches"] for row in rows if row[where] and row[where]["matches"] is not None]
            rates[where] = {"matches": sum(decided), "decided": len(decided), "runs": len(rows)}
        train = mine[0][0].config["train"]
        summary[name] = {"lr": train_config_from_json(train).learning_rate, "optimizer": train["optimizer"],
                         "layers": train["layers"], "memory": train["memory"], "runs": rows, "match": rates}
    return summary


def _cell(value, fmt: str = "", missing: str = "-") -> str:
    return missing if value is None else format(value, fmt)


def _driver(point: dict) -> str:
    """The block driving λ_min(S) at a point: the one-layer split's driver, else the lag profile's own position
    (m = 1) and previous symbol (m = 2) parts."""
    parts, profile = point.get("parts"), point.get("profile")
    if parts:
        return f"{parts['driver']} ({parts['leading'].replace('_', '-')})"
    if profile:
        return f"m1 {profile['lags'][0]:+.3f} m2 {profile['lags'][1]:+.3f}"
    return "-"


def escape_table(summary: dict[str, dict]) -> str:
    """One block per variant: a line per seed, then the match rates of the three prediction points.

    λ_min(S) and the prediction at the plateau and at the last plateau point (step of each), the
    observed outcome and label, the final test loss, the crossing and escape steps, what drives λ_min(S) at
    the last plateau point (``_driver``), the attention mass on the previous symbol there (first layer) and
    |cos(e, w)| there.
    """
    head = (f"{'seed':>4} | {'plateau: step':>13} {'λmin':>7} {'pred':>7} | {'last: step':>10} {'λmin':>7} "
            f"{'pred':>7} | {'observed':>8} {'label':>7} {'final':>6} | {'cross':>5} {'escape':>6} | "
            f"{'driver@last':<26} {'a(n-1)':>6} {'cos(e,w)':>8}")
    lines = []
    for name, block in summary.items():
        lines += ["", f"{name} (lr {block['lr']:g}):", head]
        for row in block["runs"]:
            plateau, last = row["plateau"] or {}, row["last_plateau"] or {}
            previous = (last.get("attention_previous") or [None])[0]
            lines.append(
                f"{row['seed']:>4} | {_cell(plateau.get('step')):>13} {_cell(plateau.get('lambda_min'), '.4f'):>7} "
                f"{plateau.get('prediction') or '-':>7} | {_cell(last.get('step')):>10} "
                f"{_cell(last.get('lambda_min'), '.4f'):>7} {last.get('prediction') or '-':>7} | "
                f"{row['observed']:>8} {row['label']:>7} {row['final_loss']:>6.4f} | "
                f"{_cell(row['crossing_step']):>5} {_cell(row['escape_step']):>6} | "
                f"{_driver(last):<26} {_cell(previous, '.3f'):>6} {_cell(last.get('alignment'), '.3f'):>8}")
        for where, rate in block["match"].items():
            lines.append(f"prediction at the {where.replace('_', ' ')} point matches the outcome in "
                         f"{rate['matches']}/{rate['decided']} decided runs (of {rate['runs']})")
    return "\n".join(lines[1:])


def escape_plot(summary: dict[str, dict], source: Source, path: Path) -> list[Path]:
    """λ_min(S)(t), its parts, |e|, the FF weights' drift, the test loss; PNG and PDF.

    One column per variant; circles mark the crossing (first saddle), crosses the escape step.  Parts: the
    one-layer split (attention to earlier symbols solid, own position beyond θ_π dashed) where it exists,
    else the attention mass on the previous symbol x_{n-1} (first layer).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    references = reference_entropies(source)
    fig, axes = plt.subplots(5, len(summary), figsize=(6 * len(summary), 16), squeeze=False, sharex="col")
    for column, (name, block) in enumerate(summary.items()):
        colours = plt.get_cmap("tab10" if len(block["runs"]) <= 10 else "viridis", max(10, len(block["runs"])))
        split = all(point["parts"] for row in block["runs"] for point in row["trajectory"])
        for i, row in enumerate(block["runs"]):
            steps = [point["step"] for point in row["trajectory"]]
            share = [point["parts"]["attention"] if split else point["attention_previous"][0]
                     for point in row["trajectory"]]
            series = {"lambda_min": [point["lambda_min"] for point in row["trajectory"]], "share": share,
                      "e_norm": [point["e_norm"] for point in row["trajectory"]],
                      "drift": [point["drift"]["feed_forward"] for point in row["trajectory"]],
                      "test_loss": [point["test_loss"] for point in row["trajectory"]]}
            for ax, key in zip(axes[:, column], series):
                ax.plot(steps, series[key], color=colours(i), lw=1.2, label=f"seed {row['seed']}")
                for event, marker in (("crossing_step", "o"), ("escape_step", "x")):
                    if row[event] is not None:
                        ax.plot(row[event], series[key][steps.index(row[event])], marker, color=colours(i))
            if split:
                diagonal = [point["parts"]["diagonal"] for point in row["trajectory"]]
                axes[1, column].plot(steps, diagonal, color=colours(i), lw=1.2, ls="--")
        top, parts, middle, moved, bottom = axes[:, column]
        for ax in (top, parts) if split else (top,):
            ax.axhline(0.0, color="black", lw=1)
        top.set(title=f"{name} (lr {block['lr']:g})", ylabel="λ_min(S) of the projection onto M_π")
        parts.set(ylabel="share of λ_min(S): attention i<n (solid),\nown position i=n beyond θ_π (dashed)" if split
                  else "attention mass on x_{n-1} at x̃ = pos\n(first layer)")
        middle.set(yscale="log", ylabel="|e|")
        moved.set(yscale="log", ylabel="‖(W_1, W_2)(t) - (W_1, W_2)(0)‖")
        for style, (ref, value) in zip(("--", ":", "-."), references.items()):
            bottom.axhline(value, color="black", ls=style, lw=1, label=f"{ref} {value:.4f}")
        low = min(references.values())
        bottom.set(ylim=(low - 0.02, max(references.values()) + 0.04), xlabel="training step",
                   ylabel="test loss (nats)")
        bottom.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return save_figure(fig, path)


def memory_plot(summary: dict[str, dict], seq_len: int, path: Path) -> list[Path]:
    """Escape step against the attention memory W (full attention drawn at W = N), one point per seed (runs that
    never escape drawn at the top, hollow), and λ_min(S) at the plateau against W; PNG and PDF."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    top = max((row["trajectory"][-1]["step"] for block in summary.values() for row in block["runs"]), default=1)
    for block in summary.values():
        width = block["memory"] or seq_len
        for row in block["runs"]:
            escaped = row["escape_step"] is not None
            left.plot(width, row["escape_step"] if escaped else top, "o", color="C0",
                      mfc="C0" if escaped else "none")
            plateau = row["plateau"] or row["end"]
            right.plot(width, plateau["lambda_min"], "o", color="C1")
    left.set(xscale="log", xlabel="attention memory W (full attention at W = N)",
             ylabel=f"escape step (hollow: none by step {top})")
    right.axhline(0.0, color="black", lw=1)
    right.set(xscale="log", xlabel="attention memory W (full attention at W = N)",
              ylabel="λ_min(S) at the plateau (or the end)")
    fig.tight_layout()
    return save_figure(fig, path)


def position_summary(rows: list[dict]) -> dict[str, dict[str, float]]:
    """Per setting (summary row): ``run_positions``'s head and bulk excess and trapped fraction, averaged over
    its seeds."""
    return {row["variant"]: {part: sum(run["positions"][part] for run in row["runs"]) / len(row["runs"])
                             for part in ("head", "bulk", "trapped")} for row in rows}


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
             "W_V, alpha, v): the full gradient g at phi(e, w, b) and its part g_perp normal to the family"]
    if summary["embedding"] is None:
        return "\n".join([*lines, "not recorded (the measurement failed or has not run)"])
    lines.append(f"{'e':>6} {'w':>7} {'b':>7}  {'|L - L_can|':>11} {'|g|':>8} {'|g_perp|/|g|':>12}  "
                 f"{'|g_perp| in W_O':>15} {'e':>7} {'pos':>7}")
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
    ap.add_argument("--layer-norm", action=argparse.BooleanOptionalAction,
                    help="GPT-2 pre-norm blocks with a final norm before the head, the paper's recipe (default: on "
                         "for second-order and masking and for escape on the second-order source, where the "
                         "paper's numbers come from it; off elsewhere, the theory's model)")
    ap.add_argument("--recipe", choices=list(RECIPES), default="package",
                    help="package: this package's training defaults; released: the authors' released code's (no "
                         "decay on the embedding, W_O and W_2 at 0.02/sqrt(2L), head bias 0, cosine warm-up) "
                         "(default: %(default)s)")
    escape = ap.add_argument_group("escape study (ignored by the other experiments)")
    escape.add_argument("--source", choices=list(ESCAPE_SOURCES), default="first-order",
                        help="first-order chain (default p=0.5, q=0.8) or the paper's lagged second-order chain "
                             "x_{n+1} ~ P(. | x_{n-1}) (default p=0.2, q=0.3)")
    escape.add_argument("--p", type=parse_number, help="the source's p (with --q)")
    escape.add_argument("--q", type=parse_number, help="the source's q (with --p)")
    escape.add_argument("--layers", type=int, nargs="+", default=[1], metavar="L",
                        help="depths to train, e.g. --layers 1 2 4 (default: 1)")
    escape.add_argument("--memory", nargs="+", default=["full"], metavar="W",
                        help="attention memories: each a positive integer (the current symbol and the W before "
                             "it) or 'full', e.g. --memory 2 8 40 100 full (default: full)")
    ap.add_argument("--embedding", choices=["scalar", "onehot"], default="scalar",
                    help="tying only: onehot also trains the released code's one-hot model (k = 2) beside the "
                         "theory's scalar one, 6 seeds each by default (default: %(default)s)")
    ap.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    ap.add_argument("--dtype", choices=["float64", "float32"], default="float64")
    ap.add_argument("--out", default="runs",
                    help=f"output folder: tables, plots and JSON in OUT/NAME per experiment, the runs' records in "
                         f"OUT/NAME/{RESULTS_FILE} for the NAME given (default: %(default)s)")
    ap.add_argument("--json", action="store_true", help="print the summary as JSON instead of the table")
    ap.add_argument("--report-only", action="store_true",
                    help=f"train nothing: build the tables, plots and JSON from the runs of these flags recorded in "
                         f"OUT/NAME/{RESULTS_FILE} so far (exit 1 while some are missing)")
    add_runner_flags(ap)
    return ap


def _given(value: int | None, default: int) -> int:
    """The flag's value if given (0 included, so that validation refuses it), else the default."""
    return default if value is None else value


def _sizes(args: argparse.Namespace, name: str) -> tuple[TrainConfig, int]:
    """The base configuration and seed count of experiment ``name``: its schedule, overridden by the flags."""
    schedule = OWN_SCHEDULES.get(name, SCHEDULES)["quick" if args.quick else "full"]
    if name == "tying" and args.embedding == "onehot" and not args.quick:
        schedule = schedule | {"seeds": ONEHOT_TYING_SEEDS}
    paper_recipe = name in LAYER_NORM_EXPERIMENTS or (name == "escape" and args.source == "second-order")
    base = TrainConfig(
        seq_len=check_positive_int("seq-len", _given(args.seq_len, schedule["seq_len"])),
        steps=check_positive_int("steps", _given(args.steps, schedule["steps"])),
        optimizer=args.optimizer or "adamw", layer_norm=paper_recipe if args.layer_norm is None else args.layer_norm,
        recipe=args.recipe, device=resolve_device(args.device), dtype=getattr(torch, args.dtype))
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


def check_feasible(plan: list[tuple[str, TrainConfig, int]], at_once: int = 1) -> None:
    """Refuse (InvalidInputError) a plan of (experiment, run configuration, runs) that cannot finish: one
    whose attention matrices, for ``at_once`` runs at the same time (local workers), pass the memory budget,
    or whose estimated time (one core) passes ``MAX_HOURS``.  Decided before any training, so that a run
    too large says so at once instead of hanging."""
    for experiment, config, _ in plan:
        itemsize = torch.tensor([], dtype=config.dtype).element_size()
        matrices = peak_sequences(config, experiment) * at_once
        need = matrices * itemsize * config.seq_len**2
        budget = memory_budget_bytes(torch.device(config.device))
        if need > budget:
            largest = math.isqrt(budget // (matrices * itemsize))
            runs = f" for {at_once} runs at once (--workers)" if at_once > 1 else ""
            raise InvalidInputError(
                f"--seq-len {config.seq_len}: {experiment} holds about {need / 2**30:,.3g} GiB of N × N attention "
                f"matrices ({peak_sequences(config, experiment)} of them in {str(config.dtype)[6:]}{runs}), more "
                f"than the memory budget of {budget / 2**30:.1f} GiB; use --seq-len <= {largest}")
    steps = sum(runs * config.steps for _, config, runs in plan)
    hours = sum(runs * config.steps * step_seconds(config) for _, config, runs in plan) / 3600
    if hours > MAX_HOURS:
        cpu = all(config.device == "cpu" for _, config, _ in plan)
        raise InvalidInputError(
            f"{steps:,} training steps at N = {plan[0][1].seq_len} would take {'about' if cpu else 'at least'} "
            f"{hours:,.3g} h (estimated from steps measured on 2 CPU cores), more than the {MAX_HOURS:g} h limit: "
            "lower --steps, --seeds or --seq-len")


def _settings_json(base: TrainConfig) -> dict:
    """The run settings as JSON (``train_config_json`` without the seed), the learning rate resolved."""
    settings = train_config_json(base)
    del settings["seed"]
    return settings | {"lr": base.learning_rate}


def main(argv: list[str] | None = None) -> int:
    try:
        args = _parser().parse_args(argv)
        escape = args.name == "escape"
        names = ["escape"] if escape else list(EXPERIMENTS) if args.name == "all" else [args.name]
        sizes = {name: _sizes(args, name) for name in names}
        if args.embedding == "onehot" and names != ["tying"]:
            raise InvalidInputError("--embedding onehot applies to the tying experiment (multi-state always "
                                    "trains the one-hot model)")
        settings = {name: EXPERIMENTS[name]() for name in names if name in EXPERIMENTS}
        if args.embedding == "onehot":
            settings["tying"] = _tying(("scalar", "onehot"))
        source, variants = escape_source(args), escape_variants(args)
        plan = _plan(args, sizes, settings, len(variants))
        check_feasible(plan, _at_once(args, sum(runs for _, _, runs in plan)))
        every = list(dict.fromkeys([*names, args.name]))  # "all" keeps its runs' records in a folder of its own
        folders = dict(zip(every, prepare_output(Path(args.out), every)))
    except InvalidInputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        print(f"error: cannot write to --out {args.out}: {err.strerror or err}", file=sys.stderr)
        return 2
    if escape:
        jobs = escape_jobs(source, variants, *sizes["escape"], folders["escape"])
    else:
        jobs = training_jobs(settings, sizes)
    try:
        entries = _entries(jobs, args, folders[args.name])
    except InvalidInputError as err:  # a --scheduler that cannot be reached, bad --workers, nothing recorded
        print(f"error: {err}", file=sys.stderr)
        return 2
    if entries is None:
        return 130
    records = [e["record"] if e is not None and e["status"] == "ok" else None for e in entries]
    if escape:
        code = report_escape(args, source, *sizes["escape"], folders["escape"], jobs, records)
    else:
        code = report_experiments(args, names, sizes, settings, folders, jobs, records)
    missing = sum(record is None for record in records)
    if missing and args.report_only:
        print(f"{missing} of {len(jobs)} runs have no record in {folders[args.name] / RESULTS_FILE} (failed or not "
              "run yet): the tables cover the others; the same command with --resume runs them", file=sys.stderr)
    return 1 if missing else code


def _at_once(args: argparse.Namespace, runs: int) -> int:
    """How many runs train at the same time on this machine: --workers (default one per core), at most the
    runs; 1 with --scheduler (the cluster's machines) or --report-only."""
    if args.scheduler or args.report_only:
        return 1
    return min(args.workers or default_workers(), runs)


def _entries(jobs: list[Job], args: argparse.Namespace, out: Path) -> list[dict | None] | None:
    """The jobs' results-file entries: run now (``run_jobs``), or read back with --report-only; None when
    the run was interrupted (the runner has said how to resume)."""
    if args.report_only:
        entries = recorded_entries(jobs, out)
        if all(entry is None for entry in entries):
            raise InvalidInputError(f"--report-only: no run of these flags is recorded in {out / RESULTS_FILE}")
        return entries
    result = run_jobs(jobs, args, out)
    if result.interrupted:
        print("the same command with --report-only builds the tables from the runs recorded so far",
              file=sys.stderr)
        return None
    return result.entries


def escape_source(args: argparse.Namespace) -> Source:
    """--source with --p, --q (both or neither; defaults ``ESCAPE_SOURCES``)."""
    if (args.p is None) != (args.q is None):
        raise InvalidInputError("give --p and --q together (or neither, for the source's defaults)")
    p, q = ESCAPE_SOURCES[args.source] if args.p is None else (args.p, args.q)
    return MarkovChain(p, q) if args.source == "first-order" else SecondOrderChain.lagged(p, q)


def escape_variants(args: argparse.Namespace) -> list[dict]:
    """The escape study's variants: every optimiser (--optimizer, or both) × --layers × --memory."""
    memories = []
    for text in args.memory:
        if text == "full":
            memories.append(None)
        elif text.isdigit() and int(text) >= 1:
            memories.append(int(text))
        else:
            raise InvalidInputError(f"--memory takes positive integers or 'full', got {text!r}")
    for layers in args.layers:
        check_positive_int("layers", layers)
    optimizers = [args.optimizer] if args.optimizer else list(DEFAULT_LR)
    return [{"optimizer": name, "layers": layers, "memory": memory}
            for name in optimizers for layers in dict.fromkeys(args.layers) for memory in dict.fromkeys(memories)]


def _plan(args: argparse.Namespace, sizes: dict[str, tuple[TrainConfig, int]],
          settings: dict[str, list[Setting]], variants: int = 1) -> list[tuple[str, TrainConfig, int]]:
    """(experiment, run configuration, runs) of everything ``main`` will train: each setting's seeds, or the
    escape study's seeds per variant."""
    if "escape" in sizes:
        base, seeds = sizes["escape"]
        return [("escape", base, seeds * variants)]
    return [(name, replace(sizes[name][0], **setting.overrides), sizes[name][1])
            for name, mine in settings.items() for setting in mine]


def report_experiments(args: argparse.Namespace, names: list[str], sizes: dict[str, tuple[TrainConfig, int]],
                       settings: dict[str, list[Setting]], folders: dict[str, Path], jobs: list[Job],
                       records: list[dict | None]) -> int:
    """Write the summaries and plots of the training experiments from their jobs' records (None: not recorded)
    and print the table; exit code 0 when every setting agrees with the paper and the embedding is exact."""
    summaries, files, texts, exact = {}, [], [], True
    every_row = []
    for name in names:
        base, seeds = sizes[name]
        mine = [(job, record) for job, record in zip(jobs, records) if job.experiment == name]
        rows = summarise(settings[name], [(job.setting, record) for job, record in mine
                                          if job.setting is not None and record is not None])
        missing = sum(record is None for _, record in mine)
        summary = summaries[name] = {"settings": _settings_json(base), "seeds": seeds, "missing": missing,
                                     "rows": rows}
        texts.append(f"settings{f' ({name})' * (len(names) > 1)}: N={base.seq_len}, {base.steps} steps, "
                     f"batch {base.batch}, d={base.d}, {seeds} seeds, layer norm {'on' if base.layer_norm else 'off'}, "
                     f"{base.optimizer}, {base.device}/{args.dtype}"
                     + (f"; {missing} of {len(mine)} runs not recorded, rows cover the others" if missing else ""))
        if name == "tying" and args.embedding == "onehot":
            summary["trapped"] = {f"{row['panel']}, {row['variant']}": row["labels"].get("unigram", 0.0)
                                  for row in rows}
            texts.insert(0, "fraction trapped at H(pi) (label unigram), scalar vs one-hot model:\n" + "\n".join(
                f"  {setting}: {fraction:.0%}" for setting, fraction in summary["trapped"].items()))
        if name == "init":
            summary["positions"] = position_summary(rows)
            summary["embedding"] = next((record for job, record in mine if job.setting is None), None)
            exact = summary["embedding"] is not None and embedding_exact(summary["embedding"])
            texts.insert(0, init_text(summary))
        (folders[name] / "summary.json").write_text(json.dumps(summary, indent=2))
        files.append(folders[name] / "summary.json")
        if rows:
            files += save_figure(curves_figure(rows), folders[name] / "curves")
        every_row += rows
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


def gather_checkpoints(runs: list[tuple[Job, dict]]) -> tuple[dict[str, dict[int, dict[str, Params]]], int]:
    """variant (``escape_variant``) -> seed -> the run's parameters at its key points, read from the checkpoint files
    of the recorded ``runs``; and how many of those files are not there (written on a machine that does not share
    the output folder)."""
    params: dict[str, dict[int, dict[str, Params]]] = {}
    absent = 0
    for job, record in runs:
        path = checkpoint_path(job.config)
        if path.exists():
            params.setdefault(escape_variant(job.config["train"]), {})[record["seed"]] = torch.load(path)
        else:
            absent += 1
    return params, absent


def report_escape(args: argparse.Namespace, source: Source, base: TrainConfig, seeds: int, folder: Path,
                  jobs: list[Job], records: list[dict | None]) -> int:
    """The escape study from its jobs' records (None: not recorded): summary JSON, plots and parameters, the
    table; exit code 0 when every decided last-plateau prediction matches the outcome."""
    runs = [(job, record) for job, record in zip(jobs, records) if record is not None]
    variants = escape_rows(runs)
    summary = {"settings": _settings_json(base) | {"lr": {k: v["lr"] for k, v in variants.items()}},
               "source": source_json(source), "seeds": seeds, "missing": len(jobs) - len(runs),
               "band": escape_band(source), "references": reference_entropies(source), "variants": variants}
    (folder / "summary.json").write_text(json.dumps(summary, indent=2))
    # θ before projection at the plateau, the last plateau point and the end, for follow-up analysis
    params, absent = gather_checkpoints(runs)
    torch.save(params, folder / "params.pt")
    if absent:
        print(f"note: {absent} of {len(runs)} recorded runs have no checkpoint in {folder / 'checkpoints'} "
              "(written where the output folder is not shared?): params.pt leaves them out", file=sys.stderr)
    files = [folder / "summary.json", folder / "params.pt", *escape_plot(variants, source, folder / "escape")]
    if len({block["memory"] for block in variants.values()}) > 1:
        files += memory_plot(variants, base.seq_len, folder / "memory")
    _emit(args.json, summary, escape_table(variants) + (
        f"\n\nsettings: tied, {_source_text(source)}, N={base.seq_len}, {base.steps} steps, batch {base.batch}, "
        f"d={base.d}, layer norm {'on' if base.layer_norm else 'off'}, recipe {base.recipe}, {seeds} seeds, "
        f"{base.device}/{args.dtype}; band {summary['band']:g} nats"
        + (f"; {summary['missing']} of {len(jobs)} runs not recorded, rows cover the others" if summary["missing"]
           else "") + ".\n"
        "plateau: the evaluation closest to the unigram test loss before the escape; last: the last one "
        "within the band before the escape (or the end); escape: the first evaluation more than the band "
        "below it;\ncross: the first evaluation whose projection onto M_π is a saddle; driver: the block "
        "most negative in λ_min(S) at the last plateau point (one layer: its most negative part; otherwise the "
        "parts of lag m = 1, own position, and m = 2, the previous symbol); a(n-1): attention mass on the "
        "previous symbol there; cos(e,w): |cos| of e and S's bottom eigenvector there"), files)
    decided = [row["last_plateau"]["matches"] for block in variants.values() for row in block["runs"]
               if row["last_plateau"] and row["last_plateau"]["matches"] is not None]
    return 0 if all(decided) else 1


def _source_text(source: Source) -> str:
    if isinstance(source, MarkovChain):
        return f"first order p={source.p:g}, q={source.q:g}"
    (p, same_p), (one_minus_q, same_q) = source.table
    if p == same_p and one_minus_q == same_q:  # the lagged chain: x_{n+1} ~ P(. | x_{n-1})
        return f"second order (lagged) p={p:g}, q={1 - one_minus_q:g}"
    return f"second order, P(x_(n+1) = 1 | x_(n-1) = a, x_n = b) = {[list(row) for row in source.table]}"


if __name__ == "__main__":
    exit_now(main())
