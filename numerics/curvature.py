"""Gradient, dense Hessian and spectrum (with an error estimate) of the loss over all D parameters.

The Hessian is reverse-over-reverse autodiff (one batched backward through the recorded
gradient graph) of the exact prefix-tree loss on the flat parameter vector: its speed comes
from the loss (2^{N+1} - 2 prefixes, see ``prefix_logits``).  For large D, Hessian-vector
products and Lanczos with full reorthogonalisation give the extreme eigenvalues from k ≪ D
products.  ``benchmarks/hessian.py`` compares the dense Hessian with the same transform over
the naive all-sequences loss and with finite differences.

Eigenvalue error estimates (claims LOCAL-MIN, SADDLE, SADDLE-UNTIED, GLOBAL-MIN).  By Weyl's
inequality every eigenvalue of the exact Hessian H* lies within ‖H - H*‖₂ of the corresponding
eigenvalue of the computed H, and the eigensolver adds its residual ‖Hv - λv‖ (Bauer-Fike for
symmetric matrices).  ‖H - H*‖₂ itself cannot be computed; ``estimated_spectrum`` estimates it
a posteriori from independent evaluations of the same matrix:

* entry (i, j) and entry (j, i) come out of different backward passes, so ‖H - Hᵀ‖ is a
  measured difference of two differentiation routes;
* ``D ε max(‖H‖₂, F)`` is the standard backward-error scale of accumulating D-term sums, with
  an absolute floor F: each entry is a probability-weighted sum of products of quantities of size
  up to F (probabilities, residuals softmax - P, products of two logit derivatives, F = max(1,
  max|θ|)²) that cancel down to ‖H‖ — a Hessian of norm 1e-6 (a symbol of probability 1e-6) still
  carries rounding of order ε F, which ``D ε ‖H‖₂`` alone would miss;
* when a ``reference`` evaluation in higher precision exists (a float32 run re-evaluated in
  float64), ‖H - H_ref‖ measures the rounding of the whole computation, forward pass included,
  which the first two terms cannot see (both routes share the float32 forward values).

Both differences enter by their Frobenius norms, upper bounds of the 2-norms that Weyl's
inequality needs.  The sum is an *estimate*, not a proof: tests check that it covers the
float32-vs-float64 gap and the gap to an independent forward-over-reverse Hessian at random
points of scale up to 1.5.
A sign is *decided* only when |λ| exceeds the estimate; otherwise the verdict that depends on
it is "inconclusive".
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from numerics.markov import MarkovChain, prefix_tree
from numerics.population import check_enumeration_fits, enumeration_bytes
from numerics.transformer import Params, prefix_logits


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
    """∇L(θ) as a flat vector (one backward pass).

    Plain autograd rather than ``torch.func.grad``: the latter imports ``torch._dynamo`` on its
    first call, about 2 s per process, which was 30 % of the main command's wall time.
    """
    return _gradient_graph(loss, params, create_graph=False)[2]


def _gradient_graph(loss: Callable[[Params], Tensor], params: Params, *,
                    create_graph: bool = True) -> tuple[Tensor, Tensor, Tensor]:
    """(θ, L(θ), ∇L(θ)); with ``create_graph`` the gradient's own graph is recorded, for second derivatives."""
    theta, layout = flatten(params)
    with torch.enable_grad():  # a caller under no_grad still gets its derivative
        theta = theta.detach().requires_grad_(True)
        value = loss(unflatten(theta, layout))
        (grad_theta,) = torch.autograd.grad(value, theta, create_graph=create_graph)
    return theta, value, grad_theta


#: memory for the intermediates of one batched backward pass of ``loss_gradient_hessian`` on the CPU: its
#: tensors then stay under glibc's 32 MB mmap ceiling, so freed blocks are reused instead of mapped and
#: faulted in afresh (CPU time at d=4, N=8, 10, 12 on a busy 2-core machine: batches of 20-40, 8-12 and
#: 2 rows were fastest; this budget gives 40, 9 and 2)
_ROW_BATCH_BYTES = 32 * 2**20


def loss_gradient_hessian(loss: Callable[[Params], Tensor], params: Params) -> tuple[float, Tensor, Tensor]:
    """L(θ), ∇L(θ) and the dense D × D ∇²L(θ) from one recorded forward and gradient graph.

    Row i of the Hessian is ∂(∇L)/∂θ · e_i, a backward pass through the recorded gradient graph,
    vectorised over the D basis vectors (``is_grads_batched``, i.e. vmap).  Same numbers as
    ``torch.func.hessian`` (forward over reverse) to rounding, without its one-off tracing cost of
    about 1.5 s per process.  On the CPU the rows go in batches whose intermediates fit in
    ``_ROW_BATCH_BYTES``: one batch of all D rows allocates GBs of fresh pages per call, and their
    page faults cost as much CPU as the arithmetic (d=4, N=10, one thread: 1.35 s of CPU, 0.65 s
    of it in the kernel, against 0.7 s in batches of 8-16 rows; benchmarks/hessian.py).
    """
    check_enumeration_fits(params, "exact", copies=sum(v.numel() for v in params.values()))
    theta, value, grad_theta = _gradient_graph(loss, params)
    basis = torch.eye(theta.numel(), dtype=theta.dtype, device=theta.device)
    # CUDA's caching allocator reuses its blocks, so the GPU keeps one batch (fewest launches)
    size = theta.numel() if theta.is_cuda else max(1, _ROW_BATCH_BYTES // enumeration_bytes(params, "exact"))
    rows = torch.cat([torch.autograd.grad(grad_theta, theta, batch, is_grads_batched=True, retain_graph=True)[0]
                      for batch in basis.split(size)])
    return value.item(), grad_theta.detach(), rows.detach()


def hessian(loss: Callable[[Params], Tensor], params: Params) -> Tensor:
    """∇²L(θ) as a dense D × D matrix (``loss_gradient_hessian``)."""
    return loss_gradient_hessian(loss, params)[2]


def hessian_vector_product(loss: Callable[[Params], Tensor], params: Params) -> Callable[[Tensor], Tensor]:
    """v ↦ ∇²L(θ) v without forming the D × D matrix (Pearlmutter's trick).

    The reverse-mode gradient is recorded once with its own graph; each product is then one
    backward pass of <∇L, v> through that retained graph, about the cost of a gradient and 8×
    cheaper here than ``torch.func.jvp`` of the gradient, which traces the loss again on every
    call.  For large D a Krylov method (``lanczos``) with k ≪ D products replaces the dense
    Hessian, which needs D of them.
    """
    theta, _, grad_theta = _gradient_graph(loss, params)

    def product(v: Tensor) -> Tensor:
        (hv,) = torch.autograd.grad(grad_theta, theta, v.to(theta), retain_graph=True)
        return hv.detach()

    return product


def gauss_newton_hessian(params: Params, chain: MarkovChain, *, tying: bool,
                         weights: tuple[float, float]) -> Tensor:
    """(1/N) Σ_prefixes P(x_1^n) w(x_n) ∇ℓ_n ∇ℓ_nᵀ: the Hessian of the exact loss where the model is calibrated.

    ∇²L = E[σ'(ℓ) ∇ℓ∇ℓᵀ] + E[(σ(ℓ) - x_{n+1}) ∇²ℓ]; where σ(ℓ_n) = P(x_{n+1}=1 | x_n) (θ_*) the
    second term vanishes and σ'(ℓ) = w(x_n) = P(1|x_n)P(0|x_n) (``weights`` = (w(0), w(1))).
    Built from the Jacobian of the prefix logits only: no second derivative of the loss, an
    independent route to the Hessian (claim GLOBAL-MIN).
    """
    theta, layout = flatten(params)
    tree = prefix_tree(chain, params["pos"].shape[0], device=theta.device, dtype=theta.dtype)
    J = torch.func.jacrev(lambda th: prefix_logits(unflatten(th, layout), tree, tying=tying))(theta)
    w = torch.tensor(weights, device=theta.device, dtype=theta.dtype)[tree.last.long()] * tree.log_prob.exp()
    return (J.T * w) @ J / params["pos"].shape[0]


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
    when the Krylov space becomes invariant (β_k below D ε ‖T‖, relative to T's own scale).
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
        if j + 1 == steps or beta <= dim * torch.finfo(dtype).eps * scale:  # relative: H may be tiny (π0π1 ~ 1e-6)
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
    """Eigen-decomposition of a Hessian with a per-eigenvalue error estimate."""

    values: Tensor  # (D,) ascending
    vectors: Tensor  # (D, D) columns
    bounds: Tensor  # (D,) estimated |λ_true - λ|
    hessian_error: float  # estimated ‖H - H*‖₂

    @property
    def zero(self) -> Tensor:
        """Eigenvalues indistinguishable from 0 within their error estimate (candidate null space)."""
        return self.values.abs() <= self.bounds

    @property
    def null_space_dim(self) -> int:
        return int(self.zero.sum())

    def nonzero(self) -> Tensor:
        return self.values[~self.zero]

    @property
    def min_eigenvalue(self) -> float:
        return self.values[0].item()


def estimated_spectrum(H: Tensor, *, reference: Tensor | None = None, floor: float = 1.0) -> Spectrum:
    """Eigenpairs of the (symmetrised) Hessian, each eigenvalue with an a-posteriori error estimate.

    ``reference``: the same Hessian evaluated independently in higher precision (float64 for a
    float32 run); its distance to H enters the estimate (module docstring).  ``floor``: the size of
    the terms whose sums are the entries (1 for weights of order one; ``verify.measure`` passes
    max(1, max|θ|)², since entries are products of two logit derivatives).  Non-finite entries
    give infinite estimates, so no sign is ever decided from them.
    """
    eps = torch.finfo(H.dtype).eps
    H = H.double()
    if not bool(torch.isfinite(H).all()):
        D = H.shape[0]
        nan = torch.full((D,), float("nan"), dtype=H.dtype)
        return Spectrum(nan, torch.full((D, D), float("nan"), dtype=H.dtype), torch.full((D,), float("inf")),
                        float("inf"))
    sym = (H + H.T) / 2
    values, vectors = torch.linalg.eigh(sym)
    residual = torch.linalg.vector_norm(sym @ vectors - vectors * values, dim=0)
    scale = values.abs().max().item()  # ‖sym‖₂
    # Frobenius norms bound the 2-norms from above and need no SVD
    error = torch.linalg.matrix_norm(H - H.T).item() + H.shape[0] * eps * max(scale, floor)
    if reference is not None:
        error += torch.linalg.matrix_norm(H - reference.double()).item()
    return Spectrum(values, vectors, residual + error, error)


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
