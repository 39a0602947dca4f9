"""Training the paper's transformer on samples of a Markov source (claim ``TRAIN``).

Each step draws a fresh batch of sequences x_1..x_{N+1} from the source and minimises the
empirical cross-entropy of predicting x_{n+1} from x_1..x_n at every position n ≤ N,

    L̂(θ) = (1 / BN) Σ_{b,n} ℓ(logit_n(x^b), x^b_{n+1})   (nats),

with AdamW and the paper's schedule (``lr_factor``: linear warm-up from lr/100, then cosine
decay to lr/5; the released code warms up along a cosine, see the recipes below), or with plain
SGD at a constant rate (no momentum, no weight decay: the comparison of the escape study).  The
test loss is measured on sequences never trained on, as the expected cross-entropy given the
source's true next-symbol probability (the Rao-Blackwellised form of the test cross-entropy:
same mean, less noise), with a standard error over sequences.  For first-order sources and N
small enough the exact population loss is reported as well, and for every run the loss of the
add-β estimate of the kernel from the same training samples.

Defaults follow the paper's code (d = 8, one head, N = 1024, batch 16, AdamW β = (0.9, 0.95),
lr 2e-3, weight decay 1e-3 on e, a and the weight matrices, N(0, 0.02²) init, 2 % warm-up; the
released code differs in three details, ``recipe`` below);
layer norm is **off** by default, so the trained model is the one the theory is about.  SGD's
default rate is 1, constant.

Recipes (``TrainConfig.recipe``): ``package`` is the above; ``released`` is the training recipe of the
authors' released code (github.com/Bond1995/Markov at 446eaa1, ``Markov-Simple/src``; ``Markov-LLM`` and
``Markov-LLM-m`` train the same way), which differs from it in exactly three places:

- weight decay only on its ``nn.Linear`` weights (W_Q, W_K, W_V, W_O, W_1, W_2 and an untied head a or A), not
  on the token embedding e or E (an ``nn.Embedding``; tied, the head is that same tensor and is taken out of
  the decay set): ``get_parameter_group_specs``, ``models/base.py:371-421``;
- W_O and W_2 of every layer (``attn.c_proj``, ``mlp.c_proj``) drawn at init_std/√(2·layers) (GPT-2's rule,
  ``models/base.py:276-279``: 0.02/√(2·n_layer)) and the head bias at 0 (``nn.Linear``'s bias, zeroed by
  ``_init_weights``, ``models/base.py:296-300``); every other entry is the same draw as ``package``'s;
- the schedule of ``OneCycleLR(anneal_strategy='cos', pct_start=warmup, div_factor=100,
  final_div_factor=0.05)`` (``main.py:89-93``): a *cosine* warm-up from lr/100 that peaks at step
  warmup·steps - 1 (15 of 800), then cosine down to lr/5 (``released_lr_factor``).

Optimiser, betas, lr, batch, the Gaussian's scale and the source's law are the same in both.  The
released code keeps float32 weights (``--dtype`` is not used by its model) and runs the forward pass
under float16 autocast on a GPU (``optim/base.py:13-15``); the recipe leaves ``dtype`` to the caller
(float64 by default; float32 for the released weights' precision, without autocast).

Initialisations (``TrainConfig.init``): ``gaussian`` draws every parameter i.i.d. N(0, init_std²)
(the standard one at the default 0.02); ``rank-one`` is the companion paper's (L2G) "our
initialisation", ``rank_one_params``.

Sources: the binary first-order chain, the lagged second-order chain and k-state chains
(``FiniteChain``, claim MULTI-STATE).  ``TrainConfig.embedding`` picks the theory's scalar model
(x e, one logit; binary sources only) or the released code's one-hot model (E[x], k logits; any
source).  Every loss is written for next-symbol *distributions* over k symbols (the scalar
model's logit ℓ is the pair of class logits (0, ℓ)), so one code path serves both.

``train`` can call a hook at every evaluation (``on_eval(step, params, test_loss)``): the escape
study (``numerics.escape``) uses it to classify the projection of θ(t) onto M_π along the run.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor
from torch.optim.lr_scheduler import LambdaLR

from numerics.markov import (
    FiniteChain,
    InvalidInputError,
    MarkovChain,
    SecondOrderChain,
    check_positive_int,
    num_prefixes,
)
from numerics.population import chain_loss
from numerics.transformer import Params, init_params, is_onehot, logits

Source = MarkovChain | SecondOrderChain | FiniteChain

#: Parameters that get weight decay (v1's code decays its Linear weights, which include its e = nn.Linear(1, d)).
DECAYED = ("e", "a", "E", "A", "W_Q", "W_K", "W_V", "W_O", "W_1", "W_2")
#: Largest N for which the exact population loss of a trained first-order model is computed.
EXACT_MAX_SEQ_LEN = 12
#: Optimisers ``train`` offers, with their default learning rate.
DEFAULT_LR = {"adamw": 2e-3, "sgd": 1.0}
#: The paper's schedule: start at lr / WARMUP_START_DIV, end at lr / FINAL_DIV.
WARMUP_START_DIV = 100.0
FINAL_DIV = 5.0
#: Initialisations ``train`` offers (``TrainConfig.init``).
INITS = ("gaussian", "rank-one")
#: Embeddings ``train`` offers (``TrainConfig.embedding``).
EMBEDDINGS = ("scalar", "onehot")
#: Training recipes (``TrainConfig.recipe``): this package's, and the authors' released code's (module docstring).
RECIPES = ("package", "released")
#: The released recipe's decayed parameters: its nn.Linear weights only, never the token embedding e or E.
RELEASED_DECAYED = tuple(name for name in DECAYED if name not in ("e", "E"))
#: The released recipe's residual output projections, initialised at init_std / √(2·layers).
RESIDUAL_OUTPUTS = ("W_O", "W_2")

#: ``on_eval(step, params, test_loss)``: called at every evaluation; ``params`` are the live
#: (detached) tensors, so a hook that keeps them must copy them.
EvalHook = Callable[[int, Params, float], None]


@dataclass(frozen=True)
class TrainConfig:
    """Architecture and optimiser settings of one run (see the module docstring for defaults)."""

    d: int = 8
    layers: int = 1
    tying: bool = True
    layer_norm: bool = False
    memory: int | None = None
    seq_len: int = 1024
    batch: int = 16
    steps: int = 400
    optimizer: str = "adamw"
    lr: float | None = None  # None: DEFAULT_LR[optimizer]
    betas: tuple[float, float] = (0.9, 0.95)
    weight_decay: float = 1e-3
    warmup: float = 0.02
    init: str = "gaussian"
    init_std: float = 0.02  # the Gaussian's scale; rank-one: of the attention weights
    embedding: str = "scalar"  # "onehot": the released code's E[x] with k logits
    recipe: str = "package"  # "released": the released code's decay set, init scales and schedule
    eval_every: int = 20
    eval_sequences: int = 64
    seed: int = 0
    device: str = "cpu"
    dtype: torch.dtype = torch.float64

    def __post_init__(self) -> None:
        for name in ("d", "layers", "seq_len", "batch", "steps", "eval_every", "eval_sequences"):
            check_positive_int(name, getattr(self, name))
        if self.memory is not None:
            check_positive_int("memory", self.memory)
        if self.optimizer not in DEFAULT_LR:
            raise InvalidInputError(f"optimizer must be one of {', '.join(DEFAULT_LR)}, got {self.optimizer!r}")
        if self.lr is not None and not (math.isfinite(self.lr) and self.lr > 0):
            raise InvalidInputError(f"lr must be a positive finite number, got {self.lr!r}")
        if self.init not in INITS:
            raise InvalidInputError(f"init must be one of {', '.join(INITS)}, got {self.init!r}")
        if not (math.isfinite(self.init_std) and self.init_std >= 0):
            raise InvalidInputError(f"init_std must be a finite number >= 0, got {self.init_std!r}")
        if self.embedding not in EMBEDDINGS:
            raise InvalidInputError(f"embedding must be one of {', '.join(EMBEDDINGS)}, got {self.embedding!r}")
        if self.init == "rank-one" and self.embedding != "scalar":
            raise InvalidInputError("the rank-one initialisation is defined for the scalar model")
        if self.init == "rank-one" and (not self.tying or self.layers != 1):
            raise InvalidInputError("the rank-one initialisation is defined for the tied one-layer model")
        if self.recipe not in RECIPES:
            raise InvalidInputError(f"recipe must be one of {', '.join(RECIPES)}, got {self.recipe!r}")
        if self.recipe == "released" and self.optimizer != "adamw":
            raise InvalidInputError("the released recipe is the released code's AdamW recipe; use optimizer adamw")

    @property
    def learning_rate(self) -> float:
        """``lr``, or the optimiser's default when None."""
        return DEFAULT_LR[self.optimizer] if self.lr is None else self.lr


@dataclass
class TrainResult:
    """Curves and final numbers of one run; losses in nats."""

    config: TrainConfig
    steps: list[int] = field(default_factory=list)  # where the test loss was measured (0: at init)
    test_loss: list[float] = field(default_factory=list)
    final_loss: float = math.nan
    final_stderr: float = math.nan
    reference_test_loss: dict[str, float] = field(default_factory=dict)
    gap: dict[str, tuple[float, float]] = field(default_factory=dict)  # model - reference: (mean, stderr)
    exact_loss: float | None = None
    add_beta_loss: float = math.nan
    seconds: float = 0.0
    params: Params = field(default_factory=dict, repr=False)


def rank_one_params(
    d: int,
    seq_len: int,
    *,
    std: float = 0.02,
    layer_norm: bool = False,
    seed: int | None = None,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float64,
) -> Params:
    """L2G's rank-one initialisation ("our initialisation", paper-notes §3.3 item 8) in our names.

    The authors' ``--init good`` (Bond1995/Markov@5807025, Markov-Simple/src/models/base.py) sets
    wte = 0.5, wpe = -0.25, mlp.c_fc = 1, mlp.c_proj = -1 entrywise and leaves b = 0 and the
    attention weights (c_attn, attn.c_proj) at GPT-2's N(0, 0.02²).  Here, with r = 4d:

        e = ½ 1_d,   pos_n = -¼ 1_d (every n),   W_1 = 1_{r×d},   W_2 = -1_{d×r},   b = 0,
        W_Q, W_K, W_V, W_O ~ N(0, std²) (``seed``).

    Apart from W_O ≠ 0 this is (to rounding) the embedded canonical model ``canonical_point`` with its
    default α = 1_d/√d, v = 2·1_r/√r at (e, w, b) = (√d/2, -√(rd)/2, 0) = (√d/2, -d, 0): slope
    e²(1 + 2w|w|) = -d(2d² - 1)/4 (-254 at d = 8) on the side w < -1/√2 of the canonical landscape,
    the basin of the bigram minima when p + q > 1 (paper-notes §3.3 item 6).  ``layer_norm`` adds the
    pre-norm parameters of ``init_params`` (gains 1, biases 0); the canonical correspondence then fails.
    """
    r = 4 * d
    params = init_params(d, seq_len, std=std, layer_norm=layer_norm, seed=seed, device=device, dtype=dtype)
    # the authors' constants exactly (canonical_point's |w| v αᵀ rounds to 1 ± ulp)
    constants = {"e": ((d,), 0.5), "pos": ((seq_len, d), -0.25), "W_1": ((r, d), 1.0), "W_2": ((d, r), -1.0),
                 "b": ((), 0.0)}
    return params | {name: torch.full(shape, value, device=device, dtype=dtype)
                     for name, (shape, value) in constants.items()}


def symbols(source: Source) -> int:
    """The alphabet size k of a source."""
    return source.k if isinstance(source, FiniteChain) else 2


def model_symbols(source: Source, config: TrainConfig) -> int | None:
    """k for the one-hot model (``init_params(symbols=k)``), None for the scalar one (binary sources only)."""
    if config.embedding == "onehot":
        return symbols(source)
    if isinstance(source, FiniteChain):
        raise InvalidInputError(f"a {source.k}-state chain needs the one-hot model (embedding='onehot')")
    return None


def released_init(params: Params, layers: int) -> Params:
    """The released recipe's Gaussian start made from ours: every layer's W_O and W_2 times 1/√(2·layers), the
    head bias b at 0, every other entry unchanged (so the same seed draws the same point elsewhere)."""
    residual = {k: v / math.sqrt(2 * layers) for k, v in params.items() if k.split(".")[0] in RESIDUAL_OUTPUTS}
    return params | residual | {"b": torch.zeros_like(params["b"])}


def initial_params(config: TrainConfig, k: int | None = None) -> Params:
    """θ(0) of a run: ``config.init`` at scale ``config.init_std``, seeded by ``config.seed``; ``k``:
    the one-hot model's alphabet (``model_symbols``), None for the scalar model.  The released recipe rescales
    the Gaussian start (``released_init``); its rank-one start is the same as the package's (the released
    code's ``--init good`` skips GPT-2's rescaling, and rank-one's b is 0 already)."""
    if config.init == "rank-one":
        return rank_one_params(config.d, config.seq_len, std=config.init_std, layer_norm=config.layer_norm,
                               seed=config.seed, device=config.device, dtype=config.dtype)
    params = init_params(config.d, config.seq_len, layers=config.layers, tying=config.tying,
                         layer_norm=config.layer_norm, std=config.init_std, seed=config.seed, symbols=k,
                         device=config.device, dtype=config.dtype)
    return released_init(params, config.layers) if config.recipe == "released" else params


def _step_seed(seed: int, step: int) -> int:
    """A distinct, reproducible data seed for every (run seed, step); step -1 is the test set."""
    return int(np.random.SeedSequence([seed, step + 1]).generate_state(1)[0])


def next_distribution(source: Source, x: Tensor) -> Tensor:
    """The source's law of x_{n+1} given x_1..x_n at every position of sequences x (..., n): (..., n, k)."""
    if isinstance(source, FiniteChain):
        return source.kernel(device=x.device, dtype=x.dtype)[x.long()]
    one = source.next_one_probability(x)
    return torch.stack([1 - one, one], dim=-1)


def log_predictions(params: Params, x: Tensor, config: TrainConfig) -> Tensor:
    """log P_θ(· | x_1..x_n) at every position of sequences x (S, n): (S, n, k).  The scalar model's
    logit ℓ is the class-logit pair (0, ℓ): log_softmax then gives (-softplus(ℓ), -softplus(-ℓ))."""
    z = logits(params, x, tying=config.tying, memory=config.memory)
    if not is_onehot(params):
        z = torch.stack([torch.zeros_like(z), z], dim=-1)
    return torch.log_softmax(z, dim=-1)


def cross_entropy(truth: Tensor, log_prediction: Tensor) -> Tensor:
    """-Σ_j truth_j log prediction_j over the last axis, with 0 · log 0 = 0 (nats)."""
    return -(truth * log_prediction.clamp(min=torch.finfo(log_prediction.dtype).min)).sum(dim=-1)


def sequence_losses(params: Params, x: Tensor, truth: Tensor, config: TrainConfig) -> Tensor:
    """Expected cross-entropy of the model on each test sequence x (S, N+1), averaged over positions.

    ``truth`` (S, N, k) is the source's law of x_{n+1} given x_1..x_n; returns (S,) in nats.
    """
    with torch.no_grad():
        return cross_entropy(truth, log_predictions(params, x[:, :-1], config)).mean(dim=1)


def excess_by_position(params: Params, source: Source, config: TrainConfig, *, sequences: int = 256) -> Tensor:
    """E[CE(model) - CE(source)] at each position n = 1..N, in nats, shape (N,).

    The loss above the source's own next-symbol law, position by position, on ``sequences`` fresh
    sequences (the data seed of step ``config.steps + 1``, which neither training nor the test set
    draws): where in the sequence a trained model falls short of the entropy rate.
    """
    fresh = _step_seed(config.seed, config.steps + 1)
    x = source.sample(sequences, config.seq_len + 1, seed=fresh, device=config.device, dtype=config.dtype)
    truth = next_distribution(source, x[:, :-1])
    with torch.no_grad():
        model = cross_entropy(truth, log_predictions(params, x[:, :-1], config))
    return (model - cross_entropy(truth, truth.log())).mean(dim=0)


def mean_and_stderr(values: Tensor) -> tuple[float, float]:
    """Sample mean and its standard error (sample std / √n)."""
    return values.mean().item(), values.std().item() / math.sqrt(len(values))


def _reference_gaps(model: Tensor, source: Source, x: Tensor, truth: Tensor) -> tuple[dict, dict]:
    """Each reference predictor's loss on the test sequences, and model minus it with its standard error.

    Paired per sequence, so the randomness of the test set largely cancels from the gap.
    """
    losses, gaps = {}, {}
    for name, law in reference_distributions(source, x[:, :-1]).items():
        reference = cross_entropy(truth, law.log()).mean(dim=1)
        losses[name] = reference.mean().item()
        gaps[name] = mean_and_stderr(model - reference)
    return losses, gaps


def warmup_steps(steps: int, warmup: float) -> int:
    """W = max(1, round(warmup · steps)): the warm-up length of ``lr_factor`` (at least one step)."""
    return max(1, round(warmup * steps))


def lr_factor(step: int, steps: int, warmup: float) -> float:
    """The paper's schedule as a multiple of lr for update ``step`` = 0..steps-1.

    With W = ``warmup_steps``: linear from 1/100 at step 0 to 1 at step W, then cosine from 1 at
    step W down to 1/5 at the last step, steps - 1.  If steps - 1 ≤ W the run ends during the
    warm-up (steps = 1 makes one update at lr/100).  Written out because ``OneCycleLR`` divides by
    its warm-up length in steps minus one, which is 0 for fewer than ~2/warmup steps (50 at 2 %).
    """
    start, end = 1.0 / WARMUP_START_DIV, 1.0 / FINAL_DIV
    ramp = warmup_steps(steps, warmup)
    if step <= ramp:
        return start + (1.0 - start) * step / ramp
    fraction = (step - ramp) / max(1, steps - 1 - ramp)
    return end + (1.0 - end) * 0.5 * (1.0 + math.cos(math.pi * min(1.0, fraction)))


def released_lr_factor(step: int, steps: int, warmup: float) -> float:
    """The released code's schedule as a multiple of lr for update ``step`` = 0..steps-1: torch's
    ``OneCycleLR(anneal_strategy='cos', pct_start=warmup, div_factor=100, final_div_factor=0.05)``, written out.

    With P = warmup · steps - 1 (a float, as OneCycleLR's phase end; 15 at 2 % of 800): a cosine ramp from
    1/100 at step 0 to 1 at step P, then a cosine from 1 at step P down to (1/100)/0.05 = 1/5 at step
    steps - 1.  With P < 0 (fewer than 1/warmup steps) there is no ramp and the decay is timed from P, as
    in OneCycleLR (one step runs at lr/5).  At P = 0 (exactly 1/warmup steps), where OneCycleLR divides by
    zero, the peak is at step 0: factor 1, OneCycleLR's limit from slightly fewer steps.
    """
    def cosine(start: float, end: float, fraction: float) -> float:
        return end + (start - end) * 0.5 * (1.0 + math.cos(math.pi * fraction))

    peak = warmup * steps - 1
    if peak > 0 and step <= peak:
        return cosine(1.0 / WARMUP_START_DIV, 1.0, step / peak)
    return cosine(1.0, 1.0 / FINAL_DIV, (step - peak) / (steps - 1 - peak) if step > peak else 0.0)


def _optimizer(params: Params, config: TrainConfig) -> tuple[torch.optim.Optimizer, LambdaLR | None]:
    """AdamW with decay on ``DECAYED`` only and the paper's schedule (the released recipe: on
    ``RELEASED_DECAYED`` with ``released_lr_factor``); or plain SGD, constant rate.

    SGD has no momentum and no weight decay: torch's SGD decay is coupled (lr · wd per step, 500
    times AdamW's decoupled lr · wd at the default rates), so carrying wd over would not be the
    same regulariser.  Returns the optimiser and the schedule (None: constant).
    """
    if config.optimizer == "sgd":
        return torch.optim.SGD(list(params.values()), lr=config.learning_rate), None
    released = config.recipe == "released"
    decay_set, factor = (RELEASED_DECAYED, released_lr_factor) if released else (DECAYED, lr_factor)
    decayed = [v for k, v in params.items() if k.split(".")[0] in decay_set]
    others = [v for k, v in params.items() if k.split(".")[0] not in decay_set]
    optimizer = torch.optim.AdamW(
        [{"params": decayed, "weight_decay": config.weight_decay}, {"params": others, "weight_decay": 0.0}],
        lr=config.learning_rate, betas=config.betas,
    )
    schedule = LambdaLR(optimizer, lambda step: factor(step, config.steps, config.warmup))
    return optimizer, schedule


def train(
    source: Source, config: TrainConfig, *, progress: Callable | None = None, on_eval: EvalHook | None = None
) -> TrainResult:
    """Train one model on fresh samples of ``source``; deterministic given ``config.seed`` on the CPU.

    ``progress`` wraps the step iterator (e.g. ``tqdm``); None runs silently.  ``on_eval`` is
    called after every evaluation of the test loss (step 0 = at init, every ``eval_every`` steps
    and at the last step) with the step, the current parameters and that test loss.
    """
    start = time.perf_counter()
    params = initial_params(config, model_symbols(source, config))
    for value in params.values():
        value.requires_grad_(True)
    optimizer, schedule = _optimizer(params, config)
    sample = dict(device=config.device, dtype=config.dtype)
    test_x = source.sample(config.eval_sequences, config.seq_len + 1, seed=_step_seed(config.seed, -1), **sample)
    truth = next_distribution(source, test_x[:, :-1])
    result = TrainResult(config)

    def record(step: int) -> None:
        result.steps.append(step)
        result.test_loss.append(sequence_losses(params, test_x, truth, config).mean().item())
        if on_eval is not None:
            on_eval(step, {k: v.detach() for k, v in params.items()}, result.test_loss[-1])

    record(0)
    counts = None
    steps = range(1, config.steps + 1)
    for step in progress(steps) if progress else steps:
        x = source.sample(config.batch, config.seq_len + 1, seed=_step_seed(config.seed, step), **sample)
        counts = count_transitions(x, context_order(source), symbols(source), counts)
        # sampled targets: the training objective
        loss = -log_predictions(params, x[:, :-1], config).gather(-1, x[:, 1:, None].long()).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if schedule is not None:
            schedule.step()
        if step % config.eval_every == 0 or step == config.steps:
            record(step)
    final = sequence_losses(params, test_x, truth, config)
    result.final_loss, result.final_stderr = mean_and_stderr(final)
    result.reference_test_loss, result.gap = _reference_gaps(final, source, test_x, truth)
    result.add_beta_loss = add_beta_loss(counts, test_x, truth)
    result.params = {k: v.detach() for k, v in params.items()}
    exact_size = num_prefixes(symbols(source), config.seq_len) <= num_prefixes(2, EXACT_MAX_SEQ_LEN)
    if isinstance(source, MarkovChain | FiniteChain) and config.memory is None and exact_size:
        result.exact_loss = chain_loss(result.params, source, tying=config.tying).item()
    result.seconds = time.perf_counter() - start
    return result


def reference_entropies(source: Source) -> dict[str, float]:
    """Population loss of the best predictor seeing the last 0, 1 (and 2) symbols, in nats.

    First order: unigram H(π) and bigram H_rate.  Second order: unigram, bigram and trigram
    (the conditional entropies of order 0, 1, 2; the last is the entropy rate).
    """
    if isinstance(source, MarkovChain | FiniteChain):
        return {"unigram": source.unigram_loss(), "bigram": source.entropy_rate()}
    return dict(zip(("unigram", "bigram", "trigram"), source.entropies().values()))


def reference_distributions(source: Source, x: Tensor) -> dict[str, Tensor]:
    """The law of x_{n+1} under each reference predictor at every position of sequences x (S, n): (S, n, k)."""
    if isinstance(source, FiniteChain):
        pi = torch.tensor(source.pi, dtype=x.dtype, device=x.device)
        return {"unigram": pi.expand(*x.shape, source.k), "bigram": next_distribution(source, x)}
    if isinstance(source, MarkovChain):
        unigram = torch.full_like(x, source.pi[1])
        return {"unigram": torch.stack([1 - unigram, unigram], dim=-1), "bigram": next_distribution(source, x)}
    order_one = torch.tensor(source.conditional_one(), dtype=x.dtype, device=x.device)[x.long()]
    marginal = torch.full_like(x, float(source.pair_law.sum(axis=0)[1]))
    return {"unigram": torch.stack([1 - marginal, marginal], dim=-1),
            "bigram": torch.stack([1 - order_one, order_one], dim=-1), "trigram": next_distribution(source, x)}


def context_order(source: Source) -> int:
    """How many past symbols the source's next-symbol law depends on."""
    return 2 if isinstance(source, SecondOrderChain) else 1


def count_transitions(x: Tensor, order: int, k: int = 2,
                      counts: dict[int, np.ndarray] | None = None) -> dict[int, np.ndarray]:
    """Add the (context, next) counts of sequences x (B, L) over k symbols to ``counts`` for contexts
    of 1..order symbols.  ``counts[j][c_1, .., c_j, next]`` counts every window of j + 1 consecutive symbols.
    """
    counts = counts if counts is not None else {j: np.zeros((k,) * (j + 1)) for j in range(1, order + 1)}
    symbols_seen = x.detach().long().cpu().numpy()
    for j, table in counts.items():
        windows = np.lib.stride_tricks.sliding_window_view(symbols_seen, j + 1, axis=1).reshape(-1, j + 1)
        np.add.at(table, tuple(windows.T), 1)
    return counts


def add_beta_loss(counts: dict[int, np.ndarray], x: Tensor, truth: Tensor, *, beta: float = 1.0) -> float:
    """Expected cross-entropy on test sequences x (S, N+1) of the add-β kernel estimate (nats).

    P̂(j | context) = (n(context, j) + β) / (n(context) + kβ) (Laplace for β = 1) from ``counts``
    (``count_transitions`` of the training batches), with the longest context available: the
    source's order, or the n symbols seen so far at positions n < order.  ``truth`` (S, N, k) is
    the source's law of x_{n+1} given x_1..x_n on x, as for the model's test loss.
    """
    estimate = {j: (c + beta) / (c.sum(axis=-1, keepdims=True) + c.shape[-1] * beta) for j, c in counts.items()}
    context = x[:, :-1].long().cpu().numpy()
    p_hat = np.empty((*context.shape, truth.shape[-1]))
    for n in range(context.shape[1]):
        j = min(n + 1, max(estimate))
        p_hat[:, n] = estimate[j][tuple(context[:, n + 1 - j : n + 1].T)]
    return cross_entropy(truth.cpu().double(), torch.from_numpy(np.log(p_hat))).mean().item()
