"""The one-hot model's block on M_π for k symbols (numerics.manifold.multistate_curvature, SPEC §11, §12).

The reference is the autograd Hessian of the exact k-ary population loss (numerics.population.chain_loss, every
sequence) in the normal coordinates (E, b), untied (E, A, b), at points of M_π with every other weight random:
any depth, memory and layer norm.  At θ_π the block must reproduce §11's closed spectrum (theory.multistate), and
at k = 2 the binary block of numerics.manifold (the one-hot E_1 - E_0 is e: the Schur complement doubles).
"""

import numpy as np
import pytest
import torch
from torch.func import hessian

import numerics.transformer as model
from numerics.manifold import (
    LOCAL_MINIMUM,
    SADDLE_POINT,
    manifold_curvature,
    multistate_curvature,
    project_onehot_to_manifold,
    project_to_manifold,
)
from numerics.markov import FiniteChain, InvalidInputError, MarkovChain
from numerics.population import chain_loss
from numerics.transformer import init_params, onehot_from_scalar
from theory.multistate import closed_form_spectrum

#: not reversible (π_i P_ij ≠ π_j P_ji), so C_m ≠ C_mᵀ and an index slip between c and c' shows
CHAIN = FiniteChain(np.array([[0.1, 0.6, 0.3], [0.5, 0.2, 0.3], [0.2, 0.2, 0.6]]))


def _point(tying: bool, layers: int, layer_norm: bool, *, d: int = 3, seq_len: int = 4, seed: int = 3) -> dict:
    """A point of M_π of ``CHAIN`` with every block weight, position and layer-norm parameter random."""
    params = init_params(d, seq_len, layers=layers, layer_norm=layer_norm, tying=tying, std=0.7, seed=seed,
                         symbols=CHAIN.k)
    gen = torch.Generator().manual_seed(seed + 1)
    params = {k: v + 0.4 * torch.randn(v.shape, generator=gen, dtype=v.dtype) if k.startswith("ln_") else v
              for k, v in params.items()}
    return project_onehot_to_manifold(params, CHAIN, tying=tying)


def _dense_block(params: dict, chain, tying: bool, memory: int | None) -> torch.Tensor:
    """The autograd Hessian of the exact loss in (E, b), untied (E, A, b), in the block's order."""
    names = ["E", "b"] if tying else ["E", "A", "b"]
    shapes, sizes = [params[n].shape for n in names], [params[n].numel() for n in names]

    def loss(c):
        parts = {n: x.reshape(s) for n, x, s in zip(names, c.split(sizes), shapes)}
        return chain_loss(params | parts, chain, tying=tying, memory=memory)

    return hessian(loss)(torch.cat([params[n].reshape(-1) for n in names]))


CASES = [(tying, layers, memory, layer_norm) for tying in (True, False)
         for layers, memory, layer_norm in ((1, None, False), (1, 1, False), (2, 2, True), (2, None, False))]


@pytest.mark.parametrize(("tying", "layers", "memory", "layer_norm"), CASES)
def test_the_block_is_the_dense_hessian_of_the_exact_loss(tying, layers, memory, layer_norm):
    params = _point(tying, layers, layer_norm)
    found = multistate_curvature(params, CHAIN, tying=tying, memory=memory)
    dense = _dense_block(params, CHAIN, tying, memory)
    assert (found.block - dense).abs().max().item() < 1e-12
    # the block's nonzero spectrum is the restricted block's; the gauge directions (E, A → + 1vᵀ, b → + t1) are 0
    zeros = (1 if tying else 2) * params["E"].shape[1] + 1
    spectrum = torch.linalg.eigvalsh(dense)
    assert spectrum[spectrum.abs().argsort()][:zeros].abs().max().item() < 1e-12
    nonzero = spectrum[spectrum.abs().argsort()][zeros:].sort().values
    assert torch.allclose(nonzero, found.eigenvalues, atol=1e-12)
    assert found.classification in (LOCAL_MINIMUM, SADDLE_POINT) and found.error_bound < 1e-6


def test_the_block_with_the_time_reversed_chain_is_not_the_hessian():
    """The reversed chain has the same π (so the same M_π) and C_m transposed: a block that mixed up which symbol
    comes first would match it instead."""
    pi, P = CHAIN.pi, CHAIN.transition
    reversed_chain = FiniteChain(pi[None, :] * P.T / pi[:, None])
    params = _point(True, 1, False)
    dense = _dense_block(params, CHAIN, True, None)
    wrong = multistate_curvature(params, reversed_chain, tying=True).block
    assert (wrong - dense).abs().max().item() > 1e-3


def test_a_leaky_mask_makes_the_block_differ_from_the_dense_hessian(monkeypatch):
    params = _point(True, 2, False)
    honest = multistate_curvature(params, CHAIN, tying=True, memory=1).block
    monkeypatch.setattr(model, "attention_mask", lambda n, memory=None, device="cpu":
                        torch.ones(n, n, dtype=torch.bool, device=device))
    leaky = multistate_curvature(params, CHAIN, tying=True, memory=1).block
    assert (leaky - _dense_block(params, CHAIN, True, 1)).abs().max().item() > 1e-3
    assert (honest - leaky).abs().max().item() > 1e-3


@pytest.mark.parametrize("tying", [True, False])
def test_theta_pi_gives_the_closed_spectrum_of_spec_11(tying):
    d = 2
    params = project_onehot_to_manifold(init_params(d, 5, tying=tying, std=0.0, symbols=CHAIN.k), CHAIN, tying=tying)
    found = multistate_curvature(params, CHAIN, tying=tying)
    expected = np.sort(closed_form_spectrum(CHAIN.transition, d, tying))
    assert found.eigenvalues.numpy() == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("tying", [True, False])
def test_at_two_symbols_the_schur_complement_is_twice_the_scalar_one(tying):
    p, q = 0.3, 0.6
    scalar = project_to_manifold(init_params(3, 5, layers=2, tying=tying, std=0.7, seed=2), p, q, tying=tying)
    onehot = multistate_curvature(onehot_from_scalar(scalar, tying=tying), MarkovChain(p, q), tying=tying)
    binary = manifold_curvature(scalar, p, q, tying=tying)
    # U = (1, -1)/√2 on 1^⊥: the coordinate (E_1 - E_0)/√2 is e/√2, so the curvature along it doubles
    assert onehot.schur_eigenvalues.numpy() == pytest.approx(2 * binary.schur_eigenvalues.numpy(), abs=1e-12)
    assert onehot.classification == binary.classification


def test_a_saddle_has_a_unit_escape_direction_without_gauge_parts():
    found = multistate_curvature(_point(True, 1, False), CHAIN, tying=True)
    assert found.classification == SADDLE_POINT
    v = torch.cat([found.escape_direction["E"].reshape(-1), found.escape_direction["b"]])
    assert v.norm().item() == pytest.approx(1.0, abs=1e-12)
    assert found.escape_direction["E"].sum(dim=0).abs().max().item() < 1e-12  # on 1^⊥ in the symbol index
    assert v @ found.block @ v == pytest.approx(found.min_eigenvalue, abs=1e-12)


@pytest.mark.parametrize("change, message", [
    (lambda p: p | {"E": p["E"] + 0.1}, "E must be 0"),
    (lambda p: p | {"b": p["b"] + torch.tensor([0.0, 0.1, 0.0], dtype=torch.float64)}, "softmax(b) must be π"),
    (lambda p: p | {"E": torch.zeros(2, 3, dtype=torch.float64)}, "k=2 symbols, the source 3"),
    (lambda p: {k: v for k, v in p.items() if k != "E"}, "not the one-hot model"),
])
def test_points_off_the_manifold_or_of_another_model_are_refused(change, message):
    with pytest.raises(InvalidInputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        multistate_curvature(change(_point(True, 1, False)), CHAIN, tying=True)
