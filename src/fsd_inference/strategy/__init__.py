"""How a run is distributed: shapes (groups x stages x parts), strategies that compile
to them, and the owners of every neuron for a shape."""

from __future__ import annotations

from fsd_inference.strategy.compile import AUTO, STRATEGIES, compile_shape
from fsd_inference.strategy.owners import shape_owners, sub_network
from fsd_inference.strategy.shape import Shape, Stage, Task

__all__ = ["AUTO", "STRATEGIES", "Shape", "Stage", "Task", "compile_shape", "shape_owners",
           "sub_network"]
