"""Explicit stationary points of the population loss (claims ``STAT-PI`` and ``GLOBAL-MIN``).

θ_π (unigram): e = a = 0, every other weight 0, b = log(p/q); then f ≡ π1 and L = H(π).
Any pos and W with e = a = 0, b = log(p/q) is stationary too (the critical manifold M_π).

θ_* (bigram): attention off (W_V = W_O = 0), pos_n = c u, e = s u, W_1 = w v uᵀ,
W_2 = (g/w) u vᵀ with unit u ∈ R^d and v = 1_r/√r ∈ R^r.  Every hidden unit then receives
w (x s + c)/√r > 0, so the ReLU is linear on a neighbourhood (no kink anywhere), and

    logit(x) = t (1 + g)(x s + c) + b,          t = s when tied, a = t u otherwise.

Matching logit(0) = β = log(p/(1-p)) and logit(1) - logit(0) = α = log((1-p)(1-q)/(pq)) makes
σ(logit) = P(x_{n+1} = 1 | x_n), hence L = H_rate.  Tied needs t(1+g)s = (1+g)s² = α, so the
feed-forward must flip the sign (g < -1) exactly when α < 0, i.e. p + q > 1.

φ_L2G(e, w, b) (``canonical_point``): the Local-to-Global canonical model embedded in the full tied
transformer, exactly, for any W_Q, W_K, W_V (claim ``L2G-EMBED``).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from numerics.markov import FiniteChain, InvalidInputError, MarkovChain
from numerics.transformer import Params, init_params


def kernel_logits(chain: MarkovChain) -> tuple[float, float]:
    """(α, β): logit(P(1|1)) - logit(P(1|0)) and logit(P(1|0)), computed stably."""
    p, q = chain.p, chain.q
    beta = math.log(p) - math.log1p(-p)
    alpha = math.log1p(-p) + math.log1p(-q) - math.log(p) - math.log(q)
    return alpha, beta


def theta_pi(
    chain: MarkovChain | FiniteChain,
    d: int,
    seq_len: int,
    *,
    r: int | None = None,
    tying: bool = True,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float64,
) -> Params:
    """θ_π: all weights 0 and b = log(p/q), so f ≡ π1 (the unigram predictor).  A k-state chain gives
    the one-hot model's θ_π (claim ``MULTI-STATE-PI``): E = 0 (and A = 0) and b = log π, so
    softmax(logits) ≡ π."""
    onehot = isinstance(chain, FiniteChain)
    params = init_params(d, seq_len, r=r, tying=tying, std=0.0, symbols=chain.k if onehot else None, device=device,
                         dtype=dtype)
    bias = chain.unigram_logits() if onehot else chain.unigram_logit()
    params["b"] = torch.tensor(bias, device=device, dtype=dtype)
    return params


def default_ff_gain(chain: MarkovChain, tying: bool) -> float:
    """g = -2 (the FF flips the sign) for tied models with α < 0 (p + q > 1), else g = 0.

    Decided by the sign of α as computed, not of p + q - 1: within rounding of p + q = 1 the two
    can disagree, and θ_* needs (1 + g) of the sign of the α it is built from."""
    return -2.0 if tying and kernel_logits(chain)[0] < 0 else 0.0


def reduced_point(
    s: float,
    t: float,
    b: float,
    c: float,
    g: float,
    d: int,
    seq_len: int,
    *,
    r: int | None = None,
    tying: bool = True,
    w: float = 1.0,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float64,
) -> Params:
    """φ(ρ): the full parameter dict of the reduced family ρ = (s, t, b, c, g) (claim ``REDUCED``).

    Attention off, e = s u, pos_n = c u, W_1 = w v uᵀ, W_2 = (g/w) u vᵀ, a = t u (t = s when
    tied).  Exact, logit(x) = t(1+g)(x s + c) + b, wherever every ReLU input w(x s + c)/√r is
    positive: c > 0, s + c > 0 and w > 0 (the region ``theory.reduced.EXACT_REGION``).
    """
    if w <= 0 or c <= 0 or s + c <= 0:
        raise ValueError(f"reduced point outside the exact region (need w, c, s + c > 0): {s=}, {c=}, {w=}")
    params = init_params(d, seq_len, r=r, tying=tying, std=0.0, device=device, dtype=dtype)
    r = params["W_1"].shape[0]
    u = torch.zeros(d, dtype=dtype, device=device)
    u[0] = 1.0
    v = torch.full((r,), 1 / math.sqrt(r), dtype=dtype, device=device)
    params["e"] = s * u
    params["pos"] = c * u.expand(seq_len, d).clone()
    params["W_1"] = w * torch.outer(v, u)
    params["W_2"] = (g / w) * torch.outer(u, v)
    if not tying:
        params["a"] = t * u
    params["b"] = torch.tensor(b, dtype=dtype, device=device)
    return params


def canonical_point(
    e: float | Tensor,
    w: float | Tensor,
    b: float | Tensor,
    d: int,
    seq_len: int,
    *,
    r: int | None = None,
    alpha: Tensor | None = None,
    v: Tensor | None = None,
    attention_std: float = 0.0,
    seed: int | None = None,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float64,
) -> Params:
    """φ(e, w, b): the L2G canonical model as a point of the full tied one-layer model (claim ``L2G-EMBED``).

        e_vec = e α,   pos_n = -(e/2) α (every n),   W_O = 0,   W_1 = |w| v αᵀ,   W_2 = w α vᵀ,   b,

    tied (a = e_vec); W_Q, W_K, W_V are N(0, ``attention_std``²) from ``seed`` (zero by default): W_O = 0
    switches attention off, so they do not enter the logit.  Defaults α = 1_d/√d and v = 2·1_r/√r
    (r = 4d), the direction of the authors' rank-one initialisation.

    Exact statement (checked to 1e-12 in tests/test_canonical_embedding.py; paper-notes claim 6 is
    the case ‖α‖ = 1, ‖v‖ = 2): for e ≥ 0, any α ≠ 0, any v ∈ R^r with v ≥ 0 entrywise, any r, N,
    and every position n,

        logit_n = ê² (1 + 2 ŵ|ŵ|) x_n + b - ê²/2,      ê = e ‖α‖,   ŵ = w ‖α‖ ‖v‖ / 2,

    the canonical logit at (ê, ŵ, b).  Why: y_n = x̃_n = e (x_n - ½) α, so the hidden layer is
    |w| ‖α‖² v ReLU(e (x_n - ½)) = |w| ‖α‖² v (e/2) x_n for e ≥ 0 and v ≥ 0; W_2 maps it to
    w|w| ‖α‖² ‖v‖² (e/2) x_n α and the head ⟨e α, ·⟩ adds ‖α‖² e² (x_n - ½) from the skip.

    Outside the statement (refused here): for e < 0 the ReLU fires at x_n = 0 instead and the logit is
    the canonical one at (|ê|, ŵ, b - 2ŵ|ŵ|ê²), the same slope with a shifted bias; an entry v_i < 0
    makes unit i fire at x_n = 0 and breaks the form.  e, w, b may be 0-dim tensors (the map is
    differentiable in them away from w = 0: ``numerics.canonical_flow`` takes its Jacobian).
    """
    if float(e) < 0:
        raise ValueError(f"canonical_point needs e >= 0 (for e < 0 the ReLU fires at x = 0), got e={float(e)}")
    params = init_params(d, seq_len, r=r, std=attention_std, seed=seed, device=device, dtype=dtype)
    r = params["W_1"].shape[0]
    alpha = torch.full((d,), 1 / math.sqrt(d), dtype=dtype, device=device) if alpha is None else alpha
    v = torch.full((r,), 2 / math.sqrt(r), dtype=dtype, device=device) if v is None else v
    if alpha.shape != (d,) or not alpha.abs().max() > 0:
        raise ValueError(f"alpha must be a nonzero vector of shape ({d},)")
    if v.shape != (r,) or (v < 0).any():
        raise ValueError(f"v must be an entrywise nonnegative vector of shape ({r},)")
    params["e"] = e * alpha
    params["pos"] = (-e / 2 * alpha).expand(seq_len, d).clone()
    params["W_O"] = torch.zeros(d, d, dtype=dtype, device=device)
    params["W_1"] = abs(w) * torch.outer(v, alpha)
    params["W_2"] = w * torch.outer(alpha, v)
    params["b"] = b + torch.zeros((), dtype=dtype, device=device)
    return params


def theta_star(
    chain: MarkovChain,
    d: int,
    seq_len: int,
    *,
    r: int | None = None,
    tying: bool = True,
    c: float = 1.0,
    g: float | None = None,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float64,
) -> Params:
    """θ_*: the bigram predictor f = P(x_{n+1}=1 | x_n), a point of the reduced family.

    Tied: s = t = √(α/(1+g)) with g from ``default_ff_gain``; untied: g = 0, s = 1, t = α.
    In both, b = β - t c (1+g) so that logit(0) = β and logit(1) - logit(0) = α.
    """
    alpha, beta = kernel_logits(chain)
    g = default_ff_gain(chain, tying) if g is None else g
    if tying:
        if alpha / (1 + g) < 0:
            raise ValueError(f"tied θ_* needs sign(1+g) = sign(α); got g={g}, α={alpha:.3g}")
        s = t = math.sqrt(alpha / (1 + g))
    else:
        s, t = 1.0, alpha / (1 + g)
    b = beta - t * c * (1 + g)
    return reduced_point(s, t, b, c, g, d, seq_len, r=r, tying=tying, device=device, dtype=dtype)


def onehot_theta_star(
    chain: FiniteChain,
    d: int,
    seq_len: int,
    *,
    r: int | None = None,
    tying: bool = True,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float64,
) -> Params:
    """θ_* of the one-hot model: logits_n = log P[x_n, ·], the bigram predictor, L = entropy rate.

    Needs d ≥ k and r ≥ k, and every P_ij > 0 (log 0 has no finite logit).  Attention off
    (all attention weights 0), pos = 0, E = [I_k 0] (symbol c ↦ the unit vector u_c), b = 0, so
    z_n = u_x + W_2 ReLU(W_1 u_x) with x = x_n.  W_1 = [[I + 11ᵀ, 0], [1ᵀ-rows, 0]] makes every
    hidden unit's input ≥ 1 (no ReLU kink near θ_*): the first k units give u_x + 1, the rest 1.
    With T = (log P)ᵀ (column x is log P[x, ·]):

    * tied: the head is E, logits = z[:k]; W_2's top-left block (T - I)(I + 11ᵀ)⁻¹ =
      (T - I)(I - 11ᵀ/(k+1)) turns u_x + 1 into T u_x - u_x, so z[:k] = T u_x;
    * untied: W_2 = 0, z = u_x, and A = [T 0] gives A u_x = T u_x.
    """
    k = chain.k
    r = 4 * d if r is None else r
    if d < k or r < k:
        raise InvalidInputError(f"θ_* of the one-hot model needs d >= k and r >= k (k = {k} states); got d={d}, r={r}")
    if (chain.transition <= 0).any():
        raise InvalidInputError("θ_* needs every transition probability > 0 (log 0 has no finite logit); "
                                "the entropy rate is then only approached, not attained")
    params = init_params(d, seq_len, r=r, tying=tying, std=0.0, symbols=k, device=device, dtype=dtype)
    eye = torch.eye(k, dtype=torch.float64)
    ones = torch.ones(k, k, dtype=torch.float64)
    T = torch.log(torch.tensor(chain.transition, dtype=torch.float64)).T
    E = torch.zeros(k, d, dtype=torch.float64)
    E[:, :k] = eye
    W_1 = torch.zeros(r, d, dtype=torch.float64)
    W_1[:k, :k] = eye + ones
    W_1[k:, :k] = 1.0
    W_2 = torch.zeros(d, r, dtype=torch.float64)
    if tying:
        W_2[:k, :k] = (T - eye) @ (eye - ones / (k + 1))
    else:
        params["A"] = torch.zeros(k, d, dtype=torch.float64)
        params["A"][:, :k] = T
    params |= {"E": E, "W_1": W_1, "W_2": W_2}
    return {name: value.to(device=device, dtype=dtype) for name, value in params.items()}
