"""TRL 0.x PPO code on trl_ext: old PPOConfig names and PPOTrainer keywords mapped (values by hand), or refused with
the replacement named; a TRL 0.x-style script run end to end through the mapping."""

import math

import pytest
import torch
from datasets import Dataset
from peft import LoraConfig
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer, HfArgumentParser

from trl_ext import PPOConfig, PPOTrainer
from trl_ext.toy import AdditionTask, ensure_tiny_checkpoint, oracle_correct

BASE = dict(report_to=[], use_cpu=True, bf16=False, save_strategy="no", seed=0)


def _config(tmp_path, **kw):
    return PPOConfig(output_dir=str(tmp_path / "out"), **{**BASE, **kw})


@pytest.fixture(scope="module")
def tiny():
    return str(ensure_tiny_checkpoint())


@pytest.fixture(scope="module")
def reward_model_path(tiny, tmp_path_factory):
    """A sequence-classification checkpoint on the policy's tokenizer, as TRL 0.x's reward_model_path pointed to."""
    path = tmp_path_factory.mktemp("rm")
    torch.manual_seed(0)
    AutoModelForSequenceClassification.from_pretrained(tiny, num_labels=1).save_pretrained(path)
    AutoTokenizer.from_pretrained(tiny).save_pretrained(path)
    return str(path)


# ---- PPOConfig: mapped names -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "old,new",
    [({"num_ppo_epochs": 2}, {"num_iterations": 2}),
     ({"cliprange": 0.1}, {"epsilon": 0.1}),
     ({"response_length": 7}, {"max_completion_length": 7}),
     ({"exp_name": "ported"}, {"run_name": "ported"}),
     # TRL 0.x: a batch per process is per_device (4) x grad_accum (2) x num_mini_batches (3) = 24 completions, one
     # optimizer step per mini-batch of 4 x 2; GRPO's buffer does the same with steps_per_generation = 3 x 2 = 6.
     ({"num_mini_batches": 3, "gradient_accumulation_steps": 2},
      {"steps_per_generation": 6, "generation_batch_size": 24}),
     # 100 episodes in batches of 24 -> ceil(100/24) = 5 batches; each: 2 epochs x 3 mini-batches = 6 steps -> 30
     ({"total_episodes": 100, "num_ppo_epochs": 2, "num_mini_batches": 3, "gradient_accumulation_steps": 2},
      {"max_steps": 30}),
     # one mini-batch, no accumulation: 10 episodes in batches of 4 -> 3 batches x 4 epochs (PPOConfig's default) = 12
     ({"total_episodes": 10}, {"max_steps": 12}),
     ({"stop_token": "eos", "kl_estimator": "k1", "num_sample_generations": 0}, {}),
     ({"sft_model_path": "sft", "reward_model_path": "rm", "dataset_num_proc": 2},
      {"sft_model_path": "sft", "reward_model_path": "rm", "dataset_num_proc": 2})],
)
def test_old_config_names_map_onto_the_new_fields(tmp_path, old, new):
    args = _config(tmp_path, per_device_train_batch_size=4, **old)
    assert {k: getattr(args, k) for k in new} == new


def test_old_names_parse_from_the_command_line(tmp_path):
    """HfArgumentParser / TrlParser scripts: the old flags are fields, so `--num_ppo_epochs 3` still parses."""
    (args,) = HfArgumentParser(PPOConfig).parse_args_into_dataclasses(
        ["--output_dir", str(tmp_path), "--num_ppo_epochs", "3", "--cliprange", "0.3", "--response_length", "5",
         "--report_to", "none", "--use_cpu", "true"]
    )
    assert (args.num_iterations, args.epsilon, args.max_completion_length) == (3, 0.3, 5)


@pytest.mark.parametrize(
    "kw,message",
    [({"num_ppo_epochs": 2, "num_iterations": 3}, "num_ppo_epochs=2 .*sets num_iterations=2, but num_iterations=3"),
     ({"cliprange": 0.1, "epsilon_high": 0.28}, "cliprange=0.1 .*symmetric.*epsilon_high=0.28"),
     ({"num_mini_batches": 2, "steps_per_generation": 3}, "sets steps_per_generation=2, but steps_per_generation=3"),
     ({"total_episodes": 16, "max_steps": 3}, "total_episodes=16 .*sets max_steps=16, but max_steps=3"),
     ({"stop_token": "eos", "stop_token_id": 2}, "mutually exclusive")],
)
def test_old_and_new_name_given_with_different_values_is_an_error(tmp_path, kw, message):
    with pytest.raises(ValueError, match=message):
        _config(tmp_path, per_device_train_batch_size=4, **kw)


# ---- PPOConfig: refused names, each message names the replacement ----------------------------------------------------
@pytest.mark.parametrize(
    "name,value,replacement",
    [("local_rollout_forward_batch_size", 16, "per_device_train_batch_size"),
     ("model_adapter_name", "policy", "adapter 'default'"),
     ("ref_adapter_name", "ref", r"PPOTrainer\(ref_model="),
     ("num_total_batches", 10, "total_episodes .*or max_steps"),
     ("batch_size", 64, "generation_batch_size"),
     ("local_batch_size", 64, r"per_device_train_batch_size x steps_per_generation"),
     ("micro_batch_size", 8, r"per_device_train_batch_size x the number of processes"),
     ("mini_batch_size", 8, "gradient_accumulation_steps x processes"),
     ("local_mini_batch_size", 8, "gradient_accumulation_steps completions per process"),
     ("world_size", 2, "accelerate launch / torchrun"),
     ("kl_estimator", "k3", "k1.*beta"),
     ("num_sample_generations", 10, "log_completions=True"),
     ("stop_token", "</s>", "None or 'eos'")],
)
def test_refused_config_names_say_what_to_use(tmp_path, name, value, replacement):
    with pytest.raises(ValueError, match=rf"PPOConfig.*{name}.*{replacement}"):
        _config(tmp_path, **{name: value})


# ---- PPOTrainer: old keywords ----------------------------------------------------------------------------------------
def test_trl_012_keyword_names_map(tmp_path, tiny, reward_model_path):
    """TRL 0.12's names: config=, tokenizer=, policy=, ref_policy=, reward_model=."""
    tokenizer = AutoTokenizer.from_pretrained(tiny)
    policy, ref_policy = AutoModelForCausalLM.from_pretrained(tiny), AutoModelForCausalLM.from_pretrained(tiny)
    reward_model = AutoModelForSequenceClassification.from_pretrained(reward_model_path, num_labels=1)
    trainer = PPOTrainer(config=_config(tmp_path, per_device_train_batch_size=4), tokenizer=tokenizer, policy=policy,
                         ref_policy=ref_policy, reward_model=reward_model,
                         train_dataset=AdditionTask().prompt_dataset(8, 0))
    assert trainer.model is policy and trainer.processing_class is tokenizer
    assert trainer.accelerator.unwrap_model(trainer.ref_model) is ref_policy
    assert trainer.reward_funcs == [reward_model]


@pytest.mark.parametrize(
    "call,message",
    [("positional", r"TRL 0.x's positional order.*Pass keywords"),
     ("collator", r"data_collator=.*'prompt' column"),
     ("both_rewards", r"reward_model= \(TRL 0.x\) and reward_funcs= both given"),
     ("ref_is_policy", "ref_model is the policy itself"),
     ("ref_shared_base", "with PPOConfig.shared_base=True the reference is the shared base"),
     ("no_model", r"needs model= .*policy=")],
)
def test_refused_trainer_arguments_say_what_to_do(tmp_path, tiny, call, message):
    args = _config(tmp_path, per_device_train_batch_size=4)
    data = AdditionTask().prompt_dataset(8, 0)
    policy = AutoModelForCausalLM.from_pretrained(tiny)
    calls = {
        "positional": lambda: PPOTrainer(args, None, policy, None, oracle_correct, data),
        "collator": lambda: PPOTrainer(model=policy, reward_model=oracle_correct, args=args, train_dataset=data,
                                       data_collator=lambda rows: rows),
        "both_rewards": lambda: PPOTrainer(policy, oracle_correct, args=args, reward_model=oracle_correct),
        "ref_is_policy": lambda: PPOTrainer(policy, oracle_correct, args=args, train_dataset=data, ref_model=policy),
        "ref_shared_base": lambda: PPOTrainer(
            policy, oracle_correct, args=_config(tmp_path, per_device_train_batch_size=4, shared_base=True),
            train_dataset=data, ref_model=AutoModelForCausalLM.from_pretrained(tiny),
            peft_config=LoraConfig(task_type="CAUSAL_LM", r=4, target_modules=["q_proj"])),
        "no_model": lambda: PPOTrainer(reward_model=oracle_correct, args=args, train_dataset=data),
    }
    with pytest.raises((TypeError, ValueError), match=message):
        calls[call]()


def test_stop_token_id_must_be_an_eos_id_and_ref_model_may_be_a_path(tmp_path, tiny):
    tokenizer = AutoTokenizer.from_pretrained(tiny)
    data = AdditionTask().prompt_dataset(8, 0)
    ok = PPOTrainer(tiny, oracle_correct, args=_config(tmp_path, stop_token_id=tokenizer.eos_token_id),
                    train_dataset=data, processing_class=tokenizer, ref_model=tiny)
    assert tokenizer.eos_token_id in ok.eos_token_ids
    ref = ok.accelerator.unwrap_model(ok.ref_model)
    assert ref is not ok.model and not any(p.requires_grad for p in ref.parameters())
    other = tokenizer.convert_tokens_to_ids("7")
    with pytest.raises(ValueError, match=rf"stop_token_id={other} .*not an EOS id.*generation_config.eos_token_id"):
        PPOTrainer(tiny, oracle_correct, args=_config(tmp_path, stop_token_id=other), train_dataset=data,
                   processing_class=tokenizer)


# ---- a TRL 0.x PPO script, import line changed ---------------------------------------------------------------------
def test_trl0_ppo_script_runs_through_the_mapping(tmp_path, tiny, reward_model_path):
    """The shape of TRL 0.x's examples/scripts/ppo/ppo.py: old config names, models loaded from the config's paths,
    PPOTrainer(args=, processing_class=, model=, ref_model=, reward_model=, value_model=, train_dataset=)."""
    training_args = PPOConfig(
        output_dir=str(tmp_path / "out"), exp_name="ported", sft_model_path=tiny, reward_model_path=reward_model_path,
        num_ppo_epochs=2, num_mini_batches=2, cliprange=0.1, response_length=3, total_episodes=16, stop_token="eos",
        kl_estimator="k1", num_sample_generations=0, dataset_num_proc=1, per_device_train_batch_size=4,
        gradient_accumulation_steps=1, learning_rate=1e-3, kl_coef=0.05, vf_coef=0.1, cliprange_value=0.2, gamma=1.0,
        lam=0.95, whiten_rewards=False, missing_eos_penalty=1.0, temperature=0.7, logging_steps=1, **BASE,
    )
    tokenizer = AutoTokenizer.from_pretrained(training_args.sft_model_path, padding_side="left")
    value_model = AutoModelForSequenceClassification.from_pretrained(training_args.reward_model_path, num_labels=1)
    reward_model = AutoModelForSequenceClassification.from_pretrained(training_args.reward_model_path, num_labels=1)
    policy = AutoModelForCausalLM.from_pretrained(training_args.sft_model_path)
    ref_policy = AutoModelForCausalLM.from_pretrained(training_args.sft_model_path)
    with torch.no_grad():  # a reference unlike the policy: the KL at the first rollout is then not 0
        for p in ref_policy.parameters():
            p.add_(0.05 * torch.randn_like(p))
    train_dataset = Dataset.from_dict({"prompt": AdditionTask().prompt_dataset(16, 0)["prompt"]})

    trainer = PPOTrainer(args=training_args, processing_class=tokenizer, model=policy, ref_model=ref_policy,
                         reward_model=reward_model, value_model=value_model, train_dataset=train_dataset)
    # What the old names became: 2 epochs x 2 mini-batches of 4 per batch of 8 completions, 16 episodes = 2 batches.
    assert (training_args.num_iterations, training_args.epsilon, training_args.max_completion_length) == (2, 0.1, 3)
    assert (training_args.steps_per_generation, training_args.generation_batch_size) == (2, 8)
    assert training_args.max_steps == math.ceil(16 / 8) * 2 * 2 == 8 and training_args.run_name == "ported"
    assert trainer.accelerator.unwrap_model(trainer.ref_model) is ref_policy
    assert trainer.reward_funcs == [reward_model]
    assert trainer.accelerator.unwrap_model(trainer.critic).model is value_model

    ref_before = [p.detach().clone() for p in ref_policy.parameters()]
    policy_before = [p.detach().clone() for p in policy.parameters()]
    trainer.train()
    assert trainer.state.global_step == 8
    rollouts = [h for h in trainer.state.log_history if "ppo/score" in h]
    assert len(rollouts) == 2  # 16 episodes / 8 per batch
    assert rollouts[0]["ppo/kl_per_completion"] != 0.0  # the given reference, not a copy of the policy, was used
    assert all(torch.equal(a, b) for a, b in zip(ref_before, ref_policy.parameters()))
    assert any(not torch.equal(a, b) for a, b in zip(policy_before, policy.parameters()))
    for r in rollouts:  # missing_eos_penalty=1.0 took 1 off each completion that did not end in EOS
        assert r["ppo/score"] == pytest.approx(r["reward"] - (1.0 - r["ppo/eos_ratio"]), abs=1e-5)
