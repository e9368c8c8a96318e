"""The picture of a run: a per-worker timeline of its layers and a traffic heatmap.

matplotlib is an optional dependency (the ``plot`` extra: the demo and the Lambda
functions do not need it), imported only here and only when a plot is asked for;
:func:`require_matplotlib` lets a command fail before a long run rather than after it.
Figures are drawn on matplotlib's object API with the Agg canvas (no pyplot, no GUI
backend, safe in any process).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fsd_inference.analysis.data import LayerTimes, Traffic, layer_times, traffic
from fsd_inference.exceptions import FsdError
from fsd_inference.model.tsv import atomic_path

if TYPE_CHECKING:
    from matplotlib.axes import Axes

INSTALL_HINT = ("pip install 'fsd-inference[plot]' (in this repository: "
                ".venv/bin/pip install -e '.[plot]', or make test)")
# One colour per part of a layer, the same in the timeline and the totals.
PARTS = (("send", "#4c72b0"), ("wait", "#dd8452"), ("compute", "#55a868"))
DPI = 110


class PlotUnavailable(FsdError):
    """matplotlib is not installed; says how to install it."""


def require_matplotlib() -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError as exc:
        raise PlotUnavailable(f"plots need matplotlib, which is not installed: "
                              f"{INSTALL_HINT}") from exc


def _timeline(axes: Axes, times: LayerTimes) -> None:
    """One lane per worker; each layer drawn from its start as send, wait, compute."""
    for row in range(len(times.workers)):
        offset = times.start[row].copy()
        finite = np.isfinite(offset)
        for part, colour in PARTS:
            widths = getattr(times, part)[row]
            spans = [(float(x), float(w)) for x, w, ok in zip(offset, widths, finite,
                                                              strict=True) if ok and w > 0]
            axes.broken_barh(spans, (row - 0.4, 0.8), facecolors=colour,
                             edgecolors="white", linewidth=0.2,
                             label=part if row == 0 else None)
            offset = offset + widths
    axes.set_yticks(range(len(times.workers)), [f"w{w}" for w in times.workers])
    axes.invert_yaxis()
    axes.set_xlabel("seconds since the first layer started" if times.measured_starts
                    else "seconds, layers laid end to end (no start times recorded)")
    axes.set_title(f"{len(times.layers)} layers per worker: send, wait, compute")
    axes.legend(loc="lower right", bbox_to_anchor=(1.0, 1.0), ncols=3, fontsize="small",
                frameon=False)


def _heatmap(axes: Axes, flows: Traffic) -> None:
    megabytes = flows.matrix / 1e6
    image = axes.imshow(megabytes, cmap="viridis", aspect="auto", vmin=0.0)
    labels = [f"w{w}" for w in flows.workers]
    step = max(1, len(labels) // 16)
    ticks = list(range(0, len(labels), step))
    axes.set_xticks(ticks, [labels[i] for i in ticks])
    axes.set_yticks(ticks, [labels[i] for i in ticks])
    axes.set_xlabel("to worker")
    axes.set_ylabel("from worker")
    total = flows.matrix.sum()
    axes.set_title(f"traffic, MB ({total / 1e6:,.2f} MB in all)" if total
                   else "traffic: no per-target bytes recorded")
    axes.figure.colorbar(image, ax=axes, label="MB")


def _totals(axes: Axes, times: LayerTimes) -> None:
    rows = np.arange(len(times.workers))
    left = np.zeros(len(times.workers))
    for part, colour in PARTS:
        values = getattr(times, part).sum(axis=1)
        axes.barh(rows, values, left=left, color=colour, label=part)
        left += values
    axes.set_yticks(rows, [f"w{w}" for w in times.workers])
    axes.invert_yaxis()
    axes.set_xlabel("seconds, all layers")
    axes.set_title("time per worker")


def figure(document: dict[str, Any], title: str = "") -> Any:
    """The figure (timeline above; traffic heatmap and time per worker below)."""
    require_matplotlib()
    from matplotlib.figure import Figure

    times = layer_times(document)
    flows = traffic(document)
    height = 3.0 + 0.28 * len(times.workers)
    fig = Figure(figsize=(12, height + 4.0), layout="constrained")
    grid = fig.add_gridspec(2, 2, height_ratios=(height, 4.0))
    _timeline(fig.add_subplot(grid[0, :]), times)
    _heatmap(fig.add_subplot(grid[1, 0]), flows)
    _totals(fig.add_subplot(grid[1, 1]), times)
    if title:
        fig.suptitle(title)
    return fig


def describe(document: dict[str, Any]) -> str:
    """A title for a run: execution, workers, channel, network."""
    parts = [str(document.get("execution", "")),
             f"{len(document.get('per_worker', []))} workers",
             f"{document['channel']} channel" if document.get("channel") else "",
             f"{document['neurons']} neurons x {document['depth']} layers"
             if document.get("neurons") and document.get("depth") else ""]
    return ", ".join(p for p in parts if p)


def plot_metrics(document: dict[str, Any], path: str | Path) -> Path:
    """Write the run's figure as a PNG at ``path`` (atomically); returns the path."""
    fig = figure(document, describe(document))
    target = Path(path)
    with atomic_path(target) as temporary:
        fig.savefig(temporary, format="png", dpi=DPI)
    return target
