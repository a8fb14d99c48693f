"""benchmarks/make_results.py: how a benchmark's nested extra_info becomes tables of RESULTS.md."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import make_results  # noqa: E402


def _run_file(path: Path, extra: dict) -> Path:
    path.write_text(json.dumps({
        "machine_info": {"node": "test", "cpu": {"brand_raw": "a CPU"}}, "commit_info": {"id": "abcdef0"},
        "datetime": "2026-11-30T08:00:00+00:00",
        "benchmarks": [{"group": "generate-cpu-8shapes", "name": "test_generate_pipeline", "params": {},
                        "extra_info": extra,
                        "stats": {"median": 2.0, "iqr": 0.0, "min": 2.0, "rounds": 1, "mean": 2.0}}]}))
    return path


def test_dict_of_dicts_becomes_its_own_table(tmp_path: Path) -> None:
    sources = {"diffusion": {"mmd_train": 0.0123, "cov_train": 0.5, "meshed": 8},
               "prior": {"mmd_train": 0.0456, "cov_train": 0.25, "meshed": 7, "watertight": True}}
    run = _run_file(tmp_path / "generate.json", {"peer": "fastsdf", "shapes": 8, "sources": sources})
    results = tmp_path / "RESULTS.md"
    assert make_results.main([str(run), "--results", str(results), "--no-readme"]) == 0
    text = results.read_text()
    assert "`sources` of fastsdf (test_generate_pipeline):" in text
    assert "| sources | mmd_train | cov_train | meshed | watertight |" in text
    assert "| diffusion | 0.0123 | 0.5 | 8 | ? |" in text  # a column a row lacks is "?"
    assert "| prior | 0.0456 | 0.25 | 7 | yes |" in text


def test_flat_and_list_extras_make_no_table() -> None:
    run = make_results.Run("r", {}, {}, "")
    result = make_results.Result(run, "g", "n", {"notes": ["a"], "shapes": 3, "empty": {}, "mixed": {"a": {}, "b": 1}},
                                 {}, {})
    assert make_results.breakdown_tables([result]) == []


def test_a_group_without_fastsdf_rows_has_no_ratio_column() -> None:
    """Variants of one thing (the models the lectures compare) have no baseline to divide by."""
    run = make_results.Run("r", {}, {}, "")
    stats = {"median": 2.0, "iqr": 0.0, "min": 2.0, "rounds": 1}
    models = [make_results.Result(run, "models-cpu-cow", name, {"peer": name, "steps": 9}, {}, stats)
              for name in ("siren", "relu")]
    header = make_results.group_table(models)[0]
    assert "steps" in header and "vs fastsdf" not in header
    ours = make_results.Result(run, "models-cpu-cow", "ours", {"peer": "fastsdf", "steps": 9}, {}, stats)
    assert "vs fastsdf" in make_results.group_table([*models, ours])[0]
