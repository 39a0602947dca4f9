"""Rounding-error estimates of the exact population loss and its gradient, scaled to the inputs.

A check that compares a computed loss or gradient with its closed form needs to know how much the
computation itself loses.  A fixed tolerance cannot know: at a point of M_π with weights of size 20
the gradient's e-component is a probability-weighted sum of hidden states of size 10⁵ that cancels
to exactly 0, and rounds to 5e-10 (a fixed 1e-10 then calls a true stationary point "not
stationary"); at p = 1e-5 the loss is 1e-4 and a tolerance of 1e-5 cannot tell H(π) from H_rate.

The exact loss is a sum over M evaluations (prefix, class) with weights ω_i = P(prefix)/N,

    L = Σ_i ω_i c_i(ℓ_i),   ∇L = Σ_i ω_i Σ_c R_ic ∇ℓ_ic,   R_ic = ∂c_i/∂ℓ_ic,

where c_i is the expected cross-entropy of prefix i (nats), ℓ its logit(s) and R the residual
σ(ℓ) - P(1|x_n) (softmax - P(·|x_n) for the one-hot model).  Standard backward-error reasoning
gives, with ε the machine epsilon of the dtype and J = ∂ℓ/∂θ (M × D, formed once):

* each logit is computed with an absolute error of order ε κ_ic, κ_ic = |ℓ_ic| + Σ_j |θ_j J_icj|
  (every parameter enters with a relative rounding; κ is the first-order sensitivity of ℓ to
  them), which moves c_i by |R_ic| ε κ_ic and R_ic by V_ic ε κ_i (V = σ'(ℓ), or 2p(1-p) per class
  for the softmax, κ_i the largest κ_ic of the prefix);
* R_ic is itself a difference, P(0|x)σ(ℓ) - P(1|x)σ(-ℓ) (softmax - P), rounded by ε times the sum
  T_ic of the two terms it cancels (at p = q they cancel to 1e-13);
* the sums over i (pairwise) lose ⌈log₂ M⌉ ε of the sum of the absolute values of their terms;
* J itself is computed with errors of order ε Σ_k |∂J/∂θ_k| |θ_k|; weighted by the residuals they
  are bounded by ε Σ_k |∇²L_jk| |θ_k| (the gradient's first-order sensitivity to relative changes of
  every parameter), available wherever the dense Hessian is.

Hence the estimates

    u_L   = C ε [ ⌈log₂ M⌉ L + Σ_i ω_i Σ_c |R_ic| κ_ic ]                    (L ≥ 0: no cancellation)
    u_g,j = C ε [ Σ_i ω_i Σ_c ((⌈log₂ M⌉ + 1) |R_ic| + T_ic + V_ic κ_i) |J_icj| + Σ_k |∇²L_jk| |θ_k| ] + C τ

per coordinate j, with the margin C = 4 (at the tests' random points the measured error reaches at most
0.2 of u_g and 0.04 of u_L) and τ the dtype's smallest normal number (a term that
underflows to 0 in float32 is nonzero in float64).  They are relative to the quantities they
guard: a small loss gets a small u_L, and a coordinate whose terms are all exactly 0 (∂ℓ/∂W = 0
where e = 0) gets u_g,j = Cτ.  They are estimates, not proofs; ``tests/test_rounding.py`` checks
that they cover the float32-vs-float64 gap at random points of weight scale up to 100 and the
float64 gradient at points of M_π (exactly 0 in exact arithmetic) up to the largest scale the
commands accept.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from numerics.curvature import flatten, unflatten
from numerics.markov import FiniteChain, MarkovChain, SecondOrderChain, prefix_tree, previous_symbols
from numerics.transformer import Params, has_layer_norm, is_onehot, logits, num_layers, prefix_logits

#: margin of the estimates over their first-order forms (checked by tests/test_rounding.py: measured errors
#: reach at most a fifth of the estimates there)
MARGIN = 4.0


@dataclass(frozen=True)
class Rounding:
    """Estimated rounding errors of one evaluation of the exact loss (nats) and of its gradient.

    The loss's estimate has two parts: ``per_level`` (C ε L, lost at each level of the pairwise outer sum,
    of ``depth`` levels) and ``propagated`` (C ε Σ ω|R|κ, the logits' own rounding carried into the loss)."""

    per_level: float
    depth: int
    propagated: float
    gradient: Tensor  # (D,), one estimate per coordinate of the flat θ

    @property
    def loss(self) -> float:
        return self.depth * self.per_level + self.propagated

    def summed_over(self, terms: int) -> float:
        """The loss's estimate when the same terms are summed over ``terms`` evaluations (the naive route
        repeats each prefix's term once per full sequence that extends it: same logits and total weights,
        a deeper sum)."""
        return math.ceil(math.log2(max(2, terms))) * self.per_level + self.propagated


def _next_laws(chain: MarkovChain | FiniteChain | SecondOrderChain, previous: Tensor, current: Tensor) -> Tensor:
    """P(x_{n+1} = j | x_1^n) as (..., k) for prefixes ending in (``previous``, ``current``) = (x_{n-1}, x_n): the
    kernel's row of x_n, or the second-order source's law given both (``previous`` is read by it alone)."""
    if isinstance(chain, SecondOrderChain):
        one, zero = chain.next_probabilities(previous, current)
        return torch.stack([zero, one], dim=-1)
    return chain.kernel(device=current.device, dtype=current.dtype)[current.long()]


def _evaluations(params: Params, chain: MarkovChain | FiniteChain | SecondOrderChain, *, tying: bool,
                 memory: int | None = None) -> tuple[Callable[[Params], Tensor], Tensor, Tensor]:
    """The loss as a weighted sum over evaluations: (θ ↦ logits (M, c), weights ω (M,), P(·|x_1^n) (M, k)).

    One-layer models: every prefix once (``prefix_logits``); deeper ones: every position of every
    full sequence, as ``numerics.population`` evaluates them; attention limited to ``memory`` as there.
    """
    pos = params["pos"]
    seq_len = pos.shape[0]
    tree = prefix_tree(chain, seq_len, device=pos.device, dtype=pos.dtype)
    if num_layers(params) == 1 and not has_layer_norm(params):
        return (lambda p: prefix_logits(p, tree, tying=tying, memory=memory), tree.log_prob.exp() / seq_len,
                _next_laws(chain, tree.previous, tree.last))
    full = tree.length == seq_len
    x = tree.symbols[full]
    weights = (tree.log_prob[full].exp() / seq_len)[:, None].expand(x.shape).reshape(-1)
    return (lambda p: logits(p, x, tying=tying, memory=memory).reshape(weights.shape[0], -1), weights,
            _next_laws(chain, previous_symbols(x), x).reshape(weights.shape[0], -1))


def logit_jacobian(fn: Callable[[Params], Tensor], params: Params) -> tuple[Tensor, Tensor]:
    """(ℓ(θ) as (M, c), J = ∂ℓ/∂θ as (M, c, D)) from one recorded graph.

    J v is the derivative in u of ⟨J^T u, v⟩ (reverse over reverse): D backward passes batched over
    the basis vectors, as the dense Hessian does, with no forward-mode tracing.
    """
    theta, layout = flatten(params)
    with torch.enable_grad():
        theta = theta.detach().requires_grad_(True)
        ell = fn(unflatten(theta, layout))
        ell = ell.reshape(ell.shape[0], -1)
        u = torch.zeros_like(ell, requires_grad=True)
        (pullback,) = torch.autograd.grad(ell, theta, u, create_graph=True)
        basis = torch.eye(theta.numel(), dtype=theta.dtype, device=theta.device)
        (J,) = torch.autograd.grad(pullback, u, basis, is_grads_batched=True)
    return ell.detach(), J.detach().movedim(0, -1)


def logit_condition(ell: Tensor, J: Tensor, theta: Tensor) -> Tensor:
    """κ = |ℓ| + Σ_j |θ_j| |∂ℓ/∂θ_j| for logits ℓ (any shape) with Jacobian J (ℓ's shape × D): the
    first-order change of ℓ when every parameter moves by its own relative rounding, per unit of ε."""
    return ell.abs() + (J.abs() * theta.abs()).sum(dim=-1)


def rounding_estimate(params: Params, chain: MarkovChain | FiniteChain | SecondOrderChain, *, tying: bool,
                      hessian: Tensor | None = None, memory: int | None = None) -> Rounding:
    """``Rounding`` of the exact loss and its gradient at ``params`` in their own dtype (module docstring), attention
    limited to ``memory`` (None: the whole past).

    ``hessian``: the dense ∇²L at ``params`` if the caller has it; without it the gradient's term
    ε |∇²L| |θ| (the rounding of the logit Jacobian itself) is left out.
    """
    fn, omega, target = _evaluations(params, chain, tying=tying, memory=memory)
    ell, J = logit_jacobian(fn, params)
    theta = flatten(params)[0].detach()
    if is_onehot(params):
        prob = torch.softmax(ell, dim=-1)
        cost = -(target * torch.log_softmax(ell, dim=-1)).sum(dim=-1)
        residual, curvature = prob - target, 2 * prob * (1 - prob)
        cancelled = prob + target  # the terms of softmax - P
    else:  # one logit: classes (1,), P(1|x_n) the second column of P(·|x_n)
        p_one, p_zero = target[:, 1:], target[:, :1]
        prob = torch.sigmoid(ell)
        cost = (p_one * torch.nn.functional.softplus(-ell) + p_zero * torch.nn.functional.softplus(ell))[:, 0]
        residual, curvature = prob - p_one, prob * torch.sigmoid(-ell)
        cancelled = p_zero * prob + p_one * torch.sigmoid(-ell)  # the terms of ∂c/∂ℓ = P(0)σ(ℓ) - P(1)σ(-ℓ)
    kappa = logit_condition(ell, J, theta)  # (M, c)
    eps = torch.finfo(ell.dtype).eps
    depth = math.ceil(math.log2(max(2, omega.numel())))
    per_level = MARGIN * eps * (omega * cost).sum().item()
    propagated = MARGIN * eps * (omega[:, None] * residual.abs() * kappa).sum().item()
    weight = omega[:, None] * ((depth + 1) * residual.abs() + cancelled
                               + curvature * kappa.amax(dim=-1, keepdim=True))
    gradient = torch.einsum("mc,mcd->d", weight, J.abs()).double().cpu()
    if hessian is not None:
        gradient = gradient + hessian.double().cpu().abs() @ theta.double().cpu().abs()
    gradient = MARGIN * eps * gradient + MARGIN * torch.finfo(ell.dtype).tiny
    return Rounding(per_level, depth, propagated, gradient)
