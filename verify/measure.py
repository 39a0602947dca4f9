"""Measurement of one parameter point of the full model, with the error estimates the checks need.

A point is measured once (``measure``): its exact population loss, the gradient over all D
parameters, the dense Hessian and its spectrum with an a-posteriori error estimate
(``numerics.curvature.estimated_spectrum``; a float32 run is re-evaluated in float64 for it),
and ``rounding``: an estimate of the rounding error of one loss evaluation, which every check
that compares losses at nearby points uses as its resolution.  ``verify.checks`` turns these
measurements into per-claim checks.
"""

from __future__ import annotations

import math
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
from numerics.markov import num_prefixes
from numerics.population import chain_loss
from numerics.transformer import Params
from verify.cli import Config

#: (gradient, relative loss, relative eigenvalue) tolerances per dtype: what a comparison allows on
#: top of the measured error estimates (spectrum, loss rounding), about 100 ulps of float32 and a
#: margin of 1e-9 in float64 (where the estimates are tight).
TOLERANCE = {"float64": (1e-10, 1e-12, 1e-9), "float32": (1e-4, 1e-5, 1e-5)}


def loss_of(config: Config) -> Callable[[Params], Tensor]:
    """θ ↦ L(θ), the exact population loss for the configured source and tying (nats), in θ's dtype."""
    return lambda params: chain_loss(params, config.source, tying=config.tying)


def loss_rounding(value: float, num_prefixes: int, dtype: torch.dtype) -> float:
    """Estimated rounding error of one exact-loss evaluation: 16 ⌈log₂ P⌉ ε (|L| + 1).

    The loss is a probability-weighted sum of P positive terms (pairwise summation: error
    ⌈log₂ P⌉ ε |L|), each the cross-entropy of a logit that is itself a sum of O(d) products
    (error O(ε) per unit of logit; the +1 covers logits of order one).  The factor 16 is the
    margin; ``tests/test_verify.py`` checks that it covers |L₃₂ - L₆₄| at random points.
    """
    return 16 * math.ceil(math.log2(num_prefixes)) * torch.finfo(dtype).eps * (abs(value) + 1.0)


@dataclass
class MeasuredPoint:
    """A parameter point with its loss, gradient, Hessian spectrum and loss resolution."""

    config: Config
    params: Params
    theta: Tensor
    layout: list
    value: float
    grad_max: float
    hessian: Tensor  # D × D, float64 on the CPU
    spectrum: Spectrum
    rounding: float  # estimated rounding error of one loss evaluation

    def losses_at(self, steps: Tensor, *, float64: bool = False) -> Tensor:
        """L(θ + s) - L(θ) for a batch of flat steps s (rows), as float64 on the CPU.

        ``float64``: evaluated in float64 at the run's point (a float32 run's θ, rounded to float32).
        """
        theta = self.theta.double() if float64 else self.theta
        loss = vmap(lambda th: loss_of(self.config)(unflatten(th, self.layout)))
        base = loss(theta[None])[0].item() if float64 else self.value
        return loss(theta + steps.to(theta)).cpu().double() - base

    def float64_rounding(self) -> float:
        """``rounding`` of a float64 evaluation of the loss at this point."""
        prefixes = num_prefixes(self.config.source.k, self.params["pos"].shape[0])
        return loss_rounding(self.value, prefixes, torch.float64)

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
    prefixes = num_prefixes(config.source.k, params["pos"].shape[0])
    floor = max(1.0, theta.abs().max().item()) ** 2  # entries: sums of products of two logit derivatives
    return MeasuredPoint(config, params, theta, layout, value, grad.abs().max().item(), H,
                         estimated_spectrum(H, reference=reference, floor=floor),
                         loss_rounding(value, prefixes, config.torch_dtype))


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
