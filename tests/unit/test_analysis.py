"""A run's metrics document read into tables, summarised and plotted (fsd report)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from fsd_inference.analysis.data import layer_times, load_document, traffic
from fsd_inference.analysis.plot import plot_metrics
from fsd_inference.analysis.summary import summary, summary_lines
from fsd_inference.exceptions import InputFormatError

T = 1_800_000_000.0  # a Unix time


def layer(k: int, start: float, compute: float, send: float, wait: float) -> dict[str, Any]:
    return {"layer": k, "started_at": start, "compute_s": compute, "send_s": send,
            "wait_s": wait, "bytes_sent": 100 * k, "bytes_received": 0, "messages_sent": 1}


def document() -> dict[str, Any]:
    """Two workers, two layers; worker 1 starts 0.5 s after worker 0 (listed first on
    purpose: the tables are ordered by worker id)."""
    return {"execution": "fsd-test", "channel": "queue", "neurons": 4, "depth": 2,
            "per_worker": [
                {"worker": 1, "bytes_to": {"0": 700}, "totals": {"bytes_sent": 700},
                 "layers": [layer(1, T + 0.5, 0.3, 0.1, 0.2), layer(2, T + 1.1, 0.4, 0.1, 0.0)]},
                {"worker": 0, "bytes_to": {"1": 300, "7": 5}, "totals": {"bytes_sent": 305},
                 "layers": [layer(1, T, 0.2, 0.05, 0.5), layer(2, T + 0.8, 0.2, 0.05, 0.6)]},
            ]}


def test_layer_times_place_layers_at_their_measured_starts() -> None:
    times = layer_times(document())
    assert times.workers == [0, 1] and times.layers == [1, 2] and times.measured_starts
    np.testing.assert_allclose(times.start, [[0.0, 0.8], [0.5, 1.1]])
    np.testing.assert_allclose(times.send, [[0.05, 0.05], [0.1, 0.1]])
    np.testing.assert_allclose(times.wait, [[0.5, 0.6], [0.2, 0.0]])
    np.testing.assert_allclose(times.compute, [[0.15, 0.15], [0.2, 0.3]])  # without sending
    np.testing.assert_allclose(times.end, [[0.7, 1.6], [1.0, 1.5]])


def test_documents_without_start_times_lay_layers_end_to_end() -> None:
    doc = document()
    for worker in doc["per_worker"]:
        for record in worker["layers"]:
            del record["started_at"], record["send_s"]
    times = layer_times(doc)
    assert not times.measured_starts
    np.testing.assert_allclose(times.start, [[0.0, 0.7], [0.0, 0.5]])
    assert not times.send.any()


def test_traffic_is_from_row_to_column_and_ignores_unknown_workers() -> None:
    flows = traffic(document())
    assert flows.workers == [0, 1]
    np.testing.assert_array_equal(flows.matrix, [[0, 300], [700, 0]])


def test_summary_figures() -> None:
    figures = summary(document())
    assert figures["workers"] == 2 and figures["layers"] == 2
    assert figures["span_s"] == pytest.approx(1.6)
    w0, w1 = figures["per_worker"]
    assert (w0["worker"], w1["worker"]) == (0, 1)
    assert w0["wait_s"] == pytest.approx(1.1) and w1["compute_s"] == pytest.approx(0.5)
    assert w1["span_s"] == pytest.approx(1.0)
    busy = 0.1 + 1.1 + 0.3 + 0.2 + 0.2 + 0.5
    assert figures["wait_share"] == pytest.approx(1.3 / busy)
    assert figures["traffic_bytes"]["total"] == 1000
    lines = summary_lines(document())
    assert lines[0].startswith("fsd-test: 2 workers x 2 layers, 1.60 s")
    assert any("0.001 MB between workers" in line for line in lines)


def test_a_plot_is_a_png_of_the_figure(tmp_path: Path) -> None:
    path = plot_metrics(document(), tmp_path / "out" / "run.png")
    with Image.open(path) as image:
        assert image.format == "PNG"
        width, height = image.size
    assert width > 1000 and height > 600
    assert [p.name for p in path.parent.iterdir()] == ["run.png"]  # no temporary left


@pytest.mark.parametrize(("text", "fragment"), [
    ("{not json", "not JSON"),
    ('{"workers": 3}', "no 'per_worker' records"),
    ('{"per_worker": [{"worker": 0}]}', "per_worker[0] lacks 'worker' or 'layers'"),
    ('{"per_worker": [{"worker": 0, "layers": [{"compute_s": 1}]}]}',
     "without a 'layer' number"),
])
def test_a_file_that_is_not_metrics_is_named(tmp_path: Path, text: str, fragment: str) -> None:
    path = tmp_path / "m.json"
    path.write_text(text)
    with pytest.raises(InputFormatError) as caught:
        load_document(path)
    assert str(path) in str(caught.value) and fragment in str(caught.value)


def test_a_written_document_loads(tmp_path: Path) -> None:
    path = tmp_path / "m.json"
    path.write_text(json.dumps(document()))
    assert load_document(path) == document()
