"""Learning dynamics of the Local to Global canonical model: basins of the gradient flow (claims L2G-ENERGY,
L2G-BASINS, L2G-GAUSS-INIT).

The model logit = e²(1 + 2w|w|) x + b − e²/2 (theory/canonical.py).  The energy
E = e² − w² − sign(w) log|w| is conserved by the b-profiled gradient flow (b = b*(e, w), the optimal bias,
throughout) and changes by dE = −2e² db along the joint flow of (e, w, b) (both proven symbolically).  Its
level curves therefore predict where each start ends (the region fills of the authors' plotting code), with the
separatrix E_s = −(1 + log 2)/2 through the saddle (0, −1/√2):

  p + q < 1: the unigram line e = 0 (loss H(π)) attracts {w < −1/√2, E < E_s};
  p + q > 1: it attracts {−1/√2 < w < 0, E < E_s} ∪ {w > 0};
  every other start reaches a global minimum (loss H_rate).

This command integrates both flows (scipy's BDF, tolerances reported) from a K × K grid of (e, w) starts on
[−extent, extent]², the profiled one and the joint one with b = 0 at the start, labels each endpoint by
its loss (global / unigram / undecided) and compares it with the energy's basin, leaving out the starts
within --band of the separatrix (w < 0 and |E − E_s| < band, where the saddle makes the flow slow) and the
starts on the lines e = 0 (critical) and w = 0 (E undefined).  The profiled flow is checked: the basins
are its level sets.  The joint flow from b = 0 is measured only: E is not conserved along it, and it
leaves the energy's basins where b has far to travel (chains with p far from q).  It also checks the
energy along the flows, and runs the Gaussian start of the paper: --starts draws of (e, w, b) ~ N(0, 0.1²)
at (p, q) = (0.5, 0.8), (0.9, 0.9), (0.2, 0.3), (0.1, 0.1), where the claim is that all end at H(π) when
p + q > 1 and at H_rate when p + q < 1.  Each batch of 256 grid starts under each flow and the Gaussian starts at
each (p, q) are tasks of verify/runner.py (--workers, --scheduler, --resume); --out FOLDER keeps them in
FOLDER/results.jsonl as they finish and writes the phase portrait (portrait.png, .pdf) and the report
(summary.json) there.

Exit code 0: every check agrees with the theory; 1: some check disagrees; 2: bad input; 3: inconclusive
(e.g. p + q = 1, where H(π) = H_rate and no endpoint can be told apart, or flows that did not settle).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

from numerics.dynamics import (
    GLOBAL,
    MODES,
    SADDLE_W,
    SEPARATRIX,
    UNDECIDED,
    UNIGRAM,
    CanonicalModel,
    FlowResult,
    Integration,
    energy,
    gaussian_starts,
    grid,
    integrate,
    predicted_basin,
    slope,
)
from numerics.markov import InvalidInputError, MarkovChain
from verify.cli import (
    RESUME_WITHOUT_OUT,
    Parser,
    _number,
    bad_input,
    binary_pair,
    check_folder,
    check_writable,
    exit_now,
    show_stages,
    stage,
    sweep_progress,
)
from verify.figures import save_figure
from verify.report import Check, Report
from verify.runner import RESULTS_FILE, add_runner_flags, run_with_args

THEOREM = "theorem_basins"
CLAIMS = ["L2G-ENERGY", "L2G-BASINS", "L2G-GAUSS-INIT"]
#: (p, q) of the paper's Gaussian-start experiment (claim L2G-GAUSS-INIT)
GAUSS_PAIRS = ((0.5, 0.8), (0.9, 0.9), (0.2, 0.3), (0.1, 0.1))
GAUSS_STD = 0.1
#: agreement a check demands, as a fraction of the decided starts (1 − this tolerance)
AGREEMENT_TOL = 0.01
#: allowance for the energy checks: ENERGY_ALLOWANCE · rtol · (1 + max |E(0)|), the local errors of ~10³ steps
ENERGY_ALLOWANCE = 1e3
MAX_GRID = 200
MAX_EXTENT = 4.0  # beyond, (1 + 2w|w|)e² passes 709 and e^{κe²} in b* overflows
MAX_STARTS = 20_000
MODE_NAMES = {"profiled": "profiled flow (b = b*)", "joint": "joint flow from b = 0"}
#: the files --out FOLDER holds besides results.jsonl: the portrait (.png, .pdf) and the report
PORTRAIT, SUMMARY = "portrait", "summary.json"
#: where the portrait's trajectories start, in units of extent/3 (then the nearest grid start)
TRAJECTORY_STARTS = ((2.5, -2.5), (2.6, -1.1), (1.4, -0.3), (2.4, 1.6), (-2.4, -1.8), (-0.9, -2.6), (-2.1, 0.4),
                     (-0.6, 2.5), (0.9, -1.9), (-1.6, -0.6))


def _parser() -> argparse.ArgumentParser:
    ap = Parser(prog=f"python -m verify.{THEOREM}", description=__doc__,
                formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--p", type=_number, help="P(x_{n+1}=1 | x_n=0), in (0, 1); give --p and --q together "
                                              "(default: --p 0.5 --q 0.8)")
    ap.add_argument("--q", type=_number, help="P(x_{n+1}=0 | x_n=1), in (0, 1); with --p")
    ap.add_argument("--grid", type=int, default=12, metavar="K",
                    help=f"K × K starts, cell centres of [-extent, extent]^2, 2 <= K <= {MAX_GRID} "
                         "(default: %(default)s)")
    ap.add_argument("--extent", type=_number, default=3.0,
                    help=f"half-width of the grid in e and w, in (0, {MAX_EXTENT:g}] "
                         "(default: %(default)s, as in the authors' plots)")
    ap.add_argument("--band", type=_number, default=0.1,
                    help="leave out starts with w < 0 and |E - E_s| < band from the agreement (default: %(default)s)")
    ap.add_argument("--starts", type=int, default=200,
                    help=f"Gaussian starts per (p, q) of the paper's experiment, 1 .. {MAX_STARTS} "
                         "(default: %(default)s)")
    ap.add_argument("--horizon", type=_number, default=Integration.horizon, help="flow time T (default: %(default)s)")
    ap.add_argument("--rtol", type=_number, default=Integration.rtol,
                    help="relative tolerance per component, in [1e-12, 1e-4] (default: %(default)s; atol = rtol/100)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the Gaussian starts (default: %(default)s)")
    ap.add_argument("--json", action="store_true", help="print one JSON object (nothing on stderr)")
    ap.add_argument("--out", metavar="FOLDER",
                    help=f"write the phase portrait ({PORTRAIT}.png, {PORTRAIT}.pdf), the report ({SUMMARY}, as --json "
                         f"prints it) and each task as it finishes ({RESULTS_FILE}) to FOLDER (made if missing)")
    ap.add_argument("--plot", metavar="FILE",
                    help="deprecated, until the next release (use --out FOLDER): the phase portrait to FILE.png and "
                         "FILE.pdf")
    add_runner_flags(ap)
    return ap


def _validated(args: argparse.Namespace):
    """The chain and the integration settings; anything out of range raises InvalidInputError (exit 2)."""
    chain = MarkovChain(*binary_pair(args.p, args.q, (0.5, 0.8)))
    if not 2 <= args.grid <= MAX_GRID:
        raise InvalidInputError(f"--grid {args.grid}: K must be in [2, {MAX_GRID}] (K^2 flows are integrated)")
    if not (math.isfinite(args.extent) and 0 < args.extent <= MAX_EXTENT):
        raise InvalidInputError(f"--extent {args.extent}: must be in (0, {MAX_EXTENT:g}]")
    if not (math.isfinite(args.band) and args.band >= 0):
        raise InvalidInputError(f"--band {args.band}: must be a finite number >= 0")
    if not 1 <= args.starts <= MAX_STARTS:
        raise InvalidInputError(f"--starts {args.starts}: must be in [1, {MAX_STARTS}]")
    if args.seed < 0:  # numpy's generators take non-negative seeds only
        raise InvalidInputError(f"--seed {args.seed}: must be an integer >= 0")
    if not (math.isfinite(args.horizon) and 0 < args.horizon <= 1e6):
        raise InvalidInputError(f"--horizon {args.horizon}: must be in (0, 1e6]")
    if not (math.isfinite(args.rtol) and 1e-12 <= args.rtol <= 1e-4):
        raise InvalidInputError(f"--rtol {args.rtol}: must be in [1e-12, 1e-4]")
    atol = Integration.atol * (args.rtol / Integration.rtol)  # the default ratio, exact at the default rtol
    return chain, Integration(horizon=args.horizon, rtol=args.rtol, atol=atol)


def basin_summary(chain: MarkovChain, flow, band: float) -> dict:
    """Endpoint labels against the energy's prediction: kept starts, agreement outside and inside the band.

    The band is {w < 0, |E − E_s| < band}: on w < 0 the level E_s is the separatrix and passes the saddle
    (0, −1/√2), where the flow is slow; on w > 0 the curve E = E_s bounds nothing.
    """
    e, w = flow.start[:, 0], flow.start[:, 1]
    on_lines = (e == 0) | (w == 0)
    with np.errstate(invalid="ignore"):
        distance = np.abs(energy(e, w) - SEPARATRIX)
    in_band = ~on_lines & (w < 0) & (distance < band)
    kept = ~on_lines & ~in_band
    predicted = predicted_basin(chain, e, w)
    decided = flow.labels != UNDECIDED
    agree = decided & (flow.labels == predicted)
    disagree = decided & ~agree

    def fraction(mask):
        return float(agree[mask].sum() / decided[mask].sum()) if decided[mask].any() else None

    return {
        "starts": len(e), "on_critical_lines": int(on_lines.sum()), "in_band": int(in_band.sum()),
        "kept": int(kept.sum()), "decided_kept": int((decided & kept).sum()),
        "undecided_kept": int((~decided & kept).sum()), "agreement": fraction(kept),
        "agreement_in_band": fraction(in_band), "labels": flow.counts,
        "predicted": {label: int(np.sum(predicted[~on_lines] == label)) for label in ("global", "unigram")},
        "largest_|E-E_s|_of_a_disagreement": float(distance[disagree].max()) if disagree.any() else None,
        "disagreements": [[float(x) for x in row] for row in flow.start[disagree][:20, :2]],
        "max_energy_drift": _nanmax(flow.energy_drift), "max_joint_residual": _nanmax(flow.joint_residual),
        "max_|E(T)-E(0)|": _nanmax(np.abs(flow.energy_change)), "solver_failures": flow.failures,
    }


def _nanmax(values: np.ndarray) -> float | None:
    finite = values[np.isfinite(values)]
    return float(finite.max()) if finite.size else None


def _agreement_check(name: str, summary: dict, band: float) -> Check:
    """Agreement outside the band ≥ 1 − AGREEMENT_TOL; undecided when more than that share did not settle."""
    kept, undecided = summary["kept"], summary["undecided_kept"]
    measured = summary["agreement"]
    if measured is None or undecided > AGREEMENT_TOL * kept:
        passed, why = None, (f"{undecided} of {kept} kept starts did not settle (raise --horizon)" if kept
                             else "no start outside the band")
    else:
        passed, why = measured >= 1 - AGREEMENT_TOL, ""
    detail = (f"{summary['decided_kept']} decided starts with |E - E_s| >= {band:g}; "
              f"{summary['in_band']} in the band, {summary['on_critical_lines']} on e = 0 or w = 0 left out" +
              (f"; {why}" if why else ""))
    return Check(name, passed, measured, 1.0, AGREEMENT_TOL, detail, comparison="m >= e - tol")


def gaussian_row(p: float, q: float, count: int, seed: int, integration: Integration) -> dict:
    """The paper's Gaussian start at (p, q): the joint flow from ``count`` draws of (e, w, b) ~ N(0, 0.1²) (seeded by
    ``seed``, the same draws at every (p, q)), and where it ends."""
    starts = gaussian_starts(count, GAUSS_STD, seed)
    chain = MarkovChain(p, q)
    flow = integrate(CanonicalModel(chain), starts, "joint", integration)
    claimed = UNIGRAM if p + q > 1 else GLOBAL
    return {"p": p, "q": q, "claimed": claimed, "fraction_unigram": float(np.mean(flow.labels == UNIGRAM)),
            "fraction_global": float(np.mean(flow.labels == GLOBAL)),
            "fraction_undecided": float(np.mean(flow.labels == "undecided")),
            "fraction_claimed": float(np.mean(flow.labels == claimed)),
            "energy_prediction_agreement": float(np.mean(
                flow.labels == predicted_basin(chain, starts[:, 0], starts[:, 1]))),
            "max_joint_residual": _nanmax(flow.joint_residual), "solver_failures": flow.failures}


# --- the flows as tasks of verify/runner.py ---------------------------------------------------------------

#: the per-start fields of a FlowResult that a batch's record holds
FLOW_ARRAYS = ("start", "end", "loss", "grad_norm", "labels", "energy_drift", "joint_residual", "energy_change")


def flow_tasks(chain: MarkovChain, args: argparse.Namespace, integration: Integration) -> list[dict]:
    """The tasks of ``flow_task``: each batch of ``integration.batch`` consecutive starts of the K × K grid (one
    system for the solver, as ``integrate`` makes them) under each flow, then the Gaussian starts at each of
    ``GAUSS_PAIRS``.  (A task per row of the grid, 12 starts, made the default run 4 times as long: 13 s against
    3 s on 2 busy cores.)"""
    common = {"integration": integration.as_dict()}
    batches = [{"flow": mode, "p": chain.p, "q": chain.q, "grid": args.grid, "extent": args.extent, "first": first,
                "count": min(integration.batch, args.grid**2 - first), **common}
               for mode in MODES for first in range(0, args.grid**2, integration.batch)]
    return batches + [{"gaussian": args.starts, "p": p, "q": q, "seed": args.seed, **common} for p, q in GAUSS_PAIRS]


def traced_starts(e: np.ndarray, w: np.ndarray, extent: float) -> list[int]:
    """The grid starts (indices into ``e``, ``w``) whose trajectories the phase portrait draws: the nearest to each
    of ``TRAJECTORY_STARTS``."""
    return sorted({int(np.argmin((e - a * extent / 3) ** 2 + (w - b * extent / 3) ** 2)) for a, b in TRAJECTORY_STARTS})


def flow_task(task: dict) -> dict:
    """One task of ``flow_tasks``, a pure function of it: ``gaussian_row``, or one batch of grid starts integrated
    under one flow: every field of its ``FlowResult`` per start, the path only for the ``traced_starts``."""
    integration = Integration(**task["integration"])
    if "gaussian" in task:
        return gaussian_row(task["p"], task["q"], task["gaussian"], task["seed"], integration)
    e, w = grid(task["grid"], task["extent"])
    batch = range(task["first"], task["first"] + task["count"])
    starts = np.column_stack([e[batch], w[batch], np.zeros(len(batch))])
    flow = integrate(CanonicalModel(MarkovChain(task["p"], task["q"])), starts, task["flow"], integration)
    arrays = {name: getattr(flow, name).tolist() for name in FLOW_ARRAYS}
    return arrays | {"failures": flow.failures, "times": flow.times.tolist(),
                     "paths": {str(i): flow.path[i - batch.start].tolist() for i in traced_starts(e, w, task["extent"])
                               if i in batch}}


def flows_from_records(tasks: list[dict], records: list[dict]) -> dict[str, FlowResult]:
    """Each flow over the whole grid from its batches' records (``flow_task``), in order; ``path`` holds the
    traced starts' (e, w) at the sample times and NaN for the others (the portrait draws only those)."""
    flows = {}
    for mode in MODES:
        batches = [record for task, record in zip(tasks, records) if task.get("flow") == mode]
        fields = {name: np.concatenate([np.asarray(r[name], dtype=object if name == "labels" else float)
                                        for r in batches]) for name in FLOW_ARRAYS}
        times = np.asarray(batches[0]["times"])
        path = np.full((len(fields["start"]), 2, len(times)), np.nan)
        for r in batches:
            for i, track in r["paths"].items():
                path[int(i)] = track
        flows[mode] = FlowResult(mode, **fields, times=times, path=path,
                                 failures=[f for r in batches for f in r["failures"]])
    return flows


def _gaussian_check(row: dict) -> Check:
    target = "H(pi)" if row["claimed"] == "unigram" else "H_rate"
    undecided = row["fraction_undecided"] > AGREEMENT_TOL
    return Check(f"Gaussian starts at ({row['p']:g}, {row['q']:g}): fraction ending at {target}",
                 None if undecided else row["fraction_claimed"] >= 1 - AGREEMENT_TOL, row["fraction_claimed"], 1.0,
                 AGREEMENT_TOL, f"{row['fraction_undecided']:.3f} undecided" if undecided else "",
                 comparison="m >= e - tol")


def analyse(chain: MarkovChain, args: argparse.Namespace, integration: Integration, tasks: list[dict],
            records: list[dict]) -> tuple[Report, dict[str, FlowResult]]:
    """Compare and check from the records of ``flow_tasks`` (in task order); returns the report and the flows (for
    the plot)."""
    e, w = grid(args.grid, args.extent)
    flows = flows_from_records(tasks, records)
    summaries = {mode: basin_summary(chain, flows[mode], args.band) for mode in MODES}
    gaussian = [record for task, record in zip(tasks, records) if "gaussian" in task]
    with np.errstate(invalid="ignore"):
        scale = 1 + float(np.nanmax(np.abs(energy(e, w))))
    allowance = ENERGY_ALLOWANCE * integration.rtol * scale
    drift, residual = summaries["profiled"]["max_energy_drift"], summaries["joint"]["max_joint_residual"]
    checks = [
        Check("profiled flow: max |E(t) - E(0)|", None if drift is None else drift <= allowance, drift, 0.0, allowance,
              f"E read at {integration.samples} times in (0, T]; allowance {ENERGY_ALLOWANCE:g} rtol (1 + max|E(0)|)",
              comparison="m <= tol"),
        Check("joint flow: |E(T) - E(0) + 2 int e^2 db|", None if residual is None else residual <= allowance,
              residual, 0.0, allowance, "the accumulator A' = -2 e^2 b' is integrated with the state",
              comparison="m <= tol"),
        _agreement_check("profiled flow: endpoints in the energy's basins", summaries["profiled"], args.band),
        *(_gaussian_check(row) for row in gaussian),
    ]
    margin = chain.p + chain.q - 1
    prediction = ("undecided: p + q = 1 (H(pi) = H_rate)" if margin == 0 else
                  "unigram basin {w < -1/sqrt 2, E < E_s}" if margin < 0 else
                  "unigram basin {-1/sqrt 2 < w < 0, E < E_s} or w > 0")
    inputs = {"p": chain.p, "q": chain.q, "tying": True, "d": None, "seq_len": None, "device": "cpu",
              "dtype": "float64", "grid": args.grid, "extent": args.extent, "band": args.band,
              "starts": args.starts, "seed": args.seed}
    closed_form = {"loss": [chain.unigram_loss(), chain.entropy_rate()], "hessian_eigenvalues": None,
                   "unigram_loss": chain.unigram_loss(), "entropy_rate": chain.entropy_rate(),
                   "separatrix_energy": float(-(1 + math.log(2)) / 2), "saddle": [0.0, -1 / math.sqrt(2)]}
    numeric = {"integration": integration.as_dict(), "energy_allowance": allowance, **summaries,
               "gaussian": gaussian}
    joint = summaries["joint"]
    notes = [f"band: starts with w < 0 and |E - E_s| < {args.band:g} are left out of the agreement (E_s = "
             f"{closed_form['separatrix_energy']:.6f}); agreement inside it is reported, not checked",
             "the joint flow from b = 0 is measured, not checked: E is not conserved along it (it changes by "
             f"-2 int e^2 db, here by up to {joint['max_|E(T)-E(0)|']:.3g}), so the energy's basins need not hold "
             "for it; here "
             + ("every decided endpoint agrees" if joint["largest_|E-E_s|_of_a_disagreement"] is None else
                f"the disagreements reach |E - E_s| = {joint['largest_|E-E_s|_of_a_disagreement']:.3g}")]
    report = Report(THEOREM, CLAIMS, inputs, prediction, closed_form, numeric, checks, notes)
    return report, flows


def _summary_text(report: Report) -> str:
    """The basin tables before the report's checks."""
    numeric = report.numeric
    lines = [f"{'flow':<24} {'kept':>5} {'in band':>7} {'global':>7} {'unigram':>7} {'undecided':>9}  "
             "agreement (outside / inside band)"]
    for mode in ("profiled", "joint"):
        s = numeric[mode]
        inside = "-" if s["agreement_in_band"] is None else f"{s['agreement_in_band']:.4f}"
        outside = "-" if s["agreement"] is None else f"{s['agreement']:.4f}"
        lines.append(f"{MODE_NAMES[mode]:<24} {s['kept']:>5} {s['in_band']:>7} {s['labels']['global']:>7} "
                     f"{s['labels']['unigram']:>7} {s['labels']['undecided']:>9}  {outside} / {inside}")
    lines += ["", f"Gaussian starts (e, w, b) ~ N(0, {GAUSS_STD}^2), joint flow:",
              f"{'(p, q)':<12} {'p+q':>5} {'at H(pi)':>9} {'at H_rate':>9} {'undecided':>9}  claimed"]
    for row in numeric["gaussian"]:
        pair = f"({row['p']:g}, {row['q']:g})"
        lines.append(f"{pair:<12} {row['p'] + row['q']:>5.2f} {row['fraction_unigram']:>9.3f} "
                     f"{row['fraction_global']:>9.3f} {row['fraction_undecided']:>9.3f}  "
                     f"{'H(pi)' if row['claimed'] == 'unigram' else 'H_rate'}")
    integration = numeric["integration"]
    lines += ["", f"integration: solve_ivp {integration['method']}, rtol {integration['rtol']:g}, atol "
                  f"{integration['atol']:g} per component, T = {integration['horizon']:g}; endpoint labelled when "
                  f"|L - target| <= {integration['loss_tol']:g} and |grad L| <= {integration['grad_tol']:g}", ""]
    return "\n".join(lines)


def phase_portrait(chain: MarkovChain, flows: dict, extent: float, band: float, path: Path) -> list[Path]:
    """The (w, e) plane as the authors draw it: energy contours, the separatrix E = E_s, the global-minimum locus
    e²κ(w) = α, the line e = 0 (local minima, maxima, the saddle), the energy's basins shaded, the grid's
    endpoints (disagreements crossed) and a few trajectories (profiled solid, joint from b = 0 dotted)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.4, 6.6))
    axis = np.linspace(-extent, extent, 401)
    W, E = np.meshgrid(axis, axis)  # x: w, y: e
    basin = predicted_basin(chain, E.ravel(), W.ravel()).reshape(W.shape) == UNIGRAM
    ax.contourf(W, E, basin.astype(float), levels=[-0.5, 0.5, 1.5], colors=["tab:green", "tab:red"], alpha=0.13)
    with np.errstate(invalid="ignore", divide="ignore"):
        level = energy(E, W)
    ax.contour(W, E, level, levels=sorted([*range(-9, 0), SEPARATRIX, *range(0, 12)]), cmap="GnBu", linewidths=0.6)
    handles = [plt.Line2D([], [], color="tab:cyan", lw=0.6, label="energy contours (levels -9 .. 11 and E_s)")]
    # the separatrix proper: the part of E = E_s that bounds the unigram basin (the authors' region plots)
    side = np.linspace(SADDLE_W, 0, 400)[1:-1] if chain.p + chain.q > 1 else np.linspace(-extent, SADDLE_W, 400)
    with np.errstate(invalid="ignore"):
        height = np.sqrt(SEPARATRIX + side**2 - np.log(np.abs(side)))  # E = e² − w² + log|w| on w < 0
    for sign in (1, -1):
        ax.plot(side, sign * height, color="orange", lw=2.0)
    handles.append(plt.Line2D([], [], color="orange", lw=2.0, label="separatrix E = E_s = -(1 + log 2)/2"))
    alpha = math.log((1 - chain.p) * (1 - chain.q) / (chain.p * chain.q))
    if alpha != 0:
        ax.contour(W, E, slope(W) * E**2, levels=[alpha], colors="purple", linestyles="dashed", linewidths=1.4)
        handles.append(plt.Line2D([], [], color="purple", ls="--", label="global minima e²(1+2w|w|) = α"))
    stable = (chain.p + chain.q - 1) * slope(axis) > 0
    ax.plot(np.where(stable, axis, np.nan), np.zeros_like(axis), color="red", lw=2.2)
    ax.plot(np.where(~stable, axis, np.nan), np.zeros_like(axis), color="blue", lw=2.2)
    ax.plot([SADDLE_W], [0], marker="^", color="orange", ms=10, ls="")
    handles += [plt.Line2D([], [], color="red", lw=2.2, label="e = 0: local minima (loss H(π))"),
                plt.Line2D([], [], color="blue", lw=2.2, label="e = 0: local maxima in e"),
                plt.Line2D([], [], color="orange", marker="^", ls="", label="saddle (w, e) = (-1/√2, 0)")]
    profiled = flows["profiled"]
    e0, w0 = profiled.start[:, 0], profiled.start[:, 1]
    predicted = predicted_basin(chain, e0, w0)
    with np.errstate(invalid="ignore"):
        in_band = (w0 < 0) & (np.abs(energy(e0, w0) - SEPARATRIX) < band)
    for label, colour, text in ((UNIGRAM, "tab:red", "start → H(π) (profiled)"),
                                (GLOBAL, "tab:green", "start → H_rate (profiled)"),
                                (UNDECIDED, "grey", "start → undecided")):
        chosen = profiled.labels == label
        ax.scatter(w0[chosen & ~in_band], e0[chosen & ~in_band], s=10, color=colour, zorder=3, linewidths=0)
        ax.scatter(w0[chosen & in_band], e0[chosen & in_band], s=14, facecolors="none", edgecolors=colour,
                   linewidths=0.8, zorder=3)
        if chosen.any():
            handles.append(plt.Line2D([], [], color=colour, marker="o", ms=4, ls="", label=text))
    handles.append(plt.Line2D([], [], color="grey", marker="o", mfc="none", ms=4, ls="",
                              label=f"start with w < 0, |E - E_s| < {band:g} (not counted)"))
    for mode, size, colour in (("joint", 22, "dimgrey"), ("profiled", 60, "black")):
        flow = flows[mode]
        wrong = (flow.labels != UNDECIDED) & (flow.labels != predicted) & (e0 != 0) & (w0 != 0)
        if wrong.any():
            ax.scatter(w0[wrong], e0[wrong], marker="x", s=size, color=colour, zorder=4)
            handles.append(plt.Line2D([], [], color=colour, marker="x", ls="",
                                      label=f"{MODE_NAMES[mode]}: endpoint outside the energy's basin"))
    for i in traced_starts(e0, w0, extent):
        for mode, style in (("profiled", "-"), ("joint", ":")):
            track = flows[mode].path[i]
            ax.plot(np.r_[w0[i], track[1]], np.r_[e0[i], track[0]], ls=style, color="black", lw=1.0, zorder=5)
        ax.plot(profiled.path[i][1, -1], profiled.path[i][0, -1], "o", color="black", ms=3.5, zorder=6)
    handles += [plt.Line2D([], [], color="black", lw=1.0, label="profiled flow (b = b*)"),
                plt.Line2D([], [], color="black", lw=1.0, ls=":", label="joint flow from b = 0"),
                plt.Rectangle((0, 0), 1, 1, color="tab:red", alpha=0.25, label="I_min: energy basin of e = 0"),
                plt.Rectangle((0, 0), 1, 1, color="tab:green", alpha=0.25, label="I_*: energy basin of the minima")]
    ax.set(xlim=(-extent, extent), ylim=(-extent, extent), xlabel="w", ylabel="e", aspect="equal",
           title=f"Canonical model, p = {chain.p:g}, q = {chain.q:g} (p + q {'<' if chain.p + chain.q < 1 else '>'} "
                 "1): gradient flow and energy E = e² - w² - sign(w) log|w|")
    ax.title.set_fontsize(9)
    ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.09), ncol=2, fontsize=7.5, frameon=False)
    fig.tight_layout()
    return save_figure(fig, path, dpi=130)


def _outputs(args: argparse.Namespace) -> tuple[Path | None, Path | None]:
    """(the phase portrait's path without suffix, the folder of results.jsonl and summary.json), each None when not
    asked for, checked writable before any work: --out FOLDER, or the deprecated --plot FILE (a note on stderr)."""
    if args.plot is not None and args.out is not None:
        raise InvalidInputError("give --out FOLDER (the portrait goes in it) or the deprecated --plot FILE, not both")
    if args.resume and args.out is None:
        raise InvalidInputError(RESUME_WITHOUT_OUT)
    if args.plot is not None:
        files = [Path(args.plot).with_suffix(suffix) for suffix in (".png", ".pdf")]
        for file in files:
            check_writable(str(file))
        print(f"note: --plot FILE is deprecated and ends with the next release; --out FOLDER writes {PORTRAIT}.png, "
              f"{PORTRAIT}.pdf, {SUMMARY} and {RESULTS_FILE} there", file=sys.stderr)
        return Path(args.plot), None
    if args.out is None:
        return None, None
    folder = check_folder(args.out)
    if folder.is_dir():
        for name in (f"{PORTRAIT}.png", f"{PORTRAIT}.pdf", SUMMARY):
            check_writable(str(folder / name))
    return folder / PORTRAIT, folder


def run(argv: list[str] | None = None) -> int:
    try:
        args = _parser().parse_args(argv)
        chain, integration = _validated(args)
        portrait, folder = _outputs(args)
        show_stages(enabled=not args.json)
        start = time.perf_counter()
        tasks = flow_tasks(chain, args, integration)
        with stage(f"{MODE_NAMES['profiled']}, {MODE_NAMES['joint']} ({args.grid ** 2} starts each) and Gaussian "
                   f"starts ({args.starts} at each of {len(GAUSS_PAIRS)} (p, q)): {len(tasks)} tasks"):
            result = run_with_args(flow_task, tasks, args, out=folder, progress=sweep_progress(args.json, sys.stderr))
        if result.interrupted:  # the runner said how to resume
            return result.exit_code
        if result.failed:
            where = f" (errors in {result.results_file}; --resume runs them again)" if folder else ""
            print(f"no report: {result.failed} of {len(tasks)} tasks failed{where}", file=sys.stderr)
            return 1
        report, flows = analyse(chain, args, integration, tasks, result.records)
        written = []
        if portrait is not None:
            with stage("phase portrait"):
                written = [str(f) for f in phase_portrait(chain, flows, args.extent, args.band, portrait)]
            report.numeric["plot"] = written
        report.numeric["runtime_s"] = time.perf_counter() - start
        if folder is not None:
            (folder / SUMMARY).write_text(json.dumps(report.to_dict(), indent=2))
            written = [*written, str(folder / SUMMARY), str(result.results_file)]
    except (InvalidInputError, OSError) as err:
        return bad_input(err)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(_summary_text(report) + report.to_text())
        if written:
            print("wrote " + ", ".join(written))
    return report.exit_code


if __name__ == "__main__":
    exit_now(run())
