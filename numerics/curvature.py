"""Gradient, dense Hessian and certified spectrum of the loss over all D parameters.

The Hessian is reverse-over-reverse autodiff (one batched backward through the recorded
gradient graph) of the exact prefix-tree loss on the flat parameter vector: its speed comes
from the loss (2^{N+1} - 2 prefixes, one matrix product per level, see ``prefix_logits``).
For large D, Hessian-vector products and Lanczos with full reorthogonalisation give the
extreme eigenvalues from k ≪ D products.
``benchmarks/hessian.py`` compares the dense Hessian with the same transform over the naive
all-sequences loss and with finite differences.

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

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.func import grad

from numerics.transformer import Params


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


def gradient(loss: Callable[[Params], Tensor], params: Params) -> Tensor:
    """∇L(θ) as a flat vector."""
    theta, layout = flatten(params)
    return grad(lambda th: loss(unflatten(th, layout)))(theta)


def _gradient_graph(loss: Callable[[Params], Tensor], params: Params) -> tuple[Tensor, Tensor]:
    """(θ, ∇L(θ)) with the gradient's own graph recorded, for second derivatives by backward passes."""
    theta, layout = flatten(params)
    theta = theta.detach().requires_grad_(True)
    (grad_theta,) = torch.autograd.grad(loss(unflatten(theta, layout)), theta, create_graph=True)
    return theta, grad_theta


def hessian(loss: Callable[[Params], Tensor], params: Params) -> Tensor:
    """∇²L(θ) as a dense D × D matrix: the products with all D basis vectors in one batched backward.

    Row i is ∂(∇L)/∂θ · e_i, a backward pass through the recorded gradient graph, vectorised over
    the D basis vectors (``is_grads_batched``, i.e. vmap).  Same numbers as ``torch.func.hessian``
    (forward over reverse) to rounding, without its one-off tracing cost of about 1.5 s per process.
    """
    theta, grad_theta = _gradient_graph(loss, params)
    basis = torch.eye(theta.numel(), dtype=theta.dtype, device=theta.device)
    (rows,) = torch.autograd.grad(grad_theta, theta, basis, is_grads_batched=True)
    return rows.detach()


def hessian_vector_product(loss: Callable[[Params], Tensor], params: Params) -> Callable[[Tensor], Tensor]:
    """v ↦ ∇²L(θ) v without forming the D × D matrix (Pearlmutter's trick).

    The reverse-mode gradient is recorded once with its own graph; each product is then one
    backward pass of <∇L, v> through that retained graph, about the cost of a gradient and 8×
    cheaper here than ``torch.func.jvp`` of the gradient, which traces the loss again on every
    call.  For large D a Krylov method (``lanczos``) with k ≪ D products replaces the dense
    Hessian, which needs D of them.
    """
    theta, grad_theta = _gradient_graph(loss, params)

    def product(v: Tensor) -> Tensor:
        (hv,) = torch.autograd.grad(grad_theta, theta, v.to(theta), retain_graph=True)
        return hv.detach()

    return product


@dataclass(frozen=True)
class RitzPairs:
    """Ritz values (ascending) and unit vectors of a Lanczos run, with their true residuals.

    For a symmetric H and unit y, some eigenvalue of H lies within ‖Hy - θy‖ of θ
    (``residuals``, formed from the stored products H q_j, not the Lanczos estimate |β s_k|): a
    Ritz value with θ + residual < 0 *proves* negative curvature.  The converse is weaker:
    Lanczos from a random start finds the extreme eigenvalues with probability 1, but a
    run cannot prove that no eigenvalue lies beyond its extreme Ritz values.
    """

    values: Tensor  # (k,)
    vectors: Tensor  # (D, k)
    residuals: Tensor  # (k,)
    iterations: int


def lanczos(matvec: Callable[[Tensor], Tensor], dim: int, *, steps: int, seed: int = 0,
            dtype: torch.dtype = torch.float64, device: torch.device | str = "cpu") -> RitzPairs:
    """Lanczos tridiagonalisation with full reorthogonalisation, and the Ritz pairs of T_k.

    Plain Lanczos loses orthogonality once a Ritz value converges, and the converged value then
    reappears as a spurious copy ("ghost").  Each new vector is therefore orthogonalised
    against every previous one, twice (the second pass removes what rounding left of the
    first), which keeps Q_kᵀQ_k = I to working precision at O(D k²) extra cost.  Stops early
    when the Krylov space becomes invariant (β_k below D ε ‖T‖).
    """
    steps = min(steps, dim)
    gen = torch.Generator().manual_seed(seed)
    Q = torch.zeros(dim, steps, dtype=dtype, device=device)
    HQ = torch.zeros_like(Q)  # H q_j, kept to form the residuals of the Ritz pairs without new products
    start = torch.randn(dim, generator=gen, dtype=torch.float64).to(device, dtype)
    Q[:, 0] = start / start.norm()
    alphas, betas = [], []
    for j in range(steps):
        w = HQ[:, j] = matvec(Q[:, j])
        alphas.append(torch.dot(Q[:, j], w))
        for _ in range(2):
            w = w - Q[:, : j + 1] @ (Q[:, : j + 1].T @ w)
        beta = w.norm()
        scale = max(abs(a.item()) for a in alphas) + max((b.item() for b in betas), default=0.0)
        if j + 1 == steps or beta <= dim * torch.finfo(dtype).eps * max(scale, 1.0):
            break
        betas.append(beta)
        Q[:, j + 1] = w / beta
    k = len(alphas)
    T = torch.diag(torch.stack(alphas))
    if betas:
        off = torch.stack(betas)
        T = T + torch.diag(off, 1) + torch.diag(off, -1)
    values, S = torch.linalg.eigh(T)
    vectors = Q[:, :k] @ S
    residuals = torch.linalg.vector_norm(HQ[:, :k] @ S - vectors * values, dim=0)  # ‖Hy - θy‖ with Hy = (HQ) s
    return RitzPairs(values, vectors, residuals, k)


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
