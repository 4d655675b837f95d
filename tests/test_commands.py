"""`trl-ext sft|rm|dpo|grpo|dapo|rloo|ppo`, run as a user runs them (in-process, on local jsonl files, tiny model).

Every run is 2 optimizer steps: enough to show that the command parsed TRL's flags, loaded data, model and rewards,
trained (the weights moved) and saved something that loads back. Bad inputs are checked against a model folder that
cannot be loaded, so an error about the data or the reward proves nothing was loaded before it.
"""

import json

import pytest
import torch
from peft import AutoPeftModelForCausalLM
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

from trl_ext.cli import main
from trl_ext.commands import TRAINER_COMMANDS, command_module
from trl_ext.toy import AdditionTask

TASK = AdditionTask(low=10, high=49)
# a reward with spread on a random model (the oracle would give every group all zeros): completion length
REWARDS_PY = '''
def length(completions, **kwargs):
    return [float(len(c[0]["content"] if isinstance(c, list) else c)) for c in completions]
'''
FAST = ["--max_steps", "2", "--report_to", "none", "--logging_steps", "1", "--save_strategy", "no"]
RL = [*FAST, "--per_device_train_batch_size", "4", "--num_generations", "2", "--max_completion_length", "6"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("data")
    TASK.sft_dataset(32, seed=0).to_json(folder / "sft.jsonl")
    TASK.prompt_dataset(32, seed=2).to_json(folder / "prompts.jsonl")
    pairs = [
        {"prompt": [{"role": "user", "content": f"{a}+{b}"}],
         "chosen": [{"role": "assistant", "content": str(a + b)}],
         "rejected": [{"role": "assistant", "content": f"{a + b + 1} I think"}]}
        for a, b in TASK.train_pairs()[:32]
    ]
    (folder / "pairs.jsonl").write_text("".join(json.dumps(p) + "\n" for p in pairs))
    (folder / "questions.jsonl").write_text('{"question": "1+2"}\n')
    (folder / "my_rewards.py").write_text(REWARDS_PY)
    return folder


@pytest.fixture
def in_data(data, monkeypatch):
    """Run from the data folder, as a user runs from the folder that holds my_rewards.py."""
    monkeypatch.chdir(data)
    return data


def run(*argv) -> int:
    return main([str(a) for a in argv])


def changed(before: str, after_file) -> bool:
    a, b = load_file(f"{before}/model.safetensors"), load_file(after_file)
    return any(not torch.equal(a[k], b[k]) for k in a if k in b)


# ---- the listing and help ----------------------------------------------------------------------------------------
def test_help_lists_every_command_on_stdout(capsys):
    assert run("--help") == 0
    out = capsys.readouterr().out
    for name in [*TRAINER_COMMANDS, "pipeline", "tiny-model"]:
        assert f"\n  {name} " in out, name


def test_unknown_command_exits_2_naming_the_closest(capsys):
    assert run("dapoo", "--max_steps", "1") == 2
    err = capsys.readouterr().err
    assert "unknown command 'dapoo'" in err and "did you mean 'dapo'?" in err


@pytest.mark.parametrize("name", TRAINER_COMMANDS)
def test_command_help_starts_with_description_and_example_then_trl_flag_groups(name, capsys):
    with pytest.raises(SystemExit) as exit_:
        command_module(name).make_parser().parse_args_and_config(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    first, usage = out.index(command_module(name).INTRO.splitlines()[0]), out.index("usage: trl-ext")
    assert first == 0 and out.index(f"trl-ext {name} --model_name_or_path") < usage
    for group in ("ScriptArguments", "ModelConfig (trl.ModelConfig)", "Config (t"):
        assert group in out, group
    for flag in ("--dataset_name", "--dataset_train_split", "--use_peft", "--lora_r", "--load_in_4bit",
                 "--learning_rate", "--config"):
        assert flag in out, flag


def test_pipeline_help_has_description_examples_and_json_maps(capsys):
    with pytest.raises(SystemExit):
        run("pipeline", "--help")
    out = " ".join(capsys.readouterr().out.split())
    assert out.startswith("SFT -> labelled rankings -> reward model") and "trl-ext pipeline --config" in out
    for name in ("sft", "rm", "rl"):
        assert f"--{name} {name.upper()}" in out
    assert out.count("JSON object") >= 3


# ---- end to end ------------------------------------------------------------------------------------------------------
def test_sft_full_and_lora(in_data, ckpt, tmp_path, capsys):
    assert run("sft", "--model_name_or_path", ckpt, "--dataset_name", "sft.jsonl", "--output_dir", tmp_path / "full",
               "--per_device_train_batch_size", "8", "--learning_rate", "1e-3", *FAST) == 0
    AutoModelForCausalLM.from_pretrained(tmp_path / "full")
    assert changed(ckpt, tmp_path / "full" / "model.safetensors")

    assert run("sft", "--model_name_or_path", ckpt, "--dataset_name", "sft.jsonl", "--output_dir", tmp_path / "lora",
               "--per_device_train_batch_size", "8", "--learning_rate", "1e-2", "--use_peft", "--lora_r", "4",
               "--lora_target_modules", "q_proj", "v_proj", *FAST) == 0
    config = json.loads((tmp_path / "lora" / "adapter_config.json").read_text())
    assert config["r"] == 4 and sorted(config["target_modules"]) == ["q_proj", "v_proj"]
    AutoPeftModelForCausalLM.from_pretrained(tmp_path / "lora")
    # chaining a LoRA output into the next command: refused with the fix (merge first), before anything loads
    assert run("dapo", "--model_name_or_path", tmp_path / "lora", "--dataset_name", "prompts.jsonl",
               "--reward_funcs", "my_rewards.length", "--output_dir", tmp_path / "next") == 2
    assert "is a LoRA adapter" in capsys.readouterr().err and not (tmp_path / "next").exists()


def test_rm_and_dpo_on_pairs(in_data, ckpt, tmp_path):
    # a single file holds only a train split: a second file named as the test split is read for evaluation
    assert run("rm", "--model_name_or_path", ckpt, "--dataset_name", "pairs.jsonl", "--output_dir", tmp_path / "rm",
               "--per_device_train_batch_size", "8", "--eval_strategy", "steps", "--eval_steps", "2",
               "--dataset_test_split", "pairs.jsonl", *FAST) == 0
    rm = AutoModelForSequenceClassification.from_pretrained(tmp_path / "rm")
    assert rm.config.num_labels == 1

    assert run("dpo", "--model_name_or_path", ckpt, "--dataset_name", "pairs.jsonl", "--output_dir", tmp_path / "dpo",
               "--per_device_train_batch_size", "8", "--learning_rate", "1e-3", *FAST) == 0
    AutoModelForCausalLM.from_pretrained(tmp_path / "dpo")
    assert changed(ckpt, tmp_path / "dpo" / "model.safetensors")


@pytest.mark.parametrize("name", ["grpo", "dapo", "rloo"])
def test_group_rl_with_a_local_reward_module(name, in_data, ckpt, tmp_path):
    assert run(name, "--model_name_or_path", ckpt, "--dataset_name", "prompts.jsonl", "--reward_funcs",
               "my_rewards.length", "--output_dir", tmp_path, "--learning_rate", "1e-3", *RL) == 0
    AutoModelForCausalLM.from_pretrained(tmp_path)
    assert changed(ckpt, tmp_path / "model.safetensors")


def test_grpo_mixes_a_reward_model_and_a_function_from_a_yaml_config(in_data, ckpt, tmp_path):
    """A --config YAML with TRL's names; the RM (the tiny checkpoint with a fresh score head) goes through
    RewardAdapter, in micro-batches of 3."""
    config = tmp_path / "grpo.yaml"
    config.write_text(
        f"model_name_or_path: {ckpt}\ndataset_name: prompts.jsonl\nreward_model_name_or_path: {ckpt}\n"
        "reward_funcs: [trl_ext.toy.task.oracle_correct]\nreward_weights: [1.0, 0.5]\nreward_batch_size: 3\n"
        f"output_dir: {tmp_path / 'out'}\nlearning_rate: 1.0e-3\n"
    )
    assert run("grpo", "--config", config, *RL) == 0
    AutoModelForCausalLM.from_pretrained(tmp_path / "out")
    assert changed(ckpt, tmp_path / "out" / "model.safetensors")


def test_ppo_with_reward_model_and_default_critic(in_data, ckpt, tmp_path):
    """Prompts from a DatasetDict.save_to_disk folder (its train split); the critic defaults to the reward model."""
    from datasets import DatasetDict

    DatasetDict({"train": TASK.prompt_dataset(16, seed=3), "test": TASK.eval_dataset()}).save_to_disk(tmp_path / "dd")
    assert run("ppo", "--model_name_or_path", ckpt, "--dataset_name", tmp_path / "dd", "--reward_model_name_or_path",
               ckpt, "--output_dir", tmp_path / "out", "--learning_rate", "1e-3", *RL) == 0
    AutoModelForCausalLM.from_pretrained(tmp_path / "out")
    assert changed(ckpt, tmp_path / "out" / "model.safetensors")


def test_ppo_critic_is_the_one_reward_model_unless_named_and_the_shared_base_gets_paths():
    from types import SimpleNamespace

    from trl_ext.assembly.rewards import RewardPlan
    from trl_ext.commands.ppo import PPOScriptArguments, critic_and_rewards

    separate, shared = SimpleNamespace(shared_base=False), SimpleNamespace(shared_base=True)
    rule = len
    assert critic_and_rewards(PPOScriptArguments(), separate)(RewardPlan(["rm"], [rule])) == {"value_model": "rm"}
    assert critic_and_rewards(PPOScriptArguments(), separate)(RewardPlan(["a", "b"], [])) == {"value_model": None}
    assert critic_and_rewards(PPOScriptArguments(), separate)(RewardPlan([], [rule])) == {"value_model": None}
    assert critic_and_rewards(PPOScriptArguments(), shared)(RewardPlan(["lora"], [rule])) == {
        "reward_funcs": ["lora", rule]}


def test_dapo_4bit_lora(in_data, ckpt, tmp_path, monkeypatch):
    import bitsandbytes as bnb

    from trl_ext.assembly import trainers

    seen = {}

    def spy(trainer):  # what the trainer trains on: 4-bit layers under LoRA
        seen["4bit"] = sum(isinstance(m, bnb.nn.Linear4bit) for m in trainer.model.modules())
        seen["trainable"] = sorted({n.split(".")[-2] for n, p in trainer.model.named_parameters() if p.requires_grad})
        return prepare(trainer)

    prepare = trainers.prepare
    monkeypatch.setattr(trainers, "prepare", spy)
    assert run("dapo", "--model_name_or_path", ckpt, "--dataset_name", "prompts.jsonl", "--reward_funcs",
               "my_rewards.length", "--output_dir", tmp_path, "--learning_rate", "1e-2", "--load_in_4bit",
               "--use_peft", "--lora_r", "4", *RL) == 0
    assert seen["4bit"] > 0 and seen["trainable"] == ["default"]  # lora_A.default / lora_B.default only
    model = AutoPeftModelForCausalLM.from_pretrained(tmp_path)
    lora = {k: v for k, v in model.state_dict().items() if "lora_B" in k}
    assert lora and any(v.abs().sum() > 0 for v in lora.values())  # lora_B starts at zero: it trained


# ---- bad input: one line, exit code 2, before any model is loaded ---------------------------------------------------
@pytest.fixture(scope="module")
def unloadable(tmp_path_factory):
    """A folder that passes the path check (it has a config.json) but that from_pretrained cannot load."""
    folder = tmp_path_factory.mktemp("unloadable")
    (folder / "config.json").write_text('{"model_type": "not-a-model"}')
    return folder


def error_line(capsys, name) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith(f"trl-ext {name}: error: ")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.mark.parametrize(
    ("name", "argv", "expected"),
    [
        ("dapo", ["--dataset_name", "missing.jsonl", "--reward_funcs", "my_rewards.length"], "does not exist"),
        ("grpo", ["--dataset_name", "questions.jsonl", "--reward_funcs", "my_rewards.length"],
         "column(s) ['prompt'] missing; the dataset has ['question']"),
        ("rloo", ["--dataset_name", "sft.jsonl", "--reward_funcs", "my_rewards.lenght"],
         "module 'my_rewards' has no 'lenght'"),
        ("dapo", ["--dataset_name", "prompts.jsonl", "--reward_funcs", "accuracy_rewrd"],
         "neither one of TRL's reward functions"),
        ("dapo", ["--dataset_name", "prompts.jsonl", "--reward_funcs", "my_rewards.length", "--reward_weights", "1",
                  "2"], "--reward_weights has 2 weights for 1 rewards"),
        ("dapo", ["--dataset_name", "prompts.jsonl"], "no reward: pass --reward_funcs"),
        ("ppo", ["--dataset_name", "prompts.jsonl", "--reward_funcs", "my_rewards.length",
                 "--value_model_name_or_path", "./no-critic"],
         "--value_model_name_or_path='./no-critic' does not exist"),
        ("sft", ["--dataset_name", "prompts.jsonl"], "needs columns ['messages'] or ['prompt', 'completion'] or"),
        ("rm", ["--dataset_name", "prompts.jsonl"], "column(s) ['chosen', 'rejected'] missing"),
        ("dpo", ["--dataset_name", "sft.jsonl", "--eval_strategy", "steps"], "holds only a 'train' split"),
        ("dapo", ["--dataset_name", "prompts.jsonl", "--reward_funcs", "my_rewards.length", "--lora_rr", "8"],
         "'lora_rr': did you mean 'lora_r'?"),
    ],
)
def test_bad_input_is_one_line_exit_2_before_loading(name, argv, expected, in_data, unloadable, capsys):
    rc = run(name, "--model_name_or_path", unloadable, "--output_dir", in_data / "never", *argv)
    assert rc == 2
    line = error_line(capsys, name)
    assert expected in line, line
    assert not (in_data / "never").exists()


def test_the_unloadable_model_would_fail_if_loaded(in_data, unloadable, capsys):
    """The control for the test above: with valid data and rewards, the same folder fails at loading."""
    rc = run("dapo", "--model_name_or_path", unloadable, "--dataset_name", "prompts.jsonl", "--reward_funcs",
             "my_rewards.length", "--output_dir", in_data / "never")
    assert rc == 2
    line = error_line(capsys, "dapo")  # the tokenizer is loaded first, and fails
    assert "tokenizer" in line


# ---- run-time errors of the pipeline ---------------------------------------------------------------------------------
def test_pipeline_runtime_error_is_one_line_exit_1_and_a_traceback_with_debug(monkeypatch, capsys, tmp_path):
    import trl_ext.pipeline

    def labels_fail(cfg, model_args=None, callbacks=None):
        raise RuntimeError("labels: the labeller found no preference among the SFT model's answers\n(train pairs: 0)")

    monkeypatch.setattr(trl_ext.pipeline, "run_pipeline", labels_fail)
    monkeypatch.delenv("TRL_EXT_DEBUG", raising=False)
    assert run("pipeline", "--output_dir", tmp_path) == 1
    line = error_line(capsys, "pipeline")
    assert line.endswith("found no preference among the SFT model's answers (train pairs: 0)")

    monkeypatch.setenv("TRL_EXT_DEBUG", "1")
    with pytest.raises(RuntimeError, match="no preference"):
        run("pipeline", "--output_dir", tmp_path)
