"""Render pytest-benchmark JSON files as Markdown tables in benchmarks/RESULTS.md (and README.md).

Usage (from the repository root):

    .venv/bin/pytest benchmarks/ --benchmark-json=benchmarks/results/cpu.json
    .venv/bin/python benchmarks/make_results.py benchmarks/results/*.json

    options:
      --results PATH   file to update (default: benchmarks/RESULTS.md, created if missing)
      --readme PATH    also update this file where it holds the markers (default: README.md)
      --no-readme      leave README.md alone
      --dry-run        print the sections instead of writing them

Benchmark groups are named ``{op}-{kind}-{case}``: an op without hyphens, a kind (``cpu``, ``cuda`` or
another word, e.g. ``grid``) and a case (a size or a name), e.g. ``marching_cubes-cpu-512`` or
``mesh_sdf-cpu-suzanne``. Every op found in the JSON files gets its own section, written between
the lines

    <!-- {op}:begin -->
    <!-- {op}:end -->

which replace what stood between them before; text outside the markers is kept, so each op's
benchmarks can keep their own section in the same file. A section lists the runs it comes from
(date, commit, CPU, cores used, GPU) and, per group, one row per peer: median, IQR and min time,
rounds, output size and the ratio of its median to fastsdf's, then the group's notes.

The benchmarks record in ``extra_info``: peer, version, device, n, threads, vertices, faces, input
and, on a GPU, gpu; benchmarks/conftest.py adds a ``fastsdf`` entry to the run's machine info.
Optional keys add columns to a group's table where any of its rows has them:

    sign                     how the peer decides inside/outside (column "sign")
    method                   how the peer extracts a mesh (column "method")
    points                   query points per call: columns "points" and "M points/s" (points / median)
    build_s, build_in_call   seconds to build the peer's structure (not in the timed calls), or, with
                             build_in_call, the time of a 1-point call for a peer that builds in every call
    peak_rss_mb, peak_gpu_mb peak extra host resident / GPU memory of one call, MiB
    max_abs_error            largest distance error against fastsdf's reference
    sign_disagreement        share of sign disagreements (with sign_disagreements and sign_points, counts);
                             ``signed: false`` marks a peer of unsigned distances, whose signs are not compared
    same_counts_as_fastsdf   whether a mesh has fastsdf's vertex and triangle counts on the same input
    steps                    training steps taken (fit and training benchmarks)
    steps_per_second         training steps per second (training benchmarks)
    meshes_per_s             meshes processed per second (preprocessing benchmarks)
    extra_peak_gib           peak memory of a run beyond what it held before it started, GiB
    rows_in_memory_gib       what the run's samples would take held in memory, GiB
    f1_near, f1_volume, iou_volume   occupancy scores of a fitted shape (fastsdf.metrics)
    chamfer_l1, normal_consistency   surface scores of its extracted mesh (fastsdf.metrics)
    identical_to_dense       whether the mesh equals the dense extraction's, vertex for vertex
    identical_to_serial      whether a parallel run wrote the serial run's files, byte for byte
    notes                    list of sentences printed under the table (once each)
    any key holding {row: {column: value}}  a table of its own under the group's (scores per input kind,
                             generation metrics per sampling source)

The ratio column compares a row with a fastsdf row of the same group: the one whose ``variant`` equals
the row's ``compare_with`` (else its ``variant``), preferring the same points and size. Where both
rows have ``points``, the ratio is that of the time per point.
Several files may be given (e.g. a CPU run and a run on a GPU machine); where two hold the same
benchmark, the later file on the command line wins. ``benchmarks/gpu_bench.py`` writes the same layout.
Files of a dry run (``"dry_run": true``: gpu_bench.py's CPU test of itself) are skipped with a warning:
their numbers are no GPU's. A file of ``benchmarks/gpu_model.py`` (``"kind": "fastsdf-gpu-model"``) becomes
the ``gpu_model`` section: the cost model's table, said to be a model.

Only the standard library is used.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
DEFAULT_RESULTS = BENCH_DIR / "RESULTS.md"
DEFAULT_README = BENCH_DIR.parent / "README.md"
BASELINE = "fastsdf"
GROUP_RE = re.compile(r"^(?P<op>[^-]+)-(?P<device>[^-]+)-(?P<case>.+)$")
DEVICE_ORDER = {"cpu": 0, "cuda": 2}  # other kinds (e.g. grid) between them

RESULTS_HEADER = """\
# fastsdf benchmark results

The tables below are produced by the pytest-benchmark suite in `benchmarks/` and rendered by
`benchmarks/make_results.py` (see `benchmarks/README.md` for the commands). Each op has its own
section between `<!-- op:begin -->` and `<!-- op:end -->` markers, rewritten whole by the script.

- Times are wall-clock per call: the median of the timed rounds after one warm-up round, with the
  interquartile range (IQR) and the fastest round. The *threads* column says how many CPU threads
  a peer uses: fastsdf's CPU kernels use every core available to them (OpenMP), scikit-image and
  PyMCubes run on one thread.
- **GPU numbers are only recorded where a GPU was available**: the CUDA groups run only on a
  machine with a CUDA device and `fastsdf._cuda` built, and are skipped elsewhere. Their times
  include `torch.cuda.synchronize()`; the input already lies on the GPU.
- Results may come from several runs on different machines; each table names its run.
"""


@dataclass
class Run:
    """One pytest-benchmark JSON file."""

    label: str
    machine_info: dict[str, Any]
    commit_info: dict[str, Any]
    datetime: str
    gpus: set[str] = field(default_factory=set)


@dataclass
class Result:
    """One benchmark of one run."""

    run: Run
    group: str
    name: str
    extra: dict[str, Any]
    params: dict[str, Any]
    stats: dict[str, Any]

    @property
    def peer(self) -> str:
        return str(self.extra.get("peer") or self.params.get("peer_key") or self.name)

    @property
    def size(self) -> int | None:
        n = self.extra.get("n", self.params.get("n"))
        if n is None:
            match = GROUP_RE.match(self.group)
            n = match["case"] if match and match["case"].isdigit() else None
        return int(n) if n is not None else None

    @property
    def points(self) -> int | None:
        points = self.extra.get("points")
        return int(points) if points is not None else None

    @property
    def per_point(self) -> float:
        """Median seconds per query point, or the median where the result has no point count."""
        return self.stats["median"] / self.points if self.points else self.stats["median"]


def op_of(group: str) -> str:
    """``marching_cubes-cpu-512`` -> ``marching_cubes``; a group named otherwise is its own op."""
    match = GROUP_RE.match(group)
    return match["op"] if match else group


def group_sort_key(group: str) -> tuple[str, int, str, int, int, str]:
    """Per op: cpu groups, then other kinds, then cuda; sizes in numeric order, names in alphabetical order."""
    match = GROUP_RE.match(group)
    if not match:
        return (group, 0, "", 0, 0, group)
    case = match["case"]
    numeric = (0, int(case)) if case.isdigit() else (1, 0)
    return (match["op"], DEVICE_ORDER.get(match["device"], 1), match["device"], *numeric, case)


def load(paths: list[Path]) -> list[Result]:
    """Reads the JSON files; a benchmark found again in a later file replaces the earlier one."""
    results: dict[tuple[str, str], Result] = {}
    labels = unique_labels(paths)
    for path in paths:
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            sys.exit(f"error: {path} does not exist (run the benchmarks with --benchmark-json={path} first)")
        except json.JSONDecodeError as exc:
            sys.exit(f"error: {path} is not valid JSON: {exc}")
        run = Run(labels[path], data.get("machine_info", {}), data.get("commit_info", {}), data.get("datetime", ""))
        benchmarks = data.get("benchmarks", [])
        if not benchmarks:
            print(f"warning: {path} holds no benchmark results (was it run with --benchmark-disable?)", file=sys.stderr)
        for bench in benchmarks:
            result = Result(run, bench.get("group") or "ungrouped", bench["name"], bench.get("extra_info", {}),
                            bench.get("params") or {}, bench["stats"])
            if gpu := result.extra.get("gpu"):
                run.gpus.add(str(gpu))
            key = (result.group, result.name)
            if key in results:
                print(f"warning: {result.name} ({result.group}) from {results[key].run.label} "
                      f"is replaced by the one from {run.label}", file=sys.stderr)
            results[key] = result
    return list(results.values())


def unique_labels(paths: list[Path]) -> dict[Path, str]:
    """File names, or longer paths where two files share a name."""
    names = [p.name for p in paths]
    return {p: p.name if names.count(p.name) == 1 else str(p) for p in paths}


def fmt_ms(seconds: float) -> str:
    return fmt_number(seconds * 1e3)


def fmt_ratio(ratio: float) -> str:
    if ratio >= 10:
        return f"{ratio:.0f}x"
    if ratio >= 1:
        return f"{ratio:.1f}x"
    return f"{ratio:.2f}x"


def fmt_count(value: Any) -> str:
    return f"{value:,}" if isinstance(value, int) else "?"


def fmt_number(value: float) -> str:
    """About three significant digits, thousands separated."""
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    if value >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}" if value >= 0.001 else f"{value:.1e}" if value > 0 else "0"


def fmt_error(value: Any) -> str:
    return "?" if value is None else "0" if value == 0 else f"{value:.1e}"


def fmt_score(value: Any) -> str:
    return "?" if value is None else f"{value:.4f}"


def fmt_share(extra: dict[str, Any]) -> str:
    if extra.get("signed") is False:
        return "n/a (unsigned)"
    share = extra.get("sign_disagreement")
    if share is None:
        return "?"
    text = "0%" if share == 0 else f"{100 * share:.2g}%"
    wrong, checked = extra.get("sign_disagreements"), extra.get("sign_points")
    return f"{text} ({wrong:,} of {checked:,})" if isinstance(wrong, int) and isinstance(checked, int) else text


def fmt_build(extra: dict[str, Any]) -> str:
    seconds = extra.get("build_s")
    if seconds is None:
        return "?"
    return f"in call ({fmt_ms(seconds)})" if extra.get("build_in_call") else fmt_ms(seconds)


def _optional(value: float | None, unit: float, spec: str) -> str:
    return "-" if value is None else format(value / unit, spec)


def fmt_date(iso: str) -> str:
    try:
        return datetime.fromisoformat(iso).astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    except ValueError:
        return iso or "?"


def table(header: list[str], align: str, rows: list[list[str]]) -> list[str]:
    """A Markdown table; ``align`` holds one of l/r per column."""
    rule = ["---:" if a == "r" else "---" for a in align]
    return ["| " + " | ".join(cells) + " |" for cells in [header, rule, *rows]]


def runs_table(runs: list[Run]) -> list[str]:
    rows = []
    for run in runs:
        cpu = run.machine_info.get("cpu", {})
        ours = run.machine_info.get("fastsdf", {})
        commit = run.commit_info.get("id", "")[:7] or "?"
        if run.commit_info.get("dirty"):
            commit += " (dirty)"
        gpu = ", ".join(sorted(run.gpus)) or ours.get("gpu") or "none"
        software = " / ".join(str(v) for v in (run.machine_info.get("python_version", "?"),
                                                ours.get("numpy", "?"), ours.get("torch", "?")))
        rows.append([
            f"`{run.label}`",
            fmt_date(run.datetime),
            commit,
            f"{cpu.get('brand_raw', '?')}, {cpu.get('count', '?')} logical cores",
            str(ours.get("cpu_threads", "?")),
            gpu,
            software,
        ])
    return table(["run", "date", "commit", "CPU", "threads used by fastsdf", "GPU", "Python / NumPy / torch"],
                 "lllllll", rows)


def baseline_of(r: Result, results: list[Result]) -> Result | None:
    """The fastsdf result ``r`` is compared with (see the module doc), or None where the group has none."""
    candidates = [b for b in results if b.peer == BASELINE]
    if not candidates:
        return None
    want = r.extra.get("compare_with", r.extra.get("variant"))
    return max(candidates, key=lambda b: (b.extra.get("variant") == want, b.points == r.points, b.size == r.size))


def ratio_cell(r: Result, results: list[Result]) -> str:
    variant = r.extra.get("variant")
    if r.peer == BASELINE and r.extra.get("compare_with", variant) == variant:
        return "baseline"
    base = baseline_of(r, results)
    if base is None:
        return f"n/a (no {BASELINE} result)"
    several = len({str(b.extra.get("variant")) for b in results if b.peer == BASELINE}) > 1
    name = f"{BASELINE} ({base.extra['variant']})" if several and base.extra.get("variant") else BASELINE
    if base is r:
        return "baseline"
    mine = f"{r.peer} ({variant})" if r.peer == BASELINE and variant else r.peer
    if r.points and base.points:
        text = f"{mine} / {name} = {fmt_ratio(r.per_point / base.per_point)}"
        return text + " per point" if r.points != base.points else text
    return f"{mine} / {name} = {fmt_ratio(r.stats['median'] / base.stats['median'])}"


def threads_cell(r: Result) -> str:
    threads = r.extra.get("threads")
    return "GPU" if r.extra.get("device") == "cuda" else str(threads) if threads is not None else "?"


# (header, alignment, cell, shown where: "always" or the extra_info key some row of the group must have)
COLUMNS: list[tuple[str, str, Any, str]] = [
    ("peer", "l", lambda r: f"{r.peer} {r.extra['version']}" if r.extra.get("version") else r.peer, "always"),
    ("sign", "l", lambda r: str(r.extra.get("sign") or "?"), "sign"),
    ("method", "l", lambda r: str(r.extra.get("method") or ""), "method"),
    ("threads", "r", threads_cell, "always"),
    ("size", "r", lambda r: f"{r.size}³" if r.size is not None else "?", "size"),
    ("points", "r", lambda r: fmt_count(r.points), "points"),
    ("median (ms)", "r", lambda r: fmt_ms(r.stats["median"]), "always"),
    ("IQR (ms)", "r", lambda r: fmt_ms(r.stats["iqr"]), "always"),
    ("min (ms)", "r", lambda r: fmt_ms(r.stats["min"]), "always"),
    ("rounds", "r", lambda r: str(r.stats["rounds"]), "always"),
    ("M points/s", "r", lambda r: fmt_number(r.points / r.stats["median"] / 1e6) if r.points else "?", "points"),
    ("build (ms)", "r", lambda r: fmt_build(r.extra), "build_s"),
    ("peak RSS (MiB)", "r", lambda r: fmt_number(r.extra["peak_rss_mb"]) if "peak_rss_mb" in r.extra else "?",
     "peak_rss_mb"),
    ("peak GPU (MiB)", "r", lambda r: fmt_number(r.extra["peak_gpu_mb"]) if "peak_gpu_mb" in r.extra else "?",
     "peak_gpu_mb"),
    ("vertices", "r", lambda r: fmt_count(r.extra.get("vertices")), "vertices"),
    ("triangles", "r", lambda r: fmt_count(r.extra.get("faces")), "faces"),
    ("same counts as fastsdf", "l",
     lambda r: {True: "yes", False: "no"}.get(r.extra.get("same_counts_as_fastsdf"), ""), "same_counts_as_fastsdf"),
    ("max \\|error\\|", "r", lambda r: fmt_error(r.extra.get("max_abs_error")), "max_abs_error"),
    ("sign disagreements", "r", lambda r: fmt_share(r.extra), "sign_disagreement"),
    ("steps", "r", lambda r: fmt_count(r.extra.get("steps")), "steps"),
    ("steps/s", "r", lambda r: _optional(r.extra.get("steps_per_second"), 1, ".3g"), "steps_per_second"),
    ("meshes/s", "r", lambda r: _optional(r.extra.get("meshes_per_s"), 1, ".3g"), "meshes_per_s"),
    ("peak memory beyond the start (GiB)", "r", lambda r: _optional(r.extra.get("extra_peak_gib"), 1, ".2f"),
     "extra_peak_gib"),
    ("samples if held in memory (GiB)", "r", lambda r: _optional(r.extra.get("rows_in_memory_gib"), 1, ".1f"),
     "rows_in_memory_gib"),
    ("F1 near", "r", lambda r: fmt_score(r.extra.get("f1_near")), "f1_near"),
    ("F1 volume", "r", lambda r: fmt_score(r.extra.get("f1_volume")), "f1_volume"),
    ("IoU volume", "r", lambda r: fmt_score(r.extra.get("iou_volume")), "iou_volume"),
    ("Chamfer-L1", "r", lambda r: fmt_error(r.extra.get("chamfer_l1")), "chamfer_l1"),
    ("normal consistency", "r", lambda r: fmt_score(r.extra.get("normal_consistency")), "normal_consistency"),
    ("same files as serial", "l", lambda r: {True: "yes", False: "no"}.get(r.extra.get("identical_to_serial"), ""),
     "identical_to_serial"),
    ("sparse mesh = dense mesh", "l", lambda r: {True: "yes", False: "no"}.get(r.extra.get("identical_to_dense"), ""),
     "identical_to_dense"),
]


def group_table(results: list[Result]) -> list[str]:
    ordered = sorted(results, key=lambda r: (r.peer != BASELINE, r.per_point))
    shown = [col for col in COLUMNS if col[3] == "always" or any(
        (r.size is not None) if col[3] == "size" else (r.extra.get(col[3]) is not None) for r in results)]
    headers, aligns = [header for header, *_ in shown], "".join(align for _, align, *_ in shown)
    if not any(r.peer == BASELINE for r in results):  # variants of one thing (models of the lectures): no ratio
        return table(headers, aligns, [[cell(r) for _, _, cell, _ in shown] for r in ordered])
    rows = [[cell(r) for _, _, cell, _ in shown] + [ratio_cell(r, results)] for r in ordered]
    return table(headers + [f"vs {BASELINE} (median)"], aligns + "l", rows)


def fmt_cell(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return fmt_number(value) if abs(value) >= 100 else f"{value:.3g}"
    return "?" if value is None else str(value)


def breakdown_tables(results: list[Result]) -> list[str]:
    """A table for each extra_info value of a result that is a dict of dicts of scalars
    (``{row: {column: value}}``, e.g. scores per input kind or per sampling source), under the
    group's table: rows in their recorded order, columns in the order they first appear."""
    lines: list[str] = []
    for r in results:
        for key, value in r.extra.items():
            if not (isinstance(value, dict) and value and all(isinstance(row, dict) for row in value.values())):
                continue
            columns = list({column: None for row in value.values() for column in row})
            rows = [[str(label), *(fmt_cell(row.get(column)) for column in columns)] for label, row in value.items()]
            lines += ["", f"`{key}` of {r.peer} ({r.name}):", "",
                      *table([key, *columns], "l" + "r" * len(columns), rows)]
    return lines


def group_notes(results: list[Result]) -> list[str]:
    """The group's notes, each once, in the order of first appearance."""
    notes = {str(note): None for r in results for note in (r.extra.get("notes") or [])}
    return [f"- {note}" for note in notes]


def render_section(op: str, results: list[Result], level: int) -> str:
    """The Markdown of one op's section, markers included; ``level`` is its heading level."""
    runs = list({id(r.run): r.run for r in results}.values())
    runs.sort(key=lambda run: run.label)
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"<!-- {op}:begin -->",
        f"{'#' * level} {op}",
        "",
        f"_Generated by `benchmarks/make_results.py` on {now}; do not edit between the markers._",
        "",
        *runs_table(runs),
    ]
    groups: dict[str, list[Result]] = {}
    for r in results:
        groups.setdefault(r.group, []).append(r)
    for group in sorted(groups, key=group_sort_key):
        members = groups[group]
        inputs = sorted({str(r.extra["input"]) for r in members if r.extra.get("input")})
        sources = ", ".join(sorted({f"`{r.run.label}`" for r in members}))
        lines += ["", f"{'#' * (level + 1)} {group}", ""]
        caption = "; ".join(inputs + [f"run {sources}"])
        lines.append(caption[:1].upper() + caption[1:] + ".")
        lines += ["", *group_table(members), *breakdown_tables(members)]
        if notes := group_notes(members):
            lines += ["", *notes]
    lines.append(f"<!-- {op}:end -->")
    return "\n".join(lines) + "\n"


def replace_section(text: str, op: str, section: str) -> str | None:
    """``text`` with the marked section of ``op`` replaced, or None where it has no markers."""
    begin, end = f"<!-- {op}:begin -->", f"<!-- {op}:end -->"
    start = text.find(begin)
    stop = text.find(end, start + len(begin)) if start >= 0 else -1
    if start < 0 and text.find(end) < 0:
        return None
    if start < 0 or stop < 0:
        raise SystemExit(f"error: unbalanced markers {begin} / {end}: fix the file by hand")
    stop += len(end)
    if text[stop:stop + 1] == "\n":
        stop += 1
    return text[:start] + section + text[stop:]


def update_results(path: Path, sections: dict[str, str]) -> None:
    """Writes each section into ``path``, in place where it has the markers, else at its end."""
    text = path.read_text() if path.exists() else RESULTS_HEADER
    for op, section in sections.items():
        replaced = replace_section(text, op, section)
        text = replaced if replaced is not None else text.rstrip("\n") + "\n\n" + section
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    print(f"wrote {', '.join(sections)} to {path}")


def update_readme(path: Path, sections: dict[str, str]) -> None:
    """Replaces the sections whose markers ``path`` already has; adds nothing else."""
    if not path.exists():
        return
    text = original = path.read_text()
    done = []
    for op, section in sections.items():
        replaced = replace_section(text, op, section)
        if replaced is not None:
            text = replaced
            done.append(op)
    if text != original:
        path.write_text(text)
    if done:
        print(f"wrote {', '.join(done)} to {path}")


MODEL_KIND = "fastsdf-gpu-model"
MODEL_OP = "gpu_model"


def split_inputs(paths: list[Path]) -> tuple[list[Path], list[tuple[Path, dict[str, Any]]]]:
    """(benchmark files, cost-model files with their data); dry runs are left out with a warning.
    Files that cannot be read stay with the benchmark files, whose loader says what is wrong."""
    benchmarks, models = [], []
    for path in paths:
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            benchmarks.append(path)
            continue
        if isinstance(data, dict) and data.get("kind") == MODEL_KIND:
            models.append((path, data))
        elif isinstance(data, dict) and (data.get("dry_run") or data.get("machine_info", {}).get("dry_run")):
            print(f"warning: {path} is a dry run (not GPU numbers): skipped", file=sys.stderr)
        else:
            benchmarks.append(path)
    return benchmarks, models


def fmt_rate(value: Any) -> str:
    if not isinstance(value, (int, float)):
        return "-"
    mantissa, exponent = f"{value:.2e}".split("e")
    return f"{mantissa}e{int(exponent)}"


def fmt_bytes(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:.3g}"


def render_model_section(path: Path, data: dict[str, Any], level: int) -> str:
    """The cost model's section: per network, its rows and bounds, and what they mean."""
    chips = [chip["name"] for chip in data.get("chips", [])]
    h = "#" * level
    lines = [
        f"<!-- {MODEL_OP}:begin -->",
        f"{h} {MODEL_OP}: cost model of the SIREN kernels on an H100 / H200",
        "",
        f"_Generated by `benchmarks/make_results.py` from `{path.name}`; do not edit between the markers._",
        "",
        "**This is a model, not a measurement: no GPU has run these kernels for these numbers.** "
        "`benchmarks/gpu_model.py` counted, per point, the global-memory bytes, FLOPs and sines of every "
        "kernel a call runs (Triton's kernels in its CPU interpreter with their loads, stores and dots "
        "instrumented; PyTorch's ops through its dispatcher), and turns them into roofline bounds from "
        "peak rates (L2's size and bandwidth are leads, not measured). A bound is the best a design can do, not "
        "what it will do.",
        "",
        f"Counted {fmt_date(str(data.get('generated', '')))} at commit {str(data.get('commit') or '?')[:7]} "
        f"(torch {data.get('torch', '?')}, Triton {data.get('triton', '?')}"
        + "".join(f"; fastsdf also at Triton {v}'s tilings" for v in data.get("tilings", [])) + "), batches "
        f"{' and '.join(str(b) for b in data.get('batches', []))} points. Jobs: "
        + "; ".join(f"{job}: {text}" for job, text in data.get("jobs", {}).items()) + ".",
        "",
        *table(["chip", "HBM TB/s", "L2 MB", "L2 TB/s", "TF32 TFLOP/s", "BF16 TFLOP/s", "FP32 TFLOP/s", "MUFU G/s",
                "rates from"], "lrrrrrrrl",
               [[c["name"], f"{c['hbm'] / 1e12:.2f}", _optional(c.get("l2_size"), 1e6, ".0f"),
                 _optional(c.get("l2"), 1e12, ".1f"), f"{c['tf32'] / 1e12:.0f}", f"{c['bf16'] / 1e12:.0f}",
                 f"{c['fp32'] / 1e12:.1f}", f"{c['mufu'] / 1e9:,.0f}", c["source"]] for c in data.get("chips", [])]),
    ]
    rows = data.get("rows", [])
    for network in dict.fromkeys(r["network"] for r in rows):
        group = [r for r in rows if r["network"] == network]
        lines += ["", f"{h}# {group[0]['network_text']}", ""]
        body = []
        for r in group:
            p = r["per_point"]
            binds = r["bounds"].get("H200", {})
            target = ""
            if "target_met" in r:
                target = f"{'met' if r['target_met'] else '**missed**'} (<= {r['target_bytes']:,} B)"
            body.append([r["job"], r["impl"], r["precision"], fmt_bytes(p["bytes"]),
                         *(fmt_bytes(binds[key]) if key in binds else "-" for key in ("hbm_bytes", "l2_bytes")),
                         fmt_rate(p["flops"]),
                         fmt_bytes(p["sines"]), str(r.get("kernels_per_call", "?")),
                         *(fmt_rate(r["bounds"].get(chip, {}).get("points_per_s")) for chip in chips),
                         f"{binds.get('binds', '?')} ({100 * binds.get('share', 0):.0f}%)", target])
        lines += table(["job", "impl", "precision", "bytes/point", "HBM bytes/point (H200)",
                        "L2-resident bytes/point (H200)", "FLOP/point", "sin+cos/point", "kernels/call",
                        *(f"bound {chip} (points/s)" for chip in chips), "binds on H200", "target (bytes/point)"],
                       "lllrrrrrr" + "r" * len(chips) + "ll", body)
    notes = [data["floor_text"]] if data.get("floor_text") else []
    lines += ["", *(f"- {note}" for note in notes + list(data.get("notes", []))), f"<!-- {MODEL_OP}:end -->"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("json", nargs="+", type=Path, help="pytest-benchmark JSON files (--benchmark-json=PATH)")
    parser.add_argument("--results", type=Path, default=DEFAULT_RESULTS, help="file to update (default: %(default)s)")
    parser.add_argument("--readme", type=Path, default=DEFAULT_README,
                        help="also update the sections whose markers this file has (default: %(default)s)")
    parser.add_argument("--no-readme", action="store_true", help="leave the README alone")
    parser.add_argument("--dry-run", action="store_true", help="print the sections instead of writing them")
    args = parser.parse_args(argv)

    paths, models = split_inputs(args.json)
    results = load(paths)
    if not results and not models:
        print("error: no benchmark results in the given files", file=sys.stderr)
        return 1
    by_op: dict[str, list[Result]] = {}
    for r in results:
        by_op.setdefault(op_of(r.group), []).append(r)
    ops = sorted(by_op)

    def sections(level: int) -> dict[str, str]:
        out = {op: render_section(op, by_op[op], level) for op in ops}
        if models:  # the last model file given wins, as for benchmarks
            out[MODEL_OP] = render_model_section(*models[-1], level)
        return out

    if args.dry_run:
        print("\n".join(sections(2).values()))
        return 0
    update_results(args.results, sections(2))
    if not args.no_readme:
        update_readme(args.readme, sections(3))
    return 0


if __name__ == "__main__":
    sys.exit(main())
