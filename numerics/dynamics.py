"""Gradient flow of the Local to Global canonical model (claims L2G-ENERGY, L2G-BASINS, L2G-GAUSS-INIT).

θ = (e, w, b), logits z_x = e²κ(w)x + b − e²/2 with κ(w) = 1 + 2w|w| (``theory.canonical``), loss
L(θ) = Σ_x π_x [P(1|x) softplus(−z_x) + P(0|x) softplus(z_x)] (nats).  Two flows:

* joint: θ' = −∇L(θ);
* b-profiled: (e, w)' = −∇L̃(e, w), L̃(e, w) = L(e, w, b*(e, w)), with ∇L̃ = ∇_{(e,w)}L at b* (the
  envelope theorem: ∂L/∂b = 0 at b*, claim L2G-BIAS).

The energy E(e, w) = e² − w² − sign(w) log|w| is conserved by the profiled flow and changes by
dE = −2e² db along the joint one (both proven in ``theory.canonical``); ``integrate`` measures both: the
profiled drift max_t |E(t) − E(0)|, and for the joint flow the residual |E(T) − E(0) − A(T)| of an
accumulator A' = −2e² b' integrated with the state.

Numerics.  The logits with their first and second derivatives, b* and E are lambdified from
``theory.canonical`` (built once per process); σ and softplus are scipy's ``expit`` and numpy's
``logaddexp`` (the symbolic forms overflow beyond |z| ≈ 709).  Many starts are integrated as one system,
in batches, by ``scipy.integrate.solve_ivp`` with the stiff solver BDF and the analytic block-diagonal
Jacobian (−∇²L; profiled: −∇²L̃ = −(H_uu − H_ub H_buᵀ / H_bb) at b*, u = (e, w), the Schur complement
over b by the implicit-function theorem).  solve_ivp's error norm is an RMS over all components, so rtol and atol
are divided by √(number of components): every component's local error estimate stays within
rtol·|y| + atol, as for a trajectory integrated alone.

Endpoint labels (``label_endpoints``): "global" when |L − H_rate| ≤ loss_tol, "unigram" when |L − H(π)| ≤ loss_tol
at a point of e = 0 that is a local minimum ((p + q − 1)κ(w) > 0, claim L2G), both only where the flow
has settled (|∇L| ≤ grad_tol); "undecided" otherwise, and wherever H(π) − H_rate ≤ 2 loss_tol (near
p + q = 1 the two targets cannot be told apart).

The energy's basins (claim L2G-BASINS, read from the fills of the authors' region plots), with E_s = −(1 + log 2)/2:
the unigram line attracts {w < −1/√2, E < E_s} when p + q < 1, and {−1/√2 < w < 0, E < E_s} ∪ {w > 0}
when p + q > 1; every other start goes to the global locus (``predicted_basin``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache

import numpy as np
import sympy as sp
from scipy import sparse
from scipy.integrate import solve_ivp
from scipy.special import expit

from numerics.markov import MarkovChain
from theory import canonical as C
from theory.markov import p as P_SYMBOL
from theory.markov import q as Q_SYMBOL

MODES = ("profiled", "joint")
SEPARATRIX = float(C.SEPARATRIX)
SADDLE_W = float(C.SADDLE_W)
#: labels of an endpoint
GLOBAL, UNIGRAM, UNDECIDED = "global", "unigram", "undecided"


@dataclass(frozen=True)
class Integration:
    """How the flows are integrated and their endpoints labelled (reported with every result).

    ``horizon``: the flow time T; ``rtol``, ``atol``: solve_ivp's tolerances per component; ``loss_tol``,
    ``grad_tol``: an endpoint is labelled when its loss is within loss_tol (nats) of H(π) or H_rate and
    |∇L| ≤ grad_tol; ``samples``: times (log-spaced in (0, T]) at which the energy is read off.
    """

    horizon: float = 2000.0
    rtol: float = 1e-7
    atol: float = 1e-9
    method: str = "BDF"
    loss_tol: float = 1e-7
    grad_tol: float = 1e-6
    samples: int = 40
    batch: int = 256

    def as_dict(self) -> dict:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


@cache
def _compiled() -> dict[str, Callable]:
    """The lambdified pieces of the model, built once (one call each: lambdify's per-call overhead dominates).

    "first": (e, w, b) → [z0, z1, ∇z0 (3), ∇z1 (3)]; "second": → [∇²z0 (9), ∇²z1 (9)]; "bias" and
    "bias_rationalised": (p, q, e, w) → b*; "energy": (e, w) → E; "slope": w → κ(w).
    """
    coords = C.COORDS
    z = C.logits(C.slope())
    first = [*z, *(sp.diff(zx, c) for zx in z for c in coords)]
    # d²(w|w|)/dw² = 2 sign(w) + 2w δ(w), and w δ(w) = 0: drop the delta (lambdify has no numeric δ)
    second = [sp.diff(zx, a, c).replace(sp.DiracDelta, lambda *_: sp.Integer(0))
              for zx in z for a in coords for c in coords]
    bias = (P_SYMBOL, Q_SYMBOL, C.e, C.w)

    def compile_bias(rationalised: bool) -> Callable:
        return sp.lambdify(bias, C.optimal_bias(C.slope(), rationalised=rationalised), modules="numpy", cse=True)

    return {
        "first": sp.lambdify(coords, first, modules="numpy", cse=True),
        "second": sp.lambdify(coords, second, modules="numpy", cse=True),
        "bias": compile_bias(False),
        "bias_rationalised": compile_bias(True),
        "energy": sp.lambdify((C.e, C.w), C.energy(), modules="numpy"),
        "slope": sp.lambdify(C.w, C.slope(), modules="numpy"),
    }


def energy(e: np.ndarray, w: np.ndarray) -> np.ndarray:
    """E(e, w) = e² − w² − sign(w) log|w| (claim L2G-ENERGY); NaN on w = 0, where it is undefined."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(w == 0, np.nan, _compiled()["energy"](e, w))


def slope(w: np.ndarray) -> np.ndarray:
    """κ(w) = 1 + 2w|w|."""
    return _compiled()["slope"](w)


def _arrays(values: list, like: np.ndarray) -> np.ndarray:
    """Stack lambdify's outputs (constant entries come back as plain numbers) to shape (len(values), *like.shape)."""
    return np.stack([np.broadcast_to(np.asarray(value, dtype=float), np.shape(like)) for value in values])


@dataclass(frozen=True)
class CanonicalModel:
    """The canonical model at one chain (p, q): loss, gradient, Hessian, b*, profiled flow; arrays of points."""

    chain: MarkovChain

    @property
    def weights(self) -> tuple[np.ndarray, np.ndarray]:
        """(π_x, P(1|x)) for x = 0, 1."""
        return np.array(self.chain.pi), np.array([self.chain.p, 1 - self.chain.q])

    def _first(self, e, w, b) -> tuple[np.ndarray, np.ndarray]:
        """(z, ∇z): the logits, shape (2, n), and their gradients, shape (2, 3, n)."""
        values = _arrays(_compiled()["first"](e, w, b), np.asarray(e, dtype=float))
        return values[:2], values[2:].reshape(2, 3, *values.shape[1:])

    def logits(self, e, w, b) -> np.ndarray:
        return self._first(e, w, b)[0]

    def loss(self, e, w, b) -> np.ndarray:
        """L in nats with softplus as logaddexp(0, ·): exact for logits of any size."""
        pi, one = self.weights
        z = self.logits(e, w, b)
        return sum(pi[x] * (one[x] * np.logaddexp(0, -z[x]) + (1 - one[x]) * np.logaddexp(0, z[x])) for x in (0, 1))

    def _logit_terms(self, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """∂L/∂z_x = π_x(σ(z_x) − P(1|x)) and ∂²L/∂z_x² = π_x σ(z_x)(1 − σ(z_x)), each shape (2, n)."""
        pi, one = self.weights
        shape = (2,) + (1,) * (z.ndim - 1)
        sig = expit(z)
        return pi.reshape(shape) * (sig - one.reshape(shape)), pi.reshape(shape) * sig * (1 - sig)

    def gradient(self, e, w, b) -> np.ndarray:
        """∇L = Σ_x ∂L/∂z_x ∇z_x, shape (3, n) for (e, w, b)."""
        z, J = self._first(e, w, b)
        g, _ = self._logit_terms(z)
        return np.einsum("x...,xi...->i...", g, J)

    def hessian(self, e, w, b) -> np.ndarray:
        """∇²L = Σ_x [∂²L/∂z_x² ∇z_x ∇z_xᵀ + ∂L/∂z_x ∇²z_x], shape (3, 3, n)."""
        z, J = self._first(e, w, b)
        g, c = self._logit_terms(z)
        Hz = _arrays(_compiled()["second"](e, w, b), np.asarray(e, dtype=float)).reshape(2, 3, 3, *z.shape[1:])
        return np.einsum("x...,xi...,xj...->ij...", c, J, J) + np.einsum("x...,xij...->ij...", g, Hz)

    def optimal_bias(self, e, w) -> np.ndarray:
        """b*(e, w) (claim L2G-BIAS), in whichever closed form adds two positive terms (p ≥ q or not)."""
        form = "bias" if self.chain.p >= self.chain.q else "bias_rationalised"
        return np.asarray(_compiled()[form](self.chain.p, self.chain.q, e, w), dtype=float)

    def profiled_gradient(self, e, w) -> np.ndarray:
        """∇L̃ = ∇_{(e,w)} L at b*, shape (2, n)."""
        return self.gradient(e, w, self.optimal_bias(e, w))[:2]

    def profiled_hessian(self, e, w) -> np.ndarray:
        """∇²L̃ = H_uu − H_ub H_buᵀ / H_bb at b* (u = (e, w)), shape (2, 2, n)."""
        H = self.hessian(e, w, self.optimal_bias(e, w))
        return H[:2, :2] - H[:2, 2:3] * H[2:3, :2] / H[2, 2]


def _block_diagonal(blocks: np.ndarray) -> sparse.csc_matrix:
    """The (m n × m n) matrix whose entry (i n + k, j n + k) is blocks[i, j, k] (state laid out component-major)."""
    m, _, n = blocks.shape
    k = np.arange(n)
    rows = np.concatenate([np.full(n, i * n) + k for i in range(m) for _ in range(m)])
    cols = np.concatenate([np.full(n, j * n) + k for _ in range(m) for j in range(m)])
    return sparse.csc_matrix((blocks.reshape(-1), (rows, cols)), shape=(m * n, m * n))


def _vector_field(model: CanonicalModel, mode: str, n: int):
    """The right-hand side and its Jacobian for ``n`` starts: profiled (e, w), joint (e, w, b, A), A' = −2e²b'."""
    if mode == "profiled":
        def rhs(_t, y):
            return -model.profiled_gradient(y[:n], y[n:]).reshape(-1)

        def jac(_t, y):
            return _block_diagonal(-model.profiled_hessian(y[:n], y[n:]))
        return rhs, jac

    def rhs(_t, y):
        e, w, b = y[:n], y[n:2 * n], y[2 * n:3 * n]
        g = model.gradient(e, w, b)
        return np.concatenate([-g.reshape(-1), 2 * e**2 * g[2]])  # A' = −2e² b' = 2e² ∂L/∂b

    def jac(_t, y):
        e, w, b = y[:n], y[n:2 * n], y[2 * n:3 * n]
        g, H = model.gradient(e, w, b), model.hessian(e, w, b)
        blocks = np.zeros((4, 4, n))
        blocks[:3, :3] = -H
        blocks[3, :3] = 2 * e**2 * H[2]
        blocks[3, 0] += 4 * e * g[2]
        return _block_diagonal(blocks)
    return rhs, jac


@dataclass
class FlowResult:
    """The flows from ``start`` (n × 3: e, w, b; profiled: b = b*(e, w) throughout) to ``end`` at time T."""

    mode: str
    start: np.ndarray
    end: np.ndarray
    loss: np.ndarray
    grad_norm: np.ndarray
    labels: np.ndarray
    energy_drift: np.ndarray  # profiled: max over the sample times of |E(t) − E(0)|; joint: NaN
    joint_residual: np.ndarray  # joint: |E(T) − E(0) − A(T)|, A = −2∫e² db; profiled: NaN
    energy_change: np.ndarray  # E(T) − E(0)
    times: np.ndarray  # the sample times, log-spaced in (0, T]
    path: np.ndarray  # (n, 2, samples): (e, w) at the sample times
    failures: list[str] = field(default_factory=list)  # solve_ivp messages of batches that did not finish

    @property
    def counts(self) -> dict[str, int]:
        return {label: int(np.sum(self.labels == label)) for label in (GLOBAL, UNIGRAM, UNDECIDED)}


def label_endpoints(model: CanonicalModel, end: np.ndarray, loss: np.ndarray, grad_norm: np.ndarray,
                    integration: Integration) -> np.ndarray:
    """"global" / "unigram" / "undecided" for each endpoint (module docstring)."""
    chain = model.chain
    settled = grad_norm <= integration.grad_tol
    labels = np.full(len(loss), UNDECIDED, dtype=object)
    if chain.mutual_information() <= 2 * integration.loss_tol:
        return labels
    stable_line = (chain.p + chain.q - 1) * slope(end[:, 1]) > 0
    labels[settled & (np.abs(loss - chain.entropy_rate()) <= integration.loss_tol)] = GLOBAL
    labels[settled & stable_line & (np.abs(loss - chain.unigram_loss()) <= integration.loss_tol)] = UNIGRAM
    return labels


def integrate(model: CanonicalModel, starts: np.ndarray, mode: str, integration: Integration = Integration(),
              progress: Callable[[int], object] | None = None) -> FlowResult:
    """Integrate the ``mode`` flow from each row (e, w, b) of ``starts`` (profiled: b is ignored, b = b*).

    ``progress`` is called with the number of starts of each batch when it is done (e.g. a tqdm bar's update).
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    starts = np.asarray(starts, dtype=float).reshape(-1, 3)
    total = len(starts)
    ends, drifts, residuals, paths, failures = [], [], [], [], []
    times = integration.horizon * np.logspace(-6, 0, integration.samples)
    for offset in range(0, total, integration.batch):
        chunk = starts[offset:offset + integration.batch]
        n = len(chunk)
        e0, w0 = chunk[:, 0], chunk[:, 1]
        y0 = (np.concatenate([e0, w0]) if mode == "profiled"
              else np.concatenate([e0, w0, chunk[:, 2], np.zeros(n)]))
        rhs, jac = _vector_field(model, mode, n)
        scale = math.sqrt(y0.size)  # per-component tolerances under solve_ivp's RMS norm
        sol = solve_ivp(rhs, (0.0, integration.horizon), y0, method=integration.method, jac=jac,
                        t_eval=times, rtol=integration.rtol / scale, atol=integration.atol / scale)
        if sol.status != 0:
            failures.append(sol.message)
        if sol.y.shape[1] < len(times):  # stopped early: hold the last state reached
            sol.y = np.column_stack([sol.y, np.repeat((sol.y[:, -1:] if sol.y.shape[1] else y0[:, None]),
                                                      len(times) - sol.y.shape[1], axis=1)])
        y = sol.y.reshape(len(y0) // n, n, -1)  # component, start, time
        e_t, w_t = y[0], y[1]
        paths.append(np.stack([e_t, w_t], axis=1))
        E0 = energy(e0, w0)
        end_b = model.optimal_bias(e_t[:, -1], w_t[:, -1]) if mode == "profiled" else y[2, :, -1]
        ends.append(np.stack([e_t[:, -1], w_t[:, -1], end_b], axis=1))
        with np.errstate(invalid="ignore"):
            E_t = energy(e_t, w_t)
            if mode == "profiled":
                drifts.append(np.max(np.abs(E_t - E0[:, None]), axis=1))
                residuals.append(np.full(n, np.nan))
            else:
                drifts.append(np.full(n, np.nan))
                residuals.append(np.abs(E_t[:, -1] - E0 - y[3, :, -1]))
        if progress is not None:
            progress(n)
    end = np.concatenate(ends)
    if mode == "profiled":
        starts = np.column_stack([starts[:, :2], model.optimal_bias(starts[:, 0], starts[:, 1])])
        grad = model.profiled_gradient(end[:, 0], end[:, 1])
    else:
        grad = model.gradient(end[:, 0], end[:, 1], end[:, 2])
    loss = model.loss(end[:, 0], end[:, 1], end[:, 2])
    grad_norm = np.sqrt(np.sum(grad**2, axis=0))
    with np.errstate(invalid="ignore"):
        change = energy(end[:, 0], end[:, 1]) - energy(starts[:, 0], starts[:, 1])
    return FlowResult(mode, starts, end, loss, grad_norm, label_endpoints(model, end, loss, grad_norm, integration),
                      np.concatenate(drifts), np.concatenate(residuals), change, times, np.concatenate(paths), failures)


def predicted_basin(chain: MarkovChain, e: np.ndarray, w: np.ndarray) -> np.ndarray:
    """The label the energy predicts for each start (claim L2G-BASINS); "undecided" when p + q = 1.

    p + q < 1: unigram iff w < −1/√2 and E < E_s; p + q > 1: unigram iff w ≥ 0, or −1/√2 < w < 0 and
    E < E_s (w = 0 is invariant and its neighbours on both sides are unigram); else global.
    """
    with np.errstate(invalid="ignore"):
        below = energy(e, w) < SEPARATRIX
    margin = chain.p + chain.q - 1
    if margin < 0:
        unigram = (w < SADDLE_W) & below
    elif margin > 0:
        unigram = (w >= 0) | ((w > SADDLE_W) & below)
    else:
        return np.full(np.shape(e), UNDECIDED, dtype=object)
    return np.where(unigram, UNIGRAM, GLOBAL).astype(object)


def grid(size: int, extent: float) -> tuple[np.ndarray, np.ndarray]:
    """Cell centres of a size × size grid on [−extent, extent]², as flat arrays (e, w)."""
    axis = (np.arange(size) + 0.5) / size * 2 * extent - extent
    e, w = np.meshgrid(axis, axis, indexing="ij")
    return e.ravel(), w.ravel()


def gaussian_starts(count: int, std: float, seed: int) -> np.ndarray:
    """``count`` seeded draws of (e, w, b) ~ N(0, std² I₃)."""
    return np.random.default_rng(seed).normal(0.0, std, size=(count, 3))
