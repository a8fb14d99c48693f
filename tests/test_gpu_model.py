"""benchmarks/gpu_model.py's counters: exact on kernels and ops whose traffic is known by hand.

The Triton kernels here are interpreted whatever TRITON_INTERPRET says (an InterpretedFunction
made directly), so the test runs the same on a machine with a GPU. Without one, TRITON_INTERPRET=1
is set before triton is imported, as test_siren_triton.py does: the @triton.jit functions of
triton.language itself are defined at that import, and the interpreter cannot call compiled ones.
"""

import dataclasses
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
triton = pytest.importorskip("triton")
import triton.language as tl  # noqa: E402
from triton.runtime.interpreter import InterpretedFunction  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import gpu_model  # noqa: E402


def _copy(src, dst, n, BLOCK: tl.constexpr):
    offsets = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    inside = offsets < n
    tl.store(dst + offsets, tl.load(src + offsets, mask=inside), mask=inside)


def _dot_and_sines(a, b, c, s, omega, M: tl.constexpr, K: tl.constexpr, N: tl.constexpr):
    rm = tl.arange(0, M)
    rk = tl.arange(0, K)
    rn = tl.arange(0, N)
    x = tl.load(a + rm[:, None] * K + rk[None, :])
    w = tl.load(b + rk[:, None] * N + rn[None, :])
    z = tl.dot(x, w, input_precision="tf32x3") * omega + 1.0
    tl.store(c + rm[:, None] * N + rn[None, :], tl.sin(z))
    tl.store(s + rm[:, None] * N + rn[None, :], tl.cos(z))


def _weighted(x, w, y, BLOCK: tl.constexpr, N: tl.constexpr):
    """y = x * w per block: w (N values) re-read by every program, as the SIREN kernels re-read
    their weights for every tile."""
    offsets = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    tl.store(y + offsets, tl.load(x + offsets) * tl.load(w + offsets % N))


def _rounded_dot(a, b, c, M: tl.constexpr, K: tl.constexpr, N: tl.constexpr, LOW_BITS: tl.constexpr):
    """c = a b with the operands' low mantissa bits cleared: how kernels.siren emulates tensor-core
    products under the interpreter (an IEEE dot of TF32- or bf16-valued operands)."""
    rm = tl.arange(0, M)
    rk = tl.arange(0, K)
    rn = tl.arange(0, N)
    mask = -(1 << LOW_BITS)
    x = (tl.load(a + rm[:, None] * K + rk[None, :]).to(tl.int32, bitcast=True) & mask).to(tl.float32, bitcast=True)
    w = (tl.load(b + rk[:, None] * N + rn[None, :]).to(tl.int32, bitcast=True) & mask).to(tl.float32, bitcast=True)
    tl.store(c + rm[:, None] * N + rn[None, :], tl.dot(x, w, input_precision="ieee"))


copy_kernel = InterpretedFunction(_copy)
dot_kernel = InterpretedFunction(_dot_and_sines)
weighted_kernel = InterpretedFunction(_weighted)
rounded_dot_kernel = InterpretedFunction(_rounded_dot)


def test_copy_kernel_counts_the_bytes_its_masks_let_through(rng: np.random.Generator) -> None:
    n = int(rng.integers(1, 300))
    block = 32
    src = torch.from_numpy(rng.standard_normal(n).astype(np.float32))
    dst = torch.zeros(n)
    recorder = gpu_model.Recorder()
    with recorder.triton_only():
        copy_kernel[(triton.cdiv(n, block),)](src, dst, n, BLOCK=block)
    assert torch.equal(dst, src)
    (launch,) = recorder.kernels
    assert (launch.name, launch.load, launch.store) == ("_copy", 4 * n, 4 * n)  # the tail masked off
    assert launch.buffers == {"src": [4 * n, 0], "dst": [0, 4 * n]}
    assert launch.mma == {} and launch.sines == 0


def test_dot_flops_sines_and_float_instructions() -> None:
    m, k, n = 16, 32, 16
    a, b = torch.rand(m, k), torch.rand(k, n)
    c, s = torch.empty(m, n), torch.empty(m, n)
    recorder = gpu_model.Recorder()
    with recorder.triton_only():
        dot_kernel[(1,)](a, b, c, s, 2.0, M=m, K=k, N=n)
    torch.testing.assert_close(c, torch.sin((a @ b) * 2 + 1), rtol=1e-5, atol=1e-5)
    (launch,) = recorder.kernels
    assert launch.mma == {"tf32x3": 2 * m * k * n}
    assert launch.sines == 2 * m * n
    assert launch.lanes >= 2 * m * n  # the multiply and the add, at least (the dot's accumulate may count)
    assert (launch.load, launch.store) == (4 * (m * k + k * n), 2 * 4 * m * n)


@pytest.mark.parametrize("low_bits, expected", [(0, "ieee"), (13, "tf32"), (16, "bf16")])
def test_emulated_tensor_core_dots_are_classified_by_their_operands(low_bits: int, expected: str) -> None:
    m, k, n = 16, 16, 16
    a, b = torch.rand(m, k) + 0.5, torch.rand(k, n) + 0.5  # no zeros: random mantissas, all bits used
    c = torch.empty(m, n)
    recorder = gpu_model.Recorder()
    with recorder.triton_only():
        rounded_dot_kernel[(1,)](a, b, c, M=m, K=k, N=n, LOW_BITS=low_bits)
    (launch,) = recorder.kernels
    assert launch.mma == {expected: 2 * m * k * n}
    chip = gpu_model.CHIPS[1]
    on_tensor_cores = launch.times(chip)["tensor cores"] > 0
    assert on_tensor_cores == (expected != "ieee")  # TF32 and bf16 values: tensor-core work, not FP32 cores


def test_small_arguments_are_served_by_l2_big_ones_by_hbm() -> None:
    weights = 64
    block = 32
    recorder = gpu_model.Recorder()
    calls = []
    batches = (128, 256)
    for n in batches:
        x, w, y = torch.rand(n), torch.rand(weights), torch.empty(n)
        with recorder.triton_only():
            weighted_kernel[(n // block,)](x, w, y, BLOCK=block, N=weights)
        torch.testing.assert_close(y, x * w.repeat(n // weights))
        calls.append([recorder.kernels.pop()])
    (k,) = gpu_model.per_point(*calls, batches)
    assert k.buffers == {"x": [4, 0], "w": [4, 0], "y": [0, 4]}  # w re-read per block: 4 B per point
    # x and y grow with the batch: at NOMINAL_BATCH points; w stays 256 bytes.
    assert k.footprint == {"x": 4 * gpu_model.NOMINAL_BATCH, "y": 4 * gpu_model.NOMINAL_BATCH, "w": 4 * weights}
    assert k.growth == {"x": 4, "y": 4, "w": 0}
    chip = gpu_model.Chip("test", hbm=1e12, tf32=1e15, bf16=1e15, fp32=1e15, mufu=1e15, source="",
                          l2_size=6 * gpu_model.NOMINAL_BATCH, l2=4e12)  # x fits in L2, but not in half of it
    assert k.l2_resident(chip) == 4
    # In a bigger L2 x and y are resident too, yet cross HBM once: their first touch.
    bigger = dataclasses.replace(chip, l2_size=1e9)
    assert k.l2_resident(bigger) == 4
    times = k.times(chip)
    assert times["HBM"] == pytest.approx(8 / 1e12) and times["L2"] == pytest.approx(12 / 4e12)
    result = gpu_model.bound([k], chip)
    assert (result["hbm_bytes"], result["l2_bytes"], result["binds"]) == (8, 4, "HBM")
    assert result["points_per_s"] == pytest.approx(1e12 / 8)


def test_torch_ops_read_inputs_write_outputs_and_views_move_nothing() -> None:
    n, k, m = 50, 7, 9
    x, w, row = torch.rand(n, k), torch.rand(m, k), torch.rand(1, m)
    recorder = gpu_model.Recorder()
    with recorder.everything():
        y = x @ w.t()  # w.t() is a view
        z = y + row.expand(n, m)  # the broadcast row is read once
        z.reshape(-1)
    mm, add = recorder.kernels
    assert mm.mma == {"fp32": 2 * n * k * m} and (mm.load, mm.store) == (4 * (n * k + m * k), 4 * n * m)
    assert (add.load, add.store, add.lanes) == (4 * (n * m + m), 4 * n * m, n * m)


def test_per_point_drops_what_a_call_reads_once() -> None:
    def kernels(points: int) -> list:
        return [gpu_model.KernelCount("k", "triton", load=1000 + 12 * points, store=4 * points,
                                      mma={"bf16": 10.0 * points}, sines=3.0 * points)]

    (k,) = gpu_model.per_point(kernels(128), kernels(256), (128, 256))
    assert (k.load, k.store, k.mma, k.sines) == (12, 4, {"bf16": 10}, 3)
    chip = gpu_model.CHIPS[1]
    result = gpu_model.bound([k], chip)
    assert result["binds"] == "HBM" and result["points_per_s"] == pytest.approx(chip.hbm / 16)


def test_eager_gradient_counts_the_backward_too() -> None:
    network = gpu_model.Network("tiny", "3 -> 16 x 2 -> 1", 16, 1)
    forward = gpu_model.count_call(gpu_model.eager_call(network, "forward"), 8)
    gradient = gpu_model.count_call(gpu_model.eager_call(network, "gradient"), 8)
    products = [k for k in gradient if k.mma]
    assert sum(bool(k.mma) for k in forward) == 3 and len(products) > 3
    assert sum(k.sines for k in gradient) == 2 * sum(k.sines for k in forward) == 2 * 8 * 32


def test_older_tritons_tilings_are_counted_where_they_differ(monkeypatch: pytest.MonkeyPatch) -> None:
    from fastsdf.kernels.siren import launch

    installed = launch.TRITON_VERSION
    with launch.tilings_of((3, 6)):
        assert launch.config(256, 0, "bf16", 90).block_m == 64
    assert launch.TRITON_VERSION == installed
    for version in ((3,), (3, 6, 0), ("3", "6"), (3, -1)):
        with pytest.raises(ValueError, match="major, minor"), launch.tilings_of(version):
            pass
    assert launch.TRITON_VERSION == installed
    # At width 16 every Triton takes the same tilings: an older one's row would repeat the first.
    monkeypatch.setenv("FASTSDF_BACKEND", "triton")
    monkeypatch.setitem(gpu_model.NETWORKS, "tiny", gpu_model.Network("tiny", "3 -> 16 x 2 -> 1", 16, 1))
    rows = gpu_model.run_model(["tiny"], ["bf16"], (64, 128), ["forward"], [(3, 6)], log=lambda line: None)
    assert [r["impl"] for r in rows] == ["fastsdf", "eager", "eager", "floor"]
    assert launch.TRITON_VERSION == installed


@pytest.mark.parametrize("value", ["3", "3.6.0", "three.six", "3.6,"])
def test_model_tilings_refused(value: str) -> None:
    with pytest.raises(SystemExit):
        gpu_model._parse(["--tilings", value])


# --- benchmarks/gpu_bench.py and make_results.py: what can be checked without a GPU ---------------

import json  # noqa: E402

import gpu_bench  # noqa: E402
import make_results  # noqa: E402


def test_dry_run_is_labelled_and_never_rendered(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "dry.json"
    assert gpu_bench.main(["--dry-run", "--out", str(out), "--budget", "10", "--parts", "marching_cubes,mesh_sdf"]) == 0
    data = json.loads(out.read_text())
    assert data["dry_run"] and data["machine_info"]["fastsdf"]["dry_run"] and data["benchmarks"]
    for bench in data["benchmarks"]:
        assert "-dryrun-" in bench["group"] and "[DRY RUN]" in bench["extra_info"]["peer"]
        assert gpu_bench.DRY_RUN_NOTE in bench["extra_info"]["notes"]
        assert bench["stats"]["rounds"] >= 3 and 0 < bench["stats"]["min"] <= bench["stats"]["median"]
    assert "NOT GPU NUMBERS" in capsys.readouterr().out
    assert make_results.split_inputs([out]) == ([], [])  # skipped with a warning


@pytest.mark.parametrize("argv", [["--dry-run"], ["--dry-run", "--out", str(gpu_bench.RESULTS_DIR / "x.json")],
                                  ["--parts", "siren,nope"], ["--budget", "0"]])
def test_bench_arguments_refused(argv: list[str]) -> None:
    with pytest.raises(SystemExit):
        gpu_bench._parse(argv)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal where no GPU is visible")
def test_bench_without_a_gpu_measures_nothing(tmp_path: Path) -> None:
    out = tmp_path / "gpu.json"
    assert gpu_bench.main(["--out", str(out)]) == 2 and not out.exists()


def test_the_fused_peers_force_the_triton_backend_for_their_call_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FASTSDF_BACKEND", "cpu")
    assert gpu_bench._fused(lambda x: os.environ["FASTSDF_BACKEND"])(None) == "triton"
    assert os.environ["FASTSDF_BACKEND"] == "cpu"
    monkeypatch.delenv("FASTSDF_BACKEND")
    with pytest.raises(ZeroDivisionError):
        gpu_bench._fused(lambda x: 1 / 0)(None)
    assert "FASTSDF_BACKEND" not in os.environ


def test_siren_dry_run_checks_outputs_against_float64(tmp_path: Path) -> None:
    pytest.importorskip("pytest_benchmark")  # benchmarks/test_bench_siren.py, whose peers it times, needs it
    out = tmp_path / "dry.json"
    gpu_bench.main(["--dry-run", "--out", str(out), "--budget", "4", "--parts", "siren"])
    rows = json.loads(out.read_text())["benchmarks"]
    assert rows and all(r["group"].startswith("siren-dryrun-") for r in rows)
    checked = [r["extra_info"]["rel_error_y"] for r in rows if "rel_error_y" in r["extra_info"]]
    assert checked and all(error < 1e-5 for error in checked)  # float32 on the CPU, against float64


@pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") != "1", reason="a dry run of the Triton kernels needs "
                    "Triton's interpreter, chosen before triton is imported")
def test_tilings_dry_run_times_both_tilings_where_they_differ(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("pytest_benchmark")  # benchmarks/test_bench_siren.py, whose network it times, needs it
    # fp32's forward takes the same tiling under every Triton: skipped; a partial tile of bf16's
    monkeypatch.setattr(gpu_bench, "TILINGS_ORDER", (("forward", "fp32"), ("forward", "bf16")))
    monkeypatch.setitem(gpu_bench.DRY, "tilings", 65)
    out = tmp_path / "dry.json"
    assert gpu_bench.main(["--dry-run", "--parts", "tilings", "--budget", "600", "--out", str(out)]) == 0
    rows = json.loads(out.read_text())["benchmarks"]
    assert [r["group"] for r in rows] == ["siren-dryrun-tilings-forward65"] * 2
    installed, other = (r["extra_info"] for r in rows)
    assert installed["variant"] == installed["compare_with"] == other["compare_with"] == "bf16"
    assert other["variant"].startswith("bf16, Triton ") and other["variant"].endswith("'s tilings")
    assert other["rel_diff_vs_installed_tilings"] < 1e-6  # the same sums, tiled otherwise
    assert all(r["stats"]["rounds"] == rows[0]["stats"]["rounds"] >= 3 for r in rows)


def test_model_section_says_it_is_a_model(tmp_path: Path) -> None:
    network = gpu_model.Network("tiny", "3 -> 16 x 2 -> 1", 16, 1)
    eager = [gpu_model.KernelCount("mm", "torch", load=40, store=4, mma={"fp32": 1000.0})]
    rows = gpu_model.floor_rows(network, "forward", eager, ["bf16"])
    model = tmp_path / "gpu_model.json"
    model.write_text(json.dumps({"kind": gpu_model.KIND, "chips": [vars(c) for c in gpu_model.CHIPS], "rows": rows,
                                 "batches": [128, 256], "notes": ["a note"], "floor_text": "the floor."}))
    results = tmp_path / "RESULTS.md"
    assert make_results.main([str(model), "--results", str(results), "--no-readme"]) == 0
    text = results.read_text()
    assert "<!-- gpu_model:begin -->" in text and "<!-- gpu_model:end -->" in text
    assert "This is a model, not a measurement" in text and "| forward | floor | bf16 | 16 |" in text
