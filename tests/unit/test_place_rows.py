"""Gather's placement of the final pieces: rows come in the batch order, not ascending."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from fsd_inference.strategy import compile_shape
from fsd_inference.worker import place_rows


@settings(max_examples=50, deadline=None)
@given(batch=st.integers(1, 60), groups=st.integers(1, 5), neurons=st.integers(1, 9),
       seed=st.integers(0, 2**32 - 1))
def test_pieces_in_the_batch_order_land_on_their_rows(batch: int, groups: int,
                                                      neurons: int, seed: int) -> None:
    groups = min(groups, batch)
    rng = np.random.default_rng(seed)
    dense = rng.random((batch, neurons)) * (rng.random((batch, neurons)) < 0.4)
    shape = compile_shape("data", groups, 3, batch)
    # each group's task holds its rows in the order the Plan step wrote them; its
    # columns are a split of the neurons (the last stage's parts)
    columns = np.array_split(rng.permutation(neurons), 2)
    pieces = []
    for g in range(groups):
        rows = shape.group_row_ids(g, batch)
        for cols in columns:
            cols = np.sort(cols)
            pieces.append((rows, cols, sp.csr_matrix(dense[np.ix_(rows, cols)])))
    placed = place_rows(batch, neurons, pieces, "float64")
    assert np.array_equal(placed.toarray(), dense)
