"""The data source: a stationary first-order Markov chain, binary (claim ID ``SRC``) or on k symbols.

Binary (``MarkovChain``): states {0, 1}, kernel ``P = [[1-p, p], [q, 1-q]]`` with
``P[i, j] = P(x_{n+1}=j | x_n=i)``, stationary law ``π = (q, p) / (p + q)``.  k states
(``FiniteChain``): any primitive k×k transition matrix, named presets (``preset``) and random
Dirichlet chains.  All entropies are in nats.

The chain is the only source of randomness in the population loss, so everything that
enumerates or samples sequences lives here: the prefixes used by the exact loss
(``prefix_tree``) and the seeded sampler used by the Monte-Carlo loss (``sample``).
"""

from __future__ import annotations

import functools
import math
import re
import sys
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
import torch
from torch import Tensor


class InvalidInputError(ValueError):
    """An input outside the domain of the theory (reported to users as one line, exit 2)."""


def check_probability(name: str, value: object) -> float:
    """Return ``value`` as a float in the open interval (0, 1), or raise InvalidInputError."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        try:
            value = float(value)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise InvalidInputError(f"{name} must be a number in (0, 1), got {value!r}") from None
    value = float(value)
    if not math.isfinite(value) or not 0.0 < value < 1.0:
        raise InvalidInputError(f"{name} must lie strictly between 0 and 1, got {value!r}")
    return value


def parse_number(text: str) -> float:
    """``float(text)`` (ValueError for what is not a number), refusing a value that is not the one written.

    InvalidInputError for a nonzero literal that rounds to 0 (``1e-400``: its mantissa has a nonzero
    digit) and for one that lands among the subnormals (below 2.2e-308, where float64 keeps fewer than
    53 bits): either would silently stand for another input, e.g. a transition probability 0.  NaN and
    ±inf pass through for the range checks to name.
    """
    value = float(text)
    if value == 0.0 and re.search(r"[1-9]", re.split(r"[eE]", text.strip())[0]):
        raise InvalidInputError(f"{text.strip()} underflows to 0 in float64 (the smallest normal number is "
                                f"{sys.float_info.min:.1e})")
    if 0.0 < abs(value) < sys.float_info.min:
        raise InvalidInputError(f"{text.strip()} is subnormal in float64 (nonzero, below {sys.float_info.min:.1e}: "
                                "digits are lost)")
    return value


def check_positive_int(name: str, value: object) -> int:
    """Return ``value`` as an int ≥ 1, or raise InvalidInputError."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidInputError(f"{name} must be an integer >= 1, got {value!r}")
    return value


def binary_entropy(t: float) -> float:
    """h(t) = -t log t - (1-t) log(1-t) in nats, with h(0) = h(1) = 0.

    log(1-t) as log1p(-t): at t = 1e-6 the rounded 1 - t costs log(1-t) a relative 1e-10."""
    return -(t * math.log(t) if t > 0.0 else 0.0) - ((1.0 - t) * math.log1p(-t) if t < 1.0 else 0.0)


def _uniforms(batch: int, length: int, seed: int | None) -> Tensor:
    """(batch, length) U(0, 1) draws in float64 on the CPU from a private generator (seeded runs
    do not depend on global RNG state and give bit-identical sequences on every device)."""
    check_positive_int("batch", batch)
    check_positive_int("length", length)
    gen = torch.Generator().manual_seed(seed) if seed is not None else None
    return torch.rand(batch, length, generator=gen, dtype=torch.float64)


@dataclass(frozen=True)
class MarkovChain:
    """Binary first-order chain with switching probabilities p = P(0→1) and q = P(1→0)."""

    p: float
    q: float

    def __post_init__(self) -> None:
        object.__setattr__(self, "p", check_probability("p", self.p))
        object.__setattr__(self, "q", check_probability("q", self.q))

    # --- closed forms (plain floats; the SymPy derivations live in theory/markov.py) ---

    @property
    def pi(self) -> tuple[float, float]:
        """Stationary law π = (π0, π1) = (q, p) / (p + q)."""
        s = self.p + self.q
        return self.q / s, self.p / s

    @property
    def eigenvalue(self) -> float:
        """Second eigenvalue λ = 1 - p - q of the kernel, correctly rounded (``math.fsum``: 1.0 - p - q rounds twice
        and returned 0 for p + q = 1 - 5.6e-17)."""
        return math.fsum((1.0, -self.p, -self.q))

    def unigram_loss(self) -> float:
        """H(π) = h(π1) = -π0 log π0 - π1 log π1: the loss of the best predictor that ignores the past
        (claim UNIGRAM).  From π0 and π1 with their own logs, never 1 - π1: at q = 1e-4 the form
        h(π1) loses 1e-16 absolute to the cancellation in 1 - π1, a tenth of a percent of π0 log π0."""
        return -sum(pi * log_pi for pi, log_pi in zip(self.pi, self.log_pi()))

    def entropy_rate(self) -> float:
        """H(x_{n+1} | x_n) = π0 h(p) + π1 h(q): the bigram loss (claim BIGRAM)."""
        pi0, pi1 = self.pi
        return pi0 * binary_entropy(self.p) + pi1 * binary_entropy(self.q)

    def mutual_information(self, lam: float | None = None) -> float:
        """I(x_n; x_{n+1}) = H(π) - H_rate ≥ 0, zero iff p + q = 1, without subtracting the two.

        With λ = 1 - p - q, P(x'|x) - π_x' = ±π_{1-x'} λ, so I = Σ_x π_x Σ_x' P_xx' log1p((P_xx' - π_x')/π_x'):
        accurate where H(π) - H_rate cancels (at |λ| = 1e-13, I ~ 1e-27 while both round alike).  ``lam``:
        λ if known better than the float 1 - p - q (e.g. from the decimals p and q were given as); default
        the exactly rounded 1 - p - q.
        """
        lam = math.fsum((1.0, -self.p, -self.q)) if lam is None else lam
        (pi0, pi1), p, q = self.pi, self.p, self.q
        return (pi0 * ((1 - p) * math.log1p(pi1 * lam / pi0) + p * math.log1p(-lam))
                + pi1 * (q * math.log1p(-lam) + (1 - q) * math.log1p(pi0 * lam / pi1)))

    def unigram_logit(self) -> float:
        """log(π1/π0) = log(p/q), the constant logit of the unigram predictor."""
        return math.log(self.p) - math.log(self.q)

    k = 2  # number of symbols

    @property
    def transition(self) -> np.ndarray:
        """P as a float64 array (the k-state view of the same chain, ``FiniteChain.binary``)."""
        p, q = self.p, self.q
        return np.array([[1 - p, p], [q, 1 - q]])

    def log_pi(self) -> tuple[float, ...]:
        """(log π0, log π1), exact in relative terms for p, q near 0."""
        return math.log(self.q) - math.log(self.p + self.q), math.log(self.p) - math.log(self.p + self.q)

    def log_kernel(self) -> tuple[tuple[float, ...], ...]:
        """log P with log1p for 1 - p and 1 - q (a tiny p keeps its digits)."""
        p, q = self.p, self.q
        return (math.log1p(-p), math.log(p)), (math.log(q), math.log1p(-q))

    # --- tensors ---

    def kernel(self, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float64) -> Tensor:
        """The 2×2 transition matrix P."""
        p, q = self.p, self.q
        return torch.tensor([[1 - p, p], [q, 1 - q]], device=device, dtype=dtype)

    def next_one_probability(self, x: Tensor) -> Tensor:
        """P(x_{n+1} = 1 | x_n) for a tensor of current symbols (0/1, any float dtype)."""
        return self.next_probabilities(x)[0]

    def next_probabilities(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(P(x_{n+1} = 1 | x_n), P(x_{n+1} = 0 | x_n)) read from the kernel, each exact in relative
        terms (p, 1 - p, q, 1 - q as given; no 1 - (1 - q) that would lose a small q)."""
        P = self.kernel(device=x.device, dtype=x.dtype)
        current = x.long()
        return P[current, 1], P[current, 0]

    def sample(
        self,
        batch: int,
        length: int,
        *,
        seed: int | None = None,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float64,
    ) -> Tensor:
        """Draw ``batch`` stationary sequences of ``length`` symbols, shape (batch, length).

        Seeded through a private generator, so results do not depend on global RNG state.
        The draw happens on the CPU (bit-identical across devices) and is moved afterwards.
        """
        u = _uniforms(batch, length, seed)
        x = torch.empty(batch, length, dtype=torch.float64)
        x[:, 0] = (u[:, 0] < self.pi[1]).double()
        for n in range(1, length):
            x[:, n] = (u[:, n] < self.next_one_probability(x[:, n - 1])).double()
        return x.to(device=device, dtype=dtype)


def check_transition(matrix: object) -> np.ndarray:
    """``matrix`` as a read-only float64 k×k transition matrix (k ≥ 2), or InvalidInputError.

    Square, finite entries in [0, 1], rows summing to 1 within 4kε, and primitive (irreducible
    and aperiodic): otherwise the stationary law is not unique or the chain does not forget its
    start, and "the" population loss is not defined.
    """
    try:
        P = np.array(matrix, dtype=np.float64)
    except (TypeError, ValueError):
        raise InvalidInputError(f"transition matrix must be a k×k array of numbers, got {matrix!r}") from None
    if P.ndim != 2 or P.shape[0] != P.shape[1] or P.shape[0] < 2:
        raise InvalidInputError(f"transition matrix must be square with k >= 2 states, got shape {P.shape}")
    if not np.isfinite(P).all() or (P < 0).any() or (P > 1).any():
        raise InvalidInputError("transition matrix entries must be finite numbers in [0, 1]")
    subnormal = (P != 0) & (np.abs(P) < sys.float_info.min)  # the definition of a subnormal
    if subnormal.any():
        i, j = map(int, np.argwhere(subnormal)[0])
        raise InvalidInputError(f"transition matrix entry [{i}, {j}] = {P[i, j]!r} is subnormal (nonzero, below "
                                f"{sys.float_info.min:.1e}): write 0 or a normal float64")
    # rows typed as decimals sum to 1 only up to the rounding of their k entries and of the sum; a row
    # further off is not a probability row, and the closed forms (which assume stochastic rows) would
    # disagree with the model's loss by that much: 1 + 5e-13 made every check fail
    tolerance = 4 * P.shape[0] * np.finfo(np.float64).eps
    deviation = np.abs(np.array([math.fsum(row) for row in P]) - 1)
    if deviation.max() > tolerance:
        row = int(deviation.argmax())
        raise InvalidInputError(f"transition matrix row {row} sums to {math.fsum(P[row])!r}, not 1 (tolerance "
                                f"{tolerance:.1g}: the rounding of {P.shape[0]} decimal entries)")
    k = P.shape[0]
    edges = (P > 0).astype(np.int64)
    reach = np.linalg.matrix_power(np.eye(k, dtype=np.int64) + edges, k - 1) > 0
    if not reach.all():
        i, j = map(int, np.argwhere(~reach)[0])
        raise InvalidInputError(f"transition matrix is reducible (state {j} cannot be reached from state {i}): "
                                "the stationary law is not unique")
    # Wielandt: an irreducible k×k pattern is aperiodic iff its ((k-1)² + 1)-th power is positive
    power = edges.copy()
    for _ in range((k - 1) ** 2):
        power = (power @ edges > 0).astype(np.int64)
    if not power.all():
        raise InvalidInputError("transition matrix is periodic: the chain does not converge to its stationary law")
    P.setflags(write=False)
    return P


def parse_transition(text: str) -> np.ndarray:
    """A transition matrix from ``"r1;r2;...;rk"``, rows separated by ';' and entries by ','.

    Each entry must keep the value written (``parse_number``): ``1e-400`` would become a 0 transition."""
    try:
        rows = [[parse_number(entry) for entry in row.split(",")] for row in text.strip().strip(";").split(";")]
    except InvalidInputError as err:  # before ValueError, its base class
        raise InvalidInputError(f"--transition: an entry {err}") from None
    except ValueError:
        raise InvalidInputError(f"--transition: rows are ';'-separated lists of ','-separated numbers, got {text!r}"
                                ) from None
    if len({len(row) for row in rows}) != 1:
        raise InvalidInputError(f"--transition: rows have different lengths {[len(row) for row in rows]}")
    return check_transition(rows)


def stationary_law(transition: np.ndarray) -> np.ndarray:
    """The stationary law πᵀP = πᵀ of an irreducible kernel by the Grassmann-Taksar-Heyman elimination.

    GTH eliminates states one at a time using only additions, multiplications and divisions of
    nonnegative numbers (the diagonal is never used: the mass leaving a state is the sum of its
    off-diagonal row), so every π_i keeps full relative accuracy, however small.  A linear solve
    of (Pᵀ - I)π = 0 subtracts 1 - P_ii and lost it: with P_ii = 1 - 2e-17 it returned a negative π_i.
    """
    A = np.array(transition, dtype=float)
    k = A.shape[0]
    for n in range(k - 1, 0, -1):
        leaving = A[n, :n].sum()  # > 0 for an irreducible chain
        A[:n, n] /= leaving
        A[:n, :n] += np.outer(A[:n, n], A[n, :n])
    pi = np.zeros(k)
    pi[0] = 1.0
    for n in range(1, k):
        pi[n] = pi[:n] @ A[:n, n]
    return pi / pi.sum()


@dataclass(frozen=True, eq=False)
class FiniteChain:
    """A stationary first-order chain on k symbols {0, …, k-1} (claim ``MULTI-STATE``).

    ``transition[i, j] = P(x_{n+1} = j | x_n = i)``; the chain starts from its stationary law π
    (πᵀP = πᵀ).  Entropies in nats: H(π) = -Σ π_i log π_i (the unigram loss) and the entropy
    rate -Σ π_i P_ij log P_ij (the bigram loss).  ``binary(p, q)`` is the package's binary chain.
    """

    transition: np.ndarray
    name: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "transition", check_transition(self.transition))

    @classmethod
    def binary(cls, p: float, q: float) -> FiniteChain:
        """The binary chain [[1-p, p], [q, 1-q]] (``MarkovChain(p, q)``) as a k = 2 chain."""
        return cls(MarkovChain(p, q).transition, name=f"binary(p={p:g}, q={q:g})")

    @classmethod
    def dirichlet(cls, k: int, seed: int, concentration: float = 1.0) -> FiniteChain:
        """Rows drawn i.i.d. from Dirichlet(concentration · 1_k), seeded (NumPy's generator)."""
        check_positive_int("k", k)
        rows = np.random.default_rng(seed).dirichlet(np.full(k, concentration), size=k)
        return cls(rows, name=f"dirichlet-{k}-{seed}")

    @property
    def k(self) -> int:
        return self.transition.shape[0]

    @functools.cached_property
    def pi(self) -> np.ndarray:
        """The stationary law πᵀP = πᵀ (``stationary_law``)."""
        pi = stationary_law(self.transition)
        pi.setflags(write=False)
        return pi

    @property
    def is_binary(self) -> bool:
        return self.k == 2

    def unigram_loss(self) -> float:
        """H(π) = -Σ π_i log π_i: the loss of the best predictor that ignores the past."""
        return float(-(self.pi * np.log(self.pi)).sum())

    def entropy_rate(self) -> float:
        """-Σ_i π_i Σ_j P_ij log P_ij (0 log 0 = 0): the loss of the bigram predictor P(· | x_n)."""
        P = self.transition
        return float(-(self.pi[:, None] * np.where(P > 0, P * np.log(np.where(P > 0, P, 1.0)), 0.0)).sum())

    def mutual_information(self) -> float:
        """I(x_n; x_{n+1}) = H(π) - H_rate = Σ_ij π_i P_ij log1p((P_ij - π_j)/π_j), without subtracting the two
        entropies (which round alike for a chain close to i.i.d.)."""
        P, pi = self.transition, self.pi
        ratio = np.where(P > 0, (P - pi[None, :]) / pi[None, :], 0.0)
        return float((pi[:, None] * P * np.log1p(ratio)).sum())

    def unigram_logits(self) -> np.ndarray:
        """log π: the logits of the unigram predictor (softmax(log π) = π)."""
        return np.log(self.pi)

    def log_pi(self) -> tuple[float, ...]:
        return tuple(np.log(self.pi).tolist())

    def log_kernel(self) -> tuple[tuple[float, ...], ...]:
        with np.errstate(divide="ignore"):  # a zero transition is log 0 = -inf: that prefix is impossible
            return tuple(map(tuple, np.log(self.transition).tolist()))

    def kernel(self, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float64) -> Tensor:
        """P as a tensor."""
        return torch.tensor(self.transition, device=device, dtype=dtype)

    def sample(
        self,
        batch: int,
        length: int,
        *,
        seed: int | None = None,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float64,
    ) -> Tensor:
        """``batch`` stationary sequences of ``length`` symbols (values 0..k-1 in ``dtype``), seeded,
        drawn on the CPU by inverting the cumulative rows of P."""
        u = _uniforms(batch, length, seed)
        cumulative = torch.from_numpy(np.cumsum(self.transition, axis=1))
        first = torch.from_numpy(np.cumsum(self.pi))
        last = self.k - 1  # rounding can leave a cumulative row just below 1
        x = torch.empty(batch, length, dtype=torch.long)
        x[:, 0] = torch.searchsorted(first, u[:, 0].contiguous(), right=True).clamp(max=last)
        for n in range(1, length):
            rows = cumulative[x[:, n - 1]]
            x[:, n] = torch.searchsorted(rows, u[:, n, None].contiguous(), right=True)[:, 0].clamp(max=last)
        return x.to(device=device, dtype=dtype)


def _uniform_switching(k: int, stay: str) -> np.ndarray:
    """Stay with probability ``stay`` (a decimal string), else move to one of the k - 1 other states
    uniformly; in exact arithmetic first, so that 0.9 gives moves 0.025, not 0.024999999999999994."""
    move = float((1 - Fraction(stay)) / (k - 1))
    matrix = np.full((k, k), move)
    np.fill_diagonal(matrix, float(stay))
    return matrix


#: Named chains for ``--chain``: the paper's 5-state example, and 3-state chains for each class
#: of θ_π under tying (M_s = sym(D_π(P - 1πᵀ)) on 1^⊥, claim MULTI-STATE-LOCAL-MIN).
PRESETS: dict[str, tuple[str, np.ndarray]] = {
    "sticky5": ("the paper's 5-state chain: stay 0.9, move 0.025 to each other state (H(π) = ln 5, "
                "rate 0.463712); M_s positive on 1^⊥: θ_π a saddle", _uniform_switching(5, "0.9")),
    "switching3": ("3 states that rarely stay (eigenvalues -0.5, -0.35); M_s negative definite on 1^⊥: "
                   "tied θ_π a local minimum",
                   np.array([[0.05, 0.5, 0.45], [0.6, 0.05, 0.35], [0.5, 0.45, 0.05]])),
    "rotating3": ("3 states that mostly cycle 0→1→2→0 (eigenvalues -0.125 ± 0.383i, negative real part) "
                  "yet M_s is indefinite on 1^⊥: tied θ_π a saddle",
                  np.array([[0.05, 0.7, 0.25], [0.05, 0.05, 0.9], [0.3, 0.05, 0.65]])),
    "uniform3": ("3 states, i.i.d. uniform (P = 1πᵀ): θ_π is the global minimum (degenerate)",
                 np.full((3, 3), 1 / 3)),
}


def preset(name: str) -> FiniteChain:
    """A named chain (``PRESETS``), or ``dirichlet-K-SEED`` for random Dirichlet(1) rows."""
    if name in PRESETS:
        return FiniteChain(PRESETS[name][1], name=name)
    parts = name.split("-")
    if len(parts) == 3 and parts[0] == "dirichlet" and parts[1].isdigit() and parts[2].isdigit():
        k = int(parts[1])
        if not 2 <= k <= 16:
            raise InvalidInputError(f"--chain {name}: k must be between 2 and 16")
        return FiniteChain.dirichlet(k, int(parts[2]))
    known = ", ".join([*PRESETS, "dirichlet-K-SEED"])
    raise InvalidInputError(f"unknown chain {name!r}; known: {known}")


@dataclass(frozen=True)
class PrefixTree:
    """Every prefix x_1^n, n = 1..N, of positive probability once, shortest first: k + k² + … + k^N
    rows for a chain without zero transitions (2^{N+1} - 2 for a binary one).

    Rows are zero-padded on the right to N symbols; ``length`` says how many are real.
    """

    symbols: Tensor  # (prefixes, N) the symbols x_1..x_n of each prefix (as numbers 0..k-1), then zeros
    length: Tensor  # (prefixes,) n, as a long tensor
    log_prob: Tensor  # (prefixes,) log P(x_1^n) under the stationary source

    @property
    def last(self) -> Tensor:
        """The current symbol x_n of each prefix."""
        return self.symbols.gather(1, (self.length - 1)[:, None])[:, 0]

    @property
    def previous(self) -> Tensor:
        """The symbol x_{n-1} before the current one, or -1 for the prefixes of length 1 (``NO_SYMBOL``)."""
        before = self.symbols.gather(1, (self.length - 2).clamp(min=0)[:, None])[:, 0]
        return torch.where(self.length > 1, before, torch.full_like(before, NO_SYMBOL))


#: Stands for x_{n-1} at n = 1, where there is none (``PrefixTree.previous``, ``SecondOrderChain.next_probabilities``).
NO_SYMBOL = -1


def previous_symbols(x: Tensor) -> Tensor:
    """x_{n-1} at every position n of sequences x (..., n): x shifted right by one, ``NO_SYMBOL`` first."""
    return torch.cat([torch.full_like(x[..., :1], NO_SYMBOL), x[..., :-1]], dim=-1)


def num_prefixes(k: int, length: int) -> int:
    """k + k² + … + k^length: the prefixes of all lengths 1..N over k symbols."""
    return sum(k**n for n in range(1, length + 1))


def prefix_tree(
    chain: MarkovChain | FiniteChain | SecondOrderChain,
    length: int,
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float64,
) -> PrefixTree:
    """All prefixes of the source up to ``length`` symbols, with their probabilities.

    A first-order chain weighs a prefix by π and its kernel; the second-order chain by its pair law
    and its table (``SecondOrderChain.log_pair_law``, ``log_kernel``).  The enumeration is done once
    per (source, length) and kept (``_prefix_arrays``); each call only wraps it as tensors, so
    repeated losses (Hessians, descent steps) do not enumerate again.  The cache holds NumPy arrays
    because tensors created inside a ``torch.func`` transform are tied to it and must not outlive it.
    """
    check_positive_int("length", length)
    start = chain.log_pair_law() if isinstance(chain, SecondOrderChain) else chain.log_pi()
    symbols, lengths, log_prob = _prefix_arrays(start, chain.log_kernel(), length)
    # On the CPU in float64 these share memory with the cache: treat the tree as read-only.
    return PrefixTree(
        torch.from_numpy(symbols).to(device=device, dtype=dtype),
        torch.from_numpy(lengths).to(device=device),
        torch.from_numpy(log_prob).to(device=device, dtype=dtype),
    )


@functools.lru_cache(maxsize=8)
def _prefix_arrays(log_start: tuple, log_kernel: tuple, length: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(symbols, length, log P) of every prefix of positive probability, shortest first, as NumPy arrays.

    A source of order o is given by the log law ``log_start`` of its first o symbols (shape (k,)*o:
    log π at order 1, the log pair law at order 2) and its log kernel ``log_kernel[c_1..c_o, j]`` =
    log P(x_{n+1} = j | last o symbols c).  Prefix x_1^n is the first n symbols of every k^{N-n}-th
    full sequence (x_1 most significant); for n < o, log P(x_1^n) marginalises ``log_start`` (log-sum-
    exp over the later symbols), and for n ≥ o it is log_start[x_1..x_o] plus the running sum of
    log kernel steps, in log space so small transition probabilities do not underflow.  Prefixes
    through a zero transition (log P = -inf) contribute nothing and are left out.
    """
    start, kernel = np.array(log_start), np.array(log_kernel)
    k, order = start.shape[0], start.ndim
    full = all_sequences(length, k)
    cumulative = np.empty(full.shape)
    for n in range(1, min(order, length) + 1):
        marginal = np.logaddexp.reduce(start, axis=tuple(range(n, order))) if n < order else start
        cumulative[:, n - 1] = marginal[tuple(full[:, :n].T)]
    if length > order:
        windows = tuple(full[:, j : length - order + j] for j in range(order + 1))
        steps = np.concatenate([cumulative[:, order - 1 : order], kernel[windows]], axis=1)
        cumulative[:, order - 1 :] = steps.cumsum(axis=1)
    position = np.arange(length)
    rows = [slice(None, None, k ** (length - n)) for n in range(1, length + 1)]
    symbols = np.concatenate([full[r] * (position < n) for n, r in enumerate(rows, start=1)])
    lengths = np.concatenate([np.full(k**n, n) for n in range(1, length + 1)])
    log_prob = np.concatenate([cumulative[r, n - 1] for n, r in enumerate(rows, start=1)])
    possible = np.isfinite(log_prob)
    return symbols[possible].astype(np.float64), lengths[possible], log_prob[possible]


def all_sequences(length: int, k: int = 2) -> np.ndarray:
    """All k^length sequences over {0..k-1} as integer rows, x_1 most significant, shape (k^length, length)."""
    index = np.arange(k**length)
    return (index[:, None] // k ** np.arange(length - 1, -1, -1)) % k


@dataclass(frozen=True)
class SecondOrderChain:
    """Binary second-order chain: ``table[a][b] = P(x_{n+1} = 1 | x_{n-1} = a, x_n = b)``.

    The paper's second-order source is the lagged chain x_{n+1} ~ P(· | x_{n-1}) of a first-order
    kernel (p, q) (``lagged``): two interleaved first-order chains, so x_n alone says nothing
    about x_{n+1} and the order-1 conditional entropy equals the order-0 one, H(π).  The chain
    starts from the stationary law μ of the pair (x_{n-1}, x_n).  Entropies in nats.
    """

    table: tuple[tuple[float, float], tuple[float, float]]
    k = 2  # number of symbols (a class constant, not a field)

    def __post_init__(self) -> None:
        rows = tuple(tuple(check_probability(f"table[{a}][{b}]", self.table[a][b]) for b in range(2))
                     for a in range(2))
        object.__setattr__(self, "table", rows)

    @classmethod
    def lagged(cls, p: float, q: float) -> SecondOrderChain:
        """x_{n+1} depends on x_{n-1} through the first-order kernel [[1-p, p], [q, 1-q]]."""
        p, q = check_probability("p", p), check_probability("q", q)
        return cls(((p, p), (1.0 - q, 1.0 - q)))

    @functools.cached_property
    def pair_transition(self) -> np.ndarray:
        """The 4 × 4 kernel of the pair chain (x_{n-1}, x_n) → (x_n, x_{n+1}), states (a, b) as 2a + b.

        A first-order chain on pairs: the second-order source's every law (stationary pair law,
        autocovariance) follows from it.
        """
        T = np.array(self.table)
        move = np.zeros((4, 4))
        for a in range(2):
            for b in range(2):
                move[2 * a + b, 2 * b + 1] = T[a, b]
                move[2 * a + b, 2 * b] = 1.0 - T[a, b]
        return move

    @functools.cached_property
    def pair_law(self) -> np.ndarray:
        """μ[a, b] = P(x_{n-1} = a, x_n = b) under stationarity (``stationary_law`` of the pair chain: every entry to
        full relative accuracy, also when the chain mixes slowly, where an eigenvector solve lost 1e-13 at
        p = q = 1e-4 and the sign of π1 - π0 at 1e-12).

        Solved once per chain: sampling and every evaluation of the test loss read it.
        """
        return stationary_law(self.pair_transition).reshape(2, 2)

    def conditional_one(self) -> np.ndarray:
        """P(x_{n+1} = 1 | x_n = b) for b = 0, 1 (the best order-1 predictor)."""
        return self._conditional_one_and_zero()[0]

    def _conditional_one_and_zero(self) -> tuple[np.ndarray, np.ndarray]:
        """(P(x_{n+1} = 1 | x_n = b), P(x_{n+1} = 0 | x_n = b)) for b = 0, 1, each summed from its own
        terms μ[a, b] T[a, b] and μ[a, b] (1 - T[a, b]) (no 1 - P(1 | b) that would lose a small P(0 | b))."""
        mu, T = self.pair_law, np.array(self.table)
        return (mu * T).sum(axis=0) / mu.sum(axis=0), (mu * (1.0 - T)).sum(axis=0) / mu.sum(axis=0)

    def entropies(self) -> dict[str, float]:
        """Conditional entropies of x_{n+1} given the last 0, 1 and 2 symbols (the last is the rate)."""
        mu = self.pair_law
        marginal = mu.sum(axis=0)  # law of x_n, also of x_{n+1}
        return {
            "order-0": binary_entropy(float(marginal[1])),
            "order-1": float(sum(marginal[b] * binary_entropy(t) for b, t in enumerate(self.conditional_one()))),
            "order-2": float(sum(mu[a, b] * binary_entropy(self.table[a][b]) for a in range(2) for b in range(2))),
        }

    def log_pair_law(self) -> tuple[tuple[float, ...], ...]:
        """log μ[a, b] = log P(x_1 = a, x_2 = b): the law of a prefix's first two symbols (``prefix_tree``)."""
        return tuple(map(tuple, np.log(self.pair_law).tolist()))

    def log_kernel(self) -> tuple[tuple[tuple[float, ...], ...], ...]:
        """log P(x_{n+1} = j | x_{n-1} = a, x_n = b) as ``[a][b][j]``; log1p(-T) at j = 0 (a small 1 - T keeps
        its digits)."""
        return tuple(tuple((math.log1p(-t), math.log(t)) for t in row) for row in self.table)

    def next_probabilities(self, previous: Tensor, current: Tensor) -> tuple[Tensor, Tensor]:
        """(P(x_{n+1} = 1 | x_{n-1}, x_n), P(x_{n+1} = 0 | x_{n-1}, x_n)) for tensors of symbols x_{n-1} and x_n.

        ``previous`` = ``NO_SYMBOL`` (-1) marks n = 1, where only x_1 is known: the order-1 conditional
        (``conditional_one``).  P(0 | ·) is 1 - T as written, not 1 - P(1 | ·) recomputed.
        """
        laws = torch.from_numpy(self._next_laws).to(dtype=current.dtype, device=current.device)
        row, column = previous.long() + 1, current.long()
        return laws[1, row, column], laws[0, row, column]

    @functools.cached_property
    def _next_laws(self) -> np.ndarray:
        """laws[j, previous + 1, current] = P(x_{n+1} = j | ·): row 0 is n = 1, rows 1, 2 are x_{n-1} = 0, 1.

        Built once per chain: every evaluation of the loss reads it (as a tensor sharing its memory on the CPU
        in float64: treat it as read-only)."""
        one, zero = self._conditional_one_and_zero()
        T = np.array(self.table)
        return np.stack([np.stack([zero, *(1.0 - T)]), np.stack([one, *T])])

    def next_one_probability(self, x: Tensor) -> Tensor:
        """P(x_{n+1} = 1 | x_1..x_n) at every position of sequences x (..., n): order 1 at n = 1."""
        return self.next_probabilities(previous_symbols(x), x)[0]

    def sample(
        self,
        batch: int,
        length: int,
        *,
        seed: int | None = None,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float64,
    ) -> Tensor:
        """``batch`` stationary sequences of ``length`` ≥ 2 symbols, seeded, drawn on the CPU."""
        if check_positive_int("length", length) < 2:
            raise InvalidInputError(f"a second-order chain needs length >= 2, got {length}")
        u = _uniforms(batch, length, seed)
        cumulative = torch.from_numpy(self.pair_law.reshape(-1).cumsum())
        pair = torch.searchsorted(cumulative, u[:, 0].contiguous()).clamp(max=3)  # (a, b) as 2a + b
        x = torch.empty(batch, length, dtype=torch.float64)
        x[:, 0], x[:, 1] = pair // 2, pair % 2
        T = torch.tensor(self.table, dtype=torch.float64)
        for n in range(2, length):
            x[:, n] = (u[:, n] < T[x[:, n - 2].long(), x[:, n - 1].long()]).double()
        return x.to(device=device, dtype=dtype)
