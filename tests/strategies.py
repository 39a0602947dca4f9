"""Hypothesis strategies for the chain parameters and the dtype.

They reach the interior, the edges continuously (p or q in [1e-6, 1e-3] and 1 minus that), p = q
exactly, and the band around p + q = 1 continuously down to |p + q - 1| = 1e-10, on both sides.
"""

from hypothesis import strategies as st

EDGE = 1e-6

interior = st.floats(0.02, 0.98)
tiny = st.floats(-6, -3).map(lambda u: 10.0**u)  # log-uniform on [1e-6, 1e-3]
edge = st.one_of(tiny, tiny.map(lambda t: 1 - t))
probability = st.one_of(interior, edge)
dtype = st.sampled_from(["float64", "float32"])


@st.composite
def near_one_sum(draw):
    """(p, q) with p + q - 1 = ±10^u, u uniform in [-10, -1]; p in [0.2, 0.8] keeps q in (0, 1)
    (p = 0.1 with gap +0.1 rounded to q = 1.0 exactly)."""
    p = draw(st.floats(0.2, 0.8))
    gap = 10.0 ** draw(st.floats(-10, -1)) * draw(st.sampled_from([-1, 1]))
    return p, 1 - p + gap


equal = probability.map(lambda t: (t, t))
pq = st.one_of(st.tuples(probability, probability), near_one_sum(), equal)
