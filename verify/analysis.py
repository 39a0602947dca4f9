"""The theorems as reports: build the point, measure it, run the checks the theory calls for.

``analyse_unigram`` serves theorem_local_min and theorem_saddle (both study θ_π; which one
the theory predicts depends on tying and the sign of p + q - 1); ``analyse_bigram`` serves
theorem_global_min; ``analyse_manifold`` serves theorem_manifold (any point of M_π).
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from fractions import Fraction

import torch
from torch import Tensor

from numerics.manifold import UNDECIDED, manifold_curvature
from numerics.markov import MarkovChain
from numerics.stationary_points import onehot_theta_star, theta_pi, theta_star
from numerics.transformer import Params, has_layer_norm, num_layers
from verify import checks as C
from verify import manifold_checks as M
from verify.cli import Config, cpu_threads, log, stage
from verify.measure import measure
from verify.report import Check, Report

#: Largest N at which a point of M_π is checked against the dense Hessian of the exact loss.
DENSE_MANIFOLD_SEQ_LEN = 12


def closed_form_spectrum(config: Config) -> list[float]:
    """Nonzero full-space eigenvalues at θ_π from the closed forms, ascending, with multiplicity.

    Scalar model: the SymPy forms of ``theory.landscape`` (at p + q = 1 exactly the eigenvalues
    2π0π1(p+q-1), or ±π0π1|1-p-q|, are 0 and are left out).  One-hot model: the k-state closed
    form of ``theory.multistate`` (b-block D_π - ππᵀ, E-block -2M_s ⊗ I_d or the E-A block).
    """
    if config.onehot:
        from theory.multistate import closed_form_spectrum as multistate_spectrum

        # an eigenvalue within its rounding of 0 is zero to that precision and left out (counted in the
        # null space); an i.i.d. chain's E-block is exactly 0
        P = config.source.transition
        if iid_rows(P):  # the b-block's k - 1 eigenvalues, the largest at d = 1
            return sorted(multistate_spectrum(P, 1, config.tying)[-(len(P) - 1):].tolist())
        return sorted(multistate_spectrum(P, config.d, config.tying).tolist())
    from theory.landscape import numeric_spectrum

    # the d-fold eigenvalues are multiples of p + q - 1: left out only where it is exactly 0 (a rounded
    # 0 at p + q = 1 + 2⁻⁵³ is kept, and the spectrum check calls it unresolved)
    fn, per_d = numeric_spectrum(config.tying)
    iid = p_plus_q_minus_one(config) == 0
    return sorted(v for v, k in zip(fn(config.p, config.q), per_d) if not (k and iid)
                  for _ in range(config.d if k else 1))


def p_plus_q_minus_one(config: Config) -> float:
    """p + q - 1 for p and q read as the decimals they were given as (the shortest decimals that round
    to the floats: "0.3" and "0.7" sum to 1 exactly, their binary values do not), exactly, then rounded.
    The sign of p + q - 1 decides the theory's prediction; p + q in floating point can round to 1
    when it is not (0.5 + 0.5000000000000001)."""
    return float(Fraction(repr(config.p)) + Fraction(repr(config.q)) - 1)


DEGENERATE = "global minimum (degenerate: p + q = 1, i.i.d. source)"
DEGENERATE_K = "global minimum (degenerate: P = 1πᵀ, i.i.d. source)"


def iid_rows(P) -> bool:
    """Are all rows of P the same (P = 1πᵀ, i.i.d. symbols)?  Exactly, not within a tolerance: rows that
    differ by 1e-13 make a (tiny) curvature, which the checks must resolve or call undecided."""
    return bool((P[0] == P).all())


def predict_unigram(config: Config) -> str:
    """What the theory says θ_π is for these inputs.

    One-hot model (claims MULTI-STATE-LOCAL-MIN, MULTI-STATE-SADDLE-UNTIED): tied, a local minimum
    iff M_s = sym(D_π(P - 1πᵀ)) is negative definite on 1^⊥; untied, a saddle unless P = 1πᵀ.
    """
    if config.onehot:
        from theory.multistate import eigenvalue_rounding, predicted_class

        P = config.source.transition
        if iid_rows(P):  # M = 0: P = 1πᵀ, i.i.d. symbols
            return DEGENERATE_K
        found = predicted_class(P, tying=config.tying)  # a sign within its rounding is not decided
        return {"local minimum": "local minimum", "saddle": "saddle point"}.get(
            found, f"undecided (an eigenvalue of M_s on 1^⊥ is 0 to its rounding {eigenvalue_rounding(P):.1g}: "
                   "the tied curvature vanishes in some direction and the second-order test cannot decide)")
    if p_plus_q_minus_one(config) == 0:
        return DEGENERATE
    if config.tying and p_plus_q_minus_one(config) > 0:
        return "local minimum"
    return "saddle point"


def unigram_gap(config: Config) -> float | None:
    """H(π) - H_rate, the distance a loss check must resolve to tell θ_π from θ_*, computed without
    cancellation (the mutual information, with λ from the decimals given); None for an i.i.d. source,
    where the two losses and the two claims coincide."""
    source = config.source
    if config.onehot:
        return None if iid_rows(source.transition) else source.mutual_information()
    lam = -p_plus_q_minus_one(config)
    # the lagged second-order chain has the first-order chain's π and entropy rate, so its gap too
    return None if lam == 0 else MarkovChain(config.p, config.q).mutual_information(lam)


def unigram_claims(config: Config, prediction: str) -> list[str]:
    """The claims a θ_π run tests: the one its prediction belongs to and stationarity (the rest of
    M_π is theorem_manifold's)."""
    if config.onehot:
        specific = "MULTI-STATE-LOCAL-MIN" if config.tying else "MULTI-STATE-SADDLE-UNTIED"
        return ["MULTI-STATE", "MULTI-STATE-PI", *([] if prediction == DEGENERATE_K else [specific])]
    if prediction == DEGENERATE:
        specific = "IID-GLOBAL"
    elif prediction == "local minimum":
        specific = "LOCAL-MIN"
    else:
        specific = "SADDLE" if config.tying else "SADDLE-UNTIED"
    return ["MODEL", "STAT-PI", specific]


def analyse_unigram(config: Config, theorem: str, scan: int = 0) -> Report:
    """θ_π (e = a = 0, pos = 0, W = 0, b = log(p/q)): stationarity, spectrum, and the prediction.

    Local minimum: no nearby descent and gradient descent returns; saddle: the loss's own
    curvature along the lowest eigenvector; p + q = 1: no perturbation goes below H_rate (= H(π)),
    the degenerate directions being flat only to second order.  The one-hot model on a k-state
    chain runs the same checks against the k-state closed form.
    """
    chain = config.source
    with stage("θ_π: exact loss, gradient, dense Hessian, spectrum"):
        point = measure(config, theta_pi(chain, config.d, config.seq_len, tying=config.tying))
    with stage("closed form, model checks"):
        expected = closed_form_spectrum(config)
        prediction = predict_unigram(config)
        checks = C.model_checks(config)
    with stage("stationarity, spectrum, flatness along M_π, Lanczos"):
        spectrum, decided = C.spectrum_checks(point, expected)
        gap = unigram_gap(config)
        rate = None if gap is None else chain.entropy_rate()  # = H(π) when i.i.d.: no competing value
        checks += [*C.stationary_checks(point, chain.unigram_loss(), "H(pi)", rate, "H_rate", gap),
                   *spectrum, *C.flatness_check(point, config.seed)]
        if decided:
            checks += C.lanczos_check(point, expected)
    with stage(f"the prediction ({prediction.split(' (')[0]}) from the loss itself"):
        if prediction in (DEGENERATE, DEGENERATE_K):
            checks += C.no_descent_below_check(point, chain.entropy_rate())
        elif decided and prediction == "local minimum":
            checks += C.no_descent_check(point, min(expected))
            checks += C.descent_returns_check(point, expected, chain.unigram_loss())
        elif decided and prediction == "saddle point":
            checks += C.saddle_check(point, min(expected))
        elif prediction.startswith("undecided"):  # the closed form itself cannot give a class
            checks.append(Check("class of θ_π from the closed form", None, "undecided", "local minimum or saddle",
                                None, prediction.removeprefix("undecided ").strip("()"), comparison="m = e"))
    numeric = point.summary()
    report = Report(theorem, unigram_claims(config, prediction), config.inputs(), prediction,
                    {"loss": chain.unigram_loss(), "hessian_eigenvalues": expected}, numeric, checks)
    if scan:
        numeric["manifold_scan"] = scan_manifold(config, scan)
        report.notes.append(scan_note(numeric["manifold_scan"]))
    return report


def scan_point(config: Config, index: int) -> dict:
    """Point ``index`` of the scan of M_π at ``config`` (claim MANIFOLD, empirically): a random point with every
    weight random (W_O, W_1, W_2 too; seed config.seed + 100 + index), classified by the exact (e, b) block of
    ``numerics.manifold``: its class and the block's smallest eigenvalue.  A task of the theorem commands'
    --scan-manifold (``verify.cli.sweep_task``)."""
    params = M.manifold_point(config, config.source, pos_std=0.7, weight_std=0.7, seed=config.seed + 100 + index,
                              all_weights=True)
    params = {k: v.to(config.device, config.torch_dtype) for k, v in params.items()}
    found = manifold_curvature(params, config.p, config.q, tying=config.tying)
    return {"class": found.classification, "min_eigenvalue": found.eigenvalues[0].item()}


def scan_summary(classes: list[dict]) -> dict:
    """The scan of M_π from its points (``scan_point``'s records, in order): how many are local minima."""
    minima = sum(c["class"] == "local minimum" for c in classes)
    return {"points": len(classes), "local_minima": minima,
            "fraction_minima": minima / len(classes) if classes else None, "classes": classes}


def scan_note(summary: dict) -> str:
    """The report's note on a scan of M_π (``scan_summary``)."""
    return (f"scan of M_π with all weights random: {summary['local_minima']} of {summary['points']} points are "
            "local minima (the rest saddles or undecided)")


def scan_manifold(config: Config, count: int) -> dict:
    """``scan_summary`` of the first ``count`` points of the scan (for ``python -m verify --scan-manifold``), each
    point a task of the runner in this process, as the theorem commands run them (``verify.cli.sweep_task``); a
    point whose task failed counts as a point of class "task failed"."""
    from verify.cli import config_json, sweep_task
    from verify.runner import run_tasks

    tasks = [{"scan": i, "config": config_json(config)} for i in range(count)]
    records = run_tasks(sweep_task, tasks, workers=1, progress=count >= 3).records
    return scan_summary([r if r is not None else {"class": "task failed", "min_eigenvalue": None} for r in records])


def analyse_bigram(config: Config, theorem: str, scan: int = 0) -> Report:
    """θ_*: stationarity, loss = H_rate, PSD Hessian equal to its Gauss-Newton form, no random point
    below H_rate, reduced = full.  One-hot model: the explicit θ_* of ``onehot_theta_star`` (d ≥ k)
    with stationarity, loss, PSD and the random-θ bound (the Gauss-Newton and reduced-model checks
    are the scalar model's)."""
    chain = config.source
    gap = unigram_gap(config)
    rate, unigram = chain.entropy_rate(), None if gap is None else chain.unigram_loss()  # θ_*'s loss, its competitor
    if config.onehot:
        with stage("θ_* of the one-hot model: exact loss, gradient, dense Hessian, spectrum"):
            point = measure(config, onehot_theta_star(chain, config.d, config.seq_len, tying=config.tying))
        with stage("model, stationarity, PSD, random θ"):
            checks = [*C.model_checks(config), *C.stationary_checks(point, rate, "H_rate", unigram, "H(pi)", gap),
                      *C.psd_check(point), *C.below_entropy_rate_check(config)]
        claims = ["MULTI-STATE", "MULTI-STATE-GLOBAL-MIN"]
    else:
        with stage("θ_*: exact loss, gradient, dense Hessian, spectrum"):
            point = measure(config, theta_star(chain, config.d, config.seq_len, tying=config.tying))
        with stage("model, stationarity, PSD, Gauss-Newton, random θ, reduced model"):
            checks = [*C.model_checks(config), *C.stationary_checks(point, rate, "H_rate", unigram, "H(pi)", gap),
                      *C.psd_check(point), *C.gauss_newton_check(point, chain), *C.below_entropy_rate_check(config),
                      *C.reduced_model_check(config, chain)]
        claims = ["MODEL", "GLOBAL-MIN", "REDUCED"]
    hessian = ("positive semidefinite (the residuals softmax - P(·|x_n) vanish: a Gauss-Newton form)" if config.onehot
               else "positive semidefinite: Gauss-Newton Gram matrix, all residuals vanish")
    return Report(theorem, claims, config.inputs(), "global minimum",
                  {"loss": chain.entropy_rate(), "hessian_eigenvalues": None, "hessian": hessian},
                  point.summary(), checks)


def analyse_manifold(config: Config, theorem: str, params: Params, *, samples: int | None, seed: int) -> Report:
    """A point of M_π (claims MANIFOLD, MANIFOLD-GENERAL): ``params`` (any depth, with or without layer norm; the
    one-hot model for a k-state chain) projected onto M_π of ``config.source`` and classified by the normal block
    (``manifold_checks.normal_block``, attention memory ``config.memory``), then checked
    against the exact loss's dense Hessian when N ≤ ``DENSE_MANIFOLD_SEQ_LEN`` (tied, first order, no layer norm:
    also the special case W_O = W_1 = W_2 = 0 at two position spreads), else against a Monte-Carlo mean of
    per-sequence Hessians: ``samples`` of them, or (None) as many as the class check needs by a pilot's spread
    (``manifold_checks.monte_carlo_block``)."""
    # H(π) and H_rate of the k-state chain, or of (p, q): the lagged second-order chain's are those of (p, q)
    chain = config.source if config.onehot else MarkovChain(config.p, config.q)
    # one thread here and below: many small operations, where a second thread on 2 shared busy cores stalls (the
    # forward-mode block at N = 1024, two layers, W = 40: 0.8 s on one thread, 6.5 s on two)
    with stage("normal block on M_π"), cpu_threads(config.device):
        exact, curvature, route = M.normal_block(config, params)
    layers, layer_norm = num_layers(exact), has_layer_norm(exact)
    eigenvalues = curvature.eigenvalues.tolist()
    closed = {"loss": chain.unigram_loss(),
              "hessian_eigenvalues": [v for v in eigenvalues if abs(v) > curvature.error_bound],
              "normal_block_eigenvalues": eigenvalues,
              "schur_eigenvalues": curvature.schur_eigenvalues.tolist(), "error_bound": curvature.error_bound,
              "classification": curvature.classification, "route": route}
    if curvature.escape_direction is not None:
        closed["escape_direction"] = {k: v.tolist() if isinstance(v, Tensor) else v
                                      for k, v in curvature.escape_direction.items()}
    if config.seq_len <= DENSE_MANIFOLD_SEQ_LEN:
        # the default run at N = 10 on 2 shared busy cores: 7 s on one thread, 63-114 s on two
        with cpu_threads(config.device):
            with stage("the point: exact loss, gradient, dense Hessian, spectrum"):
                point = measure(config, exact)
            with stage("model checks, block = dense Hessian, the class from the loss"):
                checks = [*C.model_checks(config),
                          *M.dense_checks(point, curvature, chain.unigram_loss(), chain.entropy_rate(),
                                          unigram_gap(config))]
            if config.tying and config.order == "first-order" and not (layer_norm or config.onehot):
                with stage("special case W_O = W_1 = W_2 = 0 at two position spreads"):
                    checks += M.manifold_checks(config, chain, layers=layers)
        numeric = point.summary() | {"method": "dense Hessian of the exact loss"}
    else:
        from tqdm import tqdm


        def progress(chunks: list, label: str):  # a bar on a terminal's stderr; none under --json (no stages)
            return tqdm(chunks, desc=f"{label} (positions)", unit="chunk", leave=False,
                        disable=None if log.isEnabledFor(logging.INFO) else True)

        # one thread: the per-sequence Hessians are many mid-sized operations, and a second thread on busy
        # cores made them 8x slower (one chunk of 64 positions, 2000 sequences, N = 1024: 7.2 s against 0.9 s)
        what = "pilot, then the size it needs" if samples is None else f"{samples} sequences"
        with stage(f"Monte-Carlo Hessian of the normal block ({what})"), cpu_threads(config.device):
            on_device = {k: v.to(config.device) for k, v in exact.items()}
            sampled, size = M.monte_carlo_block(on_device, config.source, curvature, tying=config.tying,
                                                samples=samples, seed=seed, memory=config.memory, progress=progress)
        checks = [M.sampled_block_check(curvature, sampled), M.sampled_class_check(curvature, sampled, size)]
        found = torch.linalg.eigvalsh(sampled.mean)
        numeric = {"method": f"Monte-Carlo mean of {sampled.samples} per-sequence Hessians of the normal block",
                   "loss": None, "grad_max_abs": None, "hessian_eigenvalues_nonzero": found.tolist(),
                   "min_eigenvalue": found[0].item(), "null_space_dim": None,
                   "block_stderr_max": sampled.stderr.max().item(), "sample_size": asdict(size)}
    # undecided: the spectrum check (an eigenvalue within its bound of 0) or the block check (a kink)
    # is undecided too, so the verdict is inconclusive
    prediction = curvature.classification
    if prediction == UNDECIDED:
        prediction = f"undecided: {curvature.reason}"
    general = config.order != "first-order" or config.memory is not None or layers > 1 or layer_norm or config.onehot
    claims = ["MULTI-STATE" if config.onehot else "MODEL", *([] if config.onehot else ["MANIFOLD"]),
              *(["MANIFOLD-GENERAL"] if general else [])]
    attention = "full causal" if config.memory is None or config.memory >= config.seq_len - 1 else (
        f"the current symbol and the {config.memory} before it")
    described = (f"the {config.source.k}-state chain {config.chain_name}" if config.onehot
                 else f"{config.order} (p={config.p:g}, q={config.q:g})")
    inputs = config.inputs() | {"source": described, "layers": layers, "layer_norm": layer_norm,
                                "memory": config.memory, "attention": attention}
    return Report(theorem, claims, inputs, prediction, closed, numeric, checks)
