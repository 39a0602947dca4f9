"""The data source: a stationary binary first-order Markov chain (claim ID ``SRC``).

States {0, 1}, kernel ``P = [[1-p, p], [q, 1-q]]`` with ``P[i, j] = P(x_{n+1}=j | x_n=i)``,
stationary law ``π = (q, p) / (p + q)``.  All entropies are in nats.

The chain is the only source of randomness in the population loss, so everything that
enumerates or samples sequences lives here: the prefixes used by the exact loss
(``prefix_tree``) and the seeded sampler used by the Monte-Carlo loss (``sample``).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

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


def check_positive_int(name: str, value: object) -> int:
    """Return ``value`` as an int ≥ 1, or raise InvalidInputError."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidInputError(f"{name} must be an integer >= 1, got {value!r}")
    return value


def binary_entropy(t: float) -> float:
    """h(t) = -t log t - (1-t) log(1-t) in nats, with h(0) = h(1) = 0."""
    return -sum(u * math.log(u) for u in (t, 1.0 - t) if u > 0.0)


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
        """Second eigenvalue λ = 1 - p - q of the kernel."""
        return 1.0 - self.p - self.q

    def unigram_loss(self) -> float:
        """H(π) = h(π1): the loss of the best predictor that ignores the past (claim UNIGRAM)."""
        return binary_entropy(self.pi[1])

    def entropy_rate(self) -> float:
        """H(x_{n+1} | x_n) = π0 h(p) + π1 h(q): the bigram loss (claim BIGRAM)."""
        pi0, pi1 = self.pi
        return pi0 * binary_entropy(self.p) + pi1 * binary_entropy(self.q)

    def mutual_information(self) -> float:
        """I(x_n; x_{n+1}) = H(π) - H_rate ≥ 0, zero iff p + q = 1."""
        return self.unigram_loss() - self.entropy_rate()

    def unigram_logit(self) -> float:
        """log(π1/π0) = log(p/q), the constant logit of the unigram predictor."""
        return math.log(self.p) - math.log(self.q)

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


@dataclass(frozen=True)
class PrefixTree:
    """Every binary prefix x_1^n, n = 1..N, once: 2^{N+1} - 2 rows, shortest first.

    Rows are zero-padded on the right to N symbols; ``length`` says how many are real.
    """

    bits: Tensor  # (2^{N+1} - 2, N) the symbols x_1..x_n of each prefix, then zeros
    length: Tensor  # (2^{N+1} - 2,) n, as a long tensor
    log_prob: Tensor  # (2^{N+1} - 2,) log P(x_1^n) under the stationary chain

    @property
    def last(self) -> Tensor:
        """The current symbol x_n of each prefix."""
        return self.bits.gather(1, (self.length - 1)[:, None])[:, 0]


def prefix_tree(
    chain: MarkovChain,
    length: int,
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float64,
) -> PrefixTree:
    """All prefixes of the chain up to ``length`` symbols, with their probabilities.

    The enumeration is done once per (p, q, length) and kept (``_prefix_arrays``); each call
    only wraps it as tensors, so repeated losses (Hessians, descent steps) do not enumerate
    again.  The cache holds NumPy arrays because tensors created inside a ``torch.func``
    transform are tied to it and must not outlive it.
    """
    check_positive_int("length", length)
    bits, lengths, log_prob = _prefix_arrays(chain.p, chain.q, length)
    # On the CPU in float64 these share memory with the cache: treat the tree as read-only.
    return PrefixTree(
        torch.from_numpy(bits).to(device=device, dtype=dtype),
        torch.from_numpy(lengths).to(device=device),
        torch.from_numpy(log_prob).to(device=device, dtype=dtype),
    )


@functools.lru_cache(maxsize=8)
def _prefix_arrays(p: float, q: float, length: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(bits, length, log P) of every prefix, shortest first, as NumPy arrays.

    Prefix x_1^n is the first n symbols of every 2^{N-n}-th full sequence (x_1 most
    significant), and log P(x_1^n) = log π_{x_1} + Σ_{i<n} log P[x_i, x_{i+1}] is the running
    sum along that sequence, in log space so p, q near 0 or 1 do not underflow.
    """
    full = all_sequences(length)
    log_kernel = np.array([[math.log1p(-p), math.log(p)], [math.log(q), math.log1p(-q)]])
    log_pi = np.log(np.array([q, p])) - math.log(p + q)
    steps = np.concatenate([log_pi[full[:, :1]], log_kernel[full[:, :-1], full[:, 1:]]], axis=1)
    cumulative = steps.cumsum(axis=1)
    position = np.arange(length)
    rows = [slice(None, None, 2 ** (length - n)) for n in range(1, length + 1)]
    bits = np.concatenate([full[r] * (position < n) for n, r in enumerate(rows, start=1)])
    lengths = np.concatenate([np.full(2**n, n) for n in range(1, length + 1)])
    log_prob = np.concatenate([cumulative[r, n - 1] for n, r in enumerate(rows, start=1)])
    return bits.astype(np.float64), lengths, log_prob


def all_sequences(length: int) -> np.ndarray:
    """All 2^length binary sequences as integer rows, x_1 most significant, shape (2^length, length)."""
    index = np.arange(2**length)
    return (index[:, None] >> np.arange(length - 1, -1, -1)) & 1


@dataclass(frozen=True)
class SecondOrderChain:
    """Binary second-order chain: ``table[a][b] = P(x_{n+1} = 1 | x_{n-1} = a, x_n = b)``.

    The paper's second-order source is the lagged chain x_{n+1} ~ P(· | x_{n-1}) of a first-order
    kernel (p, q) (``lagged``): two interleaved first-order chains, so x_n alone says nothing
    about x_{n+1} and the order-1 conditional entropy equals the order-0 one, H(π).  The chain
    starts from the stationary law μ of the pair (x_{n-1}, x_n).  Entropies in nats.
    """

    table: tuple[tuple[float, float], tuple[float, float]]

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
    def pair_law(self) -> np.ndarray:
        """μ[a, b] = P(x_{n-1} = a, x_n = b) under stationarity (left Perron vector of the pair chain).

        Solved once per chain: sampling and every evaluation of the test loss read it.
        """
        T = np.array(self.table)
        move = np.zeros((4, 4))  # (a, b) -> (b, c)
        for a in range(2):
            for b in range(2):
                move[2 * a + b, 2 * b + 1] = T[a, b]
                move[2 * a + b, 2 * b] = 1.0 - T[a, b]
        values, vectors = np.linalg.eig(move.T)
        mu = np.real(vectors[:, np.argmin(np.abs(values - 1.0))])
        return (mu / mu.sum()).reshape(2, 2)

    def conditional_one(self) -> np.ndarray:
        """P(x_{n+1} = 1 | x_n = b) for b = 0, 1 (the best order-1 predictor)."""
        mu = self.pair_law
        return (mu * np.array(self.table)).sum(axis=0) / mu.sum(axis=0)

    def entropies(self) -> dict[str, float]:
        """Conditional entropies of x_{n+1} given the last 0, 1 and 2 symbols (the last is the rate)."""
        mu = self.pair_law
        marginal = mu.sum(axis=0)  # law of x_n, also of x_{n+1}
        return {
            "order-0": binary_entropy(float(marginal[1])),
            "order-1": float(sum(marginal[b] * binary_entropy(t) for b, t in enumerate(self.conditional_one()))),
            "order-2": float(sum(mu[a, b] * binary_entropy(self.table[a][b]) for a in range(2) for b in range(2))),
        }

    def next_one_probability(self, x: Tensor) -> Tensor:
        """P(x_{n+1} = 1 | x_1..x_n) at every position of sequences x (..., n): order 1 at n = 1."""
        T = torch.tensor(self.table, dtype=x.dtype, device=x.device)
        first = torch.tensor(self.conditional_one(), dtype=x.dtype, device=x.device)
        current = x.long()
        later = T[current[..., :-1], current[..., 1:]]
        return torch.cat([first[current[..., :1]], later], dim=-1)

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
