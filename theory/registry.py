"""Every identity of the theory, gathered from the modules that derive them: the source and the reduced model
(``theory.landscape``), the sources' autocovariance (``theory.autocovariance``), the manifold of θ_π for the
first-order chain and for any stationary source (``theory.manifold``), the canonical model (``theory.canonical``)
and k-state chains (``theory.multistate``).

The top of ``theory``: it imports them all and nothing imports it but its readers (the tests, the LaTeX
document, ``python -m verify --list``).
"""

from __future__ import annotations

from theory import autocovariance, canonical, landscape, manifold, multistate
from theory.calculus import Result


def identities() -> list[Result]:
    """Every identity of the theory, for tests, the LaTeX document and the CLI, in the order they are printed."""
    out = [*landscape.chain_results(), landscape.logit_gradient_identity()]
    for tying in (True, False):
        out += [landscape.stationarity_pi(tying), landscape.loss_pi(tying), landscape.stationarity_star(tying),
                landscape.loss_star(tying)]
    return [*out, *manifold.results(), *autocovariance.results(), *manifold.general_results(),
            landscape.gauss_newton_star(), landscape.normal_block_pi(),
            landscape.untied_block_pi(), *canonical.results(), *multistate.results()]
