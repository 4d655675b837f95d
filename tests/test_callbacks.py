"""GoldRewardCallback on every GRPO-family trainer: what it logs, that it leaves training alone, resume, options."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import trl
from datasets import Dataset
from peft import LoraConfig
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

from trl_ext import DAPOConfig, DAPOTrainer, GoldRewardCallback, PPOConfig, PPOTrainer, RLOOConfig, RLOOTrainer
from trl_ext import RewardAdapter
from trl_ext.callbacks import falling_gold_while_proxy_rises, weighted_mean
from trl_ext.resume import ResumableGRPOTrainer
from trl_ext.toy import AdditionTask

TASK = AdditionTask()
COMMON = dict(
    per_device_train_batch_size=8, num_generations=4, max_completion_length=4, learning_rate=1e-3, logging_steps=1,
    report_to="none", save_strategy="no", seed=0, use_cpu=True, bf16=False, gradient_checkpointing=False,
    disable_tqdm=True,
)


def length_reward(completions, **kwargs):
    return [float(len(c[0]["content"])) for c in completions]


def answer_value(completions, answer, **kwargs):
    """A 'gold' reward that reads a dataset column: the answer's value, whatever was generated."""
    return [float(a) for a in answer]


def _args(tmp_path, cls=trl.GRPOConfig, **overrides):
    return cls(output_dir=str(tmp_path / "out"), **{**COMMON, "max_steps": 2, **overrides})


def _trainer(ckpt, tokenizer, args, cls=trl.GRPOTrainer, reward_funcs=(length_reward,), callbacks=None, **kw):
    model = AutoModelForCausalLM.from_pretrained(ckpt)
    return cls(model=model, reward_funcs=list(reward_funcs), args=args, train_dataset=TASK.prompt_dataset(32, seed=0),
               processing_class=tokenizer, callbacks=callbacks, **kw)


def _gold_logs(trainer):
    return [h for h in trainer.state.log_history if "gold/reward" in h]


# ---- pure helpers, hand-computed ----------------------------------------------------------------------------------
def test_weighted_mean_leaves_none_out_like_trl():
    # rows: (1, 4), (nan, 2), (3, nan); weights (2, 0.5): totals 4, 1, 6 -> 11/3; means 2 and 3
    total, means = weighted_mean([[1.0, math.nan, 3.0], [4.0, 2.0, math.nan]], [2.0, 0.5])
    assert total == pytest.approx(11 / 3)
    assert means == pytest.approx([2.0, 3.0])


def test_falling_gold_while_proxy_rises_counts_the_run_that_ends_now():
    h = lambda g, p: {"gold": g, "proxy": p}  # noqa: E731
    assert falling_gold_while_proxy_rises([h(1, 0), h(0.9, 1), h(0.8, 2)]) == 2
    assert falling_gold_while_proxy_rises([h(1, 0), h(0.9, 1), h(0.95, 2)]) == 0  # gold rose: the run resets
    assert falling_gold_while_proxy_rises([h(1, 0), h(0.9, 1), h(0.8, 0.5)]) == 0  # proxy fell: not hacking
    assert falling_gold_while_proxy_rises([h(1, 0)]) == 0


def test_bad_construction_is_refused_early():
    data = TASK.eval_dataset()
    with pytest.raises(ValueError, match="'prompt' column"):
        GoldRewardCallback(gold=answer_value, eval_dataset=data.rename_column("prompt", "question"))
    with pytest.raises(TypeError, match=r"gold\[1\]"):
        GoldRewardCallback(gold=[answer_value, "oracle"], eval_dataset=data)
    with pytest.raises(ValueError, match="gold_weights has 2 weights for 1"):
        GoldRewardCallback(gold=answer_value, eval_dataset=data, gold_weights=[1, 2])
    with pytest.raises(ValueError, match="eval_steps=0"):
        GoldRewardCallback(gold=answer_value, eval_dataset=data, eval_steps=0)
    with pytest.raises(ValueError, match="restore_callback_states_from_checkpoint"):
        GoldRewardCallback()
    with pytest.raises(TypeError, match="GRPO-family trainer"):
        GoldRewardCallback(gold=answer_value, eval_dataset=data).bind(object())


def test_a_vllm_trainer_gets_a_generation_config_from_its_args(tokenizer):
    from types import SimpleNamespace

    from trl_ext.callbacks import _generation_config

    args = SimpleNamespace(top_p=0.9, top_k=5, min_p=0.1, repetition_penalty=1.2, generation_kwargs={"num_beams": 1})
    trainer = SimpleNamespace(args=args, max_completion_length=7, temperature=0.6, processing_class=tokenizer,
                              eos_token_ids=[tokenizer.eos_token_id])
    config = _generation_config(trainer)
    assert (config.max_new_tokens, config.temperature, config.top_p, config.top_k, config.min_p) == (7, 0.6, 0.9, 5, 0.1)
    assert config.repetition_penalty == 1.2 and config.do_sample and config.pad_token_id == tokenizer.pad_token_id


# ---- stock TRL: the "done when" line --------------------------------------------------------------------------------
def test_stock_grpo_trainer_logs_gold_and_proxy(tmp_path, ckpt, tokenizer):
    data = TASK.eval_dataset()
    cb = GoldRewardCallback(gold=answer_value, eval_dataset=data, eval_steps=2, num_prompts=6, num_samples=3)
    args = _args(tmp_path, max_steps=3, reward_weights=[2.0, 0.5])
    trainer = _trainer(ckpt, tokenizer, args, reward_funcs=[lambda completions, **k: [1.0] * len(completions),
                                                            length_reward], callbacks=[cb])
    trainer.train()
    logs = _gold_logs(trainer)
    assert [h["step"] for h in logs] == [0, 2, 3]  # start, every eval_steps, the last step
    expected_gold = sum(float(a) for a in data["answer"][:6]) / 6  # each answer counted num_samples times
    for h in logs:
        assert h["gold/reward"] == pytest.approx(expected_gold)
        assert h["gold/answer_value"] == pytest.approx(expected_gold)
        # proxy total = 2 * 1 + 0.5 * length; the per-function mean of the constant is exactly 1
        assert h["proxy/<lambda>"] == 1.0
        assert h["proxy/reward"] == pytest.approx(2.0 + 0.5 * h["proxy/length_reward"])
        assert 0 <= h["proxy/length_reward"] <= 4 * 6  # at most 4 tokens of at most... a char each here
    assert "gold/kl" not in logs[0]  # beta=0, no PEFT, no ref_model given: no reference to measure against
    # training's own metrics are logged at every step as before, not split by the callback's logs
    train_logs = [h for h in trainer.state.log_history if "reward" in h]
    assert [h["step"] for h in train_logs] == [1, 2, 3]


def test_kl_matches_a_direct_computation(tmp_path, ckpt, tokenizer):
    """gold/kl = mean over sampled sequences of sum_t log pi - log pi_ref (temperature-scaled), recomputed here with a
    plain forward of each unpadded sequence through both models."""
    cb = GoldRewardCallback(gold=answer_value, eval_dataset=TASK.eval_dataset(), eval_steps=10, num_prompts=4,
                            num_samples=2)
    args = _args(tmp_path, max_steps=2, beta=0.1, temperature=0.8, learning_rate=5e-3)
    trainer = _trainer(ckpt, tokenizer, args, callbacks=[cb])
    trainer.train()
    assert _gold_logs(trainer)[0]["gold/kl"] == 0.0  # before the first step the policy is the reference
    samples = cb._sample()  # the callback's draw is seeded: the same completions as its last evaluation
    policy, reference = trainer.model, AutoModelForCausalLM.from_pretrained(ckpt)
    total, count = 0.0, 0
    with torch.no_grad():
        for prompt, completions in zip(samples.prompt_ids, samples.completion_ids):
            for completion in completions:
                ids = torch.tensor([prompt + completion])
                n = len(completion)
                lp = [torch.log_softmax(m(ids).logits[0, -n - 1 : -1] / 0.8, -1) for m in (policy, reference)]
                tokens = torch.tensor(completion)
                total += float((lp[0][torch.arange(n), tokens] - lp[1][torch.arange(n), tokens]).sum())
                count += 1
    kl = cb.evaluate()["kl"]
    assert kl > 0
    assert kl == pytest.approx(total / count, rel=1e-4, abs=1e-6)
    assert _gold_logs(trainer)[-1]["gold/kl"] == pytest.approx(kl, rel=1e-6)


def test_raw_reward_model_is_scored_as_trl_scores_it(tmp_path, ckpt, tokenizer):
    rm = AutoModelForSequenceClassification.from_pretrained(ckpt, num_labels=1)
    rm.config.pad_token_id = tokenizer.pad_token_id
    cb = GoldRewardCallback(gold=answer_value, eval_dataset=TASK.eval_dataset(), num_prompts=4, num_samples=2,
                            batch_size=3)  # micro-batches of 6 rows: 8 rows in two calls
    trainer = _trainer(ckpt, tokenizer, _args(tmp_path, max_steps=1), reward_funcs=[rm], callbacks=[cb])
    trainer.train()
    record = cb.evaluate()
    prompts, completions, ids, _ = cb._rows(cb._sample())
    inputs = [{"prompt": p} for p in prompts]
    expected = trainer._calculate_rewards(inputs, prompts, completions, ids)[:, 0]  # TRL's own scoring, one batch
    assert record["proxy"] == pytest.approx(float(expected.mean()), rel=1e-5)


# ---- no effect on training ------------------------------------------------------------------------------------------
def _final_weights(trainer):
    return {n: p.detach().clone() for n, p in trainer.model.named_parameters()}


@pytest.mark.parametrize("kind", ["grpo_beta", "dapo_dynamic_sampling"])
def test_callback_does_not_change_the_trained_weights(tmp_path, ckpt, tokenizer, kind):
    def run(with_callback):
        normalised = RewardAdapter.from_function(length_reward, normalize=True)  # running stats: must stay untouched
        if kind == "grpo_beta":
            args, cls = _args(tmp_path, max_steps=4, beta=0.1), trl.GRPOTrainer
        else:
            args, cls = _args(tmp_path, DAPOConfig, max_steps=4, dynamic_sampling_on_cap="train_on_kept"), DAPOTrainer
        cbs = [GoldRewardCallback(gold=answer_value, eval_dataset=TASK.eval_dataset(), eval_steps=1, num_prompts=4,
                                  num_samples=2, seed=123)] if with_callback else None
        trainer = _trainer(ckpt, tokenizer, args, cls=cls, reward_funcs=[normalised], callbacks=cbs)
        trainer.train()
        metrics = [{k: v for k, v in h.items() if not k.startswith(("gold/", "proxy/", "step_time", "train_"))}
                   for h in trainer.state.log_history if "loss" in h]
        return _final_weights(trainer), metrics, normalised.norm.state_dict(), trainer

    w0, m0, n0, _ = run(False)
    w1, m1, n1, trainer = run(True)
    assert len(_gold_logs(trainer)) == 5  # it did evaluate: steps 0..4
    assert max(float((w0[k] - w1[k]).abs().max()) for k in w0) == 0.0
    assert m0 == m1  # same loss, reward, kl, entropy ... at every step
    assert n0 == n1  # the proxy's running normalisation never saw the evaluation batches


# ---- the other trainers -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["trl_rloo", "rloo", "dapo", "ppo", "grpo_peft"])
def test_every_grpo_family_trainer(tmp_path, ckpt, tokenizer, kind):
    cb = GoldRewardCallback(gold=answer_value, eval_dataset=TASK.eval_dataset(), eval_steps=1, num_prompts=4,
                            num_samples=2)
    extra = {}
    if kind == "trl_rloo":
        args, cls = _args(tmp_path, trl.RLOOConfig, beta=0.05), trl.RLOOTrainer
    elif kind == "rloo":
        args, cls = _args(tmp_path, RLOOConfig), RLOOTrainer
    elif kind == "dapo":
        args, cls = _args(tmp_path, DAPOConfig, beta=0.04, dynamic_sampling_on_cap="train_on_kept"), DAPOTrainer
    elif kind == "ppo":
        args, cls = _args(tmp_path, PPOConfig, num_generations=1, num_iterations=1), PPOTrainer
    else:  # the reference is the base with the adapter disabled
        args, cls = _args(tmp_path), trl.GRPOTrainer
        extra["peft_config"] = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"])
    trainer = _trainer(ckpt, tokenizer, args, cls=cls, callbacks=[cb], **extra)
    trainable = sorted(n for n, p in trainer.model.named_parameters() if p.requires_grad)
    trainer.train()
    logs = _gold_logs(trainer)
    assert [h["step"] for h in logs] == [0, 1, 2]
    assert logs[0]["gold/kl"] == 0.0 and logs[-1]["gold/kl"] != 0.0
    assert "proxy/length_reward" in logs[0]
    assert sorted(n for n, p in trainer.model.named_parameters() if p.requires_grad) == trainable


def test_kl_is_taken_against_grpos_ref_adapter_when_an_existing_adapter_is_retrained(tmp_path, ckpt, tokenizer):
    """A PeftModel with a trained adapter and beta != 0: GRPOTrainer copies the adapter to "ref" and takes its
    reference there (the starting policy), not from the bare base; the callback's KL must use the same reference."""
    from peft import get_peft_model

    cb = GoldRewardCallback(gold=answer_value, eval_dataset=TASK.eval_dataset(), eval_steps=1, num_prompts=4,
                            num_samples=2)
    policy = get_peft_model(AutoModelForCausalLM.from_pretrained(ckpt),
                            LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    trainer = trl.GRPOTrainer(model=policy, reward_funcs=[length_reward], args=_args(tmp_path, beta=0.04),
                              train_dataset=TASK.prompt_dataset(32, seed=0), processing_class=tokenizer,
                              callbacks=[cb])
    assert "ref" in trainer.model.peft_config
    trainer.train()
    logs = _gold_logs(trainer)
    assert logs[0]["gold/kl"] == 0.0 and logs[-1]["gold/kl"] != 0.0  # the base with adapters off would not give 0


@pytest.mark.parametrize("config_cls, trainer_cls", [(trl.GRPOConfig, trl.GRPOTrainer), (trl.RLOOConfig, trl.RLOOTrainer)])
def test_ref_model_given_when_the_trainer_has_none(tmp_path, ckpt, tokenizer, config_cls, trainer_cls):
    cb = GoldRewardCallback(gold=answer_value, eval_dataset=TASK.eval_dataset(), eval_steps=1, num_prompts=4,
                            ref_model=ckpt)
    args = _args(tmp_path, config_cls, beta=0.0)  # beta=0: TRL keeps no reference
    trainer = _trainer(ckpt, tokenizer, args, cls=trainer_cls, callbacks=[cb])
    trainer.train()
    logs = _gold_logs(trainer)
    assert logs[0]["gold/kl"] == 0.0 and logs[-1]["gold/kl"] > 0.0


# ---- options ---------------------------------------------------------------------------------------------------------
def step_as_proxy(completions, trainer_state, **kwargs):
    return [float(trainer_state.global_step)] * len(completions)


def peaked_gold(completions, trainer_state, **kwargs):
    """Gold is -(step - 2)^2: rises to 0 at step 2, then falls."""
    return [-float((trainer_state.global_step - 2) ** 2)] * len(completions)


def test_stop_rule_and_best_checkpoint(tmp_path, ckpt, tokenizer):
    best = tmp_path / "best"
    cb = GoldRewardCallback(gold=peaked_gold, eval_dataset=TASK.eval_dataset(), eval_steps=1, num_prompts=2,
                            save_best_to=str(best), stop_after=2)
    trainer = _trainer(ckpt, tokenizer, _args(tmp_path, max_steps=10), reward_funcs=[step_as_proxy], callbacks=[cb])
    trainer.train()
    # gold by step: -4, -1, 0, -1, -4; the proxy rises every step, so gold has fallen twice in a row at step 4
    assert trainer.state.global_step == 4
    assert [h["gold"] for h in cb.history] == [-4.0, -1.0, 0.0, -1.0, -4.0]
    assert (cb.best_step, cb.best_gold) == (2, 0.0)
    assert (best / "model.safetensors").is_file()
    assert _gold_logs(trainer)[-1]["gold/falling_while_proxy_rises"] == 2.0


def test_resumed_run_continues_the_curves(tmp_path, ckpt, tokenizer):
    def run(max_steps, resume=None):
        cb = GoldRewardCallback(gold=answer_value, eval_dataset=TASK.eval_dataset(), eval_steps=2, num_prompts=4,
                                num_samples=2, ref_model=ckpt)
        args = _args(tmp_path, max_steps=max_steps, save_strategy="steps", save_steps=2)
        trainer = _trainer(ckpt, tokenizer, args, cls=ResumableGRPOTrainer, callbacks=[cb])
        trainer.train(resume_from_checkpoint=resume)
        return cb, trainer

    whole, _ = run(4)
    saved = json.loads((tmp_path / "out" / "checkpoint-2" / "trainer_state.json").read_text())
    assert [h["step"] for h in saved["stateful_callbacks"]["GoldRewardCallback"]["attributes"]["history"]] == [0, 2]
    resumed, trainer = run(4, resume=str(tmp_path / "out" / "checkpoint-2"))
    assert [h["step"] for h in resumed.history] == [0, 2, 4]  # 0 and 2 read back, not evaluated again
    assert resumed.history == whole.history  # the same numbers: the resumed run trained the same weights
    assert [h["step"] for h in _gold_logs(trainer)] == [0, 2, 4]


# ---- report_to: TensorBoard and trackio read back -----------------------------------------------------------------
@pytest.mark.slow
def test_tensorboard_and_trackio_receive_gold_and_dynamic_sampling(tmp_path):
    env = {**os.environ, "TRACKIO_DIR": str(tmp_path / "trackio"), "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1]), os.environ.get("PYTHONPATH", "")])}
    env.pop("TRACKIO_SPACE_ID", None)
    worker = Path(__file__).with_name("report_to_worker.py")
    out = subprocess.run([sys.executable, str(worker), str(tmp_path)], env=env, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    tags = events.Tags()["scalars"]
    # transformers' TensorBoard and trackio callbacks put training logs under train/
    assert [e.step for e in events.Scalars("train/gold/reward")] == [0, 1, 2]
    assert [e.step for e in events.Scalars("train/dynamic_sampling/kept_groups")] == [1, 2]
    assert "train/proxy/length_reward" in tags and "train/gold/kl" not in tags
    trackio = json.loads((tmp_path / "trackio_read_back.json").read_text())
    assert trackio["gold_steps"] == [0, 1, 2]
    assert trackio["dynamic_sampling_steps"] == [1, 2]
    assert trackio["db_under_tmp"]
    expected = sum(float(a) for a in TASK.eval_dataset()["answer"][:4]) / 4
    assert [e.value for e in events.Scalars("train/gold/reward")] == pytest.approx([expected] * 3, rel=1e-6)
    assert trackio["gold_values"] == pytest.approx([expected] * 3, rel=1e-6)
