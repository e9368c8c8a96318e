"""Input batches for larger networks, made from the 32 x 32 MNIST sample.

The Graph Challenge builds its 4096 / 16384 / 65536-neuron inputs by nearest-neighbour
upsampling the MNIST images to 64 x 64, 128 x 128 and 256 x 256. Pixel ``(r, c)`` of a
``side x side`` image is column ``r * side + c`` (row-major), 0-based here.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from fsd_inference.constants import SAMPLE_INPUT_NAME
from fsd_inference.exceptions import ConfigError


def upsample(images: sp.csr_matrix, neurons: int) -> sp.csr_matrix:
    """Nearest-neighbour upsampling of square row-major images to ``neurons`` pixels."""
    side = math.isqrt(images.shape[1])
    target_side = math.isqrt(neurons)
    if side * side != images.shape[1]:
        raise ConfigError(f"input width {images.shape[1]} is not a square image")
    if target_side * target_side != neurons or target_side % side:
        raise ConfigError(
            f"cannot upsample {side} x {side} images to {neurons} neurons: the target must be "
            f"a square image whose side is a multiple of {side} (e.g. 4096, 16384, 65536)"
        )
    factor = target_side // side
    coo = images.tocoo()
    r, c = np.divmod(coo.col.astype(np.int64), side)
    dr, dc = np.divmod(np.arange(factor * factor), factor)
    new_rows = (r[:, None] * factor + dr[None, :]) * target_side + (c[:, None] * factor + dc)
    out = sp.csr_matrix(
        (np.repeat(coo.data, factor * factor), (np.repeat(coo.row, factor * factor),
                                                new_rows.ravel())),
        shape=(images.shape[0], neurons),
    )
    out.sort_indices()
    return out


def sample_input_path() -> Path:
    """The shipped MNIST sample (first 10,000 rows, 1024 pixels): ``data/`` of the repo."""
    root = Path(__file__).resolve().parents[3]
    path = root / "data" / SAMPLE_INPUT_NAME
    if not path.is_file():
        raise ConfigError(
            f"the sample input {SAMPLE_INPUT_NAME} is not at {path}; pass --input FILE"
        )
    return path


