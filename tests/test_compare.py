"""benchmarks/compare.py and its sibling modules: the numbers its tables report (hand-computed) and a tiny end-to-end
run of the entry point."""

import importlib.util
import json
import re
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("benchmarks_compare", ROOT / "benchmarks" / "compare.py")
compare = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = compare  # dataclasses look their module up while the file executes
_spec.loader.exec_module(compare)
import compare_child  # noqa: E402  (compare.py put benchmarks/ on sys.path)
import compare_stats  # noqa: E402

REFERENCE = {"rm_mean": 0.0, "rm_sd": 2.0, "utility_mean": 2.0, "utility_sd": 0.5}


def test_gap_is_zero_when_proxy_and_truth_rise_by_the_same_number_of_sds():
    g = compare_stats.hacking_gap(rm_score=1.0, utility=2.25, reference=REFERENCE)  # +0.5 sd each
    assert g == pytest.approx({"z_rm": 0.5, "z_utility": 0.5, "gap": 0.0})


def test_gap_is_positive_when_the_proxy_rises_and_the_truth_falls():
    g = compare_stats.hacking_gap(rm_score=1.0, utility=1.75, reference=REFERENCE)
    assert g == pytest.approx({"z_rm": 0.5, "z_utility": -0.5, "gap": 1.0})
    assert compare_stats.hacking_gap(0.0, 2.0, REFERENCE)["gap"] == 0.0  # the SFT model itself


def test_first_crossing_is_inclusive_and_none_when_never_reached():
    points = [{"step": s, "accuracy": a} for s, a in [(0, 0.40), (10, 0.55), (20, 0.50), (30, 0.70)]]
    assert compare_stats.first_crossing(points, 0.55)["step"] == 10
    assert compare_stats.first_crossing(points, 0.60)["step"] == 30
    assert compare_stats.first_crossing(points, 0.30)["step"] == 0
    assert compare_stats.first_crossing(points, 0.80) is None


def test_aggregate_uses_the_sample_sd():
    assert compare_stats.aggregate([1.0, 2.0, 3.0]) == {"mean": 2.0, "sd": 1.0, "n": 3}
    assert compare_stats.aggregate([0.5, 0.7]) == pytest.approx({"mean": 0.6, "sd": 0.1414213562, "n": 2})
    assert compare_stats.aggregate([5.0]) == {"mean": 5.0, "sd": None, "n": 1}
    assert compare_stats.aggregate([])["n"] == 0


def test_clearly_apart_compares_with_two_standard_errors():
    a = {"mean": 0.6, "sd": 0.01, "n": 3}
    assert compare_stats.clearly_apart(a, {"mean": 0.5, "sd": 0.01, "n": 3})  # 0.1 > 2 * 0.0082
    assert not compare_stats.clearly_apart(a, {"mean": 0.5, "sd": 0.1, "n": 3})  # 2 * sqrt(0.0101/3) = 0.116
    assert not compare_stats.clearly_apart(a, {"mean": 0.5, "sd": None, "n": 1})  # one seed orders nothing


def test_mean_curve_per_evaluation_index_over_seeds():
    runs = [{"points": [{"c": 0, "a": 0.4}, {"c": 64, "a": 0.6}]},
            {"points": [{"c": 0, "a": 0.5}, {"c": 64, "a": 0.8}, {"c": 128, "a": 0.9}]}]
    assert compare_stats.mean_curve(runs, "c", "a") == pytest.approx([(0, 0.45, 0.4, 0.5), (64, 0.7, 0.6, 0.8)])


def test_completions_per_step_follows_trl_buffering():
    grpo = SimpleNamespace(generation_batch_size=64, gradient_accumulation_steps=1, steps_per_generation=1,
                           num_iterations=1)
    ppo = SimpleNamespace(**{**vars(grpo), "num_iterations": 4})  # 4 PPO epochs: 4 optimizer steps per batch
    assert compare_child.completions_per_step(grpo) == 64
    assert compare_child.completions_per_step(ppo) == 16


def test_eval_subset_is_evenly_spaced():
    assert compare_child.eval_subset(list(range(10)), 5) == [0, 2, 4, 6, 8]
    assert compare_child.eval_subset(list(range(3)), 5) == [0, 1, 2]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"algorithms": ["grpo", "ppo2"]}, "valid names are ['grpo', 'dapo', 'rloo', 'rloo_trl', 'ppo', 'dpo']"),
        ({"setting": "huge"}, "choose one of ['full', 'quick']"),
        ({"seeds": [0, 0]}, "each seed once"),
        ({"budget": 0}, "--budget 0 must be >= 1"),
        ({"algorithm_overrides": {"sac": {}}}, "valid names are"),
    ],
)
def test_bad_flags_name_the_fix(kwargs, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        compare.CompareArgs(**kwargs)


def test_settings_fill_only_what_was_not_given():
    args = compare.CompareArgs(setting="full", budget=128)
    assert args.budget == 128 and args.eval_every == compare.SETTINGS["full"]["eval_every"]


def test_unknown_algorithm_on_the_command_line_is_a_one_line_error(tmp_path):
    with pytest.raises(SystemExit, match=r"error: --algorithms: \['sac'\] unknown; valid names are"):
        compare.main(["--algorithms", "grpo", "sac", "--output_dir", str(tmp_path)])


@pytest.mark.slow
def test_tiny_benchmark_writes_every_output_and_respects_the_budget(tmp_path, capsys, monkeypatch):
    """DAPO (whose dynamic sampling generates more than it trains on) and DPO (budget in pairs), 1 seed, tiny run.

    The entry point runs in this process (its runs are subprocesses, as always)."""
    budget = 96
    argv = [
        "--algorithms", "dapo", "dpo", "--seeds", "0", "--jobs", "2",
        "--budget", str(budget), "--eval_every", "48", "--eval_prompts", "8", "--reference_samples", "2",
        "--output_dir", str(tmp_path / "work"), "--results_dir", str(tmp_path / "results"),
        "--num_sft_examples", "128", "--num_label_prompts", "24", "--num_rl_prompts", "32", "--eval_size", "16",
        "--sft", '{"num_train_epochs": 1, "learning_rate": 1e-2, "disable_tqdm": true}',
        "--rm", '{"num_train_epochs": 1, "disable_tqdm": true}',
        "--rl", '{"per_device_train_batch_size": 16, "num_generations": 4}',
        "--algorithm_overrides", '{"dpo": {"per_device_train_batch_size": 16}}',
    ]
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    compare.main(argv)
    results = tmp_path / "results"
    for name in ("compare.md", "compare.json", "compare_accuracy.png", "compare_proxy_vs_oracle.png"):
        assert (results / name).stat().st_size > 0
    data = json.loads((results / "compare.json").read_text())
    runs = {r["algorithm"]: r for r in data["runs"]}
    assert set(runs) == {"dapo", "dpo"}
    for r in runs.values():
        assert r["points"][0]["step"] == 0 and r["points"][-1]["step"] == r["global_step"]
        last = r["points"][-1]
        assert {"accuracy", "rm_score", "utility", "gap", "completions", "train_s", "grades"} <= set(last)
        assert sum(last["grades"].values()) == pytest.approx(1.0) and last["grades"]["right"] == last["accuracy"]
        assert r["peak_rss_mib"] > 0 and r["train_wall_s"] > 0
    dapo = runs["dapo"]
    # what the trainer generated (its dynamic_sampling totals) is what the harness counted, and within the budget
    assert dapo["used"] == dapo["dynamic_sampling"]["completions_generated"] <= budget
    assert budget - dapo["used"] < 16  # stopped only when one more generation round would not fit
    assert runs["dpo"]["used"] == budget and runs["dpo"]["global_step"] == budget // 16
    assert set(data["summary"]["per_algorithm"]) == {"dapo", "dpo"}
    md = (results / "compare.md").read_text()
    assert "| dapo |" in md and "| dpo |" in md and data["meta"]["git"]["commit"] in md
    capsys.readouterr()
    compare.main(argv)  # the same command again reuses both finished runs instead of training again
    assert "reusing 2 finished run(s)" in capsys.readouterr().out
    assert json.loads((results / "compare.json").read_text())["meta"]["runs_reused"] == 2


def test_dpo_pairs_count_every_process():
    args = SimpleNamespace(per_device_train_batch_size=4, gradient_accumulation_steps=2, world_size=2)
    assert compare_child.pairs_seen(args, 5) == 5 * 4 * 2 * 2


COUNT_SCRIPT = '''
import sys
from accelerate import Accelerator
sys.path.insert(0, sys.argv[1])
import compare_child
accelerator = Accelerator(cpu=True)
local = 3 + 2 * accelerator.process_index  # uneven slices, so a doubled local count would not pass by luck
print(f"RANK {accelerator.process_index} {compare_child.completions_on_all_processes(local, accelerator)}", flush=True)
accelerator.wait_for_everyone()  # leave gloo together: a rank exiting mid-teardown aborts the other ("terminate called")
import torch.distributed
torch.distributed.destroy_process_group()
'''


@pytest.mark.slow
def test_generated_completions_are_counted_on_all_processes(tmp_path):
    """torchrun, 2 CPU processes (gloo): ranks generating 3 and 5 completions both count 8 toward the budget."""
    import os
    import subprocess

    script = tmp_path / "count.py"
    script.write_text(COUNT_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script),
         str(ROOT / "benchmarks")], capture_output=True, text=True, env=env, timeout=300,
    )
    # the two ranks print to one pipe, so a line may run into the other rank's: match anywhere, not per line
    ranks = sorted(["RANK", r, n] for r, n in re.findall(r"RANK (\d) (\d+)", proc.stdout))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert ranks == [["RANK", "0", "8"], ["RANK", "1", "8"]]
