"""Networks read and written one layer at a time: bundle layout v2, old bundles, digests,
and memory that holds a layer, not the network (measured with tracemalloc)."""

from __future__ import annotations

import json
import tracemalloc
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from fsd_inference.exceptions import InputFormatError
from fsd_inference.model.binary import (
    BundleNetwork,
    BundleReader,
    BundleWriter,
    load_network,
    pack_csr,
    save_network,
)
from fsd_inference.model.generate import GeneratedNetwork, GeneratorParams, generate
from fsd_inference.model.load import open_model
from fsd_inference.model.network import Network
from fsd_inference.model.reference import infer
from fsd_inference.model.tsv import write_network_dir
from fsd_inference.partition.plan import build_plan, load_shard, save_shard, write_shards


def same(a: sp.csr_matrix, b: sp.csr_matrix) -> bool:
    return (a.shape == b.shape and np.array_equal(a.indptr, b.indptr)
            and np.array_equal(a.indices, b.indices) and a.data.tobytes() == b.data.tobytes())


def peak_bytes(work: Callable[[], object]) -> int:
    tracemalloc.start()
    try:
        work()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def layer_bytes(neurons: int) -> int:
    """One generated layer in memory: 32 edges a row, int32 column ids, float64 weights."""
    return 32 * neurons * (4 + 8)


# ----------------------------------------------------------------------------- layout


def test_generated_layers_are_the_same_in_order_and_alone() -> None:
    source = GeneratedNetwork(GeneratorParams(512, 6, seed=3, bias=-0.3))
    in_order = list(source.iter_layers())
    assert len(in_order) == 6
    for k in (6, 1, 4):  # random access replays the relabelling draws before k
        assert same(source.layer(k), in_order[k - 1])
    assert [same(a, b) for a, b in zip(source.iter_layers(3, 5), in_order[2:5], strict=True)]
    assert source.edges == sum(w.nnz for w in in_order) == 32 * 512 * 6
    with pytest.raises(IndexError):
        source.layer(7)


def test_large_members_are_deflated_only_when_it_pays(tmp_path: Path) -> None:
    random_ids = np.random.default_rng(0).integers(0, 65536, 1 << 18).astype(np.uint16)
    with BundleWriter(tmp_path / "b.fsdm") as writer:
        writer.add("random", random_ids)  # 512 KiB that deflate cannot shrink
        writer.add("steps", np.arange(1 << 18, dtype=np.uint32))
        writer.set_meta({"kind": "test"})
    with zipfile.ZipFile(tmp_path / "b.fsdm") as archive:
        assert archive.getinfo("random.npy").compress_type == zipfile.ZIP_STORED
        assert archive.getinfo("steps.npy").compress_type == zipfile.ZIP_DEFLATED
    with BundleReader(tmp_path / "b.fsdm") as reader:
        np.testing.assert_array_equal(reader.array("random"), random_ids)
        assert reader.array("steps")[-1] == (1 << 18) - 1


def test_regular_rows_store_one_count_and_irregular_ones_their_pointers() -> None:
    regular = generate(GeneratorParams(128, 1, bias=-0.3)).layers[0]
    packed = pack_csr("w", regular)
    assert set(packed) == {"w.shape", "w.degree", "w.indices", "w.constant"}
    assert packed["w.degree"].tolist() == [32]
    assert packed["w.indices"].dtype == np.uint8  # column ids below 256
    ragged = sp.csr_matrix(([1.0, 2.0, 3.0], ([0, 0, 2], [1, 2, 0])), shape=(3, 3))
    assert "w.indptr" in pack_csr("w", ragged) and "w.degree" not in pack_csr("w", ragged)
    empty = sp.csr_matrix((3, 3))
    assert "w.indptr" in pack_csr("w", empty)


def test_one_layer_is_read_without_the_others(tmp_path: Path) -> None:
    """Damage layer 3's column ids in place: layers 1, 2 and 4 still read, layer 3 fails
    naming its member. Each layer is its own member, read on its own."""
    network = generate(GeneratorParams(256, 4, seed=1, bias=-0.3))
    path = tmp_path / "net.fsdm"
    save_network(network, path)
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo("layer3.indices.npy")
        start = info.header_offset + 30 + len(info.filename) + len(info.extra)
    data = bytearray(path.read_bytes())
    data[start + info.compress_size // 2] ^= 0xFF  # inside the member's (compressed) bytes
    path.write_bytes(bytes(data))
    lazy = BundleNetwork(path)
    for k in (1, 2, 4):
        assert same(lazy.layer(k), network.layers[k - 1])
    with pytest.raises(InputFormatError, match=r"net\.fsdm: member 'layer3\.indices'"):
        lazy.layer(3)
    lazy.close()


def test_version_1_bundles_are_still_read(tmp_path: Path) -> None:
    """A bundle as version 1 wrote it (np.savez_compressed, row pointers for every layer,
    no digest, no edge counts) reads into the same network and fingerprint."""
    network = generate(GeneratorParams(96, 3, seed=2, bias=-0.25))
    arrays = {}
    for k, w in enumerate(network.layers, start=1):
        arrays[f"layer{k}.shape"] = np.asarray(w.shape, dtype=np.int64)
        arrays[f"layer{k}.indptr"] = w.indptr.astype(np.uint16)
        arrays[f"layer{k}.indices"] = w.indices.astype(np.uint8)
        arrays[f"layer{k}.constant"] = w.data[:1]
    meta = {"format": "fsd-bundle", "version": 1, "kind": "network", "neurons": 96,
            "depth": 3, "bias": -0.25}
    path = tmp_path / "v1.fsdm"
    with path.open("wb") as out:
        np.savez_compressed(out, meta=np.frombuffer(json.dumps(meta).encode(), np.uint8),
                            **arrays)
    back = load_network(path)
    assert all(same(a, b) for a, b in zip(back.layers, network.layers, strict=True))
    lazy = open_model(path)
    assert lazy.fingerprint() == network.fingerprint()  # computed: v1 stores no digest
    assert lazy.edges == network.edges


def test_a_newer_version_is_refused_clearly(tmp_path: Path) -> None:
    path = tmp_path / "v9.fsdm"
    with BundleWriter(path) as writer:
        writer.add("x", np.arange(3))
        writer.set_meta({"kind": "network"})
    with zipfile.ZipFile(path) as archive:
        meta = json.loads(np.lib.format.read_array(archive.open("meta.npy")).tobytes())
    assert meta["version"] == 2
    meta["version"] = 9
    rewritten = tmp_path / "rewritten.fsdm"
    with zipfile.ZipFile(rewritten, "w") as archive, archive.open("meta.npy", "w") as member:
        np.lib.format.write_array(member, np.frombuffer(json.dumps(meta).encode(), np.uint8))
    with pytest.raises(InputFormatError, match="unsupported format 'fsd-bundle' version 9"):
        BundleReader(rewritten)


def test_a_failed_write_leaves_nothing(tmp_path: Path) -> None:
    path = tmp_path / "partial.fsdm"
    with pytest.raises(RuntimeError, match="disk"), BundleWriter(path) as writer:
        writer.add("x", np.arange(10))
        raise RuntimeError("disk full")
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------- digests


def test_the_stored_digest_is_the_one_computed_from_the_layers(tmp_path: Path) -> None:
    network = generate(GeneratorParams(128, 3, seed=4, bias=-0.3))
    save_network(network, tmp_path / "net.fsdm")
    write_network_dir(network, tmp_path / "folder")
    bundle = open_model(tmp_path / "net.fsdm")
    with BundleReader(tmp_path / "net.fsdm") as reader:
        assert reader.meta["edges"] == [32 * 128] * 3
        assert reader.meta["weights_digest"] == network.weights_digest()
    folder = open_model(tmp_path / "folder", bias=-0.3)
    assert bundle.fingerprint() == folder.fingerprint() == network.fingerprint()
    assert open_model(tmp_path / "net.fsdm", dtype="float32").fingerprint() == \
        network.fingerprint()
    # the bias is part of the fingerprint, not of the weights' digest
    other = open_model(tmp_path / "net.fsdm", bias=-0.5)
    assert other.weights_digest() == network.weights_digest()
    assert other.fingerprint() != network.fingerprint()
    changed = Network(128, (network.layers[0], network.layers[2], network.layers[1]), -0.3)
    assert changed.weights_digest() != network.weights_digest()


# ----------------------------------------------------------------------------- memory


NEURONS, DEPTH = 4096, 40  # 40 layers of 1.5 MB: 63 MB whole


def test_generating_into_a_bundle_holds_a_layer_not_the_network(tmp_path: Path) -> None:
    source = GeneratedNetwork(GeneratorParams(NEURONS, DEPTH, bias=-0.35))
    peak = peak_bytes(lambda: save_network(source, tmp_path / "big.fsdm"))
    assert peak < 6 * layer_bytes(NEURONS) < DEPTH * layer_bytes(NEURONS)
    # and the control: the same network materialised does take all of it
    assert peak_bytes(lambda: generate(GeneratorParams(NEURONS, DEPTH, bias=-0.35))) > \
        DEPTH * layer_bytes(NEURONS)


def test_reference_streams_a_bundle_layer_by_layer(tmp_path: Path) -> None:
    path = tmp_path / "big.fsdm"
    save_network(GeneratedNetwork(GeneratorParams(NEURONS, DEPTH, bias=-0.35)), path)
    rng = np.random.default_rng(0)
    inputs = sp.random(4, NEURONS, density=0.2, random_state=rng, format="csr")
    with open_model(path) as lazy:
        results: list[np.ndarray] = []
        peak = peak_bytes(lambda: results.append(infer(lazy, inputs).categories))
    assert peak < 8 * layer_bytes(NEURONS)
    np.testing.assert_array_equal(results[0], infer(load_network(path), inputs).categories)


def test_shards_are_written_layer_by_layer_and_equal_the_in_memory_ones(tmp_path: Path
                                                                       ) -> None:
    network = generate(GeneratorParams(256, 5, seed=6, bias=-0.3))
    owners = np.random.default_rng(1).integers(0, 3, size=(6, 256))
    plan, shards = build_plan(network, owners, 3)
    streamed = write_shards(network, owners, 3, lambda p: tmp_path / f"s{p}.fsdm")
    np.testing.assert_array_equal(plan.volume, streamed.volume)
    np.testing.assert_array_equal(plan.copies, streamed.copies)
    np.testing.assert_array_equal(streamed.work.sum(axis=1), [32 * 256] * 5)
    for shard in shards:
        save_shard(shard, tmp_path / f"whole{shard.worker}.fsdm")
        one, other = (load_shard(tmp_path / f"{name}.fsdm")
                      for name in (f"s{shard.worker}", f"whole{shard.worker}"))
        assert (one.worker, one.model, one.depth) == (other.worker, other.model, other.depth)
        np.testing.assert_array_equal(one.input_columns, other.input_columns)
        for a, b in zip(one.layers, other.layers, strict=True):
            assert same(a.weights, b.weights)
            for name in ("inputs", "outputs", "local_from", "local_to"):
                np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
            for name in ("recv", "send", "expand"):
                left, right = getattr(a, name), getattr(b, name)
                assert left.keys() == right.keys()
                assert all(np.array_equal(left[q], right[q]) for q in left)
