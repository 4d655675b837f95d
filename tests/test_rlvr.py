"""The verifiable-reward route: the graded task and its checker, stage selection, per-level evaluation, the labels fix."""

import json
import random

import pytest
from datasets import Dataset
from trl import ModelConfig

from trl_ext.evaluation import oracle_accuracy_by_level, reward_function_means
from trl_ext.pipeline import PipelineConfig, run_pipeline, stage_plan
from trl_ext.toy import GradedAdditionTask, sum_correct

CHECKER = "trl_ext.toy.sum_correct"
# A few seconds per stage: enough to exercise the route, not to learn anything.
TINY = dict(
    embedded={"embedded_task": "graded", "task_low": 0, "task_high": 19, "eval_size": 12}, eval_samples=2,
    num_sft_examples=128,
    num_rl_prompts=32, reward_funcs=[CHECKER],
    sft={"num_train_epochs": 1, "learning_rate": 1e-2},
    rl={"max_steps": 2, "per_device_train_batch_size": 8, "num_generations": 4, "logging_steps": 1},
)


def conv(text):
    return [{"role": "user", "content": text}]


# ---- the task and its checker -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "prompt, completion, expected",
    [
        ("3+41+7", "51", 1.0),
        ("3+41+7", " 51 ", 1.0),  # whitespace around the number alone is fine
        ("3+41+7", "51!", 0.0),  # the task asks for the number alone
        ("3+41+7", "50", 0.0),
        ("3+41+7", "", 0.0),
        ("27+15", "42", 1.0),  # two operands: AdditionTask's prompts too
        ("1+2+3+4", "10", 1.0),
        ("1+2+3+4", "100", 0.0),
    ],
)
def test_sum_correct_on_hand_made_cases(prompt, completion, expected):
    assert sum_correct([prompt], [completion]) == [expected]
    # TRL's conversational form gives the same verdict
    assert sum_correct([conv(prompt)], [[{"role": "assistant", "content": completion}]]) == [expected]


def test_graded_task_levels_held_out_and_disjoint():
    task = GradedAdditionTask(operands=(2, 3), low=0, high=9, eval_size=20, demo_error_rates=(0.1, 0.3))
    ev = task.eval_dataset()
    assert ev["level"].count(0) == 10 and ev["level"].count(1) == 10
    assert [len(p[0]["content"].split("+")) for p in ev["prompt"]] == [2] * 10 + [3] * 10
    assert all(str(sum(map(int, p[0]["content"].split("+")))) == a for p, a in zip(ev["prompt"], ev["answer"]))
    held_out = {p[0]["content"] for p in ev["prompt"]}
    train = task.prompt_dataset(400, seed=3)
    assert not held_out & {p[0]["content"] for p in train["prompt"]}
    assert train["level"].count(0) == 200  # levels in turn
    assert task.eval_dataset()["prompt"] == ev["prompt"]  # fixed by the task's shape, not a seed


def test_graded_demonstrators_slip_at_their_level_rate():
    task = GradedAdditionTask(operands=(2, 3), low=0, high=9, eval_size=20, demo_error_rates=(0.0, 1.0),
                              demo_error_kinds=("carry",))
    rng = random.Random(0)
    assert task.demonstrate(0, (8, 7), rng) == "15"  # rate 0: always right
    assert task.demonstrate(1, (8, 7, 9), rng) == "4"  # 24: units 8+7+9 = 24 write 4, carry 2 forgotten: 0 tens
    assert task.demonstrate(1, (18, 7, 9), rng) == "14"  # 34 with the carry of 2 into the tens forgotten: 34 - 20
    assert task.demonstrate(1, (1, 2, 3), rng) != "6"  # no carry to forget: falls back to a one-digit slip
    sft = task.sft_dataset(200, seed=0)
    right = [sum_correct([p], [c[0]["content"]])[0] for p, c in zip(sft["prompt"], sft["completion"])]
    assert right[0::2] == [1.0] * 100 and right[1::2] == [0.0] * 100


def test_graded_task_rejects_mismatched_rates():
    with pytest.raises(ValueError, match="2 demo_error_rates for 3 levels"):
        GradedAdditionTask(operands=(2, 3, 4), demo_error_rates=(0.1, 0.2))


def test_accuracy_by_level_and_reward_means_by_hand():
    prompts = ["1+1", "2+2", "1+1+1"]
    answers = [["2", "3"], ["4", "4"], ["3", "0"]]
    by_level = oracle_accuracy_by_level(prompts, answers, sum_correct, [0, 0, 1])
    assert by_level == {"0": 0.75, "1": 0.5}  # (1 + 0 + 1 + 1) / 4 and (1 + 0) / 2

    def matches_solution(prompts, completions, solution, **kw):  # a TRL reward function reading a dataset column
        return [float(c[0]["content"] == s) if s else None for c, s in zip(completions, solution)]

    means = reward_function_means({"m": matches_solution}, [conv(p) for p in prompts], answers,
                                  {"solution": ["2", "4", None]})
    assert means == {"m": 0.75}  # the third prompt's two answers are skipped (None): 3 of 4


# ---- stage selection -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "overrides, model, plan",
    [
        ({}, None, ["sft", "labels", "rm", "rl", "eval"]),  # the RM route, the default
        ({"reward_funcs": [CHECKER]}, None, ["sft", "rl", "eval"]),  # reward_funcs alone: rules, no labels, no RM
        ({"reward_funcs": [CHECKER], "reward": "both"}, None, ["sft", "labels", "rm", "rl", "eval"]),
        ({"reward_funcs": [CHECKER], "start_at": "rl"}, "m", ["rl", "eval"]),
        ({"start_at": "labels", "until": "rm"}, "m", ["labels", "rm"]),
        ({"prompt_dataset_name": "p.jsonl", "reward_funcs": [CHECKER]}, "m", ["rl", "eval"]),  # the command
        ({"sft_dataset_name": "s.jsonl", "prompt_dataset_name": "p.jsonl", "reward_funcs": [CHECKER]}, "m",
         ["sft", "rl", "eval"]),
    ],
)
def test_stage_plan(overrides, model, plan):
    assert stage_plan(PipelineConfig(**overrides), ModelConfig(model_name_or_path=model)) == plan


@pytest.fixture(scope="module")
def rlvr_run(tmp_path_factory):
    cfg = PipelineConfig(output_dir=str(tmp_path_factory.mktemp("rlvr") / "run"), **TINY)
    return cfg, run_pipeline(cfg)


@pytest.mark.slow
def test_rlvr_route_skips_labels_and_rm_and_reports_per_level(rlvr_run):
    cfg, report = rlvr_run
    run = cfg.output_dir
    import os

    assert not os.path.exists(f"{run}/labels") and not os.path.exists(f"{run}/rm")
    assert set(report["wall_time_s"]) == {"sft", "rl", "eval"} and report["reward"] == "rules"
    assert "rm_test_pairwise_accuracy" not in report
    for name in ("base", "sft", "rl"):
        row = report["models"][name]
        assert "rm_score_sampled" not in row
        by_level = row["oracle_accuracy_greedy_by_level"]
        assert set(by_level) == {"0", "1", "2"}
        # 12 held-out prompts, 4 per level: the overall accuracy is the mean of the three levels
        assert row["oracle_accuracy_greedy"] == pytest.approx(sum(by_level.values()) / 3)
        assert row["reward_funcs_greedy"][CHECKER] == pytest.approx(row["oracle_accuracy_greedy"])
        assert row["reward_funcs_sampled"][CHECKER] == pytest.approx(row["oracle_accuracy_sampled"])
    rl = json.load(open(f"{run}/rl/stage.json"))["metrics"]
    assert rl["global_step"] == 2 and 0.0 <= rl["frac_reward_zero_std_first"] <= 1.0
    assert report["rl_frac_reward_zero_std"]["first"] == rl["frac_reward_zero_std_first"]
    md = open(f"{run}/report.md").read()
    assert report["level_names"] == {"0": "2 operands", "1": "3 operands", "2": "4 operands"}
    assert "| model | 2 operands | 3 operands | 4 operands |" in md and "zero advantage" in md


@pytest.mark.slow
def test_given_sft_model_and_prompt_file_runs_rl_only(rlvr_run, tmp_path):
    """The issue's command: --algorithm dapo --model_name_or_path MY_SFT --prompt_dataset_name prompts.jsonl
    --reward_funcs ... trains RL on the given model: no SFT, no labels, no RM."""
    src, _ = rlvr_run
    prompts = tmp_path / "prompts.jsonl"
    GradedAdditionTask(low=0, high=19, eval_size=30).prompt_dataset(40, seed=0).to_json(prompts)
    cfg = PipelineConfig(
        output_dir=str(tmp_path / "run"), algorithm="dapo", prompt_dataset_name=str(prompts), reward_funcs=[CHECKER],
        embedded={"eval_size": 8}, eval_samples=2,
        rl={"max_steps": 2, "per_device_train_batch_size": 8, "num_generations": 4, "logging_steps": 1,
            "dynamic_sampling_on_cap": "train_on_kept"},
    )
    report = run_pipeline(cfg, ModelConfig(model_name_or_path=f"{src.output_dir}/sft/model"))
    for stage in ("base", "sft", "labels", "rm"):
        assert not (tmp_path / "run" / stage).exists(), stage
    assert (tmp_path / "run/rl/model/model.safetensors").exists()
    assert set(report["models"]) == {"given", "rl"} and set(report["wall_time_s"]) == {"rl", "eval"}  # no SFT ran
    # named data: no embedded oracle; the reward function's mean is the held-out measure
    assert "oracle_accuracy_greedy" not in report["models"]["rl"]
    assert 0.0 <= report["models"]["rl"]["reward_funcs_greedy"][CHECKER] <= 1.0
    rl = json.load(open(tmp_path / "run/rl/stage.json"))
    assert rl["settings"]["algorithm"] == "dapo" and rl["metrics"]["global_step"] == 2


# ---- the labels stage ---------------------------------------------------------------------------------------------
def test_labels_sample_with_the_configured_length(tmp_path, monkeypatch):
    import trl_ext.pipeline as pipeline
    import trl_ext.pipeline.labels
    from trl_ext.toy import ensure_tiny_checkpoint

    seen = {}

    def fake_sample(model, tokenizer, prompts, **kw):
        seen.update(kw, n=len(prompts))
        return [["12", "12 I think", "7", ""] for _ in prompts]  # four grades: every ranking yields pairs

    monkeypatch.setattr(trl_ext.pipeline.labels, "sample_completions", fake_sample)  # where the stage looks it up
    cfg = PipelineConfig(output_dir=str(tmp_path), num_label_prompts=8, label_max_new_tokens=5)
    folder = tmp_path / "labels"
    folder.mkdir()
    info = pipeline.run_labels(cfg, ModelConfig(), str(ensure_tiny_checkpoint()), folder)
    assert seen["max_new_tokens"] == 5 and seen["n"] == 8 and seen["num_samples"] == cfg.num_ranked
    assert info["prompts"] == 8
