"""Is the embedded canonical family invariant under the full model's gradient flow? (claim ``L2G-EMBED``)

``numerics.stationary_points.canonical_point`` embeds the L2G canonical model exactly:
L(φ(e, w, b)) = L_can(e, w, b) with

    L_can(e, w, b) = Σ_x π_x Σ_y P_xy CE(y, f_x),     f_x = e²(1 + 2w|w|) x + b - e²/2

(paper-notes §3.3 item 1).  Exactness makes the pulled-back gradient Jᵀ∇_θL equal ∇L_can
(J = ∂φ/∂(e, w, b)), but says nothing about the rest of ∇_θL: the full flow θ̇ = -∇_θL stays on
the family iff ∇_θL lies in T = range(J) at every point.  ``tangency`` measures the part that does
not,

    g_⊥ = g - J (JᵀJ)⁻¹ Jᵀ g,      g = ∇_θ L(φ(e, w, b))   (exact population loss),

with J from ``torch.func.jacfwd``, and splits ‖g_⊥‖ by parameter.  What to expect (derived, and
measured by the tests): the feed-forward gradient is parallel to ∂φ/∂w (the ReLU pattern and the
balance ‖W_1‖ = ‖W_2‖ are kept), W_Q, W_K, W_V get nothing (W_O = 0), but

* W_O gets ∇ = c α (W_V α)ᵀ with c ∝ E[residual(x_n) · attention average of (x_i - ½)], nonzero
  whenever W_V α ≠ 0: attention switches on;
* (e_vec, pos) get gradients along α whose ratio is not the family's -½ per position: the
  positions leave pos_n = -(e/2) α.  With ∂_s, ∂_c the derivatives of L in e_vec = s α,
  pos_n = c α (every n), ‖g_⊥‖ in (e, pos) is |∂_s L + (2/N) ∂_c L| / √(1 + 4/N).

So the family is not invariant: that would need g_⊥ = 0 all over it, and at generic points both
parts are nonzero (both vanish at its global minima, where g = 0).  Whether g_⊥ = 0 does not depend
on the metric; its size ‖g_⊥‖/‖g‖ is the Euclidean one of θ, the metric of plain gradient descent.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from torch.func import jacfwd

from numerics.curvature import flatten, gradient, unflatten
from numerics.dynamics import CanonicalModel
from numerics.markov import MarkovChain
from numerics.population import population_loss
from numerics.rounding import rounding_estimate
from numerics.stationary_points import canonical_point


def normal_component(g: Tensor, jacobian: Tensor) -> Tensor:
    """g - J (JᵀJ)⁻¹ Jᵀ g: the part of g (D,) orthogonal to the columns of J (D, k), by least squares."""
    return g - jacobian @ torch.linalg.lstsq(jacobian, g[:, None]).solution[:, 0]


@dataclass(frozen=True)
class Tangency:
    """The full gradient at φ(e, w, b), split along and across the embedded family (norms are Euclidean in θ)."""

    point: tuple[float, float, float]  # (e, w, b)
    loss: float  # L(φ(e, w, b)), the full model's exact population loss
    canonical_loss: float  # L_can(e, w, b)
    loss_tolerance: float  # rounding estimate of loss (numerics.rounding) plus that of canonical_loss
    gradient_norm: float  # ‖∇_θ L‖
    normal_norm: float  # ‖g_⊥‖
    normal_blocks: dict[str, float]  # ‖g_⊥‖ restricted to each parameter
    pulled_back: tuple[float, float, float]  # Jᵀ∇_θL = ∇_(e,w,b) L(φ)

    @property
    def normal_fraction(self) -> float:
        """‖g_⊥‖ / ‖g‖: 0 where the flow is tangent to the family, 1 where it leaves orthogonally."""
        return self.normal_norm / self.gradient_norm


def tangency(
    chain: MarkovChain,
    e: float,
    w: float,
    b: float,
    d: int,
    seq_len: int,
    *,
    r: int | None = None,
    alpha: Tensor | None = None,
    v: Tensor | None = None,
    attention_std: float = 0.0,
    seed: int | None = None,
) -> Tangency:
    """Measure g_⊥ at φ(e, w, b) (``canonical_point`` with these frame arguments), float64 on the CPU.

    Needs e > 0 and w ≠ 0, where φ is differentiable and J has rank 3.  The exact loss enumerates
    2^(N+1) prefixes: keep seq_len small (N = 8, d = 4 takes about half a second).
    """
    if e <= 0 or w == 0:
        raise ValueError(f"tangency needs e > 0 and w != 0 (φ is smooth and of rank 3 there), got {e=}, {w=}")

    def embed(coords: Tensor) -> dict[str, Tensor]:
        return canonical_point(*coords, d, seq_len, r=r, alpha=alpha, v=v, attention_std=attention_std, seed=seed)

    def loss(params: dict[str, Tensor]) -> Tensor:
        return population_loss(params, chain.p, chain.q, tying=True)

    coords = torch.tensor([e, w, b], dtype=torch.float64)
    params = embed(coords)
    layout = flatten(params)[1]
    # the seeded attention weights are drawn inside the map: the same draw for every tangent
    jacobian = jacfwd(lambda c: flatten(embed(c))[0], randomness="same")(coords)  # (D, 3)
    g = gradient(loss, params)
    normal = normal_component(g, jacobian)
    return Tangency(
        point=(e, w, b),
        loss=loss(params).item(),
        canonical_loss=float(CanonicalModel(chain).loss(e, w, b)),
        # the closed form sums four softplus terms of the logits e²(1 + 2w|w|)x + b - e²/2, rounded relative
        # to their size
        loss_tolerance=rounding_estimate(params, chain, tying=True).loss
        + 64 * torch.finfo(torch.float64).eps * (1.0 + e * e * (1.5 + 2 * w * w) + abs(b)),
        gradient_norm=torch.linalg.vector_norm(g).item(),
        normal_norm=torch.linalg.vector_norm(normal).item(),
        normal_blocks={k: torch.linalg.vector_norm(value).item() for k, value in unflatten(normal, layout).items()},
        pulled_back=tuple((jacobian.T @ g).tolist()),
    )


def random_tangencies(
    chain: MarkovChain, count: int, d: int, seq_len: int, *, attention_std: float = 1.0, seed: int = 0
) -> list[Tangency]:
    """``tangency`` at ``count`` random points: e ~ U(0.2, 2), w ~ N(0, 2²), b ~ N(0, 1), a random unit α,
    v = 2|u|/‖u‖ with u ~ N(0, I_4d), W_Q, W_K, W_V ~ N(0, attention_std²); all from ``seed``."""
    gen = torch.Generator().manual_seed(seed)

    def normal(*shape: int) -> Tensor:
        return torch.randn(shape, generator=gen, dtype=torch.float64)

    out = []
    for i in range(count):
        e = 0.2 + 1.8 * torch.rand(1, generator=gen, dtype=torch.float64).item()
        w, b = 2 * normal(1).item(), normal(1).item()
        alpha, u = normal(d), normal(4 * d).abs()
        out.append(tangency(chain, e, w, b, d, seq_len, alpha=alpha / alpha.norm(), v=2 * u / u.norm(),
                            attention_std=attention_std, seed=seed + i))
    return out
