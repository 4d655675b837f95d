"""RLOOTrainer: leave-one-out advantages end to end, parity with trl.RLOOTrainer, composition with DAPO's options."""

import math

import pytest
import torch
from transformers import AutoModelForCausalLM
from trl import RLOOConfig as TRLRLOOConfig
from trl import RLOOTrainer as TRLRLOOTrainer

from trl_ext import RLOOConfig, RLOOTrainer
from trl_ext.advantages import leave_one_out_advantages
from trl_ext.toy import AdditionTask




def graded(prompts, completions, answer, **kwargs):
    """Varied, deterministic rewards: 0.25 per character of the completion found in the answer."""
    return [0.25 * sum(ch in a for ch in c[0]["content"]) for c, a in zip(completions, answer)]


def informative_if_even(prompts, completions, answer, **kwargs):
    return [float(i % 2) if int(a) % 2 == 0 else 0.0 for i, a in enumerate(answer)]


def common(tmp_path, **overrides):
    kwargs = dict(output_dir=str(tmp_path), per_device_train_batch_size=8, num_generations=4, max_completion_length=6,
                  max_steps=1, learning_rate=1e-3, logging_steps=1, report_to="none", save_strategy="no", seed=0,
                  use_cpu=True, bf16=False, gradient_checkpointing=False, disable_tqdm=True)
    kwargs.update(overrides)
    return kwargs


def build(cls, args, ckpt, tokenizer, reward, n=32):
    model = AutoModelForCausalLM.from_pretrained(ckpt)
    return cls(model, [reward], args=args, train_dataset=AdditionTask().prompt_dataset(n, seed=0),
               processing_class=tokenizer)


def test_num_generations_below_two_is_refused(tmp_path):
    with pytest.raises(ValueError, match="num_generations=1.*RLOO.*>= 2"):
        RLOOConfig(**common(tmp_path, num_generations=1, per_device_train_batch_size=2))
    with pytest.raises(ValueError, match="kl_in"):
        RLOOConfig(**common(tmp_path, kl_in="advantage"))


@pytest.mark.parametrize("beta", [0.0, 0.05])
def test_same_advantages_as_trl_rloo(tmp_path, ckpt, tokenizer, beta):
    # where the formulations coincide: KL (if any) in the sequence reward, no whitening, no DAPO extras
    theirs = build(TRLRLOOTrainer, TRLRLOOConfig(**common(tmp_path, beta=beta)), ckpt, tokenizer, graded)
    theirs.train()
    ours = build(RLOOTrainer, RLOOConfig(**common(tmp_path, beta=beta)), ckpt, tokenizer, graded)
    ours.train()
    assert list(ours._logs["completion"]) == list(theirs._logs["completion"])  # same samples
    ours_adv, theirs_adv = list(ours._logs["advantages"]), list(theirs._logs["advantages"])
    assert len(ours_adv) == 8 and any(a != 0 for a in ours_adv)
    assert ours_adv == pytest.approx(theirs_adv, abs=1e-5)
    if beta:
        assert ours.state.log_history[0]["kl"] == pytest.approx(theirs.state.log_history[0]["kl"], abs=1e-6)


def test_advantages_are_leave_one_out_of_the_rewards(tmp_path, ckpt, tokenizer):
    t = build(RLOOTrainer, RLOOConfig(**common(tmp_path, beta=0.0)), ckpt, tokenizer, graded)
    t.train()
    rewards = torch.tensor(list(t._logs["rewards"]["graded"]))
    assert list(t._logs["advantages"]) == pytest.approx(leave_one_out_advantages(rewards, 4).tolist())


def test_composes_with_dapo_options(tmp_path, ckpt, tokenizer):
    args = RLOOConfig(**common(tmp_path, max_steps=2, epsilon_high=0.28, overlong_buffer_length=None,
                               dynamic_sampling=True, dynamic_sampling_signal="informative_if_even", beta=0.05))
    t = build(RLOOTrainer, args, ckpt, tokenizer, informative_if_even)
    before = [p.detach().clone() for p in t.model.parameters()]
    t.train()
    assert t.dynamic_sampling_totals["trained"] == 4
    assert "rewards/overlong_penalty/mean" in t.state.log_history[0]
    assert all(math.isfinite(h["loss"]) for h in t.state.log_history[:-1])
    assert any(not torch.equal(a, b) for a, b in zip(before, t.model.parameters()))


def test_token_level_kl_in_the_loss(tmp_path, ckpt, tokenizer):
    t = build(RLOOTrainer, RLOOConfig(**common(tmp_path, beta=0.05, kl_in="loss")), ckpt, tokenizer, graded)
    t.train()
    assert "kl" in t.state.log_history[0]  # logged by GRPOTrainer's loss, which now carries the KL term
    rewards = torch.tensor(list(t._logs["rewards"]["graded"]))  # KL not in the reward: pure leave-one-out
    assert list(t._logs["advantages"]) == pytest.approx(leave_one_out_advantages(rewards, 4).tolist())
