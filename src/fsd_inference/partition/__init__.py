"""Partitioners (name -> class table) and the communication plan."""

from __future__ import annotations

from fsd_inference.exceptions import ConfigError
from fsd_inference.partition.base import Partitioner
from fsd_inference.partition.hypergraph import HypergraphPartitioner
from fsd_inference.partition.simple import ContiguousPartitioner, RandomPartitioner

PARTITIONERS: dict[str, type[Partitioner]] = {
    ContiguousPartitioner.name: ContiguousPartitioner,
    RandomPartitioner.name: RandomPartitioner,
    HypergraphPartitioner.name: HypergraphPartitioner,
}


def get_partitioner(name: str) -> Partitioner:
    try:
        return PARTITIONERS[name]()
    except KeyError:
        raise ConfigError(
            f"unknown partitioner {name!r}; choose one of {', '.join(sorted(PARTITIONERS))}"
        ) from None


__all__ = ["PARTITIONERS", "Partitioner", "get_partitioner"]
