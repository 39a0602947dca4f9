"""Reading the released code's checkpoints (numerics/released.py).

The reference is a GPT-2-style module written here with the released code's key names and layout (nanoGPT's
``transformer.wte/wpe/h.ℓ.{ln_1,attn.c_attn,attn.c_proj,ln_2,mlp.c_fc,mlp.c_proj}/ln_f`` and ``lm_head``, every
Linear stored (out, in)), a ReLU feed-forward, pre-norm blocks and causal attention at 1/√d.  Its state dict,
saved with torch.save and read back, must give our ``transformer.logits`` to 1e-12 in float64.
"""

import itertools
import math

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from numerics.markov import InvalidInputError
from numerics.released import read_state_dict, to_scalar, unwrap
from numerics.transformer import init_params, logits

D, N = 4, 7


class _LayerNorm(nn.Module):
    """The released LayerNorm: a gain and an optional bias, eps 1e-5."""

    def __init__(self, d: int, bias: bool):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))
        self.bias = nn.Parameter(torch.zeros(d)) if bias else None

    def forward(self, x):
        return F.layer_norm(x, self.weight.shape, self.weight, self.bias, 1e-5)


class _Attention(nn.Module):
    def __init__(self, d: int, bias: bool):
        super().__init__()
        self.c_attn = nn.Linear(d, 3 * d, bias=bias)
        self.c_proj = nn.Linear(d, d, bias=bias)

    def forward(self, x, visible):
        q, k, v = self.c_attn(x).split(x.shape[-1], dim=-1)
        scores = (q @ k.transpose(-1, -2) / math.sqrt(x.shape[-1])).masked_fill(~visible, float("-inf"))
        return self.c_proj(torch.softmax(scores, dim=-1) @ v)


class _MLP(nn.Module):
    def __init__(self, d: int, bias: bool):
        super().__init__()
        self.c_fc = nn.Linear(d, 4 * d, bias=bias)
        self.c_proj = nn.Linear(4 * d, d, bias=bias)

    def forward(self, x):
        return self.c_proj(torch.relu(self.c_fc(x)))


class _Block(nn.Module):
    def __init__(self, d: int, layer_norm: bool, ln_bias: bool, bias: bool):
        super().__init__()
        norm = (lambda: _LayerNorm(d, ln_bias)) if layer_norm else nn.Identity
        self.ln_1, self.attn, self.ln_2, self.mlp = norm(), _Attention(d, bias), norm(), _MLP(d, bias)

    def forward(self, x, visible):
        x = x + self.attn(self.ln_1(x), visible)
        return x + self.mlp(self.ln_2(x))


class TinyGPT(nn.Module):
    """GPT-2 layout, one head, ReLU; tied: lm_head.weight is wte.weight (one tensor, two state-dict keys)."""

    def __init__(self, k: int, layers: int, *, layer_norm: bool, tying: bool = True, ln_bias: bool = True,
                 bias: bool = False, seed: int = 0):
        super().__init__()
        parts = dict(wte=nn.Embedding(k, D), wpe=nn.Embedding(N, D),
                     h=nn.ModuleList(_Block(D, layer_norm, ln_bias, bias) for _ in range(layers)))
        if layer_norm:
            parts["ln_f"] = _LayerNorm(D, ln_bias)
        self.transformer = nn.ModuleDict(parts)
        self.lm_head = nn.Linear(D, k, bias=True)
        if tying:
            self.transformer.wte.weight = self.lm_head.weight
        self.double()
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for p in self.parameters():  # every entry random (gains, biases, head bias), so no mapping slip hides
                p.copy_(0.7 * torch.randn(p.shape, generator=gen, dtype=torch.float64))

    def forward(self, x, memory=None):
        t = x.shape[-1]
        lag = torch.arange(t)[:, None] - torch.arange(t)[None, :]
        visible = (lag >= 0) & (lag <= (t if memory is None else memory))
        h = self.transformer.wte(x) + self.transformer.wpe(torch.arange(t))
        for block in self.transformer.h:
            h = block(h, visible)
        return self.lm_head(self.transformer.ln_f(h) if "ln_f" in self.transformer else h)


def _symbols(k: int, batch: int = 5, seed: int = 1) -> torch.Tensor:
    return torch.randint(k, (batch, N), generator=torch.Generator().manual_seed(seed))


def _gap(params, module, k, *, tying=True, memory=None) -> float:
    x = _symbols(k)
    with torch.no_grad():
        return (logits(params, x, tying=tying, memory=memory) - module(x, memory)).abs().max().item()


def _saved(module: nn.Module, tmp_path, name="model.pt"):
    path = tmp_path / name
    torch.save(module.state_dict(), path)
    return path


@pytest.mark.parametrize(("k", "layers", "layer_norm"), list(itertools.product((2, 3), (1, 2), (False, True))))
def test_released_checkpoint_computes_our_logits(tmp_path, k, layers, layer_norm):
    module = TinyGPT(k, layers, layer_norm=layer_norm, seed=k + 10 * layers)
    model = read_state_dict(_saved(module, tmp_path), activation="relu")
    assert (model.k, model.d, model.seq_len, model.layers) == (k, D, N, layers)
    assert model.layer_norm is layer_norm and model.tying and "A" not in model.params
    reference = init_params(D, N, layers=layers, layer_norm=layer_norm, symbols=k, std=0.0)
    assert {name: v.shape for name, v in model.params.items()} == {name: v.shape for name, v in reference.items()}
    assert all(v.dtype == torch.float64 for v in model.params.values())
    x = _symbols(k)
    with torch.no_grad():
        torch.testing.assert_close(model.logits(x), module(x), rtol=0, atol=1e-12)
        torch.testing.assert_close(model.logits(x, memory=2), module(x, memory=2), rtol=0, atol=1e-12)


@pytest.mark.parametrize(("layers", "layer_norm", "tying"), [(1, False, True), (2, True, True), (1, True, False)])
def test_k2_maps_onward_to_the_scalar_model(tmp_path, layers, layer_norm, tying):
    """ℓ = logit_1 - logit_0 of the released model is the scalar model's logit (e = E1 - E0, pos' = pos + E0)."""
    module = TinyGPT(2, layers, layer_norm=layer_norm, tying=tying, seed=3)
    model = read_state_dict(_saved(module, tmp_path), activation="relu")
    assert model.tying is tying
    scalar = to_scalar(model.params)
    assert set(scalar) == set(init_params(D, N, layers=layers, tying=tying, layer_norm=layer_norm, std=0.0))
    x = _symbols(2)
    with torch.no_grad():
        theirs = module(x)
    ours = logits(scalar, x.double(), tying=tying)
    torch.testing.assert_close(ours, theirs[..., 1] - theirs[..., 0], rtol=0, atol=1e-12)


def test_untied_head_ln_without_bias_and_zero_block_biases_map(tmp_path):
    module = TinyGPT(3, 1, layer_norm=True, tying=False, ln_bias=False, bias=True, seed=4)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.startswith("transformer.h.") and name.endswith(".bias"):
                p.zero_()
    model = read_state_dict(_saved(module, tmp_path), activation="relu")
    assert not model.tying and not torch.equal(model.params["A"], model.params["E"])
    assert torch.equal(model.params["ln_f.bias"], torch.zeros(D, dtype=torch.float64))
    assert _gap(model.params, module, 3, tying=False) < 1e-12


def test_compiled_and_wrapped_checkpoint_files_and_init_buffers_are_read(tmp_path):
    """save_checkpoint's {"model": ..., "optimizer": ...} with torch.compile's prefix; Markov-Simple's alpha, w."""
    module = TinyGPT(2, 1, layer_norm=False, seed=5)
    state = {f"_orig_mod.{name}": v for name, v in module.state_dict().items()}
    state |= {"_orig_mod.alpha": torch.ones(D, 1), "_orig_mod.w": torch.ones(4 * D, 1),
              "_orig_mod.transformer.h.0.attn.bias": torch.ones(1, 1, N, N).tril()}
    path = tmp_path / "ckpt.pt"
    torch.save({"model": state, "optimizer": {"state": {}, "param_groups": []}, "itr": 800}, path)
    model = read_state_dict(path)  # default activation without layer norm: ReLU, as Markov-Simple
    assert model.activation == "relu" and _gap(model.params, module, 2) < 1e-12
    assert set(unwrap({"module._orig_mod.lm_head.bias": torch.zeros(2)})) == {"lm_head.bias"}


def test_tied_checkpoint_read_untied_gets_its_own_copy_of_the_head(tmp_path):
    module = TinyGPT(2, 1, layer_norm=False, seed=6)
    model = read_state_dict(_saved(module, tmp_path), tying=False)
    assert not model.tying and torch.equal(model.params["A"], model.params["E"])
    assert model.params["A"].data_ptr() != model.params["E"].data_ptr()
    assert _gap(model.params, module, 2, tying=False) < 1e-12


# Mutations: each slip a loader could make must break the equality the tests above rely on.


@pytest.mark.parametrize("order", [p for p in itertools.permutations("QKV") if p != ("Q", "K", "V")])
def test_a_wrong_split_order_of_c_attn_breaks_the_equality(tmp_path, order):
    module = TinyGPT(3, 1, layer_norm=False, seed=7)
    params = read_state_dict(_saved(module, tmp_path)).params
    assert _gap(params, module, 3) < 1e-12
    mutated = params | {f"W_{new}": params[f"W_{old}"] for new, old in zip("QKV", order)}
    assert _gap(mutated, module, 3) > 1e-6


@pytest.mark.parametrize("name", ["W_Q", "W_K", "W_V", "W_O", "W_O.1"])
def test_a_transposed_weight_breaks_the_equality(tmp_path, name):
    module = TinyGPT(3, 2, layer_norm=True, seed=8)
    params = read_state_dict(_saved(module, tmp_path), activation="relu").params
    assert _gap(params, module, 3) < 1e-12
    assert _gap(params | {name: params[name].T}, module, 3) > 1e-6


def test_a_dropped_head_bias_breaks_the_equality_also_for_the_scalar_model(tmp_path):
    module = TinyGPT(2, 1, layer_norm=False, seed=9)
    params = read_state_dict(_saved(module, tmp_path)).params
    assert _gap(params | {"b": torch.zeros(2, dtype=torch.float64)}, module, 2) > 1e-6
    scalar = to_scalar(params)
    x = _symbols(2)
    with torch.no_grad():
        theirs = module(x)
    dropped = logits(scalar | {"b": torch.zeros((), dtype=torch.float64)}, x.double(), tying=True)
    assert (dropped - (theirs[..., 1] - theirs[..., 0])).abs().max().item() > 1e-6


# Bad input: one line each.


def _refused(match: str, source, **kwargs) -> None:
    with pytest.raises(InvalidInputError, match=match) as err:
        read_state_dict(source, **kwargs)
    assert "\n" not in str(err.value)


def _state(**kwargs) -> dict[str, torch.Tensor]:
    return dict(TinyGPT(2, 1, **({"layer_norm": False} | kwargs)).state_dict())


def test_what_our_model_cannot_compute_is_refused():
    with_norm = _state(layer_norm=True)
    _refused("heads", _state(), heads=2)
    _refused("activation is gelu", with_norm)  # the layer-norm layout's released default
    _refused("activation is gelu", _state(), activation="gelu")
    _refused("attn.c_attn.bias is nonzero", _state(bias=True))
    _refused("has layer norm", with_norm, activation="relu", layer_norm=False)
    _refused("has no layer norm", _state(), layer_norm=True)
    _refused("1 layer", _state(), layers=2)
    _refused("untied", _state(tying=False), tying=True)
    partial = dict(with_norm)
    del partial["transformer.ln_f.weight"]
    _refused("some layer norms", partial, activation="relu")


def test_missing_misshapen_unknown_and_non_finite_entries_are_refused(tmp_path):
    state = _state()
    _refused("lacks lm_head.bias", {k: v for k, v in state.items() if k != "lm_head.bias"})
    _refused("lacks transformer.wpe.weight", {k: v for k, v in state.items() if k != "transformer.wpe.weight"})
    _refused(r"c_attn.weight has shape \(12, 5\)", state | {"transformer.h.0.attn.c_attn.weight": torch.zeros(12, 5)})
    _refused(r"wte.weight has shape \(4, 1\)", state | {"transformer.wte.weight": torch.zeros(D, 1)})  # v1 scalar
    _refused("keys the released model does not: b", state | {"b": torch.zeros(1)})
    _refused("not finite", state | {"lm_head.bias": torch.tensor([0.0, math.nan])})
    _refused("k >= 2", state | {"transformer.wte.weight": torch.zeros(1, D), "lm_head.weight": torch.zeros(1, D)})
    _refused("not the causal mask", state | {"transformer.h.0.attn.bias": torch.ones(1, 1, N, N)})
    gap = {k.replace("h.0.", "h.1."): v for k, v in state.items()}
    _refused("not numbered", gap)
    _refused("no blocks", {k: v for k, v in state.items() if ".h." not in k})
    _refused("not a state dict", [1, 2])
    _refused("does not exist", tmp_path / "absent.pt")
    torch.save({"model": state, "hook": print}, tmp_path / "code.pt")
    _refused("tensors only", tmp_path / "code.pt")
    with pytest.raises(InvalidInputError, match="k = 2") as err:
        to_scalar(read_state_dict(TinyGPT(3, 1, layer_norm=False).state_dict()).params)
    assert "\n" not in str(err.value)
