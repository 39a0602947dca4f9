"""The theorems as reports: build the point, measure it, run the checks the theory calls for.

``analyse_unigram`` serves theorem_local_min and theorem_saddle (both study θ_π; which one
the theory predicts depends on tying and the sign of p + q - 1); ``analyse_bigram`` serves
theorem_global_min.
"""

from __future__ import annotations

from numerics.markov import MarkovChain
from numerics.stationary_points import theta_pi, theta_star
from verify import checks as C
from verify.cli import Config
from verify.report import Report


def closed_form_spectrum(config: Config, chain: MarkovChain) -> list[float]:
    """Nonzero full-space eigenvalues at θ_π from the SymPy closed forms, ascending, with multiplicity."""
    from theory.landscape import numeric_spectrum

    fn, per_d = numeric_spectrum(config.tying)
    return sorted(v for v, k in zip(fn(chain.p, chain.q), per_d) for _ in range(config.d if k else 1))


def predict_unigram(config: Config) -> str:
    """What the theory says θ_π is for these inputs."""
    if config.p + config.q == 1:
        return "global minimum (degenerate: p + q = 1, i.i.d. source)"
    if config.tying and config.p + config.q > 1:
        return "local minimum"
    return "saddle point"


def analyse_unigram(config: Config, theorem: str, scan: int = 0) -> Report:
    """θ_π (e = a = 0, pos = 0, W = 0, b = log(p/q)): stationarity, spectrum, and the prediction."""
    chain = MarkovChain(config.p, config.q)
    point = C.measure(config, theta_pi(chain, config.d, config.seq_len, tying=config.tying,
                                       device=config.device, dtype=config.torch_dtype))
    expected = closed_form_spectrum(config, chain)
    prediction = predict_unigram(config)
    spectrum, decided = C.spectrum_checks(point, expected)
    checks = [*C.model_checks(config), *C.stationary_checks(point, chain.unigram_loss(), "H(pi)"), *spectrum,
              *C.flatness_check(point, config.seed)]
    if decided:
        checks += C.lanczos_check(point, expected)
    if decided and prediction == "local minimum":
        checks += C.local_min_checks(point, expected, chain.unigram_loss())
    elif decided and prediction == "saddle point":
        checks += C.saddle_check(point)
    if config.tying:
        checks += C.manifold_checks(config, chain)
    numeric = point.summary()
    if scan:
        numeric["manifold_scan"] = C.scan_manifold(config, chain, scan)
    claims = ["STAT-PI", "LOCAL-MIN" if config.tying else "SADDLE-UNTIED", "SADDLE", "MANIFOLD"]
    report = Report(theorem, claims, config.inputs(), prediction,
                    {"loss": chain.unigram_loss(), "hessian_eigenvalues": expected}, numeric, checks)
    if scan:
        found = numeric["manifold_scan"]
        report.notes.append(f"scan of M_π with all weights random: {found['local_minima']} of {found['points']} "
                            "points are local minima (the rest saddles or undecided)")
    return report


def analyse_bigram(config: Config, theorem: str, scan: int = 0) -> Report:
    """θ_*: stationarity, loss = H_rate, PSD Hessian, no random point below H_rate, reduced = full."""
    chain = MarkovChain(config.p, config.q)
    point = C.measure(config, theta_star(chain, config.d, config.seq_len, tying=config.tying,
                                         device=config.device, dtype=config.torch_dtype))
    checks = [*C.model_checks(config), *C.stationary_checks(point, chain.entropy_rate(), "H_rate"),
              *C.psd_check(point), *C.below_entropy_rate_check(config, chain), *C.reduced_model_check(config, chain)]
    return Report(theorem, ["GLOBAL-MIN", "REDUCED"], config.inputs(), "global minimum",
                  {"loss": chain.entropy_rate(), "hessian_eigenvalues": None,
                   "hessian": "positive semidefinite: Gauss-Newton Gram matrix, all residuals vanish"},
                  point.summary(), checks)
