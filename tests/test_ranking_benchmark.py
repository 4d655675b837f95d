"""benchmarks/ranking_rm.py: the data it builds, and a tiny end-to-end run so the script cannot rot."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("benchmarks_ranking_rm", ROOT / "benchmarks" / "ranking_rm.py")
bench = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = bench
_spec.loader.exec_module(bench)


def test_pairwise_expansion_is_every_implied_pair_of_distinct_answers():
    rows = [{"prompt": [{"role": "user", "content": "1+2"}], "answers": ["3", "3?", "4", "3"], "ranking": [[0, 3], [1], [2]]}]
    pairs = [(p["chosen"][0]["content"], p["rejected"][0]["content"]) for p in bench.as_pairs(rows)]
    assert pairs == [("3", "3?"), ("3", "3?"), ("3", "4"), ("3", "4"), ("3?", "4")]  # 5 pairs: 10 sequences, K-wise 4
    (kwise,) = bench.as_kwise(rows)
    assert len(kwise["completions"]) == 4 and kwise["ranking"] == [[0, 3], [1], [2]]


@pytest.mark.slow
def test_smoke_run_writes_md_json_png(tmp_path):
    summary = bench.main(["--smoke", "--ks", "4", "--out_dir", str(tmp_path)])
    for name in ("ranking_rm.md", "ranking_rm.json", "ranking_rm.png"):
        assert (tmp_path / name).stat().st_size > 0
    data = json.loads((tmp_path / "ranking_rm.json").read_text())
    runs = {r["route"]: r for r in data["runs"]}
    # the hook counted what the data implies: 2 sequences per pair per epoch, K per ranking per epoch (1 epoch)
    assert runs["pairwise"]["sequences"] == 2 * runs["pairwise"]["train_rows"]
    assert runs["kwise"]["sequences"] == 4 * runs["kwise"]["train_rows"]
    assert summary["4"]["sequence_ratio"] == runs["pairwise"]["sequences"] / runs["kwise"]["sequences"]
    assert "Goal at K = 4" in (tmp_path / "ranking_rm.md").read_text()
