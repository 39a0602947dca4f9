"""Gradient, dense Hessian and certified spectrum of the loss over all D parameters.

The Hessian is forward-over-reverse autodiff (``torch.func.hessian``) of the exact prefix-tree
loss on the flat parameter vector: its speed comes from the loss (2^{N+1} - 2 prefixes, one
matrix product per level, see ``prefix_logits``).  ``benchmarks/hessian.py`` compares it with
the same transform over the naive all-sequences loss and with finite differences.

Eigenvalue certificates (claims LOCAL-MIN, SADDLE, SADDLE-UNTIED, GLOBAL-MIN).  For a computed
pair (λ, v) of the symmetric matrix H the residual r = ‖Hv - λv‖ bounds the distance from λ to
an exact eigenvalue of H (Bauer-Fike for symmetric matrices), and H itself differs from the
true Hessian by rounding; we bound that by ``hessian_error`` = ‖H - Hᵀ‖₂ + D ε ‖H‖₂ (the
asymmetry is a measured rounding error, the second term a standard backward-error scale).  By
Weyl's inequality each true eigenvalue lies within ``bound`` = r + hessian_error of λ, so a
sign is *decided* only when |λ| > bound; otherwise it is undecided, and the verdict that
depends on it is "inconclusive".
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from torch.func import grad
from torch.func import hessian as func_hessian

from numerics.transformer import Params

Loss = "Callable[[Params], Tensor]"


def flatten(params: Params) -> tuple[Tensor, list[tuple[str, torch.Size]]]:
    """The parameters as one vector θ ∈ R^D and the layout to rebuild the dict."""
    layout = [(name, value.shape) for name, value in params.items()]
    return torch.cat([value.reshape(-1) for value in params.values()]), layout


def unflatten(theta: Tensor, layout: list[tuple[str, torch.Size]]) -> Params:
    """Inverse of ``flatten``."""
    out, start = {}, 0
    for name, shape in layout:
        size = shape.numel()
        out[name] = theta[start : start + size].reshape(shape)
        start += size
    return out


def block_names(layout: list[tuple[str, torch.Size]]) -> list[str]:
    """The parameter name of each coordinate of θ."""
    return [name for name, shape in layout for _ in range(shape.numel())]


def gradient(loss, params: Params) -> Tensor:
    """∇L(θ) as a flat vector."""
    theta, layout = flatten(params)
    return grad(lambda th: loss(unflatten(th, layout)))(theta)


def hessian(loss, params: Params) -> Tensor:
    """∇²L(θ) as a dense D × D matrix (forward over reverse mode, vectorised over D tangents)."""
    theta, layout = flatten(params)
    return func_hessian(lambda th: loss(unflatten(th, layout)))(theta)


@dataclass(frozen=True)
class Spectrum:
    """Eigen-decomposition of a Hessian with a per-eigenvalue error bound."""

    values: Tensor  # (D,) ascending
    vectors: Tensor  # (D, D) columns
    bounds: Tensor  # (D,) |λ_true - λ| ≤ bound
    hessian_error: float

    @property
    def zero(self) -> Tensor:
        """Eigenvalues indistinguishable from 0 within their bound (candidate null space)."""
        return self.values.abs() <= self.bounds

    @property
    def null_space_dim(self) -> int:
        return int(self.zero.sum())

    def nonzero(self) -> Tensor:
        return self.values[~self.zero]

    @property
    def min_eigenvalue(self) -> float:
        return self.values[0].item()


def certified_spectrum(H: Tensor, *, zero_floor: float = 0.0) -> Spectrum:
    """Eigenpairs of the (symmetrised) Hessian with Weyl/Bauer-Fike bounds on each eigenvalue.

    ``zero_floor`` widens every bound to at least that value: the model-level error of a
    Hessian computed in float32, or the resolution asked for by the caller.
    """
    sym = (H + H.T) / 2
    values, vectors = torch.linalg.eigh(sym)
    residual = torch.linalg.vector_norm(sym @ vectors - vectors * values, dim=0)
    scale = torch.linalg.matrix_norm(sym, ord=2).item()
    eps = torch.finfo(H.dtype).eps
    error = torch.linalg.matrix_norm(H - H.T, ord=2).item() + H.shape[0] * eps * scale
    bounds = (residual + error).clamp(min=zero_floor)
    return Spectrum(values, vectors, bounds, error)


def composition(vector: Tensor, layout: list[tuple[str, torch.Size]]) -> dict[str, float]:
    """Share of ‖v‖² in each named parameter block, largest first (shares ≥ 0.5 % only)."""
    weights = vector.detach().double() ** 2
    total = weights.sum().item()
    shares: dict[str, float] = {}
    for name, w in zip(block_names(layout), weights.tolist()):
        shares[name] = shares.get(name, 0.0) + w / total
    return dict(sorted(((k, v) for k, v in shares.items() if v >= 0.005), key=lambda kv: -kv[1]))


def describe(shares: dict[str, float]) -> str:
    """'e 97 %, b 3 %'."""
    return ", ".join(f"{name} {100 * share:.0f} %" for name, share in shares.items())
