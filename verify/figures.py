"""Writing figures: every plot of the package goes out as PNG (to look at) and PDF (to print).

Also the training curves of ``verify.experiments`` (``curves_figure``): test loss per evaluation, one panel per
source, the reference losses as horizontal lines.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

#: Line style and marker of a panel's i-th variant (cycled): curves that coincide, such as two small Gaussian
#: initialisations on the same plateau, stay visible as interleaved dashes and markers of both colours.
STYLES = (("-", "o"), ("--", "s"), ("-.", "^"), (":", "D"), ((0, (5, 1, 1, 1)), "v"), ((0, (1, 2)), "P"))
#: Markers per curve (about; fewer when a panel has more variants): few enough to read the line, enough to tell
#: coinciding curves apart.
MARKERS_PER_CURVE = 6
#: The reference band (nats): from the lowest reference minus BELOW to the highest plus ABOVE, at least HEIGHT
#: tall; tight enough to tell H(π) from H_rate where they differ by a few hundredths.
BAND_BELOW, BAND_ABOVE, BAND_HEIGHT = 0.02, 0.04, 0.1
#: A panel's curves are drawn whole on one axes while they reach at most SPLIT band heights above its bottom;
#: beyond (a rank-one start of ~20 nats), the whole curves go on a log scale above and the band, with a note of
#: what it cuts off, below.
SPLIT = 3.0
#: Space between the data and the axes' edge, as a fraction of the band's height.
PAD = 0.03


def save_figure(fig, path: Path, *, dpi: int = 120) -> list[Path]:
    """Save ``fig`` as ``path`` with suffixes .png and .pdf, close it, return the two files."""
    import matplotlib.pyplot as plt

    written = [path.with_suffix(".png"), path.with_suffix(".pdf")]
    for file in written:
        fig.savefig(file, dpi=dpi)
    plt.close(fig)
    return written


def reference_band(references: Iterable[float]) -> tuple[float, float]:
    """[min - BAND_BELOW, max(max + BAND_ABOVE, min + BAND_HEIGHT)] over the reference losses."""
    values = list(references)
    low = min(values)
    return low - BAND_BELOW, max(max(values) + BAND_ABOVE, low + BAND_HEIGHT)


def needs_split(band: tuple[float, float], values: Iterable[float]) -> bool:
    """Does the largest of ``values`` lie more than ``SPLIT`` band heights above the band's bottom?  (The band is
    always extended down to the curves: a loss below it is test-set noise, a few hundredths at most.)"""
    return max(values) > band[0] + SPLIT * (band[1] - band[0])


def cut_off(curves: dict[str, list[tuple[list[int], list[float]]]], top: float) -> list[str]:
    """What a y-range ending at ``top`` cuts off: one line per variant with a value above it, naming the steps
    where that happens (first to last, over its runs) and its largest value."""
    lines = []
    for variant, runs in curves.items():
        above = [(step, value) for steps, losses in runs for step, value in zip(steps, losses) if value > top]
        if above:
            first, last = min(s for s, _ in above), max(s for s, _ in above)
            where = f"step {first}" if first == last else f"steps {first}-{last}"
            lines.append(f"{variant} at {where} (up to {max(v for _, v in above):.3g})")
    return lines


def _draw(ax, rows: list[dict]) -> None:
    """Every run of ``rows`` (one colour, line style and marker per variant) and the references, dashed."""
    for index, row in enumerate(rows):
        style, marker = STYLES[index % len(STYLES)]
        for i, run in enumerate(row["runs"]):
            # markers of the variants interleave (a stride of at least one per variant), so coinciding curves
            # show every colour
            stride = max(len(rows), len(run["steps"]) // MARKERS_PER_CURVE)
            ax.plot(run["steps"], run["test_loss"], color=f"C{index}", ls=style, marker=marker, ms=3.5,
                    markevery=(index * stride // len(rows), stride), alpha=0.85, lw=1.2,
                    label=row["variant"] if i == 0 else None)
    for style, (name, value) in zip(("--", ":", "-."), rows[0]["references"].items()):
        ax.axhline(value, color="black", ls=style, lw=1, label=f"{name} {value:.4f}")


def curves_figure(rows: list[dict]):
    """Test-loss curves of ``verify.experiments`` summary rows (every seed; per variant one colour, line style
    and marker), the references as black lines; one column per panel (source).

    The y-range is the reference band (``reference_band``) extended to every curve, unless a curve reaches more
    than ``SPLIT`` band heights above the band's bottom (``needs_split``): then the panel's top axes show the
    whole curves (log scale) and its bottom axes the band, extended down to the curves, with a note on the plot
    naming what it cuts off and where.  The figure has a second row only if some panel splits.  Returns the
    matplotlib figure.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels: dict[str, list[dict]] = {}
    for row in rows:
        panels.setdefault(row["panel"], []).append(row)
    layout = {}  # per panel: its band, every plotted loss, whether it splits
    for panel, mine in panels.items():
        band = reference_band(mine[0]["references"].values())
        values = [v for row in mine for run in row["runs"] for v in run["test_loss"]]
        layout[panel] = band, values, needs_split(band, values)
    split = any(parts[2] for parts in layout.values())
    fig, axes = plt.subplots(1 + split, len(panels), figsize=(5.5 * len(panels), 4.2 * (1 + split)), squeeze=False)
    for column, (panel, mine) in enumerate(panels.items()):
        band, values, whole = layout[panel]
        ax, pad = axes[-1, column], PAD * (band[1] - band[0])
        ax.set_ylim(min(band[0], min(values) - pad), band[1] if whole else max(band[1], max(values) + pad))
        _draw(ax, mine)
        ax.set(title=panel, xlabel="training step", ylabel="test loss (nats)")
        if whole:
            top = axes[0, column]
            _draw(top, mine)
            top.set(yscale="log", title=f"{panel}: whole curves", ylabel="test loss (nats, log scale)")
            top.legend(fontsize=8)
            # the note goes in the title, where no curve or legend can hide it
            lines = cut_off({row["variant"]: [(run["steps"], run["test_loss"]) for run in row["runs"]]
                             for row in mine}, band[1])
            ax.set_title("\n".join([f"near the references; cut off above {band[1]:.3f} (whole curves above):",
                                    *lines]), fontsize=9)
        else:
            ax.legend(fontsize=8)
            if split:
                fig.delaxes(axes[0, column])
    fig.tight_layout()
    return fig
