"""The autocovariance of a stationary finite-state source: all the data the M_π curvature needs (``MANIFOLD-GENERAL``).

On the unigram manifold M_π the data enter the Hessian only through (SPEC §12)

    C_m = Cov(onehot(x_t), onehot(x_{t+m}))     (k × k, m ≥ 1; entry (b, a) = P(x_t = b, x_{t+m} = a) - π_b π_a)

and, for a binary source read as x ∈ {0, 1}, through its scalar c(m) = Cov(x_t, x_{t+m}) = (C_m)_{11}, with
c(0) = π0 π1.  Every source here is a function of a first-order chain: the symbol x_t = o(s_t) of a hidden
state s_t with kernel Q (s × s) and stationary law μ (the first-order chain: s = x; the second-order source:
s_t = (x_{t-1}, x_t), the pair chain).  With D_μ = diag(μ), Π = 1μᵀ and O the s × k indicator of o,

    C_m = Oᵀ D_μ (Q^m - Π) O = Oᵀ D_μ (Q - Π)^m O,

the second form because Π Q = Q Π = Π² = Π; its powers shrink to 0 with m instead of cancelling against Π.
If Q - Π = V diag(ρ) V⁻¹ (ρ_r: the eigenvalues of Q other than 1, and 0), C_m = Σ_r ρ_r^m M_r with
M_r = Oᵀ D_μ v_r w_rᵀ O: a sum of geometric sequences, which is what lets the curvature of any depth be
computed from a few forward-mode passes (``numerics.manifold``).  First order, binary: one term, ρ = λ =
1 - p - q and c(m) = k λ^m (SPEC §10); the lagged second-order source: ρ = ±√λ (and λ with weight 0 on the
observed symbol), so c(m) = k λ^{m/2} at even m and 0 at odd m (SPEC §12).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from numerics.markov import FiniteChain, InvalidInputError, MarkovChain, SecondOrderChain

Source = MarkovChain | FiniteChain | SecondOrderChain

#: a component whose ρ is this small relative to the largest is 0 in float64 after one step (ρ^1 ≤ 1e-16)
NEGLIGIBLE_RHO = 1e-15


@dataclass(frozen=True)
class Component:
    """One geometric term ρ^m M of C_m: ``rho`` (complex) and ``matrix`` M (k × k complex)."""

    rho: complex
    matrix: np.ndarray


@dataclass(frozen=True)
class Autocovariance:
    """C_m of a stationary source as the hidden chain (Q, μ) and the observation map (see the module doc).

    ``kernel``: Q (s × s); ``stationary``: μ (s,); ``observe``: O (s × k, 0/1); ``name`` for messages.
    """

    kernel: np.ndarray
    stationary: np.ndarray
    observe: np.ndarray
    name: str

    @property
    def symbols(self) -> int:
        return self.observe.shape[1]

    @functools.cached_property
    def pi(self) -> np.ndarray:
        """π = Oᵀ μ, the law of one symbol."""
        return self.observe.T @ self.stationary

    @functools.cached_property
    def variance(self) -> np.ndarray:
        """C_0 = D_π - ππᵀ (k × k); binary: its (1, 1) entry π0 π1 = k of the SPEC."""
        return np.diag(self.pi) - np.outer(self.pi, self.pi)

    @functools.cached_property
    def centred_kernel(self) -> np.ndarray:
        """Q - Π = Q - 1μᵀ, whose powers are Q^m - Π."""
        return self.kernel - np.outer(np.ones(len(self.stationary)), self.stationary)

    def matrices(self, lags: int) -> np.ndarray:
        """C_1, …, C_lags as a (lags, k, k) array, by repeated products with Q - Π (rounding grows like m ε)."""
        left = self.observe.T * self.stationary  # Oᵀ D_μ
        power = np.eye(len(self.stationary))
        out = np.empty((lags, self.symbols, self.symbols))
        for m in range(lags):
            power = power @ self.centred_kernel
            out[m] = left @ power @ self.observe
        return out

    def scalar(self, lags: int) -> np.ndarray:
        """c(1), …, c(lags) of a binary source: Cov(x_t, x_{t+m}) = (C_m)_{11}."""
        self.check_binary()
        return self.matrices(lags)[:, 1, 1]

    def check_binary(self) -> None:
        if self.symbols != 2:
            raise InvalidInputError(f"the scalar autocovariance c(m) needs a binary source; {self.name} has "
                                    f"{self.symbols} symbols")

    @functools.cached_property
    def components(self) -> tuple[Component, ...]:
        """C_m = Σ_r ρ_r^m M_r (m ≥ 1), from the eigen-decomposition of Q - Π; terms with ρ_r = 0 dropped.

        Refused (``InvalidInputError``) when Q - Π is not diagonalisable to working accuracy: the sum of the
        terms must reproduce ``matrices`` at every lag up to 2s + 2 to 1e-9 of C_0's size.
        """
        rho, vectors = np.linalg.eig(self.centred_kernel)
        try:
            inverse = np.linalg.inv(vectors)
        except np.linalg.LinAlgError:
            inverse = None
        scale = max(1.0, float(np.abs(rho).max()))
        terms: list[Component] = []
        if inverse is not None:
            left = (self.observe.T * self.stationary) @ vectors
            right = inverse @ self.observe
            terms = [Component(complex(rho[r]), np.outer(left[:, r], right[r]))
                     for r in range(len(rho)) if abs(rho[r]) > NEGLIGIBLE_RHO * scale]
        lags = 2 * len(self.stationary) + 2
        exact = self.matrices(lags)
        rebuilt = sum((np.power(t.rho, np.arange(1, lags + 1))[:, None, None] * t.matrix for t in terms),
                      np.zeros((lags, self.symbols, self.symbols), dtype=complex))
        error = float(np.abs(rebuilt - exact).max()) if inverse is not None else np.inf
        if not error <= 1e-9 * float(np.abs(self.variance).max()):
            raise InvalidInputError(f"the autocovariance of {self.name} is not a sum of geometric terms to working "
                                    f"accuracy (its hidden chain's kernel is not diagonalisable; error {error:.1g})")
        return tuple(terms)


@dataclass(frozen=True)
class _FirstOrderBinary(Autocovariance):
    """A binary first-order chain: one component, ρ = λ = 1 - p - q, c(m) = π0 π1 λ^m exactly."""

    chain: MarkovChain | None = None

    def scalar(self, lags: int) -> np.ndarray:
        """k λ^m with λ = 1 - p - q from p, q directly: no powers of a rounded Q - Π."""
        pi0, pi1 = self.chain.pi
        return pi0 * pi1 * self.chain.eigenvalue ** np.arange(1, lags + 1, dtype=float)

    @functools.cached_property
    def components(self) -> tuple[Component, ...]:
        pi0, pi1 = self.chain.pi
        lam = self.chain.eigenvalue
        return (Component(complex(lam), pi0 * pi1 * np.array([[1.0, -1.0], [-1.0, 1.0]])),) if lam != 0 else ()


@functools.lru_cache(maxsize=64)
def autocovariance(source: Source) -> Autocovariance:
    """The ``Autocovariance`` of a first-order binary chain, a k-state chain or a binary second-order chain.

    Cached per source (sources are immutable): a training run classifies its M_π projection at every evaluation,
    and each classification reads the source's numbers several times; the eigen-decomposition is done once."""
    if isinstance(source, MarkovChain):
        return _FirstOrderBinary(source.transition, np.array(source.pi), np.eye(2),
                                 f"the chain (p={source.p:g}, q={source.q:g})", source)
    if isinstance(source, FiniteChain):
        return Autocovariance(np.asarray(source.transition, dtype=float), np.asarray(source.pi, dtype=float),
                              np.eye(source.k), f"the {source.k}-state chain")
    if isinstance(source, SecondOrderChain):
        observe = np.zeros((4, 2))
        observe[np.arange(4), np.arange(4) % 2] = 1.0  # state (a, b) = 2a + b shows its current symbol b
        return Autocovariance(source.pair_transition, source.pair_law.reshape(-1), observe,
                              "the second-order chain")
    raise InvalidInputError(f"no autocovariance for a source of type {type(source).__name__}")
