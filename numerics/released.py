"""Checkpoints of the paper's released training code (github.com/Bond1995/Markov), read into our parameters.

The released models are nanoGPT's ``GPTBase`` (``Markov-Simple/src/models/base.py`` and the ``Markov-LLM*``
folders, read at 446eaa1), saved with ``torch.save(model.state_dict())`` (``main.py``: ``model.pt``) or inside
``{"model": ..., "optimizer": ..., "scheduler": ..., "itr": ...}`` (``optim/utils.py:save_checkpoint``: ``ckpt.pt``,
whose keys carry torch.compile's ``_orig_mod.`` prefix unless ``--no_compile``; DDP adds ``module.``).  Their
keys, with every ``nn.Linear`` weight stored (out, in) and applied as x ↦ x Wᵀ::

    transformer.wte.weight            (k, d)    token embedding        → E
    transformer.wpe.weight            (N, d)    position embedding     → pos
    transformer.h.ℓ.attn.c_attn.weight (3d, d)  rows [q; k; v], split in that order (``.split(n_embd, dim=2)``)
                                                                      → W_Q, W_K, W_V
    transformer.h.ℓ.attn.c_proj.weight (d, d)   attention output       → W_O
    transformer.h.ℓ.mlp.c_fc.weight   (4d, d)                          → W_1
    transformer.h.ℓ.mlp.c_proj.weight (d, 4d)                          → W_2
    transformer.h.ℓ.ln_1/ln_2.weight (d,), transformer.ln_f.weight    → ln_1.gain, ln_2.gain, ln_f.gain (ℓ ≥ 1:
                                                                         ``layer_key``, e.g. ln_1.1.gain)
    lm_head.weight (k, d), lm_head.bias (k,)   head, tied: the same tensor as wte → A (untied only), b

Optional: the biases of c_attn, c_proj, c_fc (``--bias``, default False) and of the layer norms; the
causal-mask buffer ``transformer.h.ℓ.attn.bias`` (written only by torch < 2.0, which lacks
``scaled_dot_product_attention``); Markov-Simple's ``alpha`` and ``w`` buffers (sign vectors of its
``--init lowrank``, unused by the forward pass).  ``Markov-Simple`` has no layer norm and a ReLU feed-forward;
the ``Markov-LLM*`` folders have pre-norm blocks x + attn(LN_1 x), x + mlp(LN_2 x), LN_f before the head (eps
1e-5, as ours) and a GELU feed-forward.  Attention is ``scaled_dot_product_attention`` with its default scale
1/√(d/n_head), one head by default (``--n_head 1``): 1/√d, as ``transformer.queries``; ``--memory W`` keeps
keys with n - i ≤ W, as ``transformer.attention_mask``.

Neither the activation nor the number of heads is in a state dict: the caller states them.  What our model
cannot compute exactly is refused (``InvalidInputError``, one line): GELU, more than one head (a per-head
softmax is no single-head softmax), nonzero biases inside the blocks, partial layer norm, and a depth, layer norm
or tying other than the caller asked for.  Everything else maps entry for entry (float64, so the logits agree
to rounding), and at k = 2 ``to_scalar`` maps onward to the theory's scalar model.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor

from numerics.markov import InvalidInputError
from numerics.transformer import Params, is_onehot, layer_key, logits

#: Prefixes before every key: torch.compile's wrapper (``_orig_mod.``) and DistributedDataParallel's (``module.``).
WRAPPER_PREFIXES = ("_orig_mod.", "module.")
#: Markov-Simple's buffers for its low-rank initialisation (``alpha``, ``w``): not parameters of the forward pass.
INIT_BUFFERS = ("alpha", "w")
#: Biases of a block's linear maps (``--bias``): our model has none, so only all-zero ones map.
BLOCK_BIASES = ("attn.c_attn.bias", "attn.c_proj.bias", "mlp.c_fc.bias", "mlp.c_proj.bias")
#: The released code's feed-forward activation by layout: ReLU without layer norm (Markov-Simple), GELU with it
#: (the Markov-LLM folders).  A state dict does not record it.
DEFAULT_ACTIVATION = {False: "relu", True: "gelu"}

_BLOCK_KEY = re.compile(r"transformer\.h\.(\d+)\.(.+)")


@dataclass(frozen=True)
class ReleasedModel:
    """A released checkpoint in our names (``init_params(symbols=k, ...)``'s keys and shapes, float64, CPU)."""

    params: Params
    k: int
    d: int
    seq_len: int
    layers: int
    layer_norm: bool
    tying: bool
    activation: str

    def logits(self, x: Tensor, *, memory: int | None = None) -> Tensor:
        """The k logits of every position of symbol sequences x (B, n): ``transformer.logits`` with our tying."""
        return logits(self.params, x, tying=self.tying, memory=memory)


def read_file(path: str | os.PathLike) -> dict:
    """The object ``torch.save`` wrote to ``path``, read with ``weights_only`` (no code runs while unpickling)."""
    try:
        with warnings.catch_warnings():  # torch warns about legacy formats; the error below says enough
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise InvalidInputError(f"checkpoint {path} does not exist") from None
    except Exception as err:  # unpickling errors come in many types; all mean "not a loadable state dict"
        why = " ".join(str(err).split())[:160]
        raise InvalidInputError(f"cannot read checkpoint {path} as tensors only ({type(err).__name__}: {why}); "
                                "save model.state_dict() alone, as the released main.py does (model.pt)") from None


def unwrap(data: object) -> dict[str, Tensor]:
    """The model's state dict inside ``data``: ``data["model"]`` for a ``save_checkpoint`` file, else ``data``,
    with the ``WRAPPER_PREFIXES`` removed from every key."""
    if isinstance(data, Mapping) and isinstance(data.get("model"), Mapping):
        data = data["model"]
    if not isinstance(data, Mapping) or not all(isinstance(k, str) and torch.is_tensor(v) for k, v in data.items()):
        raise InvalidInputError("the checkpoint is not a state dict (a dict of named tensors, or one under 'model')")
    state = {}
    for key, value in data.items():
        name = key
        while name.startswith(WRAPPER_PREFIXES):
            name = name.removeprefix("_orig_mod.").removeprefix("module.")
        state[name] = value
    return state


def _take(state: dict[str, Tensor], key: str, shape: tuple[int, ...]) -> Tensor:
    """Remove ``key`` from ``state`` and return it as float64, refusing a missing, misshapen or non-finite entry."""
    if key not in state:
        raise InvalidInputError(f"the checkpoint lacks {key}")
    value = state.pop(key)
    if tuple(value.shape) != shape:
        raise InvalidInputError(f"{key} has shape {tuple(value.shape)}, expected {shape}")
    if not value.is_floating_point() or not bool(torch.isfinite(value).all()):
        raise InvalidInputError(f"{key} has entries that are not finite real numbers")
    return value.detach().to("cpu", torch.float64, copy=True)  # a copy: tied tensors must not alias E and A


def _matrix_shape(state: dict[str, Tensor], key: str) -> tuple[int, int]:
    """The shape of the matrix ``state[key]`` (refused when missing or not 2-D)."""
    if key not in state:
        raise InvalidInputError(f"the checkpoint lacks {key}")
    if state[key].dim() != 2:
        raise InvalidInputError(f"{key} has shape {tuple(state[key].shape)}, expected a matrix")
    return tuple(state[key].shape)


def _block_layers(state: dict[str, Tensor]) -> int:
    """The number of blocks ``transformer.h.0 ..``, refusing a gap in their indices."""
    found = {int(m.group(1)) for key in state if (m := _BLOCK_KEY.fullmatch(key))}
    if not found:
        raise InvalidInputError("the checkpoint has no blocks (keys transformer.h.0.*)")
    if found != set(range(len(found))):
        raise InvalidInputError(f"the checkpoint's blocks transformer.h.N are not numbered 0, 1, ...: {sorted(found)}")
    return len(found)


def _drop_mask_buffer(state: dict[str, Tensor], key: str) -> None:
    """Remove the causal-mask buffer ``key`` if present; anything but the lower triangle of ones is refused."""
    mask = state.pop(key, None)
    if mask is None:
        return
    size = mask.shape[-1]
    if tuple(mask.shape) != (1, 1, size, size) or not torch.equal(mask, torch.ones_like(mask).tril()):
        raise InvalidInputError(f"{key} is not the causal mask (a lower triangle of ones)")


def _drop_zero_bias(state: dict[str, Tensor], key: str, size: int) -> None:
    """Remove the optional bias ``key``; a nonzero one has no counterpart in our model and is refused."""
    if key not in state:
        return
    value = _take(state, key, (size,))
    if bool(value.any()):
        raise InvalidInputError(f"{key} is nonzero (max |entry| {value.abs().max().item():.3g}); "
                                "our model has no bias there")


def _norm(state: dict[str, Tensor], prefix: str, name: str, d: int) -> Params:
    """Layer norm ``prefix``.weight and optional .bias (0 when absent) as our ``name``.gain and ``name``.bias."""
    gain = _take(state, f"{prefix}.weight", (d,))
    bias = _take(state, f"{prefix}.bias", (d,)) if f"{prefix}.bias" in state else torch.zeros_like(gain)
    return {f"{name}.gain": gain, f"{name}.bias": bias}


def read_state_dict(
    source: str | os.PathLike | Mapping,
    *,
    activation: str | None = None,
    heads: int = 1,
    layers: int | None = None,
    layer_norm: bool | None = None,
    tying: bool | None = None,
) -> ReleasedModel:
    """Map a released checkpoint (a path, or the loaded object) exactly onto our one-hot model.

    ``activation`` and ``heads`` say how the checkpoint was trained (a state dict does not record them);
    ``activation`` None means the released code's default for the layout (``DEFAULT_ACTIVATION``).
    ``layers``, ``layer_norm`` and ``tying`` are what the caller needs (None: whatever the checkpoint has); a
    checkpoint that differs is refused.  Tied means lm_head.weight equals wte.weight entry for entry; a tied
    checkpoint read with ``tying=False`` gets A = E, which computes the same function.
    """
    if heads != 1:
        raise InvalidInputError(f"{heads} attention heads cannot be mapped: our model has one head "
                                "(a softmax per head is not one softmax)")
    state = unwrap(read_file(source) if isinstance(source, str | os.PathLike) else source)
    for key in INIT_BUFFERS:
        state.pop(key, None)
    seq_len, d = _matrix_shape(state, "transformer.wpe.weight")
    k = _matrix_shape(state, "transformer.wte.weight")[0]
    if k < 2:
        raise InvalidInputError(f"transformer.wte.weight has {k} row(s): a model of the released code has k >= 2")
    depth = _block_layers(state)
    norms = ["transformer.ln_f"] + [f"transformer.h.{i}.{n}" for i in range(depth) for n in ("ln_1", "ln_2")]
    present = [f"{name}.weight" in state for name in norms]
    if any(present) != all(present):
        raise InvalidInputError("the checkpoint has some layer norms but not all of ln_1, ln_2 (every block), ln_f")
    has_norm = all(present)
    activation = DEFAULT_ACTIVATION[has_norm] if activation is None else activation
    if activation != "relu":
        raise InvalidInputError(f"the checkpoint's feed-forward activation is {activation}; our model has ReLU only"
                                " (pass activation='relu' if it was trained with ReLU)")
    if layers is not None and depth != layers:
        raise InvalidInputError(f"the checkpoint has {depth} layer(s), not {layers} as asked")
    if layer_norm is not None and has_norm != layer_norm:
        raise InvalidInputError("the checkpoint has layer norm (ln_1, ln_2, ln_f), but a model without it was asked"
                                if has_norm else "the checkpoint has no layer norm, but a model with it was asked")

    params = {"E": _take(state, "transformer.wte.weight", (k, d)),
              "pos": _take(state, "transformer.wpe.weight", (seq_len, d))}
    r = _matrix_shape(state, "transformer.h.0.mlp.c_fc.weight")[0]
    for layer in range(depth):
        block = f"transformer.h.{layer}."
        q, key, v = (w.clone() for w in _take(state, block + "attn.c_attn.weight", (3 * d, d)).split(d))
        params |= {layer_key("W_Q", layer): q, layer_key("W_K", layer): key, layer_key("W_V", layer): v,
                   layer_key("W_O", layer): _take(state, block + "attn.c_proj.weight", (d, d)),
                   layer_key("W_1", layer): _take(state, block + "mlp.c_fc.weight", (r, d)),
                   layer_key("W_2", layer): _take(state, block + "mlp.c_proj.weight", (d, r))}
        for bias, size in zip(BLOCK_BIASES, (3 * d, d, r, d)):
            _drop_zero_bias(state, block + bias, size)
        _drop_mask_buffer(state, block + "attn.bias")
        if has_norm:
            params |= _norm(state, block + "ln_1", layer_key("ln_1", layer), d)
            params |= _norm(state, block + "ln_2", layer_key("ln_2", layer), d)
    if has_norm:
        params |= _norm(state, "transformer.ln_f", "ln_f", d)
    head = _take(state, "lm_head.weight", (k, d))
    tied = torch.equal(head, params["E"])
    if tying and not tied:
        raise InvalidInputError("lm_head.weight differs from transformer.wte.weight: the head is untied, "
                                "not tied as asked")
    tying = tied if tying is None else tying
    if not tying:
        params["A"] = head
    params["b"] = _take(state, "lm_head.bias", (k,))
    if state:
        raise InvalidInputError(f"the checkpoint has keys the released model does not: {', '.join(sorted(state))}")
    return ReleasedModel(params, k=k, d=d, seq_len=seq_len, layers=depth, layer_norm=has_norm, tying=tying,
                         activation=activation)


def to_scalar(params: Params) -> Params:
    """The theory's scalar model computing the k = 2 one-hot model's logit difference ℓ = logit_1 - logit_0.

    With x̃_n = E[x_n] + pos_n = x_n (E_1 - E_0) + (pos_n + E_0) for x_n ∈ {0, 1}:

        e = E_1 - E_0,   pos'_n = pos_n + E_0,   b = b_1 - b_0,   a = A_1 - A_0 (untied);

    tied, the scalar head a = e is E_1 - E_0 as well.  Every block is unchanged, so the hidden states agree and
    σ(ℓ) = softmax(logits)_1.  (``transformer.onehot_from_scalar`` goes the other way, with E_0 = 0.)
    """
    if not is_onehot(params) or params["E"].shape[0] != 2:
        raise InvalidInputError("to_scalar maps a one-hot model with k = 2 symbols (E with 2 rows)")
    table = params["E"]
    scalar = {k: v for k, v in params.items() if k not in ("E", "A", "b")}
    scalar |= {"e": table[1] - table[0], "pos": params["pos"] + table[0], "b": params["b"][1] - params["b"][0]}
    if "A" in params:
        scalar["a"] = params["A"][1] - params["A"][0]
    return scalar
