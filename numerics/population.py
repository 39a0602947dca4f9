"""Population cross-entropy of the transformer under the stationary chain (claim ID ``LOSS``).

    L(θ) = (1/N) Σ_{n=1}^{N} E[ softplus(ℓ_n) - x_{n+1} ℓ_n ]        (nats)

with ℓ_n = logit_n(x_1^n).  The next symbol is averaged analytically,
E[· | x_1^n] = P(1|x_n) softplus(-ℓ_n) + P(0|x_n) softplus(ℓ_n), so only the prefix x_1^n is
random.  The one-hot model on k symbols (claim ``MULTI-STATE``) has the softmax form
E[· | x_1^n] = -Σ_j P(j|x_n) log softmax(logits_n)_j.  Three evaluations:

* ``exact``: every distinct prefix once (k + … + k^N evaluations, the floor; one-layer
  models, deeper ones are enumerated naively);
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
    check_positive_int,
    prefix_tree,
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


Chain = MarkovChain | FiniteChain


def next_symbol_loss(params: Params, logit: Tensor, chain: Chain, current: Tensor) -> Tensor:
    """E_{x' ~ P(·|x_n)}[-log P_θ(x' | x_1^n)] in nats, for the logits of prefixes ending in ``current``.

    Scalar model: ``expected_cross_entropy`` (binary chains only).  One-hot: -Σ_j P(j|x_n)
    log softmax(logits)_j, with log_softmax (max-shifted) so large logits stay exact.
    """
    if is_onehot(params):
        probs = chain.kernel(device=logit.device, dtype=logit.dtype)[current.long()]
        return -(probs * torch.log_softmax(logit, dim=-1)).sum(dim=-1)
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


def exact_loss(params: Params, chain: Chain, *, tying: bool) -> Tensor:
    """Σ_n Σ_{x_1^n} P(x_1^n) E[ℓ | x_1^n] / N over the prefix tree (k + … + k^N logits).

    One-layer models only (``prefix_logits``); ``population_loss`` sends deeper ones to
    ``naive_loss``, which is just as exact.
    """
    pos = params["pos"]
    tree = prefix_tree(chain, pos.shape[0], device=pos.device, dtype=pos.dtype)
    loss = next_symbol_loss(params, prefix_logits(params, tree, tying=tying), chain, tree.last)
    return (tree.log_prob.exp() * loss).sum() / pos.shape[0]


def naive_loss(params: Params, chain: Chain, *, tying: bool) -> Tensor:
    """The same population loss from every position of all k^N full sequences (baseline)."""
    pos = params["pos"]
    seq_len = pos.shape[0]
    tree = prefix_tree(chain, seq_len, device=pos.device, dtype=pos.dtype)
    full = tree.length == seq_len  # the full sequences are the longest prefixes
    x, weight = tree.symbols[full], tree.log_prob[full].exp()
    per_position = next_symbol_loss(params, logits(params, x, tying=tying), chain, x)
    return (weight * per_position.mean(dim=1)).sum()


@dataclass(frozen=True)
class MonteCarloEstimate:
    """A Monte-Carlo loss: ``mean`` (differentiable tensor) and its standard error (float)."""

    mean: Tensor
    stderr: float
    num_samples: int


def monte_carlo_loss(
    params: Params, chain: Chain, *, tying: bool, num_samples: int, seed: int | None = None
) -> MonteCarloEstimate:
    """Average over ``num_samples`` stationary sequences of the per-sequence expected loss.

    Each sequence contributes (1/N) Σ_n E[ℓ_n | x_1^n]; these are i.i.d. across sequences, so
    the standard error is their sample standard deviation over √num_samples.
    """
    check_positive_int("num_samples", num_samples)
    pos = params["pos"]
    x = chain.sample(num_samples, pos.shape[0], seed=seed, device=pos.device, dtype=pos.dtype)
    per_position = next_symbol_loss(params, logits(params, x, tying=tying), chain, x)
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
) -> Tensor:
    """Population loss L(θ) in nats under the binary chain (p, q): ``chain_loss`` of ``MarkovChain(p, q)``."""
    return chain_loss(params, MarkovChain(p, q), tying=tying, method=method, num_samples=num_samples, seed=seed)


def chain_loss(
    params: Params,
    chain: Chain,
    *,
    tying: bool,
    method: str = "exact",
    num_samples: int | None = None,
    seed: int | None = None,
) -> Tensor:
    """Population loss L(θ) in nats as a differentiable 0-dim tensor on the params' device.

    N is ``params["pos"].shape[0]``.  ``method``: "exact" (prefix tree, the default), "naive"
    (all full sequences) or "mc" (needs ``num_samples``; the standard error is available from
    ``monte_carlo_loss``).  Exact methods refuse sizes that would not fit in memory.  The scalar
    model needs a binary chain; the one-hot model needs as many symbols as the chain has states.
    """
    k = params["E"].shape[0] if is_onehot(params) else 2
    if k != chain.k or (not is_onehot(params) and not isinstance(chain, MarkovChain)):
        model = f"one-hot model with k={k} symbols" if is_onehot(params) else "scalar model (binary)"
        raise InvalidInputError(f"the {model} does not fit a {chain.k}-state {type(chain).__name__}")
    if not tying and "a" not in params and "A" not in params:
        raise InvalidInputError("tying=False needs a head ('a', or 'A' for the one-hot model) in params")
    if method == "mc":
        if num_samples is None:
            raise InvalidInputError("method='mc' needs num_samples")
        return monte_carlo_loss(params, chain, tying=tying, num_samples=num_samples, seed=seed).mean
    if method not in METHODS:
        raise InvalidInputError(f"method must be one of {METHODS}, got {method!r}")
    if method == "exact" and (num_layers(params) > 1 or has_layer_norm(params)):
        method = "naive"  # the prefix tree is written for the theory's one-layer model; naive is equally exact
    check_enumeration_fits(params, method)
    if method == "exact":
        return exact_loss(params, chain, tying=tying)
    return naive_loss(params, chain, tying=tying)
