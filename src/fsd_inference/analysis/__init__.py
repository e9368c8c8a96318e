"""A run's metrics turned into tables, a summary and a picture (``fsd report``).

data.py reads a metrics document into per-worker, per-layer arrays; summary.py prints
and serialises them; plot.py (matplotlib, the optional ``plot`` extra) draws them.
"""
