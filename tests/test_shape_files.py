"""Training that streams its samples: ``ShapeFiles`` (rows read from the .npz files as batches draw
them) against a plain NumPy twin of DeepSDF's per-(seed, epoch, shape) draw and against the
in-memory ``ShapeSamples``; the DataLoader's batches with and without workers; the converted copies
of files that cannot be read in place; bad files; the memory a collection holds."""

from __future__ import annotations

import gc
import os
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

import fastsdf
from fastsdf.training.shape_files import CACHE_FOLDER, ShapeFiles
from fastsdf.training.shape_loader import shape_batches
from fastsdf.training.shapes import ShapeSamples, load_shapes

# (outside rows, inside rows) per shape: odd sizes, fewer outside than inside, one side empty.
SIZES = [(37, 91), (0, 13), (7, 0), (1, 1), (1000, 333)]


def write_shape(path: Path, rng: np.random.Generator, outside: int, inside: int) -> None:
    """A DeepSDF file as np.savez (fastsdf sample, DeepSDF's cnpy) writes one: pos sdf > 0, neg <= 0."""
    pos = rng.uniform(-1, 1, (outside, 4)).astype(np.float32)
    neg = rng.uniform(-1, 1, (inside, 4)).astype(np.float32)
    pos[:, 3] = np.abs(pos[:, 3]) + 1e-3
    neg[:, 3] = -np.abs(neg[:, 3])
    np.savez(path, pos=pos, neg=neg)


def write_collection(folder: Path, rng: np.random.Generator, sizes: list[tuple[int, int]]) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"shape{i}.npz" for i in range(len(sizes))]
    for path, (outside, inside) in zip(paths, sizes):
        write_shape(path, rng, outside, inside)
    return paths


def reference_batch(paths: list[Path], shapes: list[int], count: int, seed: int, epoch: int) -> np.ndarray:
    """The draw written out in NumPy on the whole files: per shape a torch generator seeded by
    (seed, epoch, shape) picks count // 2 (+ the odd one) outside rows, then the rest inside, all
    from one side where the other is empty; NaN/Inf rows dropped and rows split by sdf > 0 first,
    as load_npz and DeepSDF's remove_nans do."""
    rows = []
    for index in shapes:
        with np.load(paths[index]) as data:
            table = np.concatenate([data["pos"], data["neg"]]).astype(np.float32)
        table = table[np.isfinite(table).all(axis=1)]
        sides = [side for side in (table[table[:, 3] > 0], table[~(table[:, 3] > 0)]) if len(side)]
        generator = torch.Generator().manual_seed(((seed * 1_000_003 + epoch) * 1_000_003 + index) % 2**63)
        for k, side in enumerate(sides):
            share = count // len(sides) + (k < count % len(sides))
            rows.append(side[torch.randint(0, len(side), (share,), generator=generator).numpy()])
    return np.concatenate(rows)


def as_rows(batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> np.ndarray:
    return torch.cat([batch[0], batch[1][:, None]], dim=1).numpy()


@pytest.mark.parametrize("count", [1, 7, 64])
def test_streamed_batches_are_the_reference_draw(tmp_path: Path, rng: np.random.Generator, seed: int,
                                                 count: int) -> None:
    paths = write_collection(tmp_path, rng, SIZES)
    files = ShapeFiles([p.stem for p in paths], paths)
    memory = ShapeSamples([p.stem for p in paths], [fastsdf.load_npz(p) for p in paths])
    assert [files.sizes(i) for i in range(len(SIZES))] == SIZES
    for epoch in (0, 3):
        shapes = [int(i) for i in rng.permutation(len(SIZES))]
        expected = reference_batch(paths, shapes, count, seed, epoch)
        got = files.batch(shapes, count, seed, epoch)
        np.testing.assert_array_equal(as_rows(got), expected)
        assert got[2].tolist() == [i for i in shapes for _ in range(count)]
        for a, b in zip(got, memory.batch(shapes, count, seed, epoch)):
            assert torch.equal(a, b)
    assert not (tmp_path / CACHE_FOLDER).exists()  # np.savez's files are read in place


def test_files_that_cannot_be_read_in_place_are_converted_once(tmp_path: Path, rng: np.random.Generator,
                                                             seed: int) -> None:
    """Compressed, float64, NaN rows and rows on the wrong side: a converted copy in the cache, the
    same draw as from the file itself, reused until the source changes; the sources untouched."""
    table = rng.uniform(-1, 1, (301, 4))
    table[5, 0] = np.nan
    table[9, 3] = np.inf
    pos, neg = table[table[:, 3] > 0], table[~(table[:, 3] > 0)]
    paths = [tmp_path / name for name in ("compressed.npz", "float64.npz", "nan.npz", "misfiled.npz")]
    np.savez_compressed(paths[0], pos=pos.astype(np.float32), neg=neg.astype(np.float32))
    np.savez(paths[1], pos=pos, neg=neg)
    np.savez(paths[2], pos=pos.astype(np.float32), neg=neg.astype(np.float32))
    np.savez(paths[3], pos=neg[:20].astype(np.float32), neg=np.concatenate([neg[20:], pos]).astype(np.float32))
    before = {p: p.read_bytes() for p in paths}
    files = load_shapes(paths)
    shapes = [3, 0, 2, 1]
    np.testing.assert_array_equal(as_rows(files.batch(shapes, 9, seed, 1)), reference_batch(paths, shapes, 9, seed, 1))
    copies = sorted((tmp_path / CACHE_FOLDER).glob("*.npz"))
    assert len(copies) == 4 and all(p.read_bytes() == before[p] for p in paths)
    stamps = [c.stat().st_mtime_ns for c in copies]
    load_shapes(paths)
    assert [c.stat().st_mtime_ns for c in sorted((tmp_path / CACHE_FOLDER).glob("*.npz"))] == stamps
    finite = lambda rows: rows[np.isfinite(rows).all(axis=1)]  # noqa: E731 - the NaN/Inf rows are dropped
    np.savez_compressed(paths[0], pos=finite(pos)[:3].astype(np.float32), neg=finite(neg)[:4].astype(np.float32))
    os.utime(paths[0], ns=(1, 1))  # a different stamp even where the clock's is coarse
    assert load_shapes(paths[:1]).sizes(0) == (3, 4)
    assert len(list((tmp_path / CACHE_FOLDER).glob("compressed.npz.*"))) == 1


def test_processes_converting_one_file_at_once_keep_the_first_copy(tmp_path: Path, rng: np.random.Generator,
                                                                   seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """DDP's processes open one collection at once, so several may convert a file: one that found no
    copy and writes it after another did leaves that copy as it is (a reader's file, on NFS from
    another host, is never replaced under it), and reads the same rows from it."""
    path = tmp_path / "compressed.npz"
    table = rng.uniform(-1, 1, (101, 4)).astype(np.float32)
    np.savez_compressed(path, pos=table[table[:, 3] > 0], neg=table[~(table[:, 3] > 0)])
    first = load_shapes([path])
    [copy] = (tmp_path / CACHE_FOLDER).glob("*.npz")
    inode, content = copy.stat().st_ino, copy.read_bytes()
    exists = Path.exists
    monkeypatch.setattr(Path, "exists", lambda self, *args, **kwargs: self != copy and exists(self, *args, **kwargs))
    late = load_shapes([path])  # converted again: it did not see the copy
    monkeypatch.undo()
    assert copy.stat().st_ino == inode and copy.read_bytes() == content
    assert sorted(p.name for p in (tmp_path / CACHE_FOLDER).iterdir()) == [copy.name]  # no temporary left
    for a, b in zip(first.batch([0], 33, seed, 2), late.batch([0], 33, seed, 2)):
        assert torch.equal(a, b)


def test_zero_and_two_workers_give_the_same_batches(tmp_path: Path, rng: np.random.Generator, seed: int) -> None:
    paths = write_collection(tmp_path, rng, SIZES)
    shapes = load_shapes(tmp_path)
    options = {"first_epoch": 1, "epochs": 4, "shapes_per_batch": 2, "samples_per_shape": 33, "seed": seed}
    alone = list(shape_batches(shapes, num_workers=0, **options))
    assert len(alone) == 3 * 3
    for a, b in zip(alone, shape_batches(shapes, num_workers=2, **options), strict=True):
        assert all(torch.equal(x, y) for x, y in zip(a, b))
    state = torch.random.get_rng_state()
    list(shape_batches(shapes, num_workers=2, **options))
    assert torch.equal(torch.random.get_rng_state(), state)  # dropout's generator is left alone
    ranks = [list(shape_batches(shapes, num_workers=0, rank=r, world=2, **options)) for r in (0, 1)]
    for whole, *parts in zip(alone, *ranks):
        assert sorted(torch.cat([p[2] for p in parts]).tolist()) == sorted(whole[2].tolist())
    assert len(paths) == len(shapes)


def test_training_with_and_without_workers_is_the_same(tmp_path: Path, rng: np.random.Generator) -> None:
    write_collection(tmp_path, rng, SIZES)
    results = []
    for workers in (0, 2):
        torch.manual_seed(0)
        decoder = fastsdf.DeepSDFDecoder(latent_size=4, hidden_features=16, hidden_layers=2, latent_in=(), dropout=0.1)
        model, history = fastsdf.train_deepsdf(tmp_path, decoder, epochs=3, shapes_per_batch=2, samples_per_shape=32,
                                               seed=1, progress=False, num_workers=workers)
        results.append((model.codes, [p.detach() for p in model.decoder.parameters()], history["loss"]))
    (codes0, params0, loss0), (codes2, params2, loss2) = results
    assert torch.equal(codes0, codes2) and loss0 == loss2
    assert all(torch.equal(a, b) for a, b in zip(params0, params2))
    with pytest.raises(ValueError, match="num_workers"):
        fastsdf.train_deepsdf(tmp_path, epochs=1, latent_size=4, num_workers=-1)


def held_bytes(root: object) -> int:
    """Bytes of every object ``root`` reaches (classes, modules and functions aside), arrays' and
    tensors' data included."""
    seen, stack, total = set(), [root], 0
    while stack:
        obj = stack.pop()
        if id(obj) in seen or isinstance(obj, (type, type(sys), type(held_bytes))):
            continue
        seen.add(id(obj))
        total += sys.getsizeof(obj)
        if isinstance(obj, torch.Tensor):
            total += obj.untyped_storage().nbytes()
        stack.extend(gc.get_referents(obj))
    return total


def test_a_collection_holds_no_samples(tmp_path: Path, rng: np.random.Generator) -> None:
    """What a collection holds per shape does not depend on its sample count: no rows in memory."""
    small = ShapeFiles(["a", "b", "c"], write_collection(tmp_path / "x", rng, [(10, 10)] * 3))
    large = ShapeFiles(["a", "b", "c"], write_collection(tmp_path / "y", rng, [(20_000, 30_000)] * 3))
    many = ShapeFiles([f"s{i:02}" for i in range(30)], write_collection(tmp_path / "z", rng, [(50, 60)] * 30))
    assert held_bytes(small) == held_bytes(large) < 3 * 2048
    assert held_bytes(many) < 30 * 2048
    in_memory = ShapeSamples(["a", "b", "c"], [fastsdf.load_npz(p) for p in sorted((tmp_path / "y").glob("*.npz"))])
    assert held_bytes(in_memory) > 3 * 50_000 * 16


def test_bad_files_give_one_error_naming_the_file(tmp_path: Path, rng: np.random.Generator) -> None:
    good = write_collection(tmp_path, rng, [(5, 5)])[0]
    with pytest.raises(FileNotFoundError, match="missing.npz"):
        load_shapes([good, tmp_path / "missing.npz"])
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"PK\x03\x04 not a zip")
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(good.read_bytes()[:-40])
    flipped = tmp_path / "flipped.npz"  # one bit of a row changed: the archive's CRC-32 says so
    data = bytearray(good.read_bytes())
    with zipfile.ZipFile(good) as archive:
        at = archive.getinfo("neg.npy").header_offset + 30 + len("neg.npy") + 128 + 5
    data[at] ^= 0x10
    flipped.write_bytes(bytes(data))
    columns = tmp_path / "columns.npz"
    np.savez(columns, pos=np.ones((4, 3), np.float32), neg=-np.ones((4, 3), np.float32))
    no_neg = tmp_path / "no_neg.npz"
    np.savez(no_neg, pos=np.ones((4, 4), np.float32))
    empty = tmp_path / "empty.npz"
    np.savez(empty, pos=np.full((4, 4), np.nan, np.float32), neg=np.zeros((0, 4), np.float32))
    for path, message in ((garbage, "not a readable"), (truncated, "not a readable"), (flipped, "damaged"),
                          (columns, r"\(N, 4\)"), (no_neg, "'neg'"), (empty, "no finite samples")):
        with pytest.raises(ValueError, match=message) as caught:
            load_shapes([good, path])
        assert str(path) in str(caught.value)
