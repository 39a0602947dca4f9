"""Writing figures: every plot of the package goes out as PNG (to look at) and PDF (to print)."""

from __future__ import annotations

from pathlib import Path


def save_figure(fig, path: Path, *, dpi: int = 120) -> list[Path]:
    """Save ``fig`` as ``path`` with suffixes .png and .pdf, close it, return the two files."""
    import matplotlib.pyplot as plt

    written = [path.with_suffix(".png"), path.with_suffix(".pdf")]
    for file in written:
        fig.savefig(file, dpi=dpi)
    plt.close(fig)
    return written
