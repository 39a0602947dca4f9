"""verify.figures.curves_figure, the experiments' training curves, on small synthetic summary rows: every curve
inside its axes or its clipping named on the plot, coinciding curves told apart, the reference band kept."""

import matplotlib.pyplot as plt
import pytest

from verify.figures import SPLIT, curves_figure, cut_off, reference_band

STEPS = [0, 20, 40, 60, 80, 100, 120, 140, 160, 180, 200]
#: the init experiment's references (p = 0.5, q = 0.8) and curves shaped like a --quick run's
INIT_REFERENCES = {"unigram": 0.6663, "bigram": 0.6190}
TRAPPED = [0.693, 0.690, 0.685, 0.680, 0.672, 0.669, 0.668, 0.667, 0.667, 0.667, 0.667]
INIT_CURVES = {
    "rank-one": [19.9, 13.6, 5.9, 0.90, 0.83, 0.81, 0.78, 0.74, 0.70, 0.68, 0.655],
    "Gaussian 0.002": TRAPPED,
    "Gaussian 0.02 (std)": [v + 1e-4 for v in TRAPPED],  # on top of the previous one at any readable scale
    "Gaussian 0.2": [0.723, 0.687, 0.665, 0.646, 0.630, 0.625, 0.622, 0.621, 0.620, 0.620, 0.620],
}
#: rotating3 of the multi-state experiment: starts at log 3, above its unigram loss
ROTATING3_REFERENCES = {"unigram": 0.9337, "bigram": 0.7095}
ROTATING3_CURVES = {"tied": [1.106, 1.079, 1.007, 0.946, 0.935, 0.93, 0.92, 0.90, 0.87, 0.84, 0.81],
                    "untied": [1.112, 1.082, 0.992, 0.875, 0.823, 0.79, 0.77, 0.76, 0.75, 0.74, 0.735]}


def rows(panel: str, references: dict, curves: dict) -> list[dict]:
    """Summary rows as ``verify.experiments.summarise`` writes them (the keys the plot reads), two seeds each."""
    return [{"panel": panel, "variant": variant, "references": references,
             "runs": [{"steps": STEPS, "test_loss": loss}, {"steps": STEPS, "test_loss": [v * 1.001 for v in loss]}]}
            for variant, loss in curves.items()]


def curves_of(ax, curves: dict) -> dict:
    """The training lines of ``ax`` (not the references) by the variant whose data they draw."""
    by_data = {tuple(round(v, 9) for v in loss): variant for variant, loss in curves.items()}
    found = {}
    for line in ax.get_lines():
        variant = by_data.get(tuple(round(float(v), 9) for v in line.get_ydata()))
        if variant is not None:
            found[variant] = line
    assert set(found) == set(curves)
    return found


@pytest.fixture
def figure():
    made = []
    yield lambda data: made.append(curves_figure(data)) or made[-1]
    for fig in made:
        plt.close(fig)


def test_a_far_start_splits_the_panel_and_the_band_names_what_it_cuts_off(figure):
    fig = figure(rows("init", INIT_REFERENCES, INIT_CURVES))
    whole, near = fig.axes
    assert whole.get_yscale() == "log" and near.get_yscale() == "linear"
    data = [v for row in rows("init", INIT_REFERENCES, INIT_CURVES) for run in row["runs"] for v in run["test_loss"]]
    low, high = whole.get_ylim()
    assert low <= min(data) and max(data) <= high  # the top axes show every curve whole
    assert (low, high) != near.get_ylim()
    bottom, top = near.get_ylim()
    assert (bottom, top) == reference_band(INIT_REFERENCES.values())
    cut = {variant for variant, line in curves_of(near, INIT_CURVES).items() if max(line.get_ydata()) > top}
    assert cut == {"rank-one", "Gaussian 0.2"}
    title = near.get_title()
    assert f"cut off above {top:.3f}" in title and "whole curves above" in title
    assert {variant for variant in INIT_CURVES if f"\n{variant} at " in title} == cut
    assert "rank-one at steps 0-140 (up to 19.9)" in title and "Gaussian 0.2 at step 0 (up to 0.724)" in title
    assert all(min(line.get_ydata()) >= bottom for line in near.get_lines())  # nothing cut off below


def test_a_start_a_little_above_the_references_widens_the_range(figure):
    band = reference_band(ROTATING3_REFERENCES.values())
    assert max(ROTATING3_CURVES["untied"]) > band[1]  # the band alone cuts rotating3's start
    fig = figure(rows("rotating3", ROTATING3_REFERENCES, ROTATING3_CURVES))
    (ax,) = fig.axes
    low, high = ax.get_ylim()
    assert all(low <= min(line.get_ydata()) and max(line.get_ydata()) <= high for line in ax.get_lines())
    assert low == band[0] and "cut off" not in ax.get_title()


def test_only_the_panels_that_need_it_split(figure):
    fig = figure(rows("init", INIT_REFERENCES, INIT_CURVES) +
                 rows("rotating3", ROTATING3_REFERENCES, ROTATING3_CURVES))
    assert [ax.get_title().split(":")[0].split(";")[0] for ax in fig.axes] == ["init", "near the references",
                                                                                "rotating3"]


def test_coinciding_curves_differ_in_style_and_their_markers_interleave(figure):
    fig = figure(rows("init", INIT_REFERENCES, INIT_CURVES))
    for ax in fig.axes:
        lines = curves_of(ax, INIT_CURVES)
        styles = {(line.get_linestyle(), line.get_marker(), line.get_color()) for line in lines.values()}
        assert len(styles) == len(INIT_CURVES)
        assert len({style[:2] for style in styles}) == len(INIT_CURVES)  # apart also in black and white
        marked = [set(range(line.get_markevery()[0], len(STEPS), line.get_markevery()[1]))
                  for line in (lines["Gaussian 0.002"], lines["Gaussian 0.02 (std)"])]
        assert marked[0] and marked[1] and not marked[0] & marked[1]


def test_the_split_threshold_is_in_band_heights(figure):
    band = reference_band([0.5, 0.6])
    height = band[1] - band[0]
    assert band == pytest.approx((0.48, 0.64)) and height == pytest.approx(0.16)
    below, above = band[0] + SPLIT * height - 0.01, band[0] + SPLIT * height + 0.01  # seeds differ by 0.1%
    assert len(figure(rows("p", {"a": 0.5, "b": 0.6}, {"x": [below] * 11})).axes) == 1
    assert "cut off" in figure(rows("p", {"a": 0.5, "b": 0.6}, {"x": [above] * 11})).axes[-1].get_title()


def test_cut_off_names_each_variant_its_steps_and_its_largest_value():
    runs = {"a": [([0, 10, 20], [3.0, 1.0, 2.5])], "b": [([0, 10], [0.5, 0.4])], "c": [([0, 10], [1.5, 0.1])]}
    assert cut_off(runs, 1.2) == ["a at steps 0-20 (up to 3)", "c at step 0 (up to 1.5)"]
    assert cut_off(runs, 5.0) == []
