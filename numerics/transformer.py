"""The paper's single-layer transformer on binary inputs, as pure functions of a parameter dict.

For inputs x_1..x_N ∈ {0, 1}, embedding dim d and feed-forward width r (claim ID ``MODEL``)::

    x̃_n     = x_n e + p_n                                        (embedding)
    y_n     = x̃_n + W_O Σ_{i≤n} att_{n,i} W_V x̃_i                 (causal attention, residual)
    att_n   = softmax_i( <W_Q x̃_n, W_K x̃_i> / √d ),  i ≤ n
    z_n     = y_n + W_2 ReLU(W_1 y_n)                             (feed-forward, residual)
    logit_n = <a, z_n> + b,       f_θ(x_1^n) = σ(logit_n)         (head; a = e when tied)

The one-hot family of the paper's released code (claim ``MULTI-STATE``, SPEC §11) has k symbols,
an embedding table E (k×d) and k logits; only the first and last lines change::

    x̃_n     = E[x_n] + p_n                                        (row x_n of E)
    logits_n = A z_n + b,   f_θ(x_1^n) = softmax(logits_n)        (A = E when tied; b ∈ R^k)

It is stored under ``E`` (and ``A``) instead of ``e`` (and ``a``), with a vector ``b``; at k = 2
it computes the same functions as the scalar model (``onehot_from_scalar``).

No layer norm, no biases except b.  Parameters are a plain ``dict[str, Tensor]``
with the SPEC's names (``e``, ``pos``, ``W_Q``, ``W_K``, ``W_V``, ``W_O``, ``W_1``, ``W_2``,
``a``, ``b``) so that ``torch.func`` can differentiate with respect to any of them.  Deeper
models stack the attention + feed-forward block; layer ℓ ≥ 1 stores its block under
``"W_Q.ℓ"`` etc., so a one-layer dict uses exactly the SPEC's names.

Two evaluations: ``logits`` runs whole sequences with a causal mask (the textbook forward
pass, any depth); ``prefix_logits`` runs every distinct prefix of a one-layer model exactly
once, for the exact population loss.  Tests check that they agree.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from numerics.markov import PrefixTree, check_positive_int

Params = dict[str, Tensor]
BLOCK = ("W_Q", "W_K", "W_V", "W_O", "W_1", "W_2")


def layer_key(name: str, layer: int) -> str:
    """Dict key of block parameter ``name`` in layer ``layer`` (0-based)."""
    return name if layer == 0 else f"{name}.{layer}"


def num_layers(params: Params) -> int:
    """Number of attention + feed-forward blocks stored in ``params``."""
    return sum(1 for k in params if k == "W_Q" or k.startswith("W_Q."))


def init_params(
    d: int,
    seq_len: int,
    *,
    r: int | None = None,
    layers: int = 1,
    tying: bool = True,
    layer_norm: bool = False,
    std: float = 0.02,
    seed: int | None = None,
    symbols: int | None = None,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float64,
) -> Params:
    """Parameters for embedding dim d, FF width r (default 4d) and N = seq_len positions.

    Entries are i.i.d. N(0, std²) (``std=0`` gives the all-zero point); ``a`` exists only
    when ``tying`` is False.  ``symbols`` = k gives the one-hot model: ``E`` (k×d), ``A`` (k×d,
    untied only) and ``b`` (k,) instead of ``e``, ``a`` and the scalar ``b``.
    ``layer_norm`` adds GPT-2 style pre-norm gains and biases
    (``ln_1``, ``ln_2`` per layer, ``ln_f`` before the head; gains 1, biases 0): the
    architecture of the paper's released training code, not of the theory.  Seeded through a
    private generator; drawn on the CPU in float64 so the same seed gives the same point on
    every device and dtype.
    """
    for name, value in (("d", d), ("seq_len", seq_len), ("layers", layers)):
        check_positive_int(name, value)
    r = 4 * d if r is None else check_positive_int("r", r)
    if symbols is not None and check_positive_int("symbols", symbols) < 2:
        raise ValueError(f"a one-hot model needs k >= 2 symbols, got {symbols}")
    onehot = symbols is not None
    shapes: dict[str, tuple[int, ...]] = {"E": (symbols, d)} if onehot else {"e": (d,)}
    shapes["pos"] = (seq_len, d)
    for layer in range(layers):
        shapes |= {
            layer_key("W_Q", layer): (d, d),
            layer_key("W_K", layer): (d, d),
            layer_key("W_V", layer): (d, d),
            layer_key("W_O", layer): (d, d),
            layer_key("W_1", layer): (r, d),
            layer_key("W_2", layer): (d, r),
        }
    if not tying:
        shapes |= {"A": (symbols, d)} if onehot else {"a": (d,)}
    shapes["b"] = (symbols,) if onehot else ()
    gen = torch.Generator().manual_seed(seed) if seed is not None else None
    params = {
        name: (std * torch.randn(shape, generator=gen, dtype=torch.float64)).to(device, dtype)
        for name, shape in shapes.items()
    }
    if layer_norm:
        norms = [layer_key(name, layer) for layer in range(layers) for name in ("ln_1", "ln_2")] + ["ln_f"]
        for name in norms:
            params[f"{name}.gain"] = torch.ones(d, device=device, dtype=dtype)
            params[f"{name}.bias"] = torch.zeros(d, device=device, dtype=dtype)
    return params


def keys_values(params: Params, layer: int, context: Tensor) -> tuple[Tensor, Tensor]:
    """Keys W_K c_i and values W_V c_i of context states c (..., S, d)."""
    return context @ params[layer_key("W_K", layer)].T, context @ params[layer_key("W_V", layer)].T


def queries(params: Params, layer: int, h: Tensor) -> Tensor:
    """W_Q h / √d: the query of states h (..., d), with the softmax temperature √d folded in."""
    return h @ params[layer_key("W_Q", layer)].T / math.sqrt(h.shape[-1])


def attention(params: Params, layer: int, h: Tensor, key: Tensor, value: Tensor, mask: Tensor | None) -> Tensor:
    """W_O Σ_i softmax_i(<W_Q h, k_i>/√d) v_i for queries h (..., T, d) and keys, values (..., S, d).

    Written out instead of ``scaled_dot_product_attention``, whose fused CPU kernel has no
    forward-mode AD nor double backward (torch.func.hessian would fail through it).
    """
    scores = queries(params, layer, h) @ key.transpose(-1, -2)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return torch.softmax(scores, dim=-1) @ value @ params[layer_key("W_O", layer)].T


def feed_forward(params: Params, layer: int, y: Tensor) -> Tensor:
    """W_2 ReLU(W_1 y)."""
    return torch.relu(y @ params[layer_key("W_1", layer)].T) @ params[layer_key("W_2", layer)].T


def has_layer_norm(params: Params) -> bool:
    """Does ``params`` carry the pre-norm parameters of ``init_params(layer_norm=True)``?"""
    return "ln_f.gain" in params


def norm(params: Params, name: str, h: Tensor) -> Tensor:
    """LayerNorm ``name`` (gain ⊙ (h - mean)/std + bias over the last axis), or h without layer norm."""
    if not has_layer_norm(params):
        return h
    return torch.nn.functional.layer_norm(h, h.shape[-1:], params[f"{name}.gain"], params[f"{name}.bias"])


def attention_mask(n: int, memory: int | None = None, device: torch.device | str = "cpu") -> Tensor:
    """Boolean (n, n) mask: position i is visible from n iff i ≤ n (causal) and n - i ≤ memory.

    ``memory`` = W restricts attention to the current symbol and the W before it (the masking
    experiment; W = 2 sees x_{n-2}, x_{n-1}, x_n); None keeps the whole past.
    """
    rows = torch.arange(n, device=device)
    lag = rows[:, None] - rows[None, :]
    visible = lag >= 0
    return visible if memory is None else visible & (lag <= memory)


def block(params: Params, layer: int, h: Tensor, mask: Tensor) -> Tensor:
    """One layer: y = h + attention(u; u) with u = h (or LN_1(h)); z = y + W_2 ReLU(W_1 y) (or of LN_2(y))."""
    u = norm(params, layer_key("ln_1", layer), h)
    y = h + attention(params, layer, u, *keys_values(params, layer, u), mask)
    return y + feed_forward(params, layer, norm(params, layer_key("ln_2", layer), y))


def is_onehot(params: Params) -> bool:
    """Is ``params`` the one-hot k-symbol model (``E``) rather than the scalar one (``e``)?"""
    return "E" in params


def embed(params: Params, x: Tensor) -> Tensor:
    """x̃_n = x_n e + p_n (scalar model) or E[x_n] + p_n (one-hot) for symbols x (..., n), n ≤ N.

    e (and a, b) may carry one copy per sequence, shapes (B, 1, d) and (B, 1): per-sequence
    derivatives in those coordinates then come out of one batched pass (``numerics.manifold``).
    """
    token = params["E"][x.long()] if is_onehot(params) else x[..., None] * params["e"]
    return token + params["pos"][: x.shape[-1]]


def head(params: Params, z: Tensor, *, tying: bool) -> Tensor:
    """logit = <a, z> + b (a = e when tied), or the k logits A z + b of the one-hot model (A = E)."""
    if is_onehot(params):
        return z @ (params["E"] if tying else params["A"]).T + params["b"]
    a = params["e"] if tying else params["a"]
    return (z * a).sum(dim=-1) + params["b"]


def logits(params: Params, x: Tensor, *, tying: bool, memory: int | None = None) -> Tensor:
    """Logits of every position of a batch of sequences x (B, n), n ≤ N: (B, n), or (B, n, k) one-hot.

    ``memory``: see ``attention_mask``.  With layer-norm parameters the head reads LN_f(z).
    """
    return head(params, hidden(params, embed(params, x), memory), tying=tying)


def hidden(params: Params, h: Tensor, memory: int | None = None) -> Tensor:
    """The states the head reads, z_n (or LN_f(z_n) with layer norm), from embeddings h (..., n, d): every
    block with the attention mask of ``memory``, then the final norm."""
    mask = attention_mask(h.shape[-2], memory, h.device)
    for layer in range(num_layers(params)):
        h = block(params, layer, h, mask)
    return norm(params, "ln_f", h)


def token_table(params: Params) -> Tensor:
    """The embedding of each symbol as rows: E, or (0, e) for the scalar model (x e at x = 0, 1)."""
    return params["E"] if is_onehot(params) else torch.stack([torch.zeros_like(params["e"]), params["e"]])


def onehot_from_scalar(params: Params, *, tying: bool) -> Params:
    """The k = 2 one-hot parameters computing the scalar model's function (claim ``MULTI-STATE``).

    Embedding rows E = (0, e), the rest unchanged.  Untied: A = (0, a), b = (0, b): the softmax
    of (0, ℓ) is (1 - σ(ℓ), σ(ℓ)).  Tied the head must be E itself, whose rows (0, e) give the
    logits (0, <e, z>): again (0, ℓ) with b = (0, b).
    """
    onehot = {k: v for k, v in params.items() if k not in ("e", "a", "b")}
    onehot["E"] = token_table(params)
    if not tying:
        onehot["A"] = torch.stack([torch.zeros_like(params["a"]), params["a"]])
    onehot["b"] = torch.stack([torch.zeros_like(params["b"]), params["b"]])
    return onehot


def prefix_logits(params: Params, tree: PrefixTree, *, tying: bool, memory: int | None = None) -> Tensor:
    """The logit of every distinct prefix x_1^n of a one-layer model (one per row of ``tree``).

    A causal model's logit at position n depends only on x_1^n, so each of the 2^{N+1} - 2
    prefixes is evaluated once, where running every position of all 2^N full sequences costs
    N/2 times more.  In one layer every quantity of position i depends on x_i alone, and
    linearly: with x̃_i = pos_i + x_i e,

        k_i = W_K pos_i + x_i W_K e,     v_i = W_V pos_i + x_i W_V e,     q_n = W_Q x̃_n / √d,

    so a prefix's scores are s_i = <q_n, W_K pos_i> + x_i <q_n, W_K e> and its attention mix is
    Σ_i a_i W_V pos_i + (Σ_i a_i x_i) W_V e with a = softmax(s) over i ≤ n.  The one-hot model
    reads the same with the token part W_K E[x_i] looked up per symbol (``token_table``: the scalar
    model is the table (0, e)) and the mix Σ_c (Σ_{i: x_i = c} a_i) W_V E[c].  The scores of a
    prefix are formed directly (no differences of exponentials) and each row gets its own
    max-shifted softmax, exactly as ``attention`` does for one sequence.  The tree's rows are
    zero-padded to N symbols; positions beyond a prefix's length are masked out of its softmax, and
    so are those more than ``memory`` = W before the current one (``attention_mask``; None: the whole
    past).  Deeper models have prefix-dependent keys and go through ``logits`` instead.
    """
    if num_layers(params) != 1 or has_layer_norm(params):
        raise ValueError("prefix_logits evaluates one-layer models without layer norm; use logits()")
    pos = params["pos"]
    seq_len = pos.shape[0]
    table = token_table(params)  # (k, d)
    symbols = tree.symbols.long()
    n = tree.length - 1  # 0-based index of each prefix's current position
    x_now = pos[n] + table[tree.last.long()]  # x̃_n of each prefix
    query = queries(params, 0, x_now)
    key_pos, value_pos = keys_values(params, 0, pos)
    key_token, value_token = keys_values(params, 0, table)
    scores = query @ key_pos.T + (query @ key_token.T).gather(1, symbols)  # (prefixes, N)
    visible = attention_mask(seq_len, memory, pos.device)[n]  # row n of the (windowed) causal mask
    weights = torch.softmax(scores.masked_fill(~visible, float("-inf")), dim=-1)
    # attention mass on each symbol c: Σ_{i: x_i = c} a_i, one scatter-add (padding is masked, weight 0)
    mass = weights.new_zeros(weights.shape[0], table.shape[0]).scatter_add(1, symbols, weights)
    mixed = weights @ value_pos + mass @ value_token
    y = x_now + mixed @ params["W_O"].T
    return head(params, y + feed_forward(params, 0, y), tying=tying)
