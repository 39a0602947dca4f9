"""Hypothesis strategies for the chain parameters: interior, edges (1e-6) and the p+q=1 band."""

from hypothesis import strategies as st

EDGE = 1e-6

interior = st.floats(0.02, 0.98)
edge = st.sampled_from([EDGE, 1 - EDGE])
probability = st.one_of(interior, edge)


@st.composite
def near_one_sum(draw):
    """(p, q) with p + q within 0.05 of 1 (but not equal)."""
    p = draw(st.floats(0.1, 0.9))
    delta = draw(st.floats(0.005, 0.05)) * draw(st.sampled_from([-1, 1]))
    return p, 1 - p + delta


pq = st.one_of(st.tuples(probability, probability), near_one_sum())
