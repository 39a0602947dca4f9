"""Curvature of the population loss at any point of the critical manifold M_π (claim ID ``MANIFOLD``).

M_π (tied) = {e = 0, b = log(p/q), every other weight arbitrary}; untied also a = 0.  Every point of
M_π predicts f ≡ π1 = σ(b), is stationary and has loss H(π) (nats).  On it the embedding ignores the
input, x̃_i = x_i e + pos_i = pos_i, so the hidden states z_n and the Jacobians K_{n,i} = ∂z_n/∂x̃_i
(d × d, i ≤ n) are deterministic: one forward pass at x̃ = pos.  With λ = 1 - p - q, k = π0 π1 and

    A = (1/N) Σ_n Σ_{i≤n} λ^{n+1-i} K_{n,i}      (the "lag Jacobian", d × d),   z̄ = mean_n z_n,

the Hessian of L(θ) = (1/N) Σ_n E[softplus(ℓ_n) - x_{n+1} ℓ_n] is:

* tied: zero outside the (e, b) block, and
      H_ee = k [mean_n z_n z_nᵀ - (A + Aᵀ)],   H_eb = k z̄,   H_bb = k;
  the Schur complement after eliminating b is S = k [Cov_n(z_n) - (A + Aᵀ)] (uniform weights 1/N,
  no Bessel correction).  The point is a local minimum iff S ≻ 0 (Morse–Bott: the Hessian's kernel is
  then exactly M_π's tangent space) and a saddle iff S has a negative eigenvalue.
* untied: the (e, a, b) block is
      H_ee = 0,   H_{e_c, a_j} = -k A_{jc},   H_aa = k mean_n z_n z_nᵀ,   H_ab = k z̄,   H_bb = k,   H_eb = 0,
  so a nonzero A (hence a nonzero e–a block next to H_ee = 0) always makes a saddle.

Why: with g_n = σ(ℓ_n) - x_{n+1} the Hessian is E[σ'(ℓ_n) ∇ℓ_n ∇ℓ_nᵀ + g_n ∇²ℓ_n], with σ(ℓ_n) = π1 and
σ'(ℓ_n) = k on M_π.  The gradient of ℓ_n is (∂/∂e = z_n tied, ∂/∂a = z_n untied, ∂/∂b = 1, 0 for the
rest): deterministic.  Second derivatives: tied ∂²ℓ_n/∂e² = Σ_i x_i (K_{n,i} + K_{n,i}ᵀ), untied
∂²ℓ_n/∂e_c∂a_j = Σ_i x_i (K_{n,i})_{jc}; both meet E[(π1 - x_{n+1}) x_i] = -k λ^{n+1-i}.  Every other
second derivative is deterministic or zero, and E[g_n] = 0 kills it.

Special cases: θ_π (all W = 0, pos = 0) has z = 0 and A = λ I, so S = 2k(p+q-1) I (claims ``LOCAL-MIN``
for p + q > 1, ``SADDLE`` for p + q < 1) and the untied block has eigenvalues ±k|1-p-q| (d each) and k
(``SADDLE-UNTIED``).  W_O = W_1 = W_2 = 0 gives z_n = pos_n, A = λ I and S = k [Cov_n(pos_n) + 2(p+q-1) I].

A is computed without forming any K_{n,i} (that would be O(N² d²) memory).  The one-layer Jacobian is
    ∂m_n/∂x̃_i = a_{n,i} W_V + a_{n,i} (v_i - m_n) r_nᵀ + δ_{in} C_n,
    r_n = W_Kᵀ W_Q x̃_n / √d,   C_n = Σ_l a_{n,l} (v_l - m_n) u_lᵀ,   u_l = W_Qᵀ W_K x̃_l / √d,
    K_{n,i} = G_n (δ_{in} I + W_O ∂m_n/∂x̃_i),   G_n = I + W_2 diag(1[W_1 y_n > 0]) W_1,
so with ω_{n,i} = λ^{n+1-i} a_{n,i}, σ_n = Σ_i ω_{n,i}, t_n = Σ_i ω_{n,i} v_i:
    A_n := Σ_i λ^{n+1-i} K_{n,i} = G_n [λ (I + W_O C_n) + W_O (σ_n W_V + (t_n - σ_n m_n) r_nᵀ)],   A = mean_n A_n.
Cost O(N² d² + N r d²) time (one (N × N)(N × d²) product for all C_n, then the FF per position) and
O(N² + N d (d + r)) memory: N = 1024, d = 8 takes about 0.07 s on two CPU cores, where the exact loss
needs 2^N sequences and the explicit K_{n,i} would need N² d² numbers.

Any stationary binary source, depth, attention memory and layer norm (claim ``MANIFOLD-GENERAL``, SPEC §12): the
argument above used only E[(π1 - x_{n+1}) x_i] = -Cov(x_{n+1}, x_i) = -c(n+1-i), so λ^{n+1-i} becomes
w(n+1-i) = c(n+1-i)/c(0) (``numerics.autocovariance``: c(m) from the source's hidden chain; the second-order
source has c(m) = 0 at odd m) and z_n, K_{n,i} are those of the whole model with its mask (the head reads LN_f(z_n)
with layer norm).  One layer without layer norm keeps the closed form above (the mask enters the softmax and the
weights Ω); any other model goes through ``lag_sums``, forward-mode passes with geometrically weighted tangents.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor
from torch.func import grad, jacrev, jvp, vmap

# the Monte-Carlo route calls the model's functions through the module, so that whatever the model
# computes (a corrupted one in the mutation tests too) is what the estimator measures
from numerics import transformer as model
from numerics.autocovariance import Autocovariance, Source, autocovariance
from numerics.markov import FiniteChain, InvalidInputError, MarkovChain, SecondOrderChain
from numerics.population import expected_cross_entropy, memory_budget_bytes
from numerics.transformer import BLOCK, Params, has_layer_norm, layer_key, num_layers

LOCAL_MINIMUM = "local minimum"
SADDLE_POINT = "saddle point"
UNDECIDED = "undecided"
#: how ``ManifoldCurvature.reason`` starts when the Hessian is not defined (a ReLU input exactly at 0)
KINK = "ReLU kink"

B_RELATIVE_TOLERANCE = 1e-12


@dataclass(frozen=True)
class CurvatureVerdict:
    """What every M_π curvature result holds: the block, its spectrum, the Schur complement after eliminating b and
    the verdict read from it (``classification`` with ``error_bound`` and, when undecided, ``reason``)."""

    tying: bool
    block: Tensor
    eigenvalues: Tensor
    schur: Tensor
    schur_eigenvalues: Tensor
    classification: str
    error_bound: float
    reason: str

    @property
    def min_eigenvalue(self) -> float:
        return self.eigenvalues[0].item()


@dataclass(frozen=True)
class ManifoldCurvature(CurvatureVerdict):
    """The nonzero part of the Hessian at a point of M_π, its spectrum and the verdict.

    ``block``: tied, the (e, b) block ordered [e_1..e_d, b]; untied, the (e, a, b) block ordered
    [e_1..e_d, a_1..a_d, b] (float64 unless asked otherwise).  ``eigenvalues``: of ``block``, ascending.
    ``schur``/``schur_eigenvalues``: the Schur complement of ``block`` after eliminating b (tied: S).
    ``error_bound``: estimated rounding error of each eigenvalue of ``block`` (see ``error_estimate``).
    ``classification``: "local minimum", "saddle point" or "undecided" (then ``reason`` says why).
    ``escape_direction``: for a saddle, the unit eigenvector of the most negative eigenvalue of
    ``block`` as {"e": tensor, "b": float} (tied) or {"e", "a", "b"} (untied); the loss decreases
    along it to second order.  ``hidden_mean`` = z̄, ``second_moment`` = mean_n z_n z_nᵀ,
    ``covariance`` = Cov_n(z_n) (formed from the centred z_n, no cancellation),
    ``lag_jacobian`` = A, ``k`` = π0 π1 = c(0), ``lam`` = w(1) = c(1)/c(0) (first order: λ = 1 - p - q).
    """

    escape_direction: dict[str, Tensor | float] | None
    hidden_mean: Tensor
    second_moment: Tensor
    covariance: Tensor
    lag_jacobian: Tensor
    k: float
    lam: float


@dataclass(frozen=True)
class _Forward:
    """Everything of the forward pass at x̃ = pos that the lag Jacobian needs, with magnitudes.

    The ``*_abs`` fields are the same formulas evaluated on absolute values (|x|, |W|, |λ|): the sums
    of absolute values of the terms whose rounding errors the error estimate scales.
    """

    z: Tensor  # (N, d)
    lag_jacobian: Tensor  # (d, d)
    z_abs: Tensor  # (N, d)
    lag_jacobian_abs: Tensor  # (d, d)
    max_score_abs: float
    preactivation: Tensor  # (N, r): W_1 y_n
    preactivation_abs: Tensor  # (N, r)


def binary_source(p: float | None, q: float | None, source: Source | None) -> Source:
    """The source of a call: ``source`` if given, else the first-order chain (p, q); the scalar model needs a
    binary one."""
    if source is None:
        if p is None or q is None:
            raise InvalidInputError("give p and q, or a source")
        return MarkovChain(p, q)
    if p is not None or q is not None:
        raise InvalidInputError("give p and q, or a source, not both")
    autocovariance(source).check_binary()
    return source


def unigram_logit(source: Source) -> float:
    """b on M_π: log π1 - log π0 (the first-order chain's own stable form where it has one)."""
    if isinstance(source, MarkovChain):
        return source.unigram_logit()
    pi = autocovariance(source).pi
    return math.log(pi[1]) - math.log(pi[0])


def project_to_manifold(params: Params, p: float | None = None, q: float | None = None, *, tying: bool,
                        source: Source | None = None) -> Params:
    """The point of M_π over ``params``: e → 0 (and a → 0 untied), b → log π1 - log π0, the rest kept.

    π of the first-order chain (p, q) (b = log(p/q)) or of any binary ``source``.  Returns a new dict of
    detached copies (the caller's tensors are not touched), same dtypes and device.  This is the point whose
    curvature ``manifold_curvature`` classifies (claims ``MANIFOLD``, ``MANIFOLD-GENERAL``).
    """
    source = binary_source(p, q, source)
    _check_architecture(params, tying)
    out = {name: value.detach().clone() for name, value in params.items()}
    out["e"] = torch.zeros_like(out["e"])
    if not tying:
        out["a"] = torch.zeros_like(out["a"])
    out["b"] = torch.full_like(out["b"], unigram_logit(source))
    return out


def _check_architecture(params: Params, tying: bool) -> None:
    """The scalar model's parameter names (any depth, with or without layer norm); refuse anything else."""
    needed = ("e", "pos", *(layer_key(name, layer) for layer in range(num_layers(params)) for name in BLOCK),
              "b") + (() if tying else ("a",))
    missing = [name for name in needed if name not in params]
    if missing or num_layers(params) < 1:
        raise InvalidInputError(f"params lack {', '.join(missing) or 'W_Q'} (tying={tying})")
    if params["pos"].dim() != 2 or params["pos"].shape[1] != params["e"].shape[-1]:
        raise InvalidInputError(f"pos must be (N, d) with d = len(e) = {params['e'].shape[-1]}, got shape "
                                f"{tuple(params['pos'].shape)}")


def _check_memory(memory: int | None) -> None:
    if memory is not None and (isinstance(memory, bool) or not isinstance(memory, int) or memory < 1):
        raise InvalidInputError(f"memory must be a positive integer (or None for full attention), got {memory!r}")


def _check_on_manifold(params: Params, source: Source, tying: bool) -> None:
    """e = 0 (and a = 0) exactly, b = log(π1/π0) to 1e-12 relative (or b's own rounding in float32), all finite.

    The relative tolerance is taken against max(1, |b|) so that π0 = π1 (b = 0) is not held to 0 exactly.
    """
    for name in ("e",) if tying else ("e", "a"):
        size = params[name].detach().abs().max().item()
        if size != 0.0:
            raise InvalidInputError(
                f"point is not on M_π: {name} must be 0 (max |{name}| = {size:.3g}); "
                "use project_to_manifold first"
            )
    bad = [name for name, value in params.items() if not bool(torch.isfinite(value.detach()).all())]
    if bad:
        raise InvalidInputError(f"params hold non-finite values in {', '.join(bad)}")
    target = unigram_logit(source)
    b = params["b"].detach().double().item()
    # A float32 b cannot hold log(p/q) to 1e-12; its own rounding is then the best attainable.
    tolerance = max(B_RELATIVE_TOLERANCE, 2 * torch.finfo(params["b"].dtype).eps) * max(1.0, abs(target))
    if not abs(b - target) <= tolerance:
        raise InvalidInputError(
            f"point is not on M_π: b = {b!r} must equal log(π1/π0) = {target!r} "
            f"(within {tolerance:.1g}); use project_to_manifold first"
        )


def lag_powers(lam: float, seq_len: int, *, device: torch.device | str, dtype: torch.dtype) -> Tensor:
    """(N, N) lower-triangular Λ with Λ[n, i] = λ^{n+1-i} for i ≤ n (0-based n, i), 0 above.

    |λ|^m by ``pow`` (accurate to an ulp, underflows cleanly to 0, 0^m = 0 for m ≥ 1), the sign
    (-1)^m separately: no cumulative product whose rounding grows with m, no log of 0.
    """
    rows = torch.arange(seq_len, device=device)
    lag = (rows[:, None] - rows[None, :] + 1).clamp(min=0)  # m = n + 1 - i ≥ 1 where visible
    exponents = torch.arange(seq_len + 1, device=device, dtype=dtype)
    powers = torch.pow(torch.tensor(abs(lam), device=device, dtype=dtype), exponents)
    if lam < 0:
        powers = powers * (1 - 2 * (exponents.remainder(2)))
    return torch.where(lag > 0, powers[lag], torch.zeros((), device=device, dtype=dtype))


def lag_weights(source: Source, seq_len: int, memory: int | None, *, device: torch.device | str,
                dtype: torch.dtype) -> Tensor:
    """(N, N) Ω with Ω[n, i] = w(n + 1 - i) = c(n + 1 - i)/c(0) where position i is visible from n, 0 elsewhere.

    c(m) = Cov(x_{t+m}, x_t) of the source (``numerics.autocovariance``), c(0) = π0 π1; first order
    w(m) = λ^m (``lag_powers``).  Only visible positions carry weight: K_{n,i} = 0 where the mask hides x̃_i.
    """
    if isinstance(source, MarkovChain):
        weights = lag_powers(source.eigenvalue, seq_len, device=device, dtype=dtype)
    else:
        cov = autocovariance(source)
        w = torch.as_tensor(cov.scalar(seq_len) / cov.variance[1, 1], device=device, dtype=dtype)
        rows = torch.arange(seq_len, device=device)
        lag = (rows[:, None] - rows[None, :]).clamp(min=0)
        weights = torch.where(rows[:, None] >= rows[None, :], w[lag], torch.zeros((), device=device, dtype=dtype))
    return weights * visible_positions(seq_len, memory, device)


def visible_positions(seq_len: int, memory: int | None, device: torch.device | str) -> Tensor:
    """(N, N) boolean: i is visible from n iff i ≤ n and n - i ≤ memory.  The closed form builds its own mask
    rather than calling the model's, so that it stays a reference the model's forward pass is tested against."""
    rows = torch.arange(seq_len, device=device)
    lag = rows[:, None] - rows[None, :]
    return (lag >= 0) & (lag <= (seq_len if memory is None else memory))


def causal_softmax(scores: Tensor, memory: int | None = None) -> Tensor:
    """Row-wise softmax over the visible i (i ≤ n, n - i ≤ memory), shifted by the row max so no exp overflows;
    exact zeros elsewhere."""
    visible = visible_positions(scores.shape[0], memory, scores.device)
    masked = scores.masked_fill(~visible, -math.inf)
    weights = torch.exp(masked - masked.amax(dim=1, keepdim=True))
    return weights / weights.sum(dim=1, keepdim=True)


def _weighted_outer(att: Tensor, left: Tensor, right: Tensor) -> Tensor:
    """Σ_l att[n, l] left_l right_lᵀ for every n: (N, d, d) from one (N × N)(N × d²) product."""
    n, d = left.shape
    return (att @ (left[:, :, None] * right[:, None, :]).reshape(n, d * d)).reshape(n, d, d)


def centred_spread(att: Tensor, v: Tensor, u: Tensor, m: Tensor) -> Tensor:
    """C_n = Σ_l a_{n,l} (v_l - m_n) u_lᵀ for every n, (N, d, d), in its expanded form
    Σ_l a_{n,l} v_l u_lᵀ - m_n ū_nᵀ (ū_n = Σ_l a_{n,l} u_l), which needs no (N, N, d) tensor."""
    return _weighted_outer(att, v, u) - m[:, :, None] * (att @ u)[:, None, :]


@dataclass(frozen=True)
class PositionPass:
    """The one-layer forward pass at x̃ = pos (N × d rows) and the attention-Jacobian factors r, u.

    ``W``: the block's weights; ``att``: causal attention a_{n,l}; ``v`` = W_V x̃; ``m`` = Σ_l a_{n,l} v_l;
    ``y`` = x̃ + W_O m; rows of ``r`` are (W_Kᵀ W_Q x̃_n / √d)ᵀ, rows of ``u`` are (W_Qᵀ W_K x̃_l / √d)ᵀ.
    """

    W: dict[str, Tensor]
    x: Tensor
    att: Tensor
    v: Tensor
    m: Tensor
    y: Tensor
    r: Tensor
    u: Tensor


def position_pass(params: Params, dtype: torch.dtype, memory: int | None = None) -> PositionPass:
    """The one-layer forward pass at x̃ = pos in ``dtype`` with the attention mask of ``memory`` (``PositionPass``)."""
    W = {name: params[name].detach().to(dtype) for name in BLOCK}
    x = params["pos"].detach().to(dtype)
    scale = math.sqrt(x.shape[1])
    queries, keys = x @ W["W_Q"].T, x @ W["W_K"].T
    att = causal_softmax(queries @ keys.T / scale, memory)
    v = x @ W["W_V"].T
    m = att @ v
    y = x + m @ W["W_O"].T
    return PositionPass(W, x, att, v, m, y, queries @ W["W_K"] / scale, keys @ W["W_Q"] / scale)


def _lag_jacobian_terms(
    att: Tensor, omega: Tensor, lam: float, x: Tensor, v: Tensor, m: Tensor, r: Tensor, u: Tensor, W: Params
) -> Tensor:
    """The bracket of A_n before G_n: λ(I + W_O C_n) + W_O(σ_n W_V + (t_n - σ_n m_n) r_nᵀ), (N, d, d), with
    ω_{n,i} = Ω[n, i] a_{n,i} and λ = w(1) (``lag_weights``; first order λ^{n+1-i} and λ).

    C_n is ``centred_spread``; t_n - σ_n m_n is expanded likewise.  Also used with all inputs
    replaced by absolute values (then ``m`` enters with a + sign, which the caller arranges).
    """
    d = x.shape[1]
    C = centred_spread(att, v, u, m)
    sigma = omega.sum(dim=1)
    drift = omega @ v - sigma[:, None] * m  # t_n - σ_n m_n
    inside = lam * C + sigma[:, None, None] * W["W_V"] + drift[:, :, None] * r[:, None, :]
    eye = torch.eye(d, dtype=x.dtype, device=x.device)
    return lam * eye + W["W_O"] @ inside


def _feed_forward_jacobian(bracket: Tensor, active: Tensor, W: Params) -> Tensor:
    """G_n bracket_n = bracket_n + W_2 diag(active_n) W_1 bracket_n for every n."""
    hidden = active[:, :, None] * (W["W_1"] @ bracket)  # (N, r, d)
    return bracket + W["W_2"] @ hidden


def _forward(params: Params, weights: Tensor, memory: int | None, dtype: torch.dtype) -> _Forward:
    """z_n and A of the one-layer model at x̃ = pos in closed form (lag weights Ω, ``lag_weights``), and the same
    formulas on absolute values (for the error estimate)."""
    fp = position_pass(params, dtype, memory)
    W, x, att, v, m, y, r, u = fp.W, fp.x, fp.att, fp.v, fp.m, fp.y, fp.r, fp.u
    seq_len, d = x.shape
    scale = math.sqrt(d)
    pre = y @ W["W_1"].T
    z = y + torch.relu(pre) @ W["W_2"].T
    lam = weights[0, 0].item()  # w(1): the weight of the symbol's own position
    bracket = _lag_jacobian_terms(att, weights * att, lam, x, v, m, r, u, W)
    lag_jacobian = _feed_forward_jacobian(bracket, (pre > 0).to(dtype), W).mean(dim=0)

    Wa = {name: value.abs() for name, value in W.items()}
    xa = x.abs()
    qa, ka, va = xa @ Wa["W_Q"].T, xa @ Wa["W_K"].T, xa @ Wa["W_V"].T
    visible = visible_positions(seq_len, memory, x.device)
    max_score = ((qa @ ka.T) / scale).masked_fill(~visible, 0.0).max().item()
    ma = att @ va
    ya = xa + ma @ Wa["W_O"].T
    pre_abs = ya @ Wa["W_1"].T
    active = (pre > 0).to(dtype)
    # an inactive unit contributes an exact 0 (no rounding); a kink is caught by ``_kink_reason``
    za = ya + (active * pre_abs) @ Wa["W_2"].T
    # -m with |m|: the absolute terms of C_n and t_n - σ_n m_n add instead of cancelling
    bracket_abs = _lag_jacobian_terms(att, weights.abs() * att, abs(lam), xa, va, -ma, qa @ Wa["W_K"] / scale,
                                      ka @ Wa["W_Q"] / scale, Wa)
    lag_abs = _feed_forward_jacobian(bracket_abs, active, Wa).mean(dim=0)
    return _Forward(z, lag_jacobian, za, lag_abs, max_score, pre, pre_abs)


def relative_rounding(fwd: _Forward, dtype: torch.dtype) -> float:
    """γ ≈ u (L + 2(d + 2) s̄): the relative rounding error of a computed sum of products here.

    L = 4N + 2r + 6d + 10 bounds the rounding steps along the longest chain (scores over d, softmax
    normalisation over N, attention sums over N, the FF over r, C_n over N, the means over N); the
    standard forward bound for such sums (Higham, Accuracy and Stability, §3.1) is
    |error| ≤ γ_L Σ |terms| with γ_L ≈ L u.  A softmax weight exp(s - max s) carries in addition the
    absolute error of its argument, ≈ 2(d + 2) u s̄ for scores of absolute size s̄.
    """
    u = torch.finfo(dtype).eps / 2
    seq_len, d = fwd.z.shape
    r = fwd.preactivation.shape[1]
    return u * (4 * seq_len + 2 * r + 6 * d + 10 + 2 * (d + 2) * fwd.max_score_abs)


def error_estimate(fwd: _Forward, k: float, block: Tensor, dtype: torch.dtype) -> float:
    """Estimated rounding error of every eigenvalue of ``block`` (an estimate, not a proof).

    Each entry of the block is k times a sum of products (mean z zᵀ, A); its error is about
    γ Σ |terms| (``relative_rounding``), and Σ |terms| is the same formula evaluated on absolute
    values: k (mean_n |z_n||z_n|ᵀ + Ā + Āᵀ), with Ā the lag Jacobian of |W|, |pos|, |λ| and the
    same ReLU pattern (inactive units contribute exact zeros).  By Weyl each eigenvalue moves by at
    most the spectral norm of that entrywise bound; ``eigh`` adds a backward error ≈ (size) u ‖block‖₂.
    The result is doubled for the terms the first-order analysis drops.  Linear growth in L is the
    worst case (errors of random sign grow like √L), so the estimate is pessimistic by orders of
    magnitude in practice (tests observe errors ~1e-15 relative); it is not a certificate.
    """
    u = torch.finfo(dtype).eps / 2
    seq_len = fwd.z.shape[0]
    magnitude = fwd.z_abs.T @ fwd.z_abs / seq_len + fwd.lag_jacobian_abs + fwd.lag_jacobian_abs.T
    spread = relative_rounding(fwd, dtype) * k * torch.linalg.matrix_norm(magnitude, ord=2).item()
    solver = block.shape[0] * u * torch.linalg.matrix_norm(block, ord=2).item()
    return float(2.0 * (spread + solver))


def _kink_reason(fwd: _Forward, W_1: Tensor, W_2: Tensor, dtype: torch.dtype) -> str:
    """Non-empty if a ReLU input at x̃ = pos is 0 (or within its rounding) for a unit that matters.

    There the loss is not twice differentiable along e (ReLU(h_j(e)) with h_j(0) = 0), so the block
    would depend on which side the kink is taken: refuse to guess.  A unit with W_1 row or W_2 column
    zero does not change z and cannot make a kink.
    """
    live = (W_1.detach().to(dtype).abs().sum(dim=1) > 0) & (W_2.detach().to(dtype).abs().sum(dim=0) > 0)
    rounding = relative_rounding(fwd, dtype)
    exact = (fwd.preactivation == 0) & live
    near = (fwd.preactivation.abs() <= rounding * fwd.preactivation_abs) & live
    for mask, how in ((exact, "is exactly 0"), (near, "is 0 within its rounding error")):
        if bool(mask.any()):
            n, j = (int(t) for t in mask.nonzero()[0])
            return (f"{KINK}: the input (W_1 y_n)_j of hidden unit j={j} at position n={n + 1} {how} "
                    f"({int(mask.sum())} such entries); the Hessian along e is not defined there")
    return ""


def symmetric_lag(A: Tensor) -> Tensor:
    """A + Aᵀ = mean_n Σ_{i≤n} λ^{n+1-i} (K_{n,i} + K_{n,i}ᵀ): tied, e enters both the embedding and the
    head, so ∂²ℓ_n/∂e² = Σ_i x_i (K_{n,i} + K_{n,i}ᵀ) holds each Jacobian and its transpose."""
    return A + A.T


def _assemble(z: Tensor, A: Tensor, k: float, tying: bool) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """(block, Schur complement after eliminating b, z̄, mean z zᵀ, Cov_n(z_n)) of the formulas in the module doc."""
    seq_len, d = z.shape
    zbar = z.mean(dim=0)
    second = z.T @ z / seq_len
    second = (second + second.T) / 2
    centred = z - zbar
    cov = centred.T @ centred / seq_len  # centred directly: no cancellation in mean zzᵀ - z̄z̄ᵀ
    cov = (cov + cov.T) / 2
    sym_lag = symmetric_lag(A)
    if tying:
        block = torch.zeros(d + 1, d + 1, dtype=z.dtype, device=z.device)
        block[:d, :d] = k * (second - sym_lag)
        schur = k * (cov - sym_lag)
    else:
        block = torch.zeros(2 * d + 1, 2 * d + 1, dtype=z.dtype, device=z.device)
        block[:d, d : 2 * d] = -k * A.T  # H_{e_c, a_j} = -k A_{jc}
        block[d : 2 * d, :d] = -k * A
        block[d : 2 * d, d : 2 * d] = k * second
        schur = block[: 2 * d, : 2 * d].clone()
        schur[d:, d:] = k * cov
    block[-1, -1] = k
    block[-1, -1 - d : -1] = block[-1 - d : -1, -1] = k * zbar  # the b row meets e (tied) or a (untied)
    return block, schur, zbar, second, cov


def _classify(schur_eigenvalues: Tensor, bound: float) -> tuple[str, str]:
    """Second-order verdict from the Schur complement S of the block after eliminating b: with H_bb = k > 0
    the block's inertia is that of k plus that of S (Haynsworth), so the block is positive definite iff S
    is and has a negative eigenvalue iff S has one.  S is the better-conditioned witness: at weights of
    size 20 the block's smallest eigenvalue is ~1e-6 next to 1e15 (b couples to e through k z̄), where S's
    are ~1e7.  A sign counts only beyond ``bound``."""
    low = schur_eigenvalues[0].item()
    if low < -bound:
        return SADDLE_POINT, ""
    if low > bound:
        return LOCAL_MINIMUM, ""
    flat = int((schur_eigenvalues.abs() <= bound).sum())
    return UNDECIDED, (f"{flat} eigenvalue(s) of the Schur complement S within the error bound {bound:.2g} of 0 "
                       f"(smallest {low:.3g}): degenerate, the second-order test cannot decide")


def _escape_direction(vectors: Tensor, d: int, tying: bool) -> dict[str, Tensor | float]:
    """The first eigenvector as named parts, sign fixed so that its largest entry is positive."""
    v = vectors[:, 0]
    v = v * torch.sign(v[v.abs().argmax()])
    parts: dict[str, Tensor | float] = {"e": v[:d].clone()}
    if not tying:
        parts["a"] = v[d : 2 * d].clone()
    parts["b"] = v[-1].item()
    return parts


def _log_range(dtype: torch.dtype) -> float:
    """log of the largest factor a forward-mode tangent may carry: √(the dtype's max), 1e154 or 1.8e19."""
    return math.log(torch.finfo(dtype).max) / 2


def _tangent_blocks(rho: complex, seq_len: int, dtype: torch.dtype) -> list[tuple[int, int]]:
    """Output blocks [s, e) short enough that |ρ|^{-(e - s)} stays within ``_log_range``."""
    size = seq_len if abs(rho) >= 1 else max(1, int(_log_range(dtype) / -math.log(abs(rho))))
    return [(s, min(s + size, seq_len)) for s in range(0, seq_len, size)]


def tangent_chunk(params: Params, seq_len: int, layers: int, device: torch.device) -> int:
    """How many tangents one vmapped forward-mode pass may carry: scores, weights and their tangents (about
    6 N² per layer) and the feed-forward (4 N r) within an eighth of ``memory_budget_bytes``."""
    r = params["W_1"].shape[0]
    per = layers * (6 * seq_len * seq_len + 4 * seq_len * r) * params["pos"].element_size()
    return int(max(1, min(256, memory_budget_bytes(device) // (8 * per))))


def lag_sums(params: Params, rhos: list[complex], memory: int | None, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """z_n at x̃ = pos (N, d) and T(ρ) = Σ_n Σ_{i≤n} ρ^{n+1-i} K_{n,i} (complex d × d) for each ρ, any model.

    K_{n,i} = ∂z_n/∂x̃_i of ``numerics.transformer.hidden`` (every layer, the mask of ``memory``, layer norm
    included) by forward-mode autograd, without forming K: for an output block n ∈ [s, e) the tangent
    x̃_i ↦ ρ^{s-i} u (i < e) gives at position n the vector Σ_i ρ^{s-i} K_{n,i} u, and ρ^{n+1-s} times it is the
    block's share of T(ρ) u.  Blocks keep |ρ|^{s-i} within ``_log_range`` (ρ → 0 needs more of them); a complex
    ρ takes two real passes (real and imaginary part of the tangent).  The model is causal, so a block's pass
    runs on the positions before e only, and with a memory W on the last L W before s as well (nothing earlier
    reaches [s, e) through L layers).  Cost: d · Σ_ρ (blocks) forward passes of at most O(L N² d) each,
    instead of N d passes for the whole Jacobian.
    """
    weights = {name: value.detach().to(dtype) for name, value in params.items()}
    pos = weights["pos"]
    seq_len, d = pos.shape
    layers = num_layers(weights)
    eye = torch.eye(d, dtype=dtype, device=pos.device)
    forward = vmap(lambda h, t: jvp(lambda x: model.hidden(weights, x, memory), (h,), (t,))[1], in_dims=(None, 0))
    chunk = tangent_chunk(weights, seq_len, layers, pos.device)
    sums = torch.zeros(len(rhos), d, d, dtype=torch.complex128)
    for index, rho in enumerate(rhos):
        for s, e in _tangent_blocks(rho, seq_len, dtype):
            first = 0 if memory is None else max(0, s - layers * memory)
            inputs = np.power(complex(rho), np.arange(s - first, s - e, -1, dtype=float))  # ρ^{s-i}, i ∈ [first, e)
            outputs = torch.as_tensor(np.power(complex(rho), np.arange(1, e - s + 1, dtype=float)))
            for part in ("real", "imag") if rho.imag != 0 else ("real",):
                column = torch.as_tensor(getattr(inputs, part), dtype=dtype, device=pos.device)
                tangents = column[None, :, None] * eye[:, None, :]  # (u, i, :)
                moved = torch.cat([forward(pos[first:e], t) for t in tangents.split(chunk)])
                block = moved[:, s - first :].to(torch.float64).cpu()  # (u, n, :) = Σ_i ρ^{s-i} K_{n,i} e_u
                share = (outputs[None, :, None] * block).sum(dim=1).T  # (:, u)
                sums[index] += share if part == "real" else 1j * share
    return model.hidden(weights, pos, memory).detach(), sums


def forward_mode_lag_jacobian(params: Params, source: Source, memory: int | None,
                              dtype: torch.dtype) -> tuple[Tensor, Tensor, float]:
    """z_n, A = (1/N) Σ_n Σ_{i≤n} w(n+1-i) K_{n,i} for any depth, mask and layer norm (``MANIFOLD-GENERAL``), and
    the size Σ_r |α_r| ‖T(ρ_r)‖₂ / (N c(0)) of the terms that sum cancels.

    w(m) = c(m)/c(0) = Σ_r Re(α_r ρ_r^m)/c(0) (``Autocovariance.components``, α_r the (1, 1) entry of M_r; terms
    whose α_r is below 1e-15 c(0) dropped), so A = Re Σ_r α_r T(ρ_r) / (N c(0)) with T of ``lag_sums``.  A nearly
    defective kernel has |α_r| ≫ c(0) of opposite signs: A is then a small difference of large terms, whose
    rounding the returned size measures (an independent review saw 5e4 c(0) and a 900 times larger error).
    """
    cov = autocovariance(source)
    k = cov.variance[1, 1]
    terms = [t for t in cov.components if abs(t.matrix[1, 1]) > 1e-15 * k]
    z, sums = lag_sums(params, [t.rho for t in terms], memory, dtype)
    seq_len = z.shape[0]
    coefficients = torch.tensor([t.matrix[1, 1] / k for t in terms], dtype=torch.complex128)
    lag = (coefficients[:, None, None] * sums).sum(dim=0).real / seq_len if terms else torch.zeros(z.shape[1],
                                                                                                   z.shape[1])
    # Frobenius (≥ the 2-norm): no SVD, so a non-finite T of an overflowing pass gives inf instead of an error
    spread = sum(abs(a.item()) * torch.linalg.matrix_norm(t).item() for a, t in zip(coefficients, sums))
    return z, lag.to(dtype=dtype, device=z.device), spread / seq_len


@dataclass(frozen=True)
class LayerState:
    """One layer of the forward pass at x̃ = pos: its attention weights a_{n,i} (N × N), the ReLU inputs W_1 v_n
    (v = y or LN_2(y)), the same on absolute values, and which hidden units can matter (W_1 row and W_2 column
    nonzero)."""

    attention: Tensor
    preactivation: Tensor
    magnitude: Tensor
    live: Tensor


def layer_states(params: Params, memory: int | None) -> list[LayerState]:
    """``LayerState`` of every layer, through the model's own functions (what the forward-mode route differentiates)."""
    h = params["pos"].detach()
    mask = model.attention_mask(h.shape[0], memory, h.device)
    out = []
    for layer in range(num_layers(params)):
        u = model.norm(params, layer_key("ln_1", layer), h)
        key, value = model.keys_values(params, layer, u)
        scores = (model.queries(params, layer, u) @ key.T).masked_fill(~mask, -math.inf)
        y = h + model.attention(params, layer, u, key, value, mask)
        v = model.norm(params, layer_key("ln_2", layer), y)
        W_1, W_2 = params[layer_key("W_1", layer)].detach(), params[layer_key("W_2", layer)].detach()
        live = (W_1.abs().sum(dim=1) > 0) & (W_2.abs().sum(dim=0) > 0)
        out.append(LayerState(torch.softmax(scores, dim=-1).detach(), v @ W_1.T, v.abs() @ W_1.abs().T, live))
        h = y + model.feed_forward(params, layer, v)
    return out


def _deep_kink_reason(params: Params, memory: int | None, dtype: torch.dtype) -> str:
    """``_kink_reason`` for any depth: a live ReLU input within u (4N + 2r + 6d + 10) L of its magnitude of 0."""
    seq_len, d = params["pos"].shape
    layers = num_layers(params)
    rounding = torch.finfo(dtype).eps / 2 * (4 * seq_len + 2 * params["W_1"].shape[0] + 6 * d + 10) * layers
    for layer, state in enumerate(layer_states(params, memory)):
        near = (state.preactivation.abs() <= rounding * state.magnitude) & state.live
        if bool(near.any()):
            n, j = (int(t) for t in near.nonzero()[0])
            return (f"{KINK}: the input of hidden unit j={j} of layer {layer + 1} at position n={n + 1} is 0 within "
                    f"its rounding error ({int(near.sum())} such entries); the Hessian along e is not defined there")
    return ""


def _shadow_estimate(blocks: tuple[Tensor, Tensor], dtype: torch.dtype) -> float:
    """Rounding estimate of a block from a shadow computation at float32's unit roundoff (``shifted_source`` and, on
    the forward-mode route, float32 arithmetic): the difference of the two results scaled by the ratio of unit
    roundoffs, times 16 for the variation of the error between precisions; inf when the shadow is not finite."""
    gap = blocks[0] - blocks[1].to(blocks[0].dtype)
    if not bool(torch.isfinite(gap).all()):
        return math.inf
    ratio = torch.finfo(dtype).eps / torch.finfo(torch.float32).eps
    return 16.0 * ratio * torch.linalg.matrix_norm(gap, ord=2).item()


def shifted_source(source: Source) -> Source:
    """The source with every defining probability (p, q or the table's entries) scaled by 1 - u32 (float32's unit
    roundoff): the curvature's sensitivity to the rounding of the source's numbers — λ = 1 - p - q near 0, the
    stationary law, the geometric components of a slowly mixing or nearly defective chain — seen at a size the
    float64 result can show, then scaled back by ``_shadow_estimate``."""
    shrink = 1.0 - torch.finfo(torch.float32).eps / 2
    if isinstance(source, MarkovChain):
        return MarkovChain(source.p * shrink, source.q * shrink)
    if isinstance(source, SecondOrderChain):
        return SecondOrderChain(tuple(tuple(t * shrink for t in row) for row in source.table))
    moved = source.transition * shrink  # rows re-closed on the diagonal, which absorbs the shift
    return FiniteChain(moved + np.diag(1.0 - moved.sum(axis=1)), name=source.name)


def _source_numbers(source: Source) -> tuple[float, float]:
    """(k, w(1)) = (c(0), c(1)/c(0)) of a binary source."""
    if isinstance(source, MarkovChain):
        return source.pi[0] * source.pi[1], source.eigenvalue
    cov = autocovariance(source)
    k = float(cov.variance[1, 1])
    return k, float(cov.scalar(1)[0]) / k


ROUTES = ("auto", "closed-form", "forward-mode")


def manifold_curvature(
    params: Params, p: float | None = None, q: float | None = None, *, tying: bool, source: Source | None = None,
    memory: int | None = None, dtype: torch.dtype = torch.float64, route: str = "auto",
) -> ManifoldCurvature:
    """The nonzero Hessian block of the population loss at a point of M_π and its verdict (``MANIFOLD``,
    ``MANIFOLD-GENERAL``).

    The source: the first-order chain (p, q), or any binary stationary ``source`` (``SecondOrderChain``, a
    2-state ``FiniteChain``); the data enter only through c(m) = Cov(x_{t+m}, x_t) (SPEC §12), i.e. the block
    of the module doc with λ^{n+1-i} replaced by w(n+1-i) = c(n+1-i)/c(0) and k = c(0).  Any depth, layer norm
    (the head reads LN_f(z_n); K includes it) and attention memory ``memory`` (None: full causal attention).
    ``params`` must lie on M_π (e = 0, a = 0 untied, b = log π1/π0 to 1e-12 relative; see ``project_to_manifold``);
    anything else raises ``InvalidInputError``.  The block is the Hessian at the point of M_π over ``params`` with the
    exact b (a b off by δ adds about δ E[∇²ℓ], beyond ``error_bound`` when the block itself is tiny).
    N = ``params["pos"].shape[0]`` is unrestricted (no 2^N).

    ``route``: "closed-form" (one layer without layer norm: the formulas of the module doc, O(N² d²)),
    "forward-mode" (``forward_mode_lag_jacobian``: any model; its rounding estimated by repeating it in
    float32, ``_shadow_estimate``), "auto" = closed form where it applies.

    Decided by the Schur complement S after eliminating b (the block's inertia is k's plus S's): tied, a
    local minimum iff every eigenvalue of S exceeds 4 ``error_bound`` (S ≻ 0), a saddle iff one is below
    minus that.  Untied: a saddle as soon as some k|A_jc| exceeds ``error_bound`` (H_ee = 0 exactly, so the
    2 × 2 principal minor of e_c and a_j is -(k A_jc)² < 0), else by S as tied.
    Otherwise, or at a ReLU kink, "undecided" with a ``reason``.  At θ_π this reproduces claims
    ``LOCAL-MIN`` (p + q > 1), ``SADDLE`` (p + q < 1) and ``SADDLE-UNTIED``.
    """
    source = binary_source(p, q, source)
    _check_memory(memory)
    _check_architecture(params, tying)
    _check_on_manifold(params, source, tying)
    if route not in ROUTES:
        raise InvalidInputError(f"route must be one of {', '.join(ROUTES)}, got {route!r}")
    closed = num_layers(params) == 1 and not has_layer_norm(params)
    if route == "closed-form" and not closed:
        raise InvalidInputError("the closed-form route is the one-layer model without layer norm; use forward-mode")
    k, lam = _source_numbers(source)
    shifted = shifted_source(source)
    k_shifted = _source_numbers(shifted)[0]
    seq_len = params["pos"].shape[0]
    if route == "forward-mode" or (route == "auto" and not closed):
        z, lag, spread = forward_mode_lag_jacobian(params, source, memory, dtype)
        z_shadow, lag_shadow, _ = forward_mode_lag_jacobian(params, shifted, memory, torch.float32)
        shadow = _assemble(z_shadow, lag_shadow, k_shifted, tying)
        reason = _deep_kink_reason(params, memory, dtype)
    else:
        weights = lag_weights(source, seq_len, memory, device=params["pos"].device, dtype=dtype)
        fwd = _forward(params, weights, memory, dtype)
        z, lag = fwd.z, fwd.lag_jacobian
        moved = lag_weights(shifted, seq_len, memory, device=params["pos"].device, dtype=dtype)
        shadow = _assemble(z, _forward(params, moved, memory, dtype).lag_jacobian, k_shifted, tying)
        reason = _kink_reason(fwd, params["W_1"], params["W_2"], dtype)
    if not (torch.isfinite(z).all() and torch.isfinite(lag).all()):
        raise InvalidInputError("the forward pass at x̃ = pos overflows at these weights "
                                f"(max |z| = {z.abs().max().item():.3g}); the curvature is not defined")
    block, schur, zbar, second, cov_z = _assemble(z, lag, k, tying)
    eigenvalues, vectors = torch.linalg.eigh(block)
    schur_eigenvalues = torch.linalg.eigvalsh(schur)
    if closed and route != "forward-mode":
        bound = error_estimate(fwd, k, block, dtype) + 2.0 * _shadow_estimate((block, shadow[0]), dtype)
    else:
        unit = torch.finfo(dtype).eps / 2
        solver = block.shape[0] * unit * torch.linalg.matrix_norm(block, ord=2).item()
        # the block holds k (A + Aᵀ): the components' cancellation at 16 u of their size, as the closed form's margin
        cancellation = 16 * unit * 2 * k * spread
        bound = 2.0 * (_shadow_estimate((block, shadow[0]), dtype) + solver + cancellation)
    if not math.isfinite(bound):
        reason = reason or "the float32 shadow pass that estimates the rounding overflows at these weights"
    if reason:
        classification = UNDECIDED
    else:
        # S's entries are sums over the centred |z_n - z̄| ≤ |z_n| + |z̄|, whose products are at most 4 mean |z||z|ᵀ
        classification, reason = _classify(schur_eigenvalues, 4 * bound)
        if not tying and k * lag.abs().max().item() > bound:
            # H_ee = 0 exactly: the principal minor [[0, -k A_jc], [-k A_jc, k second_jj]] is -(k A_jc)² < 0,
            # so the block is indefinite whatever its small eigenvalues look like
            classification, reason = SADDLE_POINT, ""
    d = z.shape[1]
    escape = _escape_direction(vectors, d, tying) if classification == SADDLE_POINT else None
    return ManifoldCurvature(
        tying=tying,
        block=block,
        eigenvalues=eigenvalues,
        schur=schur,
        schur_eigenvalues=schur_eigenvalues,
        classification=classification,
        error_bound=bound,
        reason=reason,
        escape_direction=escape,
        hidden_mean=zbar,
        second_moment=second,
        covariance=cov_z,
        lag_jacobian=lag,
        k=k,
        lam=lam,
    )


@dataclass(frozen=True)
class SampledBlock:
    """A Monte-Carlo estimate of ``ManifoldCurvature.block``: entrywise mean and standard error."""

    mean: Tensor
    stderr: Tensor
    samples: int
    switches: int  # state changes x_i ≠ x_{i+1} seen over all sampled sequences

    @property
    def spread(self) -> Tensor:
        """The per-sequence standard deviation of each entry (Bessel-corrected): stderr √samples."""
        return self.stderr * math.sqrt(self.samples)

    def merge(self, other: SampledBlock) -> SampledBlock:
        """The estimate over both samples (independent draws), as if computed in one pass.

        Pooled sums of squared deviations (Chan, Golub and LeVeque): M2 = M2_a + M2_b + δ² n_a n_b / n with
        δ = mean_b - mean_a and M2 = (n - 1) spread², so no sum of squares cancels against a squared mean.
        """
        n_a, n_b = self.samples, other.samples
        n = n_a + n_b
        delta = other.mean - self.mean
        squares = (n_a - 1) * self.spread**2 + (n_b - 1) * other.spread**2 + delta**2 * (n_a * n_b / n)
        return SampledBlock(self.mean + delta * (n_b / n), torch.sqrt(squares / (n - 1) / n), n,
                            self.switches + other.switches)


def normal_coordinates(params: Params, tying: bool) -> Tensor:
    """The normal coordinates c of a point as one vector: (e, b) tied, (e, a, b) untied (the block's order)."""
    return torch.cat([params[name].detach().reshape(-1) for name in (("e", "b") if tying else ("e", "a", "b"))])


def with_coordinates(params: Params, c: Tensor, tying: bool) -> Params:
    """``params`` with e, (a,) b read from c (``normal_coordinates``'s order); c may be (B, m), one copy per
    sequence: then e and a become (B, 1, d) and b (B, 1), the shapes ``embed`` and ``head`` accept."""
    d = params["e"].numel()
    if c.dim() == 1:
        parts = {"e": c[:d], "a": c[d : 2 * d], "b": c[-1]}
    else:
        parts = {"e": c[:, None, :d], "a": c[:, None, d : 2 * d], "b": c[:, -1:]}
    return params | {name: value for name, value in parts.items() if name != "a" or not tying}


def _per_copy_hessians(total: Callable[[Tensor], Tensor], copies: Tensor) -> Tensor:
    """(B, m, m): the Hessian of each term L_s at its own point, for total(c) = Σ_s L_s(c_s) with c (B, m).

    The terms share no coordinates, so the gradient of the sum with respect to copy s is ∇L_s alone, and one
    forward-over-reverse product along e_j (every copy moved together) gives column j of every term's
    Hessian: m passes over the whole batch.
    """
    def column(j: int) -> Tensor:
        direction = torch.zeros_like(copies)
        direction[:, j] = 1.0
        return jvp(grad(total), (copies,), (direction,))[1]

    return torch.stack([column(j) for j in range(copies.shape[1])], dim=-1)


def sequence_hessians_reference(params: Params, chain: Source, x: Tensor, *, tying: bool,
                                memory: int | None = None) -> Tensor:
    """(B, m, m): h(x) of ``sequence_hessians`` for each row of x (B, N) through the whole forward pass.

    ``_per_copy_hessians`` of the loss of ``numerics.transformer.logits``: m passes of the full model
    over all B sequences, O(m B N² d) work.  Nothing is linearised: the reference the batched route is
    tested and benchmarked against.
    """
    fixed = {k: v.detach() for k, v in params.items()}
    start = normal_coordinates(params, tying)
    p_one, p_zero = next_probabilities(chain, x)

    def total(c: Tensor) -> Tensor:
        ell = model.logits(with_coordinates(fixed, c, tying), x, tying=tying, memory=memory)
        return expected_cross_entropy(ell, p_one, p_zero).mean(dim=1).sum()

    return _per_copy_hessians(total, start.expand(x.shape[0], start.numel()).clone())


def _block_rows(params: Params, h: Tensor, rows: Tensor, mask: Tensor) -> Tensor:
    """z_n for the positions ``rows`` of the one-layer block at states h (N, d): ``numerics.transformer.block``
    with only those rows as queries (y = h + attention over every key ``mask`` shows, z = y + feed-forward).

    A row's output depends on all N states through its keys and values, so each of the d reverse passes of
    its Jacobian costs O(N d²), where a reverse pass through the whole block costs O(N² d).
    """
    key, value = model.keys_values(params, 0, h)
    y = h[rows] + model.attention(params, 0, h[rows], key, value, mask[rows])
    return y + model.feed_forward(params, 0, y)


def block_jacobian(params: Params, rows: Tensor, memory: int | None = None) -> Tensor:
    """K[n, :, i, :] = ∂z_n/∂x̃_i at x̃ = pos for n in ``rows`` and every i: (len(rows), d, N, d).

    Reverse-mode autograd of the model's own functions: for one layer without layer norm ``_block_rows`` one row
    at a time under ``vmap``; otherwise the rows of ``numerics.transformer.hidden`` (every layer, layer norm).
    The mask is the model's ``attention_mask`` of ``memory``, so whatever it lets a row see enters K.
    """
    pos = params["pos"].detach()
    weights = {name: value.detach() for name, value in params.items()}
    if num_layers(params) > 1 or has_layer_norm(params):
        return jacrev(lambda h: model.hidden(weights, h, memory)[rows])(pos)
    mask = model.attention_mask(pos.shape[0], memory, device=pos.device)
    return vmap(lambda n: jacrev(lambda h: _block_rows(weights, h, n[None], mask)[0])(pos))(rows)


def next_probabilities(source: Source, x: Tensor) -> tuple[Tensor, Tensor]:
    """P(x_{n+1} = 1 | x_1^n) and P(x_{n+1} = 0 | x_1^n) at every position of x (the second exact where the source
    knows it)."""
    if isinstance(source, MarkovChain):
        return source.next_probabilities(x)
    one = source.next_one_probability(x)
    return one, 1.0 - one


def _row_chunks(seq_len: int, batch: int, d: int, element_bytes: int, budget: int) -> list[Tensor]:
    """Positions in chunks of at most 64 (progress, and the vmap's width), fewer where K's rows (d N d each,
    about 3 copies with the reverse passes) and the per-sequence products with their derivatives (about
    6 B d²) of a chunk would pass a quarter of ``budget`` bytes."""
    per_row = (3 * d * seq_len * d + 6 * batch * d * d) * element_bytes
    size = int(min(64, max(1, budget // (4 * per_row))))
    return list(torch.arange(seq_len).split(size))


def sequence_hessians(
    params: Params, chain: Source, x: Tensor, *, tying: bool, memory: int | None = None,
    progress: Callable[[Iterable], Iterable] = iter,
) -> Tensor:
    """(B, m, m): for each row of x (B, N) the Hessian in the normal coordinates c of
        L_x(c) = (1/N) Σ_n [softplus(ℓ_n) - P(x_{n+1} = 1 | x_n) ℓ_n],   c = (e, b) tied, (e, a, b) untied.

    On M_π the embedding x̃_i = x_i e + pos_i equals pos whatever x, so the block's output z and its Jacobian
    K_{n,i} = ∂z_n/∂x̃_i are the same for every sequence (``block_jacobian``, by autograd), and moving e by δ
    moves z_n by M_n(x) δ, M_n(x) = Σ_i x_i K_{n,i}: one (B × N)(N × N d²) product for all sequences.  The
    head's weight vector (e tied, a untied) is 0 on M_π, so the block's second derivative meets a zero and
    the Hessian of L_x at c equals that of L_x with z replaced by its linearisation z(pos) + M(x) δe; that
    Hessian is taken by autograd through the model's ``head`` and the cross-entropy, for all sequences at
    once (``_per_copy_hessians``).  Cost O(N² d² (d + B) + m B N d²), memory bounded by
    ``memory_budget_bytes`` (chunks of positions); ``progress`` wraps the chunks.
    """
    c0 = normal_coordinates(params, tying)
    fixed = {k: v.detach() for k, v in params.items()}
    seq_len, d = fixed["pos"].shape
    z0 = model.hidden(fixed, fixed["pos"], memory)
    p_one, p_zero = next_probabilities(chain, x)
    copies = c0.expand(x.shape[0], c0.numel()).clone()

    def chunk_loss(rows: Tensor, moved: Tensor) -> Callable[[Tensor], Tensor]:
        """c ↦ Σ_s (sequence s's share of L_x from the positions ``rows``), z linearised in e."""
        def loss(c: Tensor) -> Tensor:
            point = with_coordinates(fixed, c, tying)
            z = z0[rows] + (moved * (point["e"] - c0[:d])[:, :, None, :]).sum(dim=-1)
            ell = model.head(point, z, tying=tying)
            return expected_cross_entropy(ell, p_one[:, rows], p_zero[:, rows]).sum() / seq_len
        return loss

    total = torch.zeros(x.shape[0], c0.numel(), c0.numel(), dtype=c0.dtype, device=c0.device)
    chunks = _row_chunks(seq_len, x.shape[0], d, c0.element_size(), memory_budget_bytes(c0.device))
    for rows in progress(chunks):
        K = block_jacobian(fixed, rows.to(c0.device), memory)  # (R, d, N, d)
        moved = (x @ K.permute(2, 0, 1, 3).reshape(seq_len, -1)).reshape(x.shape[0], len(rows), d, d)
        total += _per_copy_hessians(chunk_loss(rows, moved), copies)
    return total


def sampling_bytes(seq_len: int, size: int, element_bytes: int) -> int:
    """Memory one sampled sequence holds in ``sampled_block`` besides its chunk's products (which
    ``_row_chunks`` fits to the budget, down to one position): symbols and next-symbol probabilities (3 N),
    its Hessian and coordinates (m² + m), and one position's products with derivatives (6 d² < 6 m²)."""
    return (3 * seq_len + 8 * size * size) * element_bytes


def sampled_block(
    params: Params, p: float | None = None, q: float | None = None, *, tying: bool, samples: int, seed: int,
    source: Source | None = None, memory: int | None = None, progress: Callable[[Iterable], Iterable] = iter,
) -> SampledBlock:
    """Unbiased Monte-Carlo estimate of the normal block at a point of M_π, for any N (``MANIFOLD``).

    For ``samples`` stationary sequences x_1..x_N (seeded) the per-sequence Hessians h(x) of
    ``sequence_hessians``: the model's forward pass and autograd, nothing of the closed form.  The loss is
    linear in x_{n+1}, so replacing x_{n+1} by its conditional mean P(1 | x_n) leaves the expectation
    unchanged (tower rule) and lowers the variance: E[h(x)] is exactly the population block.  Returns the
    mean and its standard error std/√samples, entrywise.  Independent of the closed form: a check of one
    against the other can fail.  ``progress`` wraps the chunks of positions.
    """
    chain = binary_source(p, q, source)
    _check_memory(memory)
    _check_architecture(params, tying)
    _check_on_manifold(params, chain, tying)
    if samples < 2:
        raise InvalidInputError(f"a standard error needs at least 2 sampled sequences, got {samples}")
    c0 = normal_coordinates(params, tying)
    x = chain.sample(samples, params["pos"].shape[0], seed=seed, device=c0.device, dtype=c0.dtype)
    h = sequence_hessians(params, chain, x, tying=tying, memory=memory, progress=progress).double().cpu()
    switches = int((x[:, 1:] != x[:, :-1]).sum())
    return SampledBlock(h.mean(dim=0), h.std(dim=0) / math.sqrt(samples), samples, switches)


# --- the one-hot model on k symbols (SPEC §11, §12): the (E, b) block, untied (E, A, b) ---


@dataclass(frozen=True)
class MultistateCurvature(CurvatureVerdict):
    """The nonzero Hessian block of the one-hot model at a point of M_π of a k-symbol source, and its verdict.

    ``block``: tied, the (E, b) block in the parameters' own coordinates, ordered [E_0 (d), …, E_{k-1} (d),
    b_0, …, b_{k-1}]; untied [E (k d), A (k d), b (k)].  It has exact zeros along the gauge directions E, A →
    + 1vᵀ (every logit moves alike: softmax unchanged; in E also a shift of every x̃ the positions absorb) and
    b → b + t1.  ``restricted``: the block on 1^⊥ of the symbol index (coordinates (Uᵀ ⊗ I_d) E, (Uᵀ ⊗ I_d) A,
    Uᵀ b with U an orthonormal basis of 1^⊥), whose ``eigenvalues`` (ascending) are the Hessian's whole nonzero
    spectrum.  ``schur``/``schur_eigenvalues``: the Schur complement of ``restricted`` after eliminating b.
    ``error_bound``, ``classification``, ``reason``: as ``ManifoldCurvature``; ``escape_direction`` (saddles):
    {"E": (k, d), ("A": (k, d),) "b": (k,)}, a unit vector of the parameters' coordinates.
    """

    restricted: Tensor
    escape_direction: dict[str, Tensor] | None
    hidden_mean: Tensor
    covariance: Tensor


def _onehot_source(params: Params, source: Source) -> Autocovariance:
    """The autocovariance of ``source`` when the one-hot model's k symbols (rows of E) are its symbols."""
    if "E" not in params or params["E"].dim() != 2:
        raise InvalidInputError("params are not the one-hot model (no k × d embedding table E)")
    cov = autocovariance(source)
    if cov.symbols != params["E"].shape[0]:
        raise InvalidInputError(f"the one-hot model has k={params['E'].shape[0]} symbols, the source "
                                f"{cov.symbols}")
    return cov


def project_onehot_to_manifold(params: Params, source: Source, *, tying: bool) -> Params:
    """The point of M_π over a one-hot ``params``: E → 0 (and A → 0 untied), b → log π of ``source``, the rest
    kept (detached copies, same dtypes and devices)."""
    cov = _onehot_source(params, source)
    if not tying and "A" not in params:
        raise InvalidInputError("tying=False needs the head A in params")
    out = {name: value.detach().clone() for name, value in params.items()}
    for name in ("E",) if tying else ("E", "A"):
        out[name] = torch.zeros_like(out[name])
    out["b"] = torch.as_tensor(np.log(cov.pi), dtype=out["b"].dtype, device=out["b"].device)
    return out


def _check_onehot_on_manifold(params: Params, cov: Autocovariance, tying: bool) -> None:
    """E = 0 (and A = 0) exactly, softmax(b) = π: b - log π constant to 1e-12 relative, every entry finite."""
    for name in ("E",) if tying else ("E", "A"):
        size = params[name].detach().abs().max().item()
        if size != 0.0:
            raise InvalidInputError(f"point is not on M_π: {name} must be 0 (max |{name}| = {size:.3g}); use "
                                    "project_onehot_to_manifold first")
    bad = [name for name, value in params.items() if not bool(torch.isfinite(value.detach()).all())]
    if bad:
        raise InvalidInputError(f"params hold non-finite values in {', '.join(bad)}")
    log_pi = np.log(cov.pi)
    shift = params["b"].detach().double().cpu().numpy() - log_pi
    tolerance = max(B_RELATIVE_TOLERANCE, 2 * torch.finfo(params["b"].dtype).eps) * max(1.0, np.abs(log_pi).max())
    if not np.ptp(shift) <= tolerance:
        raise InvalidInputError(f"point is not on M_π: softmax(b) must be π (b - log π varies by {np.ptp(shift):.3g})"
                                "; use project_onehot_to_manifold first")


def _kron(a: Tensor, b: Tensor) -> Tensor:
    """The Kronecker product a ⊗ b of two matrices (entry ((i, k), (j, l)) = a_ij b_kl), for strided inputs too."""
    return (a[:, None, :, None] * b[None, :, None, :]).reshape(a.shape[0] * b.shape[0], a.shape[1] * b.shape[1])


def complement_basis(k: int, dtype: torch.dtype = torch.float64) -> Tensor:
    """U (k × (k - 1)): an orthonormal basis of 1^⊥ in R^k (the eigenvectors of I - 11ᵀ/k for eigenvalue 1)."""
    centring = torch.eye(k, dtype=dtype) - torch.full((k, k), 1.0 / k, dtype=dtype)
    return torch.linalg.eigh(centring)[1][:, 1:]


def _multistate_blocks(z: Tensor, sums: Tensor, cov: Autocovariance, terms: list, tying: bool
                       ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(block, restricted block, Schur complement of the restricted block after b, Cov_n(z_n)) from z_n (N, d) and
    T_r = Σ_n Σ_{i≤n} ρ_r^{n+1-i} K_{n,i} (``lag_sums``) for the components C_m = Σ_r ρ_r^m M_r (SPEC §11, §12):

        H_{E_c E_c'} = Σ_cc' mean z zᵀ - mean_n Σ_{i≤n} [(C_m)_{c'c} K_{n,i} + (C_m)_{cc'} K_{n,i}ᵀ],  m = n + 1 - i,
        H_{E_c b_j} = Σ_cj z̄,   H_bb = Σ = D_π - ππᵀ;
    untied H_EE = 0, H_{E_c A_c'} = -mean_n Σ_{i≤n} (C_m)_{cc'} K_{n,i}ᵀ, H_AA = Σ ⊗ mean z zᵀ, H_Ab = Σ ⊗ z̄.
    With symbol-major coordinates the lag sum is Re Σ_r (M_rᵀ ⊗ T_r + M_r ⊗ T_rᵀ)/N.  Restricted to 1^⊥ (U) the
    Schur complement is (UᵀΣU) ⊗ Cov_n(z_n) - (U ⊗ I)ᵀ lag (U ⊗ I) tied, from the centred z (no cancellation).
    """
    seq_len, d = z.shape
    dtype, device = z.dtype, z.device
    k = cov.symbols
    zbar = z.mean(dim=0)
    second = z.T @ z / seq_len
    second = (second + second.T) / 2
    centred = z - zbar
    cov_z = centred.T @ centred / seq_len
    cov_z = (cov_z + cov_z.T) / 2
    sigma = torch.as_tensor(cov.variance, dtype=dtype, device=device)
    forward = torch.zeros(k * d, k * d, dtype=torch.complex128)  # Σ_r M_r ⊗ T_rᵀ: (c, α), (c', γ) ↦ Σ (C)_{cc'} K_γα
    for term, T in zip(terms, sums):
        forward += _kron(torch.as_tensor(term.matrix, dtype=torch.complex128), T.T)
    cross = (forward.real / seq_len).to(dtype=dtype, device=device)
    lag = cross + cross.T  # Σ_r M_rᵀ ⊗ T_r is the transpose of Σ_r M_r ⊗ T_rᵀ
    U = complement_basis(k, dtype).to(device)
    P = _kron(U, torch.eye(d, dtype=dtype, device=device))
    sigma_u = U.T @ sigma @ U
    head = _kron(sigma, second)
    if tying:
        block = torch.cat([torch.cat([head - lag, _kron(sigma, zbar[:, None])], dim=1),
                           torch.cat([_kron(sigma, zbar[None, :]), sigma], dim=1)])
        R = torch.block_diag(P, U)
        schur = _kron(sigma_u, cov_z) - P.T @ lag @ P
    else:
        zeros = torch.zeros(k * d, k * d, dtype=dtype, device=device)
        none = torch.zeros(k * d, k, dtype=dtype, device=device)
        block = torch.cat([torch.cat([zeros, -cross, none], dim=1),
                           torch.cat([-cross.T, head, _kron(sigma, zbar[:, None])], dim=1),
                           torch.cat([none.T, _kron(sigma, zbar[None, :]), sigma], dim=1)])
        R = torch.block_diag(P, P, U)
        mixed = -P.T @ cross @ P
        schur = torch.cat([torch.cat([torch.zeros_like(mixed), mixed], dim=1),
                           torch.cat([mixed.T, _kron(sigma_u, cov_z)], dim=1)])
    restricted = R.T @ block @ R
    return block, (restricted + restricted.T) / 2, (schur + schur.T) / 2, cov_z


def multistate_curvature(params: Params, source: Source, *, tying: bool, memory: int | None = None,
                         dtype: torch.dtype = torch.float64) -> MultistateCurvature:
    """The nonzero Hessian block of the one-hot model's population loss at a point of M_π of ``source`` (any
    stationary source on the model's k symbols: ``FiniteChain``, or a binary one at k = 2) and its verdict
    (SPEC §11 at every point of M_π, §12 for any depth, memory and layer norm; ``_multistate_blocks``).

    ``params`` must lie on M_π (E = 0, A = 0 untied, softmax(b) = π; ``project_onehot_to_manifold``).  z_n and
    T(ρ_r) come from forward-mode autograd of the model's own forward pass (``lag_sums``), the rounding from
    repeating it in float32 with the source's numbers moved by float32's rounding (``shifted_source``,
    ``_shadow_estimate``).  Tied: a local minimum iff the Schur complement S on 1^⊥
    exceeds 4 ``error_bound``, a saddle iff an eigenvalue is below minus that; untied: a saddle as soon as an
    entry of the restricted E–A block exceeds ``error_bound`` (H_EE = 0 exactly: a 2 × 2 principal minor is
    negative), else by S.  At θ_π this is §11's E-block -2 M_s ⊗ I_d (tied) and ±(M ⊗ I_d) (untied).
    """
    _check_memory(memory)
    cov = _onehot_source(params, source)
    if not tying and "A" not in params:
        raise InvalidInputError("tying=False needs the head A in params")
    needed = ("pos", "b", *(layer_key(name, layer) for layer in range(num_layers(params)) for name in BLOCK))
    missing = [name for name in needed if name not in params]
    if missing or num_layers(params) < 1:
        raise InvalidInputError(f"params lack {', '.join(missing) or 'W_Q'}")
    _check_onehot_on_manifold(params, cov, tying)

    def blocks(chain: Autocovariance, precision: torch.dtype) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        scale = float(np.abs(chain.variance).max())
        terms = [t for t in chain.components if np.abs(t.matrix).max() > 1e-15 * scale]
        z, sums = lag_sums(params, [t.rho for t in terms], memory, precision)
        return z, *_multistate_blocks(z, sums, chain, terms, tying)

    z, block, restricted, schur, cov_z = blocks(cov, dtype)
    if not (torch.isfinite(z).all() and torch.isfinite(block).all()):
        raise InvalidInputError("the forward pass at x̃ = pos overflows at these weights "
                                f"(max |z| = {z.abs().max().item():.3g}); the curvature is not defined")
    eigenvalues, vectors = torch.linalg.eigh(restricted)
    schur_eigenvalues = torch.linalg.eigvalsh(schur)
    # the shadow: float32 arithmetic and the source's numbers moved by float32's rounding (``shifted_source``)
    shadow = blocks(autocovariance(shifted_source(source)), torch.float32)[2]
    solver = restricted.shape[0] * torch.finfo(dtype).eps / 2 * torch.linalg.matrix_norm(restricted, ord=2).item()
    bound = 2.0 * (_shadow_estimate((restricted, shadow), dtype) + solver)
    reason = _deep_kink_reason(params, memory, dtype)
    if not reason and not math.isfinite(bound):
        reason = "the float32 pass that estimates the rounding overflows at these weights"
    if reason:
        classification = UNDECIDED
    else:
        classification, reason = _classify(schur_eigenvalues, 4 * bound)
        half = schur.shape[0] // 2
        if not tying and schur[:half, half:].abs().max().item() > bound:
            classification, reason = SADDLE_POINT, ""
    escape = None
    if classification == SADDLE_POINT:
        k, d = params["E"].shape
        U = complement_basis(k, dtype).to(restricted.device)
        P = _kron(U, torch.eye(d, dtype=dtype, device=U.device))
        R = torch.block_diag(P, U) if tying else torch.block_diag(P, P, U)
        v = R @ vectors[:, 0]
        v = v * torch.sign(v[v.abs().argmax()])
        names = ("E", "b") if tying else ("E", "A", "b")
        sizes = [k * d, k] if tying else [k * d, k * d, k]
        escape = {name: part.reshape(k, d) if name != "b" else part for name, part in zip(names, v.split(sizes))}
    return MultistateCurvature(tying=tying, block=block, restricted=restricted, eigenvalues=eigenvalues, schur=schur,
                               schur_eigenvalues=schur_eigenvalues, classification=classification, error_bound=bound,
                               reason=reason, escape_direction=escape, hidden_mean=z.mean(dim=0), covariance=cov_z)
