"""benchmarks/smollm2_recipes.py's summary: means, sds and the gain-versus-spread verdict on hand-written runs."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import smollm2_recipes  # noqa: E402


def _run(seed, before, after):
    models = {"given": {"oracle_accuracy_greedy": before[0], "oracle_accuracy_sampled": before[1]},
              "rl": {"oracle_accuracy_greedy": after[0], "oracle_accuracy_sampled": after[1]}}
    return {"recipe": "rlvr", "seed": seed, "models": models, "stage_wall_s": {"rl": 100.0 + seed, "eval": 50.0},
            "git": {"commit": "abc", "dirty": False}, "machine": {"cpu": "x", "cores": 2}}


def test_summary_means_sds_and_verdict():
    runs = [_run(0, (0.30, 0.10), (0.50, 0.12)), _run(1, (0.40, 0.10), (0.60, 0.10)), _run(2, (0.35, 0.10), (0.55, 0.08))]
    summary = smollm2_recipes.summarise(runs)["rlvr"]
    greedy = summary["metrics"]["oracle_accuracy_greedy"]
    assert summary["start_model"] == "given" and summary["seeds"] == [0, 1, 2]
    assert greedy["before_mean"] == pytest.approx(0.35) and greedy["after_mean"] == pytest.approx(0.55)
    assert greedy["before_sd"] == pytest.approx(0.05) and greedy["gain_mean"] == pytest.approx(0.20)
    assert greedy["gain_exceeds_spread"]  # 0.20 > 0.05
    sampled = summary["metrics"]["oracle_accuracy_sampled"]
    assert sampled["gain_mean"] == pytest.approx(0.0) and not sampled["gain_exceeds_spread"]
    assert summary["total_wall_s"]["per_seed"] == [150.0, 151.0, 152.0]
    assert "| greedy | 0.350 +- 0.050 | 0.550 +- 0.050 | +0.200" in smollm2_recipes.markdown(
        {"argv": [], "runs": runs, "summary": smollm2_recipes.summarise(runs)})


def test_one_seed_never_claims_a_gain_over_the_spread():
    greedy = smollm2_recipes.summarise([_run(0, (0.1, 0.1), (0.9, 0.9))])["rlvr"]["metrics"]["oracle_accuracy_greedy"]
    assert not greedy["gain_exceeds_spread"]


def test_two_invocations_side_by_side_keep_each_others_runs(tmp_path):
    # `--seeds 1` and `--seeds 2` in two shells: each started from the file as it was and must not drop the other's run
    path = tmp_path / "recipes.json"
    first, second = {"runs": []}, {"runs": []}
    smollm2_recipes.write(first, path, _run(1, (0.3, 0.1), (0.5, 0.1)))
    smollm2_recipes.write(second, path, _run(2, (0.4, 0.1), (0.6, 0.1)))
    smollm2_recipes.write(first, path, _run(0, (0.2, 0.1), (0.4, 0.1)))
    import json

    on_disk = json.loads(path.read_text())
    assert [r["seed"] for r in on_disk["runs"]] == [0, 1, 2]
    assert on_disk["summary"]["rlvr"]["seeds"] == [0, 1, 2]
    assert "| 2 |" in path.with_suffix(".md").read_text()


def test_rlhf_gain_is_measured_from_the_sft_model_rl_started_from():
    runs = []
    for seed, (base, sft, rl) in enumerate([(0.28, 0.33, 0.32), (0.28, 0.35, 0.37), (0.28, 0.31, 0.33)]):
        run = _run(seed, (base, base), (rl, rl))
        run["recipe"] = "rlhf"
        run["models"] = {"base": run["models"]["given"], "sft": {"oracle_accuracy_greedy": sft,
                                                                 "oracle_accuracy_sampled": sft}, "rl": run["models"]["rl"]}
        runs.append(run)
    summary = smollm2_recipes.summarise(runs)["rlhf"]
    greedy = summary["metrics"]["oracle_accuracy_greedy"]
    assert summary["start_model"] == "sft" and summary["models"] == ["base", "sft", "rl"]
    assert greedy["before_mean"] == pytest.approx(0.33) and greedy["gain_mean"] == pytest.approx(0.01)
    assert summary["model_means"]["base"]["oracle_accuracy_greedy"] == pytest.approx(0.28)
    assert not greedy["gain_exceeds_spread"]  # +0.01 against an sd of 0.02
