"""An atlas of the critical manifold M_π (claim ``MANIFOLD``): where on M_π are the local minima?

For p = q = s/2 over a grid of s = p + q and a grid of weight scales σ, draw random points of M_π
(pos and every weight of the block ~ N(0, σ²), e = a = 0, b = log(p/q)) and classify each by the
closed-form normal block (``numerics.manifold.manifold_curvature``).  At σ → 0 every point is near
θ_π, a local minimum iff p + q > 1 (tied); larger weights move the boundary.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import replace
from pathlib import Path

import numpy as np

from numerics.manifold import LOCAL_MINIMUM, SADDLE_POINT, manifold_curvature
from numerics.markov import MarkovChain
from verify.cli import Config
from verify.figures import save_figure
from verify.manifold_checks import manifold_point

SUMS = tuple(round(0.3 + 0.2 * i, 2) for i in range(9))  # p + q from 0.3 to 1.9
SCALES = (0.02, 0.1, 0.3, 0.6, 1.0, 1.5, 2.0)


def atlas(config: Config, points: int, *, sums: Iterable[float] = SUMS, scales: Iterable[float] = SCALES,
          progress: Callable[[Iterable], Iterable] = iter) -> dict:
    """Fractions of local minima, saddles and undecided points of M_π per (p + q, σ) cell.

    ``config`` gives d, N, tying, device and the seed; p = q = (p + q)/2.  Every point is seeded
    (config.seed, cell, index), so the atlas is reproducible.  Returns JSON-ready data, rows by σ.
    """
    sums, scales = list(sums), list(scales)
    cells = [(i, j) for i in range(len(scales)) for j in range(len(sums))]
    counts = {name: [[0] * len(sums) for _ in scales] for name in ("minima", "saddles", "undecided")}
    for i, j in progress(cells):
        p = sums[j] / 2
        chain = MarkovChain(p, p)
        cell = replace(config, p=p, q=p)
        for k in range(points):
            seed = config.seed + 1000 * (i * len(sums) + j) + k
            params = manifold_point(cell, chain, pos_std=scales[i], weight_std=scales[i], seed=seed,
                                    all_weights=True)
            found = manifold_curvature({name: v.to(config.device) for name, v in params.items()}, p, p,
                                       tying=config.tying).classification
            kind = {LOCAL_MINIMUM: "minima", SADDLE_POINT: "saddles"}.get(found, "undecided")
            counts[kind][i][j] += 1
    return {"p_plus_q": sums, "weight_scale": scales, "points_per_cell": points,
            "d": config.d, "seq_len": config.seq_len, "tying": config.tying, "seed": config.seed,
            **{f"fraction_{name}": [[c / points for c in row] for row in grid] for name, grid in counts.items()}}


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
