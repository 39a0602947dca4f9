"""The LaTeX document: every identity titled in math, both sides and the difference shown; the forms
printed for reading equal the expressions they stand for; ``--pdf`` compiles or refuses cleanly."""

import re
import shutil

import numpy as np
import pytest
import sympy as sp

from theory import autocovariance as AC
from theory import landscape as T
from theory import latex as X
from theory import manifold as M
from theory import registry
from theory.calculus import identity
from theory.markov import p, q

SHOWN = [r for r in registry.identities() if r.claim not in X._SECTIONS]


@pytest.fixture(scope="module")
def text() -> str:
    return X.document(0.5, 0.8)


def paragraph(text: str, result: T.Result) -> str:
    start = text.index(f"\\paragraph{{{X._title(result.statement)}}}")
    return text[start:text.index("\\paragraph", start + 1)]


def test_every_identity_has_a_math_title_and_shows_both_sides_and_the_difference(text):
    identities = text[text.index("\\section{Identities}"):]
    titles = re.findall(r"\\paragraph\{(.*)\} \(claim", identities)
    assert len(titles) == len(registry.identities())
    for title in titles:  # math mode, not the ASCII names of the CLI
        assert title.startswith("$") and not re.search(r"(?<!\\)(theta|pi|lambda)|pi0|grad ", title), title
    for result in SHOWN:
        shown, statement = paragraph(text, result), result.statement
        assert f"{statement.lhs} &= " in shown or statement.rhs == "0", result.name
        if statement.rhs != "0":
            assert f"\n{statement.rhs} &= " in shown, result.name
        assert "&= 0\\quad\\text{(reduced by SymPy)}" in shown and "proven.)" in shown, result.name


def test_source_section_defines_its_symbols_before_use(text):
    source = text[text.index("\\section{Source}"):text.index("\\section{Reduced model}")]
    for definition in ("p = P(x_{n+1} = 1 \\mid x_n = 0)", "q = P(x_{n+1} = 0 \\mid x_n = 1)",
                       "\\lambda = 1 - p - q", "H(\\pi) &= -\\pi_0 \\log \\pi_0 - \\pi_1 \\log \\pi_1",
                       "h(t) = -t \\log t"):
        assert definition in source, definition
    assert "- \\frac{p}{p + q} + 1" not in source  # the raw SymPy form the readers complained of
    reduced = text[text.index("\\section{Reduced model}"):text.index("\\section{Gradient")]
    assert "\\rho = (s, t, b, c, g)" in reduced and "u$ a unit vector" in reduced
    assert "\\kappa(w) = " in text.split("\\section{The canonical model")[1][:2000]


def _values(expr: sp.Basic, rng: np.random.Generator) -> dict:
    """p, q in the domain, integer symbols (the lag k) in 0..4, every other symbol in (0.1, 1) (positive:
    w > 0 for |w|, S > 0 for √S)."""
    symbols = expr.free_symbols if not isinstance(expr, sp.MatrixBase) else set().union(*(e.free_symbols for e in expr))
    return {s: sp.Integer(rng.integers(0, 5)) if s.is_integer else
            sp.Float(rng.uniform(0.05, 0.95) if s in (p, q) else rng.uniform(0.1, 1.0), 30) for s in symbols}


@pytest.mark.parametrize("result", SHOWN, ids=lambda r: r.name[:60])
def test_readable_forms_equal_the_expressions_they_print(result):
    """What the page shows is the value of the side, at random points: sign flips and factoring lose nothing."""
    rng = np.random.default_rng(3)
    for side in result.statement.sides or (result.expr, result.expected):
        if (sum(map(sp.count_ops, side)) if isinstance(side, sp.MatrixBase) else sp.count_ops(side)) > 300:
            continue  # not normalised, printed as is (or not at all)
        shown = X._readable(side)
        for _ in range(3):
            at = _values(side, rng)
            exact = sp.Matrix(side).subs(at).evalf(25) if isinstance(side, sp.MatrixBase) else side.subs(at).evalf(25)
            printed = (sp.Matrix(shown).subs(at) if isinstance(shown, sp.MatrixBase) else shown.subs(at)).evalf(25)
            difference = sp.Matrix([exact - printed]) if not isinstance(exact, sp.MatrixBase) else exact - printed
            assert all(abs(complex(d)) < 1e-15 for d in difference), result.name


def test_positive_forms_flip_only_factors_of_one_sign_on_the_domain():
    assert X._latex(X._readable(-p * q * (p - 1) / (p + q))) == "\\frac{p q \\left(1 - p\\right)}{p + q}"
    assert "p + q - 1" in X._latex(X._readable(2 * p * q * (p + q - 1) / (p + q) ** 2))  # changes sign: kept
    k = sp.Symbol("k", integer=True, nonnegative=True)
    assert X._latex(X._readable((-1) ** k * p * q * (p + q - 1) ** k / (p + q) ** 2)) == \
        "\\frac{p q \\left(1 - p - q\\right)^{k}}{\\left(p + q\\right)^{2}}"


def test_an_identity_that_fails_is_shown_failing():
    """The display reports ``Result.proven``; a wrong right side reads NOT proven and ≠ 0."""
    good = T.loss_pi(True)
    bad = identity("broken", good.claim, good.expr, good.expected + p / 100, statement=good.statement)
    shown = X._identity_paragraph(bad, "broken")
    assert "NOT proven" in shown and "\\neq 0\\quad\\text{(not reduced by SymPy)}" in shown
    assert "(reduced by SymPy)" not in shown


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="pdflatex not installed")
def test_pdf_flag_compiles_the_document(tmp_path, capsys):
    out = tmp_path / "d.tex"
    assert X.main(["--out", str(out), "--p", "0.2", "--q", "0.3", "--pdf"]) == 0
    assert capsys.readouterr().out.splitlines() == [f"wrote {out}", f"wrote {tmp_path / 'd.pdf'}"]
    assert (tmp_path / "d.pdf").stat().st_size > 10_000


def _general_section(text: str) -> str:
    start = text.index("\\section{Any stationary source, depth and mask}")
    return text[start:text.index("\\section{", start + 1)]


def test_general_manifold_section_lists_every_identity_proven_and_prints_the_live_forms(text):
    section = _general_section(text)
    results = [r for r in registry.identities() if r.claim in X._GENERAL_CLAIMS]
    assert {r.claim for r in results} == set(X._GENERAL_CLAIMS)
    for result in results:
        assert f"\\item {X._title(result.statement)}: proven" in section, result.name
    assert "NOT proven" not in section and "did NOT" not in section
    for m in range(AC.LAGS + 1):  # the autocovariance table: the matrix powers' values as printed
        assert X._latex(X._readable(AC.autocovariance(2, m))) in section
    assert X._latex(AC.pair_kernel()) in section
    N, d = M.SIZES[0]
    odd = M.second_order_schur(M.jet(N, d))[0, 0]
    assert f"S = {X._latex(odd)}" in section and "K_{3,3}" not in X._latex(odd)  # own path dropped
    assert "c_{3}" in section and "E[x_{1} x_{4}]" in section  # the derived blocks, in c_m and in moments
    unescaped = re.sub(r"\\[{}]", "", section)
    assert unescaped.count("{") == unescaped.count("}")


def test_general_manifold_section_follows_the_expressions_it_prints(monkeypatch):
    """Printed from the live expressions: a changed autocovariance changes the table, not a hand-written one."""
    marker, original = sp.Symbol("MARKER"), AC.autocovariance
    monkeypatch.setattr(AC, "autocovariance", lambda order, m: marker if (order, m) == (2, 3) else original(order, m))
    section = "\n".join(X._general_manifold_section())
    assert section.count("MARKER") == 1
