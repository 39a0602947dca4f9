"""The unigram critical manifold M_π at any point (claims MANIFOLD, MANIFOLD-GENERAL).

M_π = {e = 0 (and a = 0 untied), b = log(π1/π0), every other weight arbitrary}: every point predicts
π1, is stationary and has loss H(π).  Its Hessian vanishes outside the normal (e, b) block (untied
(e, a, b)), which the data enter only through the source's autocovariance c(m) and the model only through
its hidden states z_n at x̃ = pos and their Jacobians (numerics/manifold.py; SPEC §10, §12): the point is a
local minimum iff the Schur complement S = π0π1 Cov_n(z_n) - (A + Aᵀ), A = mean_n Σ_{i≤n} c(n+1-i) K_{n,i},
is positive definite.  Any source of --source (the first-order chain (p, q), the paper's lagged second-order
chain), depth (--layers), attention memory (--memory) and layer norm (--layer-norm): one layer without layer
norm by the closed form, every other model by forward-mode autograd of its own forward pass.  A k-state chain
(--chain, --transition; k >= 3, or --embedding onehot) gives the one-hot model's block in (E, b), untied
(E, A, b), with the autocovariance matrices C_m (SPEC §11, §12), checked against the dense Hessian (N <= 12); a
2-state chain is the scalar model of its (p, q).

This command draws a random point of M_π (every weight ~ N(0, --weight-std²), positions
~ N(0, --pos-std²), layer-norm gains 1 + N(0, --weight-std²)) or reads one from --checkpoint (ours, or the
released code's GPT-2-style state dict; projected onto M_π: e, a → 0, b → log(π1/π0)), classifies it and
checks the block against what does not share its derivation.  N ≤ 12: the dense autograd Hessian of the exact
loss over all D parameters (block, spectrum, null space D - (d+1), flatness along M_π, descent along the escape
direction of a saddle, no nearby descent at a local minimum).  N > 12: an unbiased Monte-Carlo mean of
per-sequence Hessians of the normal block (agreement within 4 standard errors), over as many sequences as the
class check needs by a pilot's spread, within a budget, or --samples K.
--atlas instead maps the fraction of local minima over p + q and the weight scale (first-order source, one
layer), each cell a task of verify/runner.py (--workers, --scheduler, --resume), into the folder --out.

Examples:
  python -m verify.theorem_manifold --source second-order --layers 2 --memory 2 --layer-norm --seq-len 6
  python -m verify.theorem_manifold --source second-order --layers 2 --seq-len 256 --memory 40
  python -m verify.theorem_manifold --checkpoint model.pt --activation relu --layer-norm
  python -m verify.theorem_manifold --chain switching3 --layers 2 --memory 1 --seq-len 4

Exit code 0: every check agrees with the prediction; 1: some check disagrees; 2: bad input;
3: inconclusive (e.g. an eigenvalue of the block within its error bound of 0).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import replace
from pathlib import Path

import torch

from numerics.markov import InvalidInputError
from numerics.released import read_file, read_state_dict, to_scalar, unwrap
from numerics.transformer import Params, has_layer_norm, init_params, is_onehot, num_layers
from verify.analysis import DENSE_MANIFOLD_SEQ_LEN, analyse_manifold
from verify.cli import (
    RESUME_WITHOUT_OUT,
    Config,
    bad_input,
    chain_from,
    check_folder,
    check_runner_flags,
    check_writable,
    config_from,
    exit_now,
    given_flags,
    parser,
    show_stages,
    sweep_progress,
    write_latex,
)
from verify.manifold_checks import PILOT_SAMPLES, manifold_point, memory_cap
from verify.report import Report
from verify.runner import RESULTS_FILE, add_runner_flags, run_with_args

THEOREM = "theorem_manifold"
DEFAULTS = {"p": 0.5, "q": 0.8, "tying": True, "d": 4, "seq_len": 8,
            "seq_len_help": f"sequence length N (≤ {DENSE_MANIFOLD_SEQ_LEN}: dense check of the exact loss; "
                            "above: Monte-Carlo check)"}
#: (p, q) of --source second-order without --p, --q: the paper's lagged chain (its optimum 0.545 against H(π) 0.673)
SECOND_ORDER_PAIR = (0.2, 0.3)
SOURCES = ("first-order", "second-order")
MAX_SEQ_LEN = 4096
#: deeper models cost one forward-mode pass per layer and tangent; beyond this depth nothing here was measured
MAX_LAYERS = 16
MIN_SAMPLES = 30
MAX_STD = 100.0  # beyond, the forward pass overflows long before any curvature is meaningful
DEFAULT_STD = 0.8
#: where --atlas writes without --out
ATLAS_FOLDER = "manifold_atlas"
#: the atlas's files in its folder, without their suffixes .json, .png, .pdf
ATLAS_NAME = "atlas"
#: flags whose value a checkpoint fixes
FROM_CHECKPOINT = ("--d", "--seq-len", "--tying", "--no-tying", "--weight-std", "--pos-std")
#: the released code's token embedding: its presence marks a GPT-2-style state dict (numerics.released)
RELEASED_KEY = "transformer.wte.weight"


def _parser() -> argparse.ArgumentParser:
    ap = parser(__doc__, DEFAULTS, prog=f"python -m verify.{THEOREM}", sweep=False)
    ap.add_argument("--source", choices=SOURCES, default="first-order",
                    help="the data: first-order, the chain (p, q) (default --p 0.5 --q 0.8); second-order, the "
                         "paper's lagged chain x_(n+1) ~ P(· | x_(n-1)) of the kernel (p, q) (default --p 0.2 "
                         "--q 0.3). Example: --source second-order --layers 2 --seq-len 6 (default: %(default)s)")
    ap.add_argument("--layers", type=int, default=1, metavar="L",
                    help=f"attention + feed-forward blocks of the model (1 to {MAX_LAYERS}; above 1 the block comes "
                         "from forward-mode autograd instead of the one-layer closed form). Example: --layers 2 "
                         "(default: %(default)s)")
    ap.add_argument("--memory", type=int, default=None, metavar="W",
                    help="attention sees the current symbol and the W before it (W >= 1); W >= N - 1 sees the whole "
                         "past, the same model as full attention, and is accepted as such. Example: --memory 2 "
                         "(default: full attention)")
    ap.add_argument("--layer-norm", action="store_true",
                    help="GPT-2 pre-norm blocks (LN before attention and feed-forward, LN_f before the head), as the "
                         "released code's masking runs; the random point's gains are 1 + N(0, --weight-std²), biases "
                         "N(0, --weight-std²). Example: --layers 2 --layer-norm")
    ap.add_argument("--weight-std", type=float, default=DEFAULT_STD,
                    help="std of every block weight of the random point (default: %(default)s)")
    ap.add_argument("--pos-std", type=float, default=DEFAULT_STD,
                    help="std of the positional embeddings of the random point (default: %(default)s)")
    ap.add_argument("--checkpoint", metavar="FILE",
                    help="classify a saved parameter dict instead of a random point: ours (torch.save of {name: "
                         "tensor}, the names of numerics.transformer) or the released code's GPT-2/nanoGPT state dict "
                         f"(keys {RELEASED_KEY}, transformer.h.0.attn.c_attn.weight, ...; model.pt or ckpt.pt): k = 2 "
                         "symbols mapped exactly onto the scalar model, k >= 3 kept one-hot (give its chain with "
                         "--chain/--transition; N <= 12); d, N and tying come from it, its depth and layer norm must "
                         "match --layers and --layer-norm. Example: --checkpoint model.pt --activation relu "
                         "--layer-norm")
    ap.add_argument("--activation", choices=["relu", "gelu"], default=None,
                    help="the feed-forward a released checkpoint was trained with (a state dict does not say; "
                         "default: the released code's for its layout, ReLU without layer norm, GELU with it); GELU "
                         "is refused, our model has ReLU. Example: --checkpoint ckpt.pt --activation relu")
    ap.add_argument("--samples", type=int, default=None, metavar="K",
                    help=f"sequences of the Monte-Carlo check when N > 12 (at least {MIN_SAMPLES}; default: "
                         f"{PILOT_SAMPLES} pilot sequences measure the per-sequence spread, then as many as put 4 "
                         "standard errors of λ_min below half its distance from 0, within a budget of about 30 s; "
                         "the chosen size and why are in the JSON's numeric.sample_size).  With --layers 2 or more or "
                         "--layer-norm each pass also takes every position's Jacobian by reverse mode, whatever K: "
                         "measured on 2 CPU cores at d = 4, --memory 40, 20 s in all at N = 256, 11 min at N = 1024 "
                         "(the classification itself 1-2 s)")
    ap.add_argument("--atlas", action="store_true",
                    help="map the fraction of local minima over p + q (p = q) × weight scale instead (first-order "
                         "source, one layer, full attention, no layer norm)")
    ap.add_argument("--atlas-points", type=int, default=16, metavar="K",
                    help="random points per atlas cell (default: %(default)s)")
    ap.add_argument("--out", metavar="FOLDER",
                    help=f"the atlas's folder: FOLDER/{ATLAS_NAME}.json, .png, .pdf and FOLDER/{RESULTS_FILE} (each "
                         f"cell as it finishes; made if missing; default: {ATLAS_FOLDER}).  Deprecated, until the next "
                         "release: an --out that is not an existing folder, does not end in '/', has no suffix and "
                         "whose parent folder exists is the old file prefix (PREFIX.json, .png, .pdf, no "
                         f"{RESULTS_FILE}, so no --resume), with a note on stderr")
    add_runner_flags(ap)
    return ap


def is_released(data: object) -> bool:
    """Is ``data`` (what torch.load read) a state dict of the released code: its token embedding ``RELEASED_KEY``
    present, under any wrapper prefix (``_orig_mod.``, ``module.``) or inside a checkpoint's "model"?"""
    if isinstance(data, dict) and isinstance(data.get("model"), dict):
        data = data["model"]
    return isinstance(data, dict) and any(isinstance(k, str) and k.endswith(RELEASED_KEY) for k in data)


def own_checkpoint(data: object, path: str) -> Params:
    """A parameter dict of our model from ``data`` (read from ``path``): the names and shapes of ``init_params``
    for its d, N, r, depth, layer norm and tying, real floating-point and finite.  Anything else is bad input
    (one line)."""
    if isinstance(data, dict) and data and all(isinstance(v, dict) for v in data.values()):
        raise InvalidInputError(f"checkpoint {path} nests dicts (like the escape study's params.pt: optimizer → "
                                "seed → point); torch.save one parameter dict, e.g. data['adamw'][0]['end']")
    if not isinstance(data, dict) or not all(isinstance(k, str) and torch.is_tensor(v) for k, v in data.items()):
        raise InvalidInputError(f"checkpoint {path} is not a dict of named tensors")
    missing = [name for name in ("e", "pos", "b", "W_1") if name not in data]
    if missing:
        raise InvalidInputError(f"checkpoint {path} lacks {', '.join(missing)}")
    if data["pos"].dim() != 2 or data["W_1"].dim() != 2 or data["e"].dim() != 1:
        raise InvalidInputError(f"checkpoint {path}: pos, W_1 must be matrices and e a vector")
    reference = init_params(data["e"].numel(), data["pos"].shape[0], r=data["W_1"].shape[0],
                            layers=max(1, num_layers(data)), tying="a" not in data,
                            layer_norm=any(name.startswith("ln") for name in data), std=0.0)
    unknown = sorted(set(data) - set(reference))
    wrong = [f"{k} {tuple(v.shape)} (expected {tuple(reference[k].shape)})" for k, v in data.items()
             if k in reference and v.shape != reference[k].shape]
    bad = [k for k, v in data.items() if not v.is_floating_point() or not bool(torch.isfinite(v).all())]
    for problem, names in (("unknown parameters", unknown), ("wrong shapes", wrong),
                           ("entries that are not finite real numbers", bad), ("missing parameters",
                                                                     sorted(set(reference) - set(data)))):
        if names:
            raise InvalidInputError(f"checkpoint {path} has {problem}: {', '.join(names)}")
    return {k: v.detach().double() for k, v in data.items()}


def released_checkpoint(data: object, activation: str | None) -> tuple[Params, str]:
    """A released checkpoint mapped exactly (``numerics.released``: the GPT-2 layout onto our one-hot model; what it
    cannot map, GELU, several heads, nonzero block biases, is refused there) and how: k = 2 onward to the scalar
    model (``to_scalar``: e = E_1 - E_0, pos + E_0, b = b_1 - b_0), k ≥ 3 the one-hot model itself."""
    model = read_state_dict(unwrap(data), activation=activation)
    if model.k == 2:
        return to_scalar(model.params), "released GPT-2 state dict (k = 2 one-hot, mapped exactly to the scalar model)"
    return model.params, f"released GPT-2 state dict (the one-hot model on k = {model.k} symbols)"


def load_checkpoint(path: str, *, layers: int, layer_norm: bool,
                    activation: str | None = None) -> tuple[Params, str]:
    """The parameters in ``path`` in float64 (``own_checkpoint`` or, by its keys, ``released_checkpoint``) and which
    layout it had; a depth or layer norm other than ``layers`` and ``layer_norm`` (the flags) is bad input (one
    line)."""
    data = read_file(path)
    if is_released(data):
        params, layout = released_checkpoint(data, activation)
    else:
        params, layout = own_checkpoint(data, path), "numerics.transformer (the scalar model's names)"
    depth, norm = num_layers(params), has_layer_norm(params)
    if depth != layers:
        raise InvalidInputError(f"checkpoint {path} has {depth} layer(s), but --layers {layers} was given: "
                                f"pass --layers {depth}")
    if norm != layer_norm:
        raise InvalidInputError(f"checkpoint {path} has layer norm (ln_1, ln_2, ln_f), but --layer-norm was not "
                                "given" if norm else f"checkpoint {path} has no layer norm, but --layer-norm was given")
    return params, layout


def _checkpoint_config(args: argparse.Namespace, params: Params) -> Config:
    """The config of a checkpoint's run: d, N and tying from ``params``; its symbols must be the chain's (a one-hot
    checkpoint on k ≥ 3 symbols needs --chain/--transition with k states, the scalar model a binary source)."""
    onehot = is_onehot(params)
    shape = dict(d=params["E" if onehot else "e"].shape[-1], seq_len=params["pos"].shape[0],
                 tying="a" not in params and "A" not in params)
    config = config_from(argparse.Namespace(**(vars(args) | shape)), max_seq_len=MAX_SEQ_LEN)
    symbols = params["E"].shape[0] if onehot else 2
    if onehot != config.onehot or (onehot and config.source.k != symbols):
        given = f"a {config.source.k}-state chain" if config.onehot else "a binary source (--p, --q)"
        raise InvalidInputError(f"checkpoint {args.checkpoint} is a model of {symbols} symbols but {given} was given"
                                + ("; give its chain with --chain or --transition" if onehot else ""))
    return config


def _model_flags(args: argparse.Namespace) -> None:
    """Refuse the model and source flags that cannot hold (one line each); a 2-state --chain/--transition becomes
    the binary (p, q) of the scalar model, a second-order source without --p, --q the paper's (0.2, 0.3)."""
    if args.layers < 1 or args.layers > MAX_LAYERS:
        raise InvalidInputError(f"--layers {args.layers}: the model has 1 to {MAX_LAYERS} blocks")
    if args.memory is not None and args.memory < 1:
        raise InvalidInputError(f"--memory {args.memory}: attention sees the current symbol and the W >= 1 before "
                                "it; omit --memory for full attention")
    if args.transition is not None or args.chain is not None or args.embedding == "onehot":
        if args.source == "second-order":
            raise InvalidInputError("--chain/--transition/--embedding onehot take a first-order chain; --source "
                                    "second-order takes the lagged chain's kernel as --p, --q (scalar model)")
        if chain_from(args).k == 2 and args.embedding == "auto":
            args.embedding = "scalar"  # config_from reads the 2-state chain as its (p, q)
    if args.source == "second-order":
        args.default_pair = SECOND_ORDER_PAIR
    if args.atlas and (args.source != "first-order" or args.layers != 1 or args.memory is not None
                       or args.layer_norm or args.embedding != "auto" or args.chain or args.transition):
        raise InvalidInputError("--atlas maps the first-order one-layer scalar model with full attention and no "
                                "layer norm over p + q; drop --source second-order, --layers, --memory, --layer-norm, "
                                "--chain, --transition and --embedding")


def _config(args: argparse.Namespace, argv: list[str]) -> tuple[Config, Params | None, str | None]:
    """Validated inputs, the checkpoint's parameters and its layout (``load_checkpoint``; None, None for a random
    point)."""
    if args.samples is not None and args.samples < MIN_SAMPLES:
        raise InvalidInputError(f"--samples {args.samples}: at least {MIN_SAMPLES} (a mean and its standard error "
                                "need that many)")
    if args.atlas_points < 1:
        raise InvalidInputError(f"--atlas-points {args.atlas_points}: at least 1")
    _model_flags(args)
    if args.checkpoint is None:
        if args.activation is not None:
            raise InvalidInputError("--activation says how a released --checkpoint was trained; without one it "
                                    "has no use")
        if not (0 <= args.weight_std <= MAX_STD and 0 <= args.pos_std <= MAX_STD):
            raise InvalidInputError(f"--weight-std and --pos-std must be in [0, {MAX_STD:g}]")
        return _source_inputs(config_from(args, max_seq_len=MAX_SEQ_LEN), args), None, None
    given = given_flags(argv, FROM_CHECKPOINT)
    if given or args.atlas:
        raise InvalidInputError(f"{', '.join(given) or '--atlas'} cannot be combined with --checkpoint "
                                "(the checkpoint fixes d, N and tying)")
    params, layout = load_checkpoint(args.checkpoint, layers=args.layers, layer_norm=args.layer_norm,
                                     activation=args.activation)
    return _source_inputs(_checkpoint_config(args, params), args), params, layout


def _source_inputs(config: Config, args: argparse.Namespace) -> Config:
    """``config`` with the source's order and the attention memory, checked for the Monte-Carlo route."""
    if args.source == "second-order" and config.seq_len < 2:
        raise InvalidInputError("--source second-order needs --seq-len >= 2 (its law starts from a pair of symbols)")
    if config.onehot and config.seq_len > DENSE_MANIFOLD_SEQ_LEN:
        raise InvalidInputError(f"the one-hot model on {config.source.k} symbols is checked against the dense Hessian "
                                f"of its exact loss only (the Monte-Carlo check is binary): use --seq-len <= "
                                f"{DENSE_MANIFOLD_SEQ_LEN}")
    return _monte_carlo_inputs(replace(config, order=args.source, memory=args.memory), args.samples)


def _monte_carlo_inputs(config: Config, samples: int | None) -> Config:
    """The Monte-Carlo route computes in float64 (refuse a --dtype it would not honour) and holds all its
    sequences at once (refuse a --samples beyond the memory budget)."""
    if config.seq_len <= DENSE_MANIFOLD_SEQ_LEN:
        return config
    if config.dtype != "float64":
        raise InvalidInputError(f"--dtype {config.dtype} applies to the dense route (N <= {DENSE_MANIFOLD_SEQ_LEN}); "
                                "the Monte-Carlo route runs in float64")
    most = memory_cap(config.seq_len, config.d, config.tying, torch.device(config.device))
    if samples is not None and samples > most:
        raise InvalidInputError(f"--samples {samples} does not fit in memory at N={config.seq_len}, d={config.d}; "
                                f"use --samples <= {most}")
    return config


def old_prefix(out: str) -> bool:
    """Is --out the deprecated file prefix of the atlas: not an existing folder, not ending in '/', without a
    suffix, in an existing folder (the rule --help states)?"""
    path = Path(out)
    return not (out.endswith(("/", os.sep)) or path.is_dir() or path.suffix) and path.parent.is_dir()


def _atlas_output(args: argparse.Namespace) -> tuple[Path, Path | None]:
    """(the atlas files' path without suffix, the folder of results.jsonl or None), checked writable: --out as a
    folder, or (deprecated, with a note on stderr) as the old file prefix."""
    if args.out is not None and old_prefix(args.out):
        if args.resume:
            raise InvalidInputError(f"{RESUME_WITHOUT_OUT}; --out {args.out} is read as the deprecated file prefix "
                                    f"(give --out {args.out}/ for the folder)")
        files = [Path(args.out).with_suffix(suffix) for suffix in (".json", ".png", ".pdf")]
        for file in files:
            check_writable(str(file))
        print(f"note: --out {args.out} is read as a file prefix ({', '.join(map(str, files))}); this reading is "
              f"deprecated and ends with the next release, when --out is always a folder (FOLDER/{ATLAS_NAME}.json, "
              f".png, .pdf, {RESULTS_FILE}): give an existing folder or end the name with /", file=sys.stderr)
        return Path(args.out), None
    folder = check_folder(args.out or ATLAS_FOLDER)
    if folder.is_dir():
        for suffix in (".json", ".png", ".pdf"):
            check_writable(str((folder / ATLAS_NAME).with_suffix(suffix)))
    return folder / ATLAS_NAME, folder


def _run_atlas(config: Config, args: argparse.Namespace) -> int:
    """The atlas's cells as tasks of verify/runner.py; its files and table built from their records."""
    from verify.atlas import atlas_cell, atlas_data, atlas_tasks, plot_atlas

    prefix, folder = _atlas_output(args)
    tasks = atlas_tasks(config, args.atlas_points)
    result = run_with_args(atlas_cell, tasks, args, out=folder, progress=sweep_progress(args.json, sys.stderr))
    if result.interrupted:  # the runner said how to resume
        return result.exit_code
    if result.failed:
        print(f"the atlas was not written: {result.failed} of {len(tasks)} cells failed"
              + (f" (errors in {result.results_file}; --resume runs them again)" if folder else ""), file=sys.stderr)
        return 1
    data = atlas_data(config, args.atlas_points, result.records)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    prefix.with_suffix(".json").write_text(json.dumps(data, indent=2))
    files = [prefix.with_suffix(".json"), *plot_atlas(data, prefix)]
    if args.json:
        print(json.dumps(data, indent=2))
    else:
        print(f"fraction of local minima on M_π ({'tied' if config.tying else 'untied'}, d={config.d}, "
              f"N={config.seq_len}); rows: weight scale, columns: p + q (p = q)")
        print(f"{'σ':>6} " + " ".join(f"{s:>5g}" for s in data["p_plus_q"]))
        for scale, row in zip(data["weight_scale"], data["fraction_minima"]):
            print(f"{scale:>6g} " + " ".join(f"{v:>5.2f}" for v in row))
        print("wrote " + ", ".join(str(f) for f in files + ([result.results_file] if folder else [])))
    return 0


def analyse_default(config: Config, theorem: str = THEOREM, scan: int = 0) -> Report:
    """The command's default check at ``config``: a random point of M_π with every weight of scale
    ``DEFAULT_STD`` (as ``python -m verify`` runs it)."""
    params = manifold_point(config, config.source, pos_std=DEFAULT_STD, weight_std=DEFAULT_STD, seed=config.seed,
                            all_weights=True)
    return analyse_manifold(config, theorem, params, samples=None, seed=config.seed)


def run(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        args = _parser().parse_args(argv)
        config, params, layout = _config(args, argv)
        check_runner_flags(args, args.atlas, "--atlas")
        if args.latex:
            check_writable(args.latex)
        if args.atlas:
            return _run_atlas(config, args)
        show_stages(enabled=not args.json)
        if params is None:
            params = manifold_point(config, config.source, pos_std=args.pos_std, weight_std=args.weight_std,
                                    seed=config.seed, all_weights=True, layers=args.layers,
                                    layer_norm=args.layer_norm)
        report = analyse_manifold(config, THEOREM, params, samples=args.samples, seed=config.seed)
        report.inputs |= {"weight_std": None if args.checkpoint else args.weight_std,
                          "pos_std": None if args.checkpoint else args.pos_std,
                          "checkpoint": args.checkpoint, "checkpoint_format": layout, "samples": args.samples}
        write_latex(args, config)
    except (InvalidInputError, OSError) as err:
        return bad_input(err)
    print(report.to_json() if args.json else report.to_text())
    return report.exit_code


if __name__ == "__main__":
    exit_now(run())
