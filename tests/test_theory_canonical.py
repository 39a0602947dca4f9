"""The canonical model of Local to Global (theory/canonical.py): every identity proven, and failing on a
corrupted model; the closed forms against independent numbers."""

import math

import numpy as np
import pytest
import sympy as sp
from scipy.optimize import minimize_scalar

from paper_refs import claims
from theory import canonical as C
from theory import landscape as T
from theory.markov import p, q

ALL = C.results()
NAMES = {r.name for r in ALL}


def _clear_caches() -> None:
    for value in vars(C).values():
        if hasattr(value, "cache_clear"):
            value.cache_clear()


_original = {name: getattr(C, name) for name in ("slope", "logit", "optimal_bias", "energy")}
#: (case, function replaced, its corrupt version, the results recomputed, names that must then fail); each side
#: of w = 0 of the energy statements is recomputed under one corruption only (a corrupted profiled flow is the
#: slowest reduction)
CORRUPTIONS = [
    ("w|w| with the wrong sign", "slope", lambda w_=C.w: 1 - 2 * w_ * sp.Abs(w_),
     lambda: [*C.loss_results(), *C.saddle_results(), *C.energy_side_results(1)],
     {r.name for r in (*C.loss_results(), *C.saddle_results(), *C.energy_side_results(1))}),
    ("w|w| replaced by w", "slope", lambda w_=C.w: 1 + 2 * w_, C.energy_point_results,
     {C.energy_point_results()[0].name}),
    ("logit's bias off by log 2", "logit", lambda x, k=C.kappa: _original["logit"](x, k) + sp.log(2),
     lambda: [*C.locus_results(), *C.line_results(), C.bias_results()[0]],
     {r.name for r in (*C.locus_results(), *C.line_results()[:3], C.bias_results()[0])}),
    ("position term -e/2 instead of -e^2/2", "logit",
     lambda x, k=C.kappa: _original["logit"](x, k) + C.e**2 / 2 - C.e / 2, C.line_results, {C.line_results()[3].name}),
    ("b* off by log 2", "optimal_bias", lambda k=C.kappa: _original["optimal_bias"](k) + sp.log(2), C.bias_results,
     {r.name for r in C.bias_results()}),
    ("energy with the wrong sign of the log", "energy",
     lambda e_=C.e, w_=C.w: e_**2 - w_**2 + sp.sign(w_) * sp.log(sp.Abs(w_)),
     lambda: [*C.energy_side_results(-1), *C.energy_point_results()[1:]],
     {r.name for r in (*C.energy_side_results(-1), *C.energy_point_results()[1:])}),
]


@pytest.fixture(scope="module")
def corrupted_failures():
    """{case: names of the results that are not proven under that corruption}, each derived afresh."""
    failures = {}
    for case, name, corrupt, derive, _ in CORRUPTIONS:
        setattr(C, name, corrupt)
        _clear_caches()
        try:
            failures[case] = {r.name for r in derive() if r.proven is not True}
        finally:
            setattr(C, name, _original[name])
            _clear_caches()  # nothing derived from a corrupted model may outlive the fixture
    return failures


def test_every_identity_is_proven_and_registered_under_its_claim():
    assert all(r.proven is True for r in ALL), [r.name for r in ALL if not r.proven]
    registered = {c["id"]: set(c["checks"]) for c in claims()}
    assert all(r.name in registered[r.claim] for r in ALL) and len(NAMES) == len(ALL)
    assert {r.claim for r in ALL} == {"L2G", "L2G-BIAS", "L2G-ENERGY"}


@pytest.mark.parametrize("case, expected", [(c[0], c[4]) for c in CORRUPTIONS], ids=[c[0] for c in CORRUPTIONS])
def test_a_corrupted_model_breaks_the_identities(case, expected, corrupted_failures):
    assert expected <= corrupted_failures[case], expected - corrupted_failures[case]


def test_every_identity_fails_under_some_corruption(corrupted_failures):
    assert NAMES - set().union(*corrupted_failures.values()) == set()


def test_curvature_on_the_line_matches_the_reference_numbers():
    """paper-notes §3.3: −0.994083 at (0.5, 0.8), 1.680 at (0.2, 0.3), both at w = −2."""
    curvature = C.line_results()[2].form.subs(C.kappa, C.slope().subs(C.w, -2))
    assert float(curvature.subs({p: 0.5, q: 0.8})) == pytest.approx(-0.994083, abs=1e-6)
    assert float(curvature.subs({p: 0.2, q: 0.3})) == pytest.approx(1.680, abs=1e-12)


@pytest.mark.parametrize("pq, rate", [((0.5, 0.8), 0.619015), ((0.2, 0.3), 0.544587)])
def test_the_locus_reaches_the_entropy_rate(pq, rate):
    """A point of the locus e²κ = α on the side the sign of α allows, with b = β + e²/2: L = H_rate."""
    values = dict(zip((p, q), pq))
    alpha, beta = float(T.alpha.subs(values)), float(T.beta.subs(values))
    w_value = -2.0 if alpha < 0 else 0.5  # κ must share α's sign
    k = 1 + 2 * w_value * abs(w_value)
    e_value = math.sqrt(alpha / k)
    point = values | {C.kappa: k, C.e: e_value, C.b: beta + e_value**2 / 2}
    assert float(C.loss().subs(point)) == pytest.approx(rate, abs=1e-6)


def test_optimal_bias_is_the_numerical_argmin():
    """b*(e, w) from the closed form against a bounded scalar minimisation of L in b (no shared code)."""
    rng = np.random.default_rng(3)
    loss = sp.lambdify((p, q, C.e, C.kappa, C.b), C.loss(), modules="numpy")
    forms = [sp.lambdify((p, q, C.e, C.kappa), C.optimal_bias(rationalised=r), modules="numpy") for r in (0, 1)]
    for _ in range(6):
        pv, qv = rng.uniform(0.05, 0.95, 2)
        e_value, w_value = rng.uniform(-1.5, 1.5, 2)
        k = 1 + 2 * w_value * abs(w_value)
        found = minimize_scalar(lambda bv, args=(pv, qv, e_value, k): loss(*args, bv), bounds=(-30, 30),
                                method="bounded", options={"xatol": 1e-10})
        for form in forms:
            assert float(form(pv, qv, e_value, k)) == pytest.approx(found.x, abs=1e-6)


def test_separatrix_level_and_the_stable_bias_forms():
    assert float(C.SEPARATRIX) == pytest.approx(-0.8465735902799727, rel=1e-15)
    both = [sp.lambdify((p, q, C.D), form) for form in (C.bias_root(C.D), C.bias_root_rationalised(C.D))]
    for pv, qv, d in [(0.2, 0.3, 0.5), (0.9, 0.1, 3.0), (0.5, 0.5, 1e-3)]:
        assert both[0](pv, qv, d) == pytest.approx(both[1](pv, qv, d), rel=1e-12)
