"""How much memory a shape's largest task needs: the Plan step refuses a shape that
does not fit the workers' function, and the planner sizes candidates with the same rule."""

from __future__ import annotations

import numpy as np

from fsd_inference.strategy.shape import Shape

RUNTIME_RESERVE_MB = 300  # Python, numpy, scipy, boto3 and the channel's buffers


def task_memory_mb(shape: Shape, neurons: int, edges: int, batch: int, dtype: str) -> float:
    """Memory the largest task of ``shape`` needs, holding ``edges`` weights (the planner
    filters candidates with it): the weights (CSR: index + value per edge), a dense-enough
    bound on its activations (every row of its group, all its columns, in ``dtype``) and
    the runtime's reserve."""
    itemsize = np.dtype(dtype).itemsize
    rows = shape.group_rows(0, batch)[1]
    activations = 3 * rows * neurons * itemsize // max(1, shape.stages[0].parts)
    return (edges * (4 + itemsize) + activations) / 2**20 + RUNTIME_RESERVE_MB
