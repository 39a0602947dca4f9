"""A second, deliberately plain implementation of the one-layer model, for cross-checks.

Position by position, vector by vector, exactly as the equations of claim ``MODEL`` read:
no batching, no masks, no shared helpers with ``numerics.transformer``.  It is slow and only
ever runs on a handful of sequences; its job is to make the verifiers able to notice a
corrupted model (a flipped sign, a wrong scale, a leaking mask).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def reference_logits(params: dict[str, Tensor], x: list[int], *, tying: bool) -> list:
    """logit_n for n = 1..len(x) of one sequence, one layer: a float for the scalar model, the list
    of k logits for the one-hot model (``E`` in params)."""
    pos, b = params["pos"], params["b"]
    W_Q, W_K, W_V, W_O, W_1, W_2 = (params[k] for k in ("W_Q", "W_K", "W_V", "W_O", "W_1", "W_2"))
    onehot = "E" in params
    if onehot:
        table = params["E"]
        embedded = [table[x_i] + pos[i] for i, x_i in enumerate(x)]  # x̃_i = E[x_i] + p_i
        head = table if tying else params["A"]
    else:
        e = params["e"]
        embedded = [x_i * e + pos[i] for i, x_i in enumerate(x)]  # x̃_i = x_i e + p_i
        head = e if tying else params["a"]
    d = pos.shape[1]
    out = []
    for n, x_n in enumerate(embedded):
        scores = [torch.dot(W_Q @ x_n, W_K @ embedded[i]) / math.sqrt(d) for i in range(n + 1)]
        top = max(s.item() for s in scores)
        weights = [math.exp(s.item() - top) for s in scores]
        total = sum(weights)
        mixed = sum((w / total) * (W_V @ embedded[i]) for i, w in enumerate(weights))
        y = x_n + W_O @ mixed
        z = y + W_2 @ torch.clamp(W_1 @ y, min=0)
        out.append((head @ z + b).tolist())
    return out
