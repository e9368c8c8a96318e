"""A picture of one predicted run: per worker, where each layer's time goes.

One row per worker (at most ``MAX_ROWS``, evenly chosen, for large P), time on the x
axis; every layer is a run of segments at its mean start: computing (encoding, the
multiply), waiting for its sources' blocks, blocked on its own sends, and other work
(launching a block's invocation, reading shard and checkpoint, writing the checkpoint).
Means over the Monte Carlo draws, so a reader sees the typical run; the title gives p50
and p95 of the makespan. matplotlib is imported here only, when a plot is asked for.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fsd_inference.predict.engine import Simulation

MAX_ROWS = 64
COLOURS = {"compute": "#4c72b0", "wait": "#dd8452", "send": "#c44e52", "other": "#8c8c8c"}


def plot_timeline(simulation: Simulation, path: Path | str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    timeline = simulation.timeline
    workers = timeline.start.shape[0]
    rows = np.unique(np.linspace(0, workers - 1, min(workers, MAX_ROWS)).round().astype(int))
    figure, axes = plt.subplots(figsize=(12, 1.5 + 0.28 * rows.size))
    for y, w in enumerate(rows):
        for kind in ("other", "compute", "wait", "send"):
            durations = getattr(timeline, kind)[w]
            offsets = {"other": 0.0, "compute": timeline.other[w],
                       "wait": timeline.other[w] + timeline.compute[w],
                       "send": timeline.other[w] + timeline.compute[w] + timeline.wait[w]}[kind]
            starts = timeline.start[w] + offsets
            keep = durations > 0
            axes.broken_barh(list(zip(starts[keep], durations[keep], strict=True)),
                             (y - 0.4, 0.8), facecolors=COLOURS[kind], linewidth=0)
    axes.set_yticks(range(rows.size), [str(w) for w in rows])
    axes.set_ylabel("worker" + (f" ({rows.size} of {workers})" if rows.size < workers else ""))
    axes.set_xlabel("seconds since the execution started (means over the draws)")
    axes.set_title(f"{title}\nmakespan p50 {simulation.quantile(0.5):.1f} s, "
                   f"p95 {simulation.quantile(0.95):.1f} s")
    handles = [Rectangle((0, 0), 1, 1, color=c) for c in COLOURS.values()]
    axes.legend(handles, ["compute", "wait for sources", "blocked on own sends",
                          "launch / storage"], loc="upper right", fontsize="small")
    axes.invert_yaxis()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
