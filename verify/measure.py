"""Measurement of one parameter point of the full model, with the error estimates the checks need.

A point is measured once (``measure``): its exact population loss, the gradient over all D
parameters, the dense Hessian and its spectrum with an a-posteriori error estimate
(``numerics.curvature.estimated_spectrum``; a float32 run is re-evaluated in float64 for it),
and ``rounding`` / ``grad_rounding``: estimates of the rounding error of one loss evaluation and of
each gradient coordinate, scaled to the terms they sum (``numerics.rounding``), which the checks use
as their resolution instead of any fixed tolerance.  ``verify.checks`` turns these
measurements into per-claim checks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.func import vmap

from numerics.curvature import (
    Spectrum,
    composition,
    describe,
    estimated_spectrum,
    flatten,
    hessian,
    loss_gradient_hessian,
    unflatten,
)
from numerics.population import chain_loss
from numerics.rounding import rounding_estimate
from numerics.transformer import Params
from verify.cli import Config

#: machine epsilon of float64, in which the closed forms are evaluated
FLOAT64_EPS = torch.finfo(torch.float64).eps


def loss_of(config: Config) -> Callable[[Params], Tensor]:
    """θ ↦ L(θ), the exact population loss for the configured source, tying and attention memory (nats), in θ's
    dtype."""
    return lambda params: chain_loss(params, config.source, tying=config.tying, memory=config.memory)


def closed_form_rounding(values: list[float] | Tensor, terms: int = 2) -> float:
    """Estimated rounding of values computed in float64 from a closed form: 16 ``terms`` ε max|v|.

    The closed forms (θ_π's eigenvalues π0π1 and 2π0π1(p+q-1), H(π), the M_π formula's special
    case, a k-state spectrum from an eigensolver) are sums of ``terms`` products of probabilities,
    each no larger than the largest value, with a few roundings each; 16 is the margin.
    """
    scale = max((abs(float(v)) for v in values), default=0.0)
    return 16 * terms * FLOAT64_EPS * scale


def entropy_rounding(value: float, symbols: int) -> float:
    """Estimated float64 rounding of an entropy closed form -Σ_i w_i log w_i over ``symbols`` terms (H(π),
    H_rate): 16 k ε (1 + H).  Absolute, not relative: a weight w = 1 - 1e-6 carries a relative rounding ε,
    which moves w log w by ε (1 + log w) ≈ ε while the entropy itself may be 1e-5."""
    return 16 * symbols * FLOAT64_EPS * (1.0 + abs(value))


@dataclass
class MeasuredPoint:
    """A parameter point with its loss, gradient, Hessian spectrum and loss resolution."""

    config: Config
    params: Params
    theta: Tensor
    layout: list
    value: float
    grad: Tensor  # (D,) ∇L(θ), float64 on the CPU
    hessian: Tensor  # D × D, float64 on the CPU
    spectrum: Spectrum
    rounding: float  # estimated rounding error of one loss evaluation (numerics.rounding)
    grad_rounding: Tensor  # (D,) estimated rounding error of each coordinate of the gradient

    @property
    def grad_max(self) -> float:
        return self.grad.abs().max().item()

    def losses_at(self, steps: Tensor, *, float64: bool = False) -> Tensor:
        """L(θ + s) - L(θ) for a batch of flat steps s (rows), as float64 on the CPU.

        ``float64``: evaluated in float64 at the run's point (a float32 run's θ, rounded to float32).
        """
        theta = self.theta.double() if float64 else self.theta
        loss = vmap(lambda th: loss_of(self.config)(unflatten(th, self.layout)))
        base = loss(theta[None])[0].item() if float64 else self.value
        return loss(theta + steps.to(theta)).cpu().double() - base

    def float64_rounding(self) -> float:
        """``rounding`` of a float64 evaluation of the loss at this point: the estimate is linear in ε."""
        return self.rounding * FLOAT64_EPS / torch.finfo(self.theta.dtype).eps

    def loss_at(self, step: Tensor) -> float:
        """L(θ + step) for one flat step."""
        return loss_of(self.config)(unflatten(self.theta + step.to(self.theta), self.layout)).item()

    def blocks(self, vector: Tensor) -> str:
        """Which parameter blocks a direction lives in, e.g. 'e 100 %'."""
        return describe(composition(vector, self.layout))

    def summary(self) -> dict:
        s = self.spectrum
        return {"loss": self.value, "grad_max_abs": self.grad_max,
                "hessian_eigenvalues_nonzero": s.nonzero().tolist(), "min_eigenvalue": s.min_eigenvalue,
                "null_space_dim": s.null_space_dim, "D": s.values.numel(),
                "eigenvalue_error_estimate": s.bounds.max().item(), "loss_rounding_estimate": self.rounding,
                "gradient_rounding_estimate_max": self.grad_rounding.max().item(),
                "lowest_eigenvector": self.blocks(s.vectors[:, 0])}


def measure(config: Config, exact: Params) -> MeasuredPoint:
    """Loss, gradient, Hessian and spectrum at the point ``exact`` (given in float64), run in the
    configured device and dtype.

    A float32 run evaluates the float32 rounding of the point; its Hessian's error estimate then
    includes the distance to the float64 Hessian at the point itself, so that representing the
    point in float32 (b = log(p/q) to 7 digits) counts as the rounding it is.
    """
    loss = loss_of(config)
    params = {k: v.to(config.device, config.torch_dtype) for k, v in exact.items()}
    theta, layout = flatten(params)
    value, grad, H = loss_gradient_hessian(loss, params)
    H = H.cpu().double()
    reference = None
    if config.torch_dtype != torch.float64:
        reference = hessian(loss, {k: v.to(config.device, torch.float64) for k, v in exact.items()}).cpu()
    rounding = rounding_estimate(params, config.source, tying=config.tying, hessian=H, memory=config.memory)
    floor = max(1.0, theta.abs().max().item()) ** 2  # entries: sums of products of two logit derivatives
    return MeasuredPoint(config, params, theta, layout, value, grad.cpu().double(), H,
                         estimated_spectrum(H, reference=reference, floor=floor), rounding.loss, rounding.gradient)


def classify(spectrum: Spectrum, normal_dim: int) -> str:
    """Morse-Bott classification of a point of a critical manifold of codimension ``normal_dim``.

    The tangent space lies in the Hessian's kernel, so the point is a local minimum when exactly
    ``normal_dim`` eigenvalues are decidedly nonzero and all are positive, a saddle when one is
    decidedly negative, and undecided otherwise.
    """
    if (spectrum.values < -spectrum.bounds).any():
        return "saddle point"
    if int((spectrum.values > spectrum.bounds).sum()) == normal_dim:
        return "local minimum"
    return "undecided"
