"""benchmarks/smollm2_dynamic_sampling.py's headline: the ratios to GRPO from hand-written curves, and the json keys."""

import json
import sys
from dataclasses import asdict
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import smollm2_dynamic_sampling as bench  # noqa: E402


def _curve(points):
    """[(generated, wall_s, greedy accuracy), ...] as evaluation points (sampled accuracy = half the greedy)."""
    return [{"step": i, "generated": g, "wall_s": w, "accuracy": a, "sampled_accuracy": a / 2}
            for i, (g, w, a) in enumerate(points)]


GRPO = _curve([(0, 0.0, 0.20), (1600, 100.0, 0.30), (3200, 200.0, 0.35), (4800, 300.0, 0.40)])


def test_ratio_is_the_first_point_reaching_grpos_final_over_grpos_whole_run():
    cheaper = _curve([(0, 0.0, 0.20), (1200, 90.0, 0.33), (2400, 150.0, 0.40), (4800, 290.0, 0.45)])
    # GRPO's final is 0.40 at 4800 completions and 300 s; reached at 2400 completions, 150 s
    assert bench.cost_ratios(cheaper, GRPO) == {"generated_completions_ratio": 0.5, "wall_ratio": 0.5}
    # GRPO against itself: its final point (1.0, 1.0) unless it got there earlier
    assert bench.cost_ratios(GRPO, GRPO) == {"generated_completions_ratio": 1.0, "wall_ratio": 1.0}


def test_never_reached_and_the_start_does_not_count():
    at_start_only = _curve([(0, 0.0, 0.50), (2400, 150.0, 0.30), (4800, 300.0, 0.39)])
    assert bench.cost_ratios(at_start_only, GRPO) == {"generated_completions_ratio": None, "wall_ratio": None}


SETTING = {"batch": 16, "num_generations": 8, "eval_every": 32}  # 2 groups a GRPO step


def _run(method, seed, curve, skipped=0):
    logs = [{"step": 1, "frac_reward_zero_std": 0.5, "dynamic_sampling/refill_rounds": 2},
            {"step": 2, "frac_reward_zero_std": 0.25, "dynamic_sampling/refill_rounds": 1}]
    return {"method": method, "seed": seed, "curve": curve, "logs": logs, "totals": {"skipped_prompts": skipped},
            "setting": SETTING, "git": {"commit": "abcdef0123", "dirty": False}, "machine": {"cpu": "x", "cores": 2}}


def test_groups_without_signal_are_counted_among_the_generated_ones():
    # GRPO: TRL's share of each step's 2 groups. Dynamic sampling: TRL's share is after the filter (0 here), the
    # generated and kept groups say what was dropped: 6 generated, 2 kept; then 4 generated, 3 kept, 1 skipped.
    grpo = {"setting": SETTING, "logs": [{"step": 1, "frac_reward_zero_std": 0.5},
                                         {"step": 2, "frac_reward_zero_std": 1.0}, {"step": 3, "frac_reward_zero_std": 0.0}]}
    dapo = {"setting": SETTING, "logs": [
        {"step": 1, "frac_reward_zero_std": 0.0, "dynamic_sampling/generated_groups": 6.0,
         "dynamic_sampling/kept_groups": 2.0},
        {"step": 2, "frac_reward_zero_std": 0.0, "dynamic_sampling/generated_groups": 4.0,
         "dynamic_sampling/kept_groups": 3.0, "dynamic_sampling/skipped_prompts": 1.0}]}
    assert bench.group_counts(grpo) == [(2, 1), (2, 2), (2, 0)]
    assert bench.no_signal_share(grpo) == pytest.approx(3 / 6)
    assert bench.no_signal_share(dapo) == pytest.approx(5 / 10)
    # bins of 32 completions = 4 groups: GRPO's first two steps, then the last one alone
    assert bench.no_signal_curve(grpo, 32) == [(32, 0.75), (48, 0.0)]
    assert bench.no_signal_curve(dapo, 32) == [(48, 4 / 6), (80, 0.25)]
    assert bench.skipped_curve(dapo) == [(48, 0), (80, 1)]
    assert bench.skipped_curve(grpo) == []


def test_summary_and_json_keys(tmp_path):
    slow = _curve([(0, 0.0, 0.20), (3600, 240.0, 0.40), (4800, 330.0, 0.41)])  # 0.75, 0.8
    fast = _curve([(0, 0.0, 0.20), (2400, 150.0, 0.40), (4800, 300.0, 0.42)])  # 0.5, 0.5
    never = _curve([(0, 0.0, 0.20), (4800, 300.0, 0.30)])
    runs = [_run("grpo", 0, GRPO), _run("grpo", 1, GRPO), _run("dapo_cheaper", 0, slow, skipped=7),
            _run("dapo_cheaper", 1, fast, skipped=3), _run("dapo", 0, never), _run("dapo", 1, fast)]
    path = tmp_path / "r.json"
    bench.write({"runs": runs, "command": "python benchmarks/smollm2_dynamic_sampling.py"}, path)
    result = json.loads(path.read_text())
    assert result["seeds"] == [0, 1]
    cheaper = result["dapo_cheaper"]
    assert cheaper["generated_completions_ratio"]["mean"] == pytest.approx(0.625)
    assert cheaper["generated_completions_ratio"]["per_seed"] == {"0": 0.75, "1": 0.5}
    assert cheaper["wall_ratio"]["mean"] == pytest.approx((0.8 + 0.5) / 2)
    # a seed that never reached the target leaves no mean to report, only the reached seeds' mean beside it
    dapo = result["summary"]["methods"]["dapo"]["generated_completions_ratio"]
    assert dapo["mean"] is None and dapo["mean_over_reached"] == 0.5 and dapo["per_seed"] == {"0": None, "1": 0.5}
    summary = result["summary"]["methods"]["dapo_cheaper"]
    assert summary["skipped_prompts"]["mean"] == 5 and summary["refill_rounds"]["mean"] == 3
    assert summary["frac_reward_zero_std"]["mean"] == pytest.approx(0.375)
    assert summary["no_signal_share"]["mean"] == pytest.approx(0.375)  # 3 of 8 groups (no dynamic_sampling/* logs)
    assert summary["final_sampled_accuracy"]["per_seed"] == {"0": 0.205, "1": 0.21}
    md = path.with_suffix(".md").read_text()
    assert "| dapo_cheaper | 0.625; 0.750, 0.500 |" in md
    assert "**PARTIAL**" in md and "grpo seeds [0, 1]" in md  # 2 of the 3 seeds the goal needs
    assert "**not met** (met on 1 of 2 seeds: seed 0 no, seed 1 yes)" in md  # seed 0: 0.75 > 0.7
    assert result["goal"]["seeds_met"] == 1 and not result["goal"]["met"]
    assert path.with_suffix(".png").exists()


def test_a_results_file_holds_one_setting(tmp_path):
    run = {"method": "grpo", "seed": 0, "setting": asdict(bench.Setting())}
    bench.check_same_setting([run], bench.Setting(), tmp_path / "r.json")  # the same: fine
    with pytest.raises(SystemExit, match=r"batch=16.*this invocation: batch=64.*new file"):
        bench.check_same_setting([run], bench.Setting(batch=64), tmp_path / "r.json")


def test_goal_is_judged_seed_by_seed_and_needs_three_seeds():
    def summary(completions, wall):
        per = lambda vals: {"per_seed": {str(i): v for i, v in enumerate(vals)}}  # noqa: E731
        return {"methods": {"dapo_cheaper": {"generated_completions_ratio": per(completions),
                                             "wall_ratio": per(wall)}}}
    # seed 1 misses the completions bound, seed 2 never reached GRPO's final; 0.7 and 0.8 themselves count
    g = bench.goal_verdict(summary([0.7, 0.75, None], [0.8, 0.5, None]))
    assert g["per_seed"] == {"0": True, "1": False, "2": False} and g["seeds_met"] == 1 and not g["met"]
    assert bench.goal_verdict(summary([0.5, 0.6, 0.7], [0.8, 0.7, 0.6]))["met"]
    assert not bench.goal_verdict(summary([0.5, 0.6], [0.5, 0.6]))["met"]  # two seeds met, but three are needed
    assert bench.goal_verdict({"methods": {}})["seeds"] == 0


def test_band_is_mean_min_and_max_over_seeds_per_evaluation():
    a = _curve([(0, 0.0, 0.20), (600, 50.0, 0.30), (1200, 90.0, 0.50)])
    b = _curve([(0, 0.0, 0.20), (600, 70.0, 0.40), (1200, 110.0, 0.30), (1800, 150.0, 0.9)])  # one point longer
    x, mean, lo, hi = bench.band([a, b], "accuracy")
    assert x == [0, 600, 1200]
    assert mean == pytest.approx([0.20, 0.35, 0.40]) and lo == [0.20, 0.30, 0.30] and hi == [0.20, 0.40, 0.50]
