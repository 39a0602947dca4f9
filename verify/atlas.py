"""An atlas of the critical manifold M_π (claim ``MANIFOLD``): where on M_π are the local minima?

For p = q = s/2 over a grid of s = p + q and a grid of weight scales σ, draw random points of M_π
(pos and every weight of the block ~ N(0, σ²), e = a = 0, b = log(p/q)) and classify each by the
closed-form normal block (``numerics.manifold.manifold_curvature``).  At σ → 0 every point is near
θ_π, a local minimum iff p + q > 1 (tied); larger weights move the boundary.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from numerics.manifold import LOCAL_MINIMUM, SADDLE_POINT, manifold_curvature
from verify.cli import Config, config_json, config_of
from verify.figures import save_figure
from verify.manifold_checks import manifold_point

SUMS = tuple(round(0.3 + 0.2 * i, 2) for i in range(9))  # p + q from 0.3 to 1.9
SCALES = (0.02, 0.1, 0.3, 0.6, 1.0, 1.5, 2.0)
KINDS = ("minima", "saddles", "undecided")


def atlas_tasks(config: Config, points: int, *, sums: Sequence[float] = SUMS,
                scales: Sequence[float] = SCALES) -> list[dict]:
    """One task of ``atlas_cell`` per (σ, p + q) cell, rows by σ: ``config`` at p = q = (p + q)/2 (d, N, tying,
    device and the seed from it), the cell's σ, its index and ``points``."""
    sums, scales = list(sums), list(scales)
    return [{"config": config_json(replace(config, p=s / 2, q=s / 2)), "scale": scale, "cell": i * len(sums) + j,
             "points": points} for i, scale in enumerate(scales) for j, s in enumerate(sums)]


def atlas_cell(task: dict) -> dict:
    """How many of the cell's random points of M_π (pos and every weight of the block ~ N(0, σ²); point k
    seeded config.seed + 1000 cell + k, so the atlas is reproducible) the closed-form normal block classifies
    as local minima, saddles and undecided."""
    config, scale = config_of(task["config"]), task["scale"]
    counts = dict.fromkeys(KINDS, 0)
    for k in range(task["points"]):
        params = manifold_point(config, config.source, pos_std=scale, weight_std=scale,
                                seed=config.seed + 1000 * task["cell"] + k, all_weights=True)
        found = manifold_curvature({name: v.to(config.device) for name, v in params.items()}, config.p, config.q,
                                   tying=config.tying).classification
        counts[{LOCAL_MINIMUM: "minima", SADDLE_POINT: "saddles"}.get(found, "undecided")] += 1
    return counts


def atlas_data(config: Config, points: int, counts: list[dict], *, sums: Sequence[float] = SUMS,
               scales: Sequence[float] = SCALES) -> dict:
    """The atlas from the records of ``atlas_tasks(config, points, sums=sums, scales=scales)`` (``atlas_cell``'s
    counts, in task order): the fractions of local minima, saddles and undecided points per cell, rows by σ, as
    JSON-ready data."""
    sums, scales = list(sums), list(scales)
    return {"p_plus_q": sums, "weight_scale": scales, "points_per_cell": points,
            "d": config.d, "seq_len": config.seq_len, "tying": config.tying, "seed": config.seed,
            **{f"fraction_{name}": [[counts[i * len(sums) + j][name] / points for j in range(len(sums))]
                                    for i in range(len(scales))] for name in KINDS}}


def atlas(config: Config, points: int, *, sums: Sequence[float] = SUMS, scales: Sequence[float] = SCALES) -> dict:
    """The atlas computed here, cell after cell (``python -m verify.theorem_manifold --atlas`` runs each cell as a
    task of verify/runner.py): ``atlas_data`` of ``atlas_cell`` over ``atlas_tasks``."""
    counts = [atlas_cell(task) for task in atlas_tasks(config, points, sums=sums, scales=scales)]
    return atlas_data(config, points, counts, sums=sums, scales=scales)


def plot_atlas(data: dict, prefix: Path) -> list[Path]:
    """Heat map of the fraction of local minima over (p + q, σ), one cell per grid point, with the
    θ_π boundary p + q = 1 marked.  Written as PNG and PDF; returns the files."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    grid = data["fraction_minima"]
    image = ax.imshow(grid, origin="lower", aspect="auto", cmap="viridis", vmin=0, vmax=1)
    ax.set_xticks(range(len(data["p_plus_q"])), [f"{s:g}" for s in data["p_plus_q"]])
    ax.set_yticks(range(len(data["weight_scale"])), [f"{s:g}" for s in data["weight_scale"]])
    for i, row in enumerate(grid):
        for j, value in enumerate(row):
            ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=7,
                    color="black" if value > 0.5 else "white")
    sums = data["p_plus_q"]
    if min(sums) < 1 < max(sums):  # between grid columns: interpolate the column coordinate
        ax.axvline(float(np.interp(1.0, sums, np.arange(len(sums)))), color="red", lw=1.2, ls="--",
                   label="θ_π: local minimum iff p + q > 1")
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), fontsize=8, frameon=False)
    tie = "tied" if data["tying"] else "untied"
    ax.set(xlabel="p + q  (p = q)", ylabel="weight scale σ",
           title=f"Fraction of local minima on M_π ({tie}, d = {data['d']}, N = {data['seq_len']}, "
                 f"{data['points_per_cell']} points per cell)")
    fig.colorbar(image, ax=ax, label="fraction of local minima")
    fig.tight_layout()
    return save_figure(fig, prefix, dpi=130)
