"""Population cross-entropy of the transformer under a stationary source (claim ID ``LOSS``).

    L(θ) = (1/N) Σ_{n=1}^{N} E[ softplus(ℓ_n) - x_{n+1} ℓ_n ]        (nats)

with ℓ_n = logit_n(x_1^n).  The next symbol is averaged analytically,
E[· | x_1^n] = P(1|x_1^n) softplus(-ℓ_n) + P(0|x_1^n) softplus(ℓ_n), so only the prefix x_1^n is
random.  A first-order chain has P(·|x_1^n) = P(·|x_n); the paper's second-order source
(``SecondOrderChain``) has P(·|x_{n-1}, x_n) from its table, and at n = 1 the order-1 conditional.
The one-hot model on k symbols (claim ``MULTI-STATE``, first-order chains) has the softmax form
E[· | x_1^n] = -Σ_j P(j|x_n) log softmax(logits_n)_j.  Attention may be limited to the current
symbol and the W before it (``memory`` = W, ``numerics.transformer.attention_mask``).  Three evaluations:

* ``exact``: every distinct prefix once (k + … + k^N evaluations, the floor), weighted by the
  source (π and the kernel, or the pair law and the table); one-layer models without layer norm,
  deeper or layer-normed ones are enumerated naively, which is just as exact;
* ``naive``: every position of all k^N full sequences (N k^N evaluations), the baseline the
  benchmarks compare against and an independent cross-check;
* ``mc``: sampled sequences, unbiased, with a standard error (for N beyond exact reach).
"""

from __future__ import annotations

import math
import os
import resource
from dataclasses import dataclass

import torch
from torch import Tensor

from numerics.markov import (
    FiniteChain,
    InvalidInputError,
    MarkovChain,
    SecondOrderChain,
    check_positive_int,
    prefix_tree,
    previous_symbols,
)
from numerics.primitives import softplus
from numerics.transformer import Params, has_layer_norm, is_onehot, logits, num_layers, prefix_logits

METHODS = ("exact", "naive", "mc")


class EnumerationTooLargeError(InvalidInputError):
    """Exact enumeration would not fit in memory."""


def expected_cross_entropy(logit: Tensor, p_one: Tensor, p_zero: Tensor | None = None) -> Tensor:
    """E_{x'~Bernoulli(p_one)}[-log P_θ(x')] = p_one softplus(-ℓ) + p_zero softplus(ℓ), in nats.

    ``p_zero`` defaults to 1 - p_one; pass it when it is known exactly (1 - (1 - q) loses the
    relative accuracy of a small q).
    """
    p_zero = 1.0 - p_one if p_zero is None else p_zero
    return p_one * softplus(-logit) + p_zero * softplus(logit)


Chain = MarkovChain | FiniteChain | SecondOrderChain


def next_symbol_loss(params: Params, logit: Tensor, chain: Chain, current: Tensor, previous: Tensor) -> Tensor:
    """E_{x' ~ P(·|x_1^n)}[-log P_θ(x' | x_1^n)] in nats, for the logits of prefixes ending in
    (``previous``, ``current``) = (x_{n-1}, x_n); ``previous`` is ``NO_SYMBOL`` at n = 1 and only
    the second-order source reads it.

    Scalar model: ``expected_cross_entropy`` (binary sources only).  One-hot: -Σ_j P(j|x_n)
    log softmax(logits)_j, with log_softmax (max-shifted) so large logits stay exact.
    """
    if is_onehot(params):
        probs = chain.kernel(device=logit.device, dtype=logit.dtype)[current.long()]
        return -(probs * torch.log_softmax(logit, dim=-1)).sum(dim=-1)
    if isinstance(chain, SecondOrderChain):
        return expected_cross_entropy(logit, *chain.next_probabilities(previous, current))
    return expected_cross_entropy(logit, *chain.next_probabilities(current))


def memory_budget_bytes(device: torch.device) -> int:
    """Bytes an enumeration may use: half the host RAM or of the process's address-space limit
    (``ulimit -v``), whichever is smaller, or 80 % of free GPU memory."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(0.8 * free)
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    limit, _ = resource.getrlimit(resource.RLIMIT_AS)
    return min(ram, limit if limit != resource.RLIM_INFINITY else ram) // 2


def enumeration_bytes(params: Params, method: str) -> int:
    """Estimated peak memory (forward + autograd) of an exact enumeration.

    ``exact``: about 2 k^N prefixes, each with N (padded) symbols, scores and attention weights
    (about 5 N numbers), the FF hidden layer (2 r), a few d-vectors and k logits.
    ``naive``: k^N sequences of N positions, each with N scores and weights (full square
    attention matrices) and the same per-position vectors.
    """
    seq_len, d = params["pos"].shape
    r = params["W_1"].shape[0]
    k = params["E"].shape[0] if is_onehot(params) else 2
    if method == "exact":
        numbers = 2 * k**seq_len * (5 * seq_len + 2 * r + 6 * d + 3 * k)
    else:
        numbers = k**seq_len * seq_len * (2 * seq_len + 2 * r + 6 * d + 3 * k)
    return 2 * num_layers(params) * numbers * params["pos"].element_size()


def check_enumeration_fits(params: Params, method: str, *, copies: int = 1) -> None:
    """Raise EnumerationTooLargeError (naming the Monte-Carlo option) if it would not fit.

    ``copies``: how many enumerations are alive at once (a dense Hessian backpropagates D basis
    vectors through the recorded graph together: D copies of its intermediate tensors).
    """
    need = copies * enumeration_bytes(params, method)
    budget = memory_budget_bytes(params["pos"].device)
    if need > budget and copies > 1:
        seq_len, d = params["pos"].shape
        raise EnumerationTooLargeError(
            f"the dense Hessian over D={copies} parameters at d={d}, seq_len={seq_len} needs about "
            f"{need / 2**30:.1f} GiB (budget {budget / 2**30:.1f} GiB); lower --d or --seq-len")
    if need > budget:
        seq_len = params["pos"].shape[0]
        raise EnumerationTooLargeError(
            f"{method} enumeration at seq_len={seq_len} needs about {need / 2**30:.1f} GiB "
            f"(budget {budget / 2**30:.1f} GiB); lower seq_len or use the Monte-Carlo "
            "estimate (method='mc', num_samples=...)"
        )


def exact_loss(params: Params, chain: Chain, *, tying: bool, memory: int | None = None) -> Tensor:
    """Σ_n Σ_{x_1^n} P(x_1^n) E[ℓ | x_1^n] / N over the prefix tree (k + … + k^N logits).

    One-layer models without layer norm only (``prefix_logits``, attention limited to ``memory``);
    ``chain_loss`` sends the others to ``naive_loss``, which is just as exact.
    """
    pos = params["pos"]
    tree = prefix_tree(chain, pos.shape[0], device=pos.device, dtype=pos.dtype)
    logit = prefix_logits(params, tree, tying=tying, memory=memory)
    loss = next_symbol_loss(params, logit, chain, tree.last, tree.previous)
    return (tree.log_prob.exp() * loss).sum() / pos.shape[0]


def naive_loss(params: Params, chain: Chain, *, tying: bool, memory: int | None = None) -> Tensor:
    """The same population loss from every position of all k^N full sequences (baseline; any depth,
    layer norm, attention limited to ``memory``)."""
    pos = params["pos"]
    seq_len = pos.shape[0]
    tree = prefix_tree(chain, seq_len, device=pos.device, dtype=pos.dtype)
    full = tree.length == seq_len  # the full sequences are the longest prefixes
    x, weight = tree.symbols[full], tree.log_prob[full].exp()
    logit = logits(params, x, tying=tying, memory=memory)
    per_position = next_symbol_loss(params, logit, chain, x, previous_symbols(x))
    return (weight * per_position.mean(dim=1)).sum()


@dataclass(frozen=True)
class MonteCarloEstimate:
    """A Monte-Carlo loss: ``mean`` (differentiable tensor) and its standard error (float)."""

    mean: Tensor
    stderr: float
    num_samples: int


def monte_carlo_loss(
    params: Params, chain: Chain, *, tying: bool, num_samples: int, seed: int | None = None,
    memory: int | None = None,
) -> MonteCarloEstimate:
    """Average over ``num_samples`` stationary sequences of the per-sequence expected loss.

    Each sequence contributes (1/N) Σ_n E[ℓ_n | x_1^n]; these are i.i.d. across sequences, so
    the standard error is their sample standard deviation over √num_samples.
    """
    check_positive_int("num_samples", num_samples)
    pos = params["pos"]
    seq_len = pos.shape[0]
    # the second-order sampler starts from a pair: at N = 1 draw two symbols and keep the first
    length = max(seq_len, 2) if isinstance(chain, SecondOrderChain) else seq_len
    x = chain.sample(num_samples, length, seed=seed, device=pos.device, dtype=pos.dtype)[:, :seq_len]
    logit = logits(params, x, tying=tying, memory=memory)
    per_position = next_symbol_loss(params, logit, chain, x, previous_symbols(x))
    per_sequence = per_position.mean(dim=1)
    spread = per_sequence.std().item() if num_samples > 1 else math.inf
    return MonteCarloEstimate(per_sequence.mean(), spread / math.sqrt(num_samples), num_samples)


def population_loss(
    params: Params,
    p: float,
    q: float,
    *,
    tying: bool,
    method: str = "exact",
    num_samples: int | None = None,
    seed: int | None = None,
    memory: int | None = None,
) -> Tensor:
    """Population loss L(θ) in nats under the binary chain (p, q): ``chain_loss`` of ``MarkovChain(p, q)``."""
    return chain_loss(params, MarkovChain(p, q), tying=tying, method=method, num_samples=num_samples, seed=seed,
                      memory=memory)


def chain_loss(
    params: Params,
    chain: Chain,
    *,
    tying: bool,
    method: str = "exact",
    num_samples: int | None = None,
    seed: int | None = None,
    memory: int | None = None,
) -> Tensor:
    """Population loss L(θ) in nats as a differentiable 0-dim tensor on the params' device.

    N is ``params["pos"].shape[0]``.  ``method``: "exact" (prefix tree, the default), "naive"
    (all full sequences) or "mc" (needs ``num_samples``; the standard error is available from
    ``monte_carlo_loss``).  Exact methods refuse sizes that would not fit in memory.  The scalar
    model needs a binary source (``MarkovChain`` or ``SecondOrderChain``); the one-hot model a
    first-order chain with as many states as it has symbols.  ``memory`` = W ≥ 1 lets attention see
    the current symbol and the W before it (W ≥ N - 1 is the whole past); None: the whole past.
    """
    check_model_fits(params, chain)
    if memory is not None and (isinstance(memory, bool) or not isinstance(memory, int) or memory < 1):
        raise InvalidInputError(f"memory must be an integer >= 1 (None: the whole past), got {memory!r}")
    if not tying and "a" not in params and "A" not in params:
        raise InvalidInputError("tying=False needs a head ('a', or 'A' for the one-hot model) in params")
    if method == "mc":
        if num_samples is None:
            raise InvalidInputError("method='mc' needs num_samples")
        return monte_carlo_loss(params, chain, tying=tying, num_samples=num_samples, seed=seed, memory=memory).mean
    if method not in METHODS:
        raise InvalidInputError(f"method must be one of {METHODS}, got {method!r}")
    if method == "exact" and (num_layers(params) > 1 or has_layer_norm(params)):
        method = "naive"  # the prefix tree is written for the theory's one-layer model; naive is equally exact
    check_enumeration_fits(params, method)
    if method == "exact":
        return exact_loss(params, chain, tying=tying, memory=memory)
    return naive_loss(params, chain, tying=tying, memory=memory)


def check_model_fits(params: Params, chain: Chain) -> None:
    """InvalidInputError unless the model reads the source's symbols: the scalar model a binary first- or
    second-order source, the one-hot model a first-order chain on as many states as it has symbols."""
    if is_onehot(params):
        k = params["E"].shape[0]
        if isinstance(chain, SecondOrderChain):
            raise InvalidInputError("the one-hot model takes first-order chains; the SecondOrderChain needs the "
                                    "scalar (binary) model")
        if k != chain.k:
            raise InvalidInputError(f"the one-hot model with k={k} symbols does not fit a {chain.k}-state "
                                    f"{type(chain).__name__}")
    elif not isinstance(chain, MarkovChain | SecondOrderChain):
        raise InvalidInputError(f"the scalar model (binary) does not fit a {chain.k}-state {type(chain).__name__}")
