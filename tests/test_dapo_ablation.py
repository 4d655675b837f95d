"""benchmarks/dapo_ablation.py and its report: the steps-ratio arithmetic on made-up curves, the ladder's knobs, and a
smoke run."""

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import dapo_ablation as ab  # noqa: E402
import dapo_ablation_report as report  # noqa: E402


def test_steps_ratio_first_step_at_or_above_grpo_final():
    grpo = [(0, 0.30), (10, 0.35), (20, 0.40)]  # target 0.40 after 20 steps
    dapo = [(0, 0.30), (5, 0.38), (10, 0.41), (15, 0.39), (20, 0.50)]
    assert report.steps_ratio(dapo, grpo) == pytest.approx(10 / 20)
    assert report.steps_ratio([(0, 0.3), (4, 0.40)], grpo) == pytest.approx(4 / 20)  # equal counts as reached


def test_steps_ratio_not_reached_is_none_and_the_start_does_not_count():
    grpo = [(0, 0.30), (20, 0.40)]
    assert report.steps_ratio([(0, 0.30), (10, 0.39), (20, 0.39)], grpo) is None
    # the shared SFT start above the target is not DAPO's doing: the first point after it that reaches counts
    assert report.steps_ratio([(0, 0.45), (10, 0.30), (20, 0.42)], grpo) == pytest.approx(1.0)


def _run(rung, seed, accs, every=10):
    curve = [{"step": i * every, "accuracy": a, "sampled_accuracy": a, "generated": i * 100, "wall_s": i * 2.0,
              "by_level": {"0": a}, "mean_length": 2.0} for i, a in enumerate(accs)]
    return {"rung": rung, "name": ab.RUNGS[rung][0], "seed": seed, "curve": curve, "logs": [], "wall_s": 1.0,
            "train_wall_s": 1.0, "totals": {}, "config": {"dynamic_sampling": False}}


def test_headline_mean_only_when_every_seed_reaches():
    last = len(ab.RUNGS) - 1
    runs = [_run(0, 0, [0.3, 0.35, 0.40]), _run(last, 0, [0.3, 0.45, 0.5]),   # seed 0: step 10 of 20 -> 0.5
            _run(0, 1, [0.3, 0.32, 0.36]), _run(last, 1, [0.3, 0.33, 0.37])]  # seed 1: 20 of 20 -> 1.0
    ratio = report.summarise(runs, [0, 1], ab.RUNG_NAMES)["steps_ratio_to_grpo_final"]
    assert ratio["per_seed"] == pytest.approx([0.5, 1.0])
    assert ratio["mean"] == pytest.approx(0.75)
    runs[3] = _run(last, 1, [0.3, 0.33, 0.35])  # seed 1 never reaches 0.36
    ratio = report.summarise(runs, [0, 1], ab.RUNG_NAMES)["steps_ratio_to_grpo_final"]
    assert ratio["per_seed"] == [0.5, None]
    assert ratio["mean"] is None and ratio["mean_over_reached"] == pytest.approx(0.5)
    assert ratio["reached"] == "1/2"


def test_ladder_is_cumulative_one_change_per_rung():
    first, full = ab.rung_overrides(0), ab.rung_overrides(len(ab.RUNGS) - 1)
    assert first == dict(loss_type="grpo", epsilon=0.2, epsilon_high=0.2, overlong_buffer_length=0,
                         mask_truncated_completions=False, dynamic_sampling=False)
    assert full == dict(loss_type="dapo", epsilon=0.2, epsilon_high=0.28, overlong_buffer_length=None,
                        mask_truncated_completions=True, dynamic_sampling=True)
    for i in range(1, len(ab.RUNGS)):
        before, after = ab.rung_overrides(i - 1), ab.rung_overrides(i)
        assert [k for k in after if after[k] != before[k]] == list(ab.RUNGS[i][1])


@pytest.mark.slow
def test_smoke_run_writes_the_files_and_keys(tmp_path):
    results = tmp_path / "results"
    ab.main(["--smoke", "--workdir", str(tmp_path / "work"), "--results", str(results)])
    for name in ("dapo_ablation.md", "dapo_ablation.json", "dapo_ablation.png", "dapo_ablation_training.png"):
        assert (results / name).stat().st_size > 0, name
    out = json.loads((results / "dapo_ablation.json").read_text())
    assert out["seeds"] == [0]
    ratio = out["steps_ratio_to_grpo_final"]
    assert "mean" in ratio and len(ratio["per_seed"]) == 1
    assert list(out["final_accuracy"]) == [name for name, _ in ab.RUNGS]
    runs = {r["name"]: r for r in out["runs"]}
    assert len(runs) == 6 and all(r["curve"][-1]["step"] == 2 for r in runs.values())
    assert all(len(r["logs"]) == 2 for r in runs.values())  # one logged optimizer step each
    # the knobs each rung trained with, as DAPOConfig resolved them (buffer None -> max_completion_length // 5)
    assert runs["grpo"]["config"] == dict(loss_type="grpo", epsilon=0.2, epsilon_high=0.2, overlong_buffer_length=0,
                                          mask_truncated_completions=False, dynamic_sampling=False)
    assert runs["+soft_overlong"]["config"]["overlong_buffer_length"] == 8 // 5
    assert runs["+dynamic_sampling"]["config"] == dict(loss_type="dapo", epsilon=0.2, epsilon_high=0.28,
                                                       overlong_buffer_length=1, mask_truncated_completions=True,
                                                       dynamic_sampling=True)
    assert "generated_groups" in json.dumps(runs["+dynamic_sampling"]["logs"])
    assert "Steps full DAPO needs to reach naive GRPO" in (results / "dapo_ablation.md").read_text()
