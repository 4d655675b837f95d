"""The arithmetic task for real chat models: its checker, its levels, its data, its labeller utility, and both pipeline
routes on a tiny random Llama carrying SmolLM2's real tokenizer."""

import random
import re

import pytest
from trl import ModelConfig

from trl_ext.pipeline import EmbeddedTaskConfig, PipelineConfig, run_pipeline, stage_defaults
from trl_ext.pipeline.config import SFT_DEFAULTS, label_max_new_tokens, rl_max_completion_length, rl_stage_args
from trl_ext.pipeline.sft import check_completions_fit
from trl_ext.toy import ArithmeticTask, Labeller, arithmetic_correct, arithmetic_utility
from trl_ext.toy.arithmetic import LEVELS, NO_NUMBER, RIGHT, RIGHT_CHATTY, SHORT_SYSTEM_PROMPT, WRONG

CHECKER = "trl_ext.toy.arithmetic_correct"


def said(text):
    return [{"role": "assistant", "content": text}]


# ---- the checker ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "completion, answer, expected",
    [
        ("19", "19", 1.0),
        (" 19.\n", "19", 1.0),
        ("7 + 12 = 19", "19", 1.0),  # working shown first: the final number is the answer
        ("19 + 1 = 20", "19", 0.0),  # ... and the final number is what counts
        ("The answer is 19.0", "19", 1.0),
        ("18", "19", 0.0),
        ("nineteen", "19", 0.0),  # no number at all
        ("", "19", 0.0),
        ("45 - 50 = -5", "-5", 1.0),
        ("0 + 5", "5", 0.0),  # the question restated ends in the sum's digits: not an answer
        ("What is 0 + 5?", "5", 0.0),
        ("6 * 1", "6", 0.0),
        ("6 * 1 = 6.", "6", 1.0),
        ("-5", "-5", 1.0),  # a sign is no operator
    ],
)
def test_checker_reads_the_final_number(completion, answer, expected):
    assert arithmetic_correct(["p"], [completion], answer=[answer]) == [expected]
    assert arithmetic_correct([[{"role": "user", "content": "p"}]], [said(completion)], answer=[answer]) == [expected]


def test_checker_without_the_answer_column_names_it():
    with pytest.raises(ValueError, match="`answer` column.*add an `answer` column"):
        arithmetic_correct(["What is 1 + 2?"], ["3"])


def test_utility_orders_concise_chatty_wrong_none():
    grades = [arithmetic_utility("p", c, "19") for c in ("19", "19.", "7 + 12 = 19", "So it is 19!", "18", "no idea",
                                                           "0 + 19")]
    assert grades == [RIGHT, RIGHT, RIGHT_CHATTY, RIGHT_CHATTY, WRONG, NO_NUMBER, NO_NUMBER]
    assert RIGHT > RIGHT_CHATTY > WRONG > NO_NUMBER


def test_labeller_ranks_with_the_tasks_utility():
    labeller = Labeller(noise=0.0, utility=arithmetic_utility)
    answers = ["no idea", "7 + 12 = 19", "18", "19"]
    assert labeller.rank("p", answers, random.Random(0), answer="19") == [[3], [1], [2], [0]]
    assert labeller.rank("p", ["19", "19."], random.Random(0), answer="19") == [[0, 1]]  # one tier: a tie


# ---- levels and data -----------------------------------------------------------------------------------------------
_QUESTION = re.compile(r"^What is (\d+(?: [-+*] \d+)+)\? Answer with the number only\.$")


@pytest.mark.parametrize("name", list(LEVELS))
def test_each_levels_problems_are_what_the_level_says(name):
    op, ranges = LEVELS[name]
    task = ArithmeticTask(levels=(name,), eval_per_level=20, demo_error_rates=(0.0,), system_prompt=SHORT_SYSTEM_PROMPT)
    assert [m["role"] for m in ArithmeticTask().eval_dataset()[0]["prompt"]] == ["user"]  # default: no system message
    for data in (task.eval_dataset(), task.prompt_dataset(60, seed=1)):
        for prompt, answer, level in zip(data["prompt"], data["answer"], data["level"]):
            assert level == 0 and prompt[0] == {"role": "system", "content": SHORT_SYSTEM_PROMPT}
            expression = _QUESTION.match(prompt[-1]["content"]).group(1)
            terms = [int(t) for t in re.split(r" [-+*] ", expression)]
            assert len(terms) == len(ranges) and all(lo <= t <= hi for t, (lo, hi) in zip(terms, ranges))
            assert {"add": "+", "sub": "-", "mul": "*"}[op] in expression
            assert int(answer) == eval(expression) >= 0  # differences are drawn with a >= b


def test_seeded_generation_is_repeatable_and_never_trains_on_held_out_prompts():
    task = ArithmeticTask()
    assert task.prompt_dataset(200, seed=3)["prompt"] == task.prompt_dataset(200, seed=3)["prompt"]
    assert task.prompt_dataset(200, seed=3)["prompt"] != task.prompt_dataset(200, seed=4)["prompt"]
    assert task.sft_dataset(50, seed=3)[:] == task.sft_dataset(50, seed=3)[:]
    held_out = {p[-1]["content"] for p in task.eval_dataset()["prompt"]}
    assert len(task.eval_dataset()) == 50 * len(task.levels) and len(held_out) > 150  # "1 + 2" may be in two levels
    # add_1digit has 100 problems and 50 held out: training draws hit them half the time unless excluded
    train = list(task.prompt_dataset(4000, seed=0)["prompt"]) + list(task.sft_dataset(4000, seed=1)["prompt"])
    assert not held_out & {p[-1]["content"] for p in train}
    assert ArithmeticTask(levels=task.levels[:1], demo_error_rates=(0.0,)).eval_dataset()["prompt"] == \
        task.eval_dataset()["prompt"][:50]  # a level's held-out set does not depend on the other levels


def test_demonstrators_slip_at_their_level_rate():
    task = ArithmeticTask(levels=("add_to20", "mul_2by1"), demo_error_rates=(0.0, 1.0), eval_per_level=10)
    sft = task.sft_dataset(400, seed=0)
    answers = [str(eval(re.split(r"\? ", p[-1]["content"])[0][8:])) for p in sft["prompt"]]
    right = arithmetic_correct(sft["prompt"], sft["completion"], answer=answers)
    concise = [c[0]["content"] == a for c, a in zip(sft["completion"], answers)]
    assert concise[0::2] == [True] * 200  # level 0 never slips
    assert not any(concise[1::2])  # level 1 always does: a wrong number, or the right one with chatter
    assert 0 < sum(right[1::2]) < 100  # chatter (right, not concise) is one slip of four kinds


def test_bad_task_settings_are_named():
    with pytest.raises(ValueError, match="each must be one of"):
        EmbeddedTaskConfig(embedded_task="arithmetic", arithmetic_levels=["add_huge"])
    with pytest.raises(ValueError, match="2 demo_error_rates for 4 levels"):
        EmbeddedTaskConfig(embedded_task="arithmetic", arithmetic_error_rates=[0.1, 0.2])
    with pytest.raises(ValueError, match="level 'add_1digit' has 100 problems"):
        EmbeddedTaskConfig(embedded_task="arithmetic", eval_size=1000)


# ---- defaults follow the model -------------------------------------------------------------------------------------
def test_the_toy_keeps_its_defaults_and_a_given_model_gets_trls(tmp_path, ckpt, smollm2_tiny):
    cfg = PipelineConfig(embedded=EmbeddedTaskConfig(embedded_task="arithmetic"))
    assert stage_defaults("sft") == SFT_DEFAULTS and stage_defaults("sft", embedded=False)["save_steps"] == 50
    toy = rl_stage_args(cfg, tmp_path, embedded=True)
    given = rl_stage_args(cfg, tmp_path, embedded=False)
    assert (toy.max_completion_length, toy.learning_rate, toy.gradient_checkpointing) == (8, 5e-6, False)
    assert (given.max_completion_length, given.learning_rate) == (512, 1e-6)  # TRL's GRPOConfig defaults
    # ... and on a CPU the commands' CPU defaults: no checkpointing, bf16 only where the CPU has bf16 units
    from trl_ext.models import cpu_has_native_bf16

    assert (toy.bf16, given.bf16, given.gradient_checkpointing) == (False, cpu_has_native_bf16(), False)
    assert (label_max_new_tokens(cfg, True), label_max_new_tokens(cfg, False)) == (8, 512)
    cfg = PipelineConfig(embedded=EmbeddedTaskConfig(embedded_task="arithmetic"), rl={"max_completion_length": 16})
    assert rl_max_completion_length(cfg, False) == label_max_new_tokens(cfg, False) == 16
    from trl_ext.pipeline import uses_embedded_model

    assert uses_embedded_model(ModelConfig()) and uses_embedded_model(ModelConfig(model_name_or_path=str(ckpt)))
    assert not uses_embedded_model(ModelConfig(model_name_or_path=str(smollm2_tiny)))


def test_sft_rows_whose_prompt_fills_max_length_are_refused(smollm2_tiny):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(smollm2_tiny)
    data = ArithmeticTask().sft_dataset(8, seed=0)  # no system message: SmolLM2's template adds its default one
    with pytest.raises(ValueError, match=r"SFT: 8 of 8 rows have a prompt of >= max_length=32 tokens.*Raise the `sft:`"):
        check_completions_fit(data, tokenizer, 32)
    check_completions_fit(data, tokenizer, 128)


# ---- both routes through the pipeline on SmolLM2's tokenizer --------------------------------------------------------
TINY = dict(
    embedded=EmbeddedTaskConfig(embedded_task="arithmetic", arithmetic_levels=["add_1digit", "mul_1digit"],
                                arithmetic_error_rates=[0.1, 0.3], eval_size=8),
    eval_samples=2, num_sft_examples=32, num_label_prompts=16, num_ranked=3, num_rl_prompts=16,
    gold_eval_steps=0, sft={"max_steps": 2, "per_device_train_batch_size": 8, "max_length": 64},
    rm={"max_steps": 2, "per_device_train_batch_size": 4, "max_length": 64},
    rl={"max_steps": 2, "per_device_train_batch_size": 8, "num_generations": 4, "max_completion_length": 6,
        "logging_steps": 1},
)


@pytest.mark.slow
def test_rlvr_route_on_smollm2s_tokenizer(tmp_path, smollm2_tiny):
    tiny = {**TINY, "rl": {**TINY["rl"], "dynamic_sampling_max_refill_rounds": 1}}  # a random model is always wrong
    cfg = PipelineConfig(output_dir=str(tmp_path / "run"), reward_funcs=[CHECKER], algorithm="dapo", start_at="rl",
                         **tiny)
    report = run_pipeline(cfg, ModelConfig(model_name_or_path=str(smollm2_tiny)))
    assert list(report["models"]) == ["given", "rl"]  # no SFT ran: the input model is not called "sft"
    for row in report["models"].values():
        assert set(row["oracle_accuracy_greedy_by_level"]) == {"0", "1"}
        assert row["reward_funcs_greedy"][CHECKER] == row["oracle_accuracy_greedy"]  # one checker, two routes to it
    assert 0.0 <= report["rl_dropped_groups"]["first"] <= 1.0 and "rl_frac_reward_zero_std" not in report
    assert "dropped by dynamic sampling" in (tmp_path / "run" / "report.md").read_text()


@pytest.mark.slow
def test_rlhf_route_on_smollm2s_tokenizer(tmp_path, smollm2_tiny):
    # enough SFT for the random model to write numbers, so the labeller has answers of different grades to rank
    sft = {**TINY["sft"], "max_steps": 16, "learning_rate": 1e-2}
    cfg = PipelineConfig(output_dir=str(tmp_path / "run"), **{**TINY, "sft": sft})
    report = run_pipeline(cfg, ModelConfig(model_name_or_path=str(smollm2_tiny)))
    assert list(report["models"]) == ["base", "sft", "rl"]
    for row in report["models"].values():
        assert {"oracle_accuracy_greedy", "oracle_accuracy_sampled", "rm_score_sampled"} <= set(row)
    assert 0.0 <= report["rm_test_pairwise_accuracy"] <= 1.0
    import json

    labels = [json.loads(line) for line in open(tmp_path / "run" / "labels" / "rankings.jsonl")]
    assert len(labels) == 16 and all(len(r["answers"]) == 3 for r in labels)
    history = json.loads((tmp_path / "run" / "rl" / "log_history.json").read_text())
    assert any("rewards/rm/mean" in h for h in history)
