"""RLOOTrainer: leave-one-out advantages end to end, parity with trl.RLOOTrainer, composition with DAPO's options."""

import math

import pytest
import torch
from peft import LoraConfig
from transformers import AutoModelForCausalLM
from trl import RLOOConfig as TRLRLOOConfig
from trl import RLOOTrainer as TRLRLOOTrainer

from trl_ext import RLOOConfig, RLOOTrainer
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
    advantages = record_loss_advantages(ours)
    ours.train()
    assert list(ours._logs["completion"]) == list(theirs._logs["completion"])  # same samples
    ours_adv, theirs_adv = advantages(), list(theirs._logs["advantages"])  # ours: what our loss sees
    assert len(ours_adv) == 8 and any(a != 0 for a in ours_adv)
    assert ours_adv == pytest.approx(theirs_adv, abs=1e-5)
    if beta:
        assert ours.state.log_history[0]["kl"] == pytest.approx(theirs.state.log_history[0]["kl"], abs=1e-6)


def record_loss_advantages(t):
    """Spy on generation and on _compute_loss; returns a function giving, after training, the advantages that reached
    the loss in generation order. GRPOTrainer shuffles the generation batch before slicing it into micro-batches, so
    rows are matched by their (prompt, completion) tokens."""
    generated, at_loss = [], {}
    generate, loss = t._generate_and_score_completions, t._compute_loss

    def key(ids, mask):
        return tuple(ids[mask.bool()].tolist())

    def spy_generate(inputs):
        out = generate(inputs)
        if t.model.training:
            generated.extend(zip(out["prompt_ids"], out["prompt_mask"], out["completion_ids"], out["completion_mask"]))
        return out

    def spy_loss(model, inputs):
        for p, pm, c, cm, a in zip(inputs["prompt_ids"], inputs["prompt_mask"], inputs["completion_ids"],
                                   inputs["completion_mask"], inputs["advantages"]):
            at_loss[(key(p, pm), key(c, cm))] = float(a)
        return loss(model, inputs)

    t._generate_and_score_completions, t._compute_loss = spy_generate, spy_loss
    return lambda: [at_loss[(key(p, pm), key(c, cm))] for p, pm, c, cm in generated]


def test_completions_table_shows_the_advantages_the_loss_used(tmp_path, ckpt, tokenizer):
    # GRPOTrainer logs its own advantages in the body that forms them; RLOO's (KL in the reward) differ from GRPO's
    t = build(RLOOTrainer, RLOOConfig(**common(tmp_path, beta=0.05, max_steps=2)), ckpt, tokenizer, graded)
    advantages = record_loss_advantages(t)
    t.train()
    used = advantages()
    assert len(used) == 16 and len(set(used)) > 2
    assert list(t._logs["advantages"]) == used[-8:]  # the table keeps the last generation batch, exactly


def hand_leave_one_out(rewards, k):
    """A_i = r_i - (sum of the other k - 1 rewards of its group) / (k - 1), written out without trl_ext."""
    out = []
    for start in range(0, len(rewards), k):
        group = rewards[start : start + k]
        out += [r - (sum(group) - r) / (k - 1) for r in group]
    return out


def test_the_loss_sees_leave_one_out_advantages_of_the_rewards(tmp_path, ckpt, tokenizer):
    t = build(RLOOTrainer, RLOOConfig(**common(tmp_path, beta=0.0)), ckpt, tokenizer, graded)
    advantages = record_loss_advantages(t)
    t.train()
    rewards = list(t._logs["rewards"]["graded"])  # GRPOTrainer's record of the reward function's values
    expected = hand_leave_one_out(rewards, 4)
    assert len(expected) == 8 and any(abs(a) > 0 for a in expected)
    assert advantages() == pytest.approx(expected, abs=1e-5)


def test_rloo_config_defaults_are_trls_so_trls_example_runs(tmp_path, ckpt, tokenizer):
    # TRL's RLOO quick start shape: a batch of 4 and no num_generations -> 2 prompts x 2 completions
    args = RLOOConfig(**{k: v for k, v in common(tmp_path, per_device_train_batch_size=4).items()
                         if k != "num_generations"})
    assert args.num_generations == TRLRLOOConfig.__dataclass_fields__["num_generations"].default == 2
    t = build(RLOOTrainer, args, ckpt, tokenizer, graded)
    t.train()
    prompts = list(t._logs["prompt"])  # generation order: 2 prompts x 2 completions
    assert len(prompts) == 4 and prompts[0] == prompts[1] != prompts[2] == prompts[3]


def test_reward_clip_range_clips_the_reward_before_the_baseline(tmp_path, ckpt, tokenizer):
    def spread(prompts, completions, **kwargs):
        return [-5.0, 0.25, 3.0, 0.5] * (len(prompts) // 4)

    args = RLOOConfig(**common(tmp_path, beta=0.0, reward_clip_range=(-1.0, 1.0)))
    t = build(RLOOTrainer, args, ckpt, tokenizer, spread)
    advantages = record_loss_advantages(t)
    t.train()
    clipped = [-1.0, 0.25, 1.0, 0.5]  # -> leave-one-out: -1 - 1.75/3, 0.25 - 0.5/3, 1 - (-0.25)/3, 0.5 - 0.25/3
    assert advantages() == pytest.approx(hand_leave_one_out(clipped, 4) * 2, abs=1e-6)


@pytest.mark.parametrize(
    "overrides, match",
    [
        (dict(scale_rewards="group"), "scale_rewards='group'.*not a trl.RLOOConfig field.*normalize_advantages=True"),
        (dict(scale_rewards="batch"), "scale_rewards='batch'"),
        (dict(multi_objective_aggregation="normalize_then_sum"), "multi_objective_aggregation='normalize_then_sum'"),
        (dict(reward_clip_range=(1.0, -1.0)), r"reward_clip_range=\(1.0, -1.0\): give \(min, max\)"),
    ],
)
def test_grpo_advantage_options_rloo_replaces_are_refused(tmp_path, overrides, match):
    with pytest.raises(ValueError, match=match):
        RLOOConfig(**common(tmp_path, **overrides))


def test_composes_with_dapo_options(tmp_path, ckpt, tokenizer):
    args = RLOOConfig(**common(tmp_path, max_steps=2, epsilon_high=0.28, overlong_buffer_length=None,
                               dynamic_sampling=True, dynamic_sampling_signal="informative_if_even", beta=0.05))
    t = build(RLOOTrainer, args, ckpt, tokenizer, informative_if_even)
    before = [p.detach().clone() for p in t.model.parameters()]
    t.train()
    assert t.dynamic_sampling_totals["trained"] == 4
    assert "shaping/overlong/mean" in t.state.log_history[0]  # beside the reward, not a reward function
    assert t.reward_func_names == ["informative_if_even"]
    assert all(math.isfinite(h["loss"]) for h in t.state.log_history[:-1])
    assert any(not torch.equal(a, b) for a, b in zip(before, t.model.parameters()))


def test_evaluation_on_one_completion_per_prompt(tmp_path, ckpt, tokenizer):
    # num_generations_eval=1 is TRL's way to evaluate on one sample per prompt: no baseline is needed there
    args = RLOOConfig(**common(tmp_path, num_generations_eval=1, per_device_eval_batch_size=4, beta=0.05))
    scored = []

    def recorded(prompts, completions, answer, **kwargs):
        scored.extend(graded(prompts, completions, answer))
        return scored[-len(prompts):]

    recorded.__name__ = "graded"
    t = RLOOTrainer(AutoModelForCausalLM.from_pretrained(ckpt), [recorded], args=args,
                    train_dataset=AdditionTask().prompt_dataset(16, seed=0),
                    eval_dataset=AdditionTask().prompt_dataset(8, seed=1), processing_class=tokenizer)
    metrics = t.evaluate()
    assert len(scored) == 8  # one completion for each of the 8 eval prompts
    assert metrics["eval_reward"] == pytest.approx(sum(scored) / len(scored), abs=1e-6)  # two equal batches of 4
    assert metrics["eval_loss"] == 0.0  # one completion per prompt: advantage 0 (trl.RLOOTrainer's rule too)
    assert list(t._logs["advantages"])[-8:] == [0.0] * 8


def test_token_level_kl_in_the_loss(tmp_path, ckpt, tokenizer):
    t = build(RLOOTrainer, RLOOConfig(**common(tmp_path, beta=0.05, kl_in="loss")), ckpt, tokenizer, graded)
    advantages = record_loss_advantages(t)
    t.train()
    assert "kl" in t.state.log_history[0]  # logged by GRPOTrainer's loss, which carries the KL term here
    rewards = list(t._logs["rewards"]["graded"])  # KL not in the reward: pure leave-one-out
    assert advantages() == pytest.approx(hand_leave_one_out(rewards, 4), abs=1e-6)


def completion_logps(model, batch):
    """log p(completion token) under ``model``, (B, T), written out without GRPOTrainer's helpers."""
    ids = torch.cat([batch["prompt_ids"], batch["completion_ids"]], dim=1)
    mask = torch.cat([batch["prompt_mask"], batch["completion_mask"]], dim=1)
    width = batch["completion_ids"].size(1)
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask).logits[:, -width - 1 : -1].float()
    return torch.log_softmax(logits, dim=-1).gather(-1, batch["completion_ids"].unsqueeze(-1)).squeeze(-1)


@pytest.mark.parametrize("lora", [False, True])
def test_reward_kl_is_taken_against_the_initial_model_and_kept_out_of_the_loss(tmp_path, ckpt, tokenizer, lora):
    # kl_in='reward': GRPOTrainer's loss coefficient is 0 for the run (no k3 term on top of the reward's KL), and the
    # reference log-probs are the starting model's (the base with the adapter off under LoRA) after the policy moved
    args = RLOOConfig(**common(tmp_path, beta=0.05, max_steps=3))
    peft_config = LoraConfig(r=4, target_modules="all-linear") if lora else None
    model = AutoModelForCausalLM.from_pretrained(ckpt)
    t = RLOOTrainer(model, [graded], args=args, train_dataset=AdditionTask().prompt_dataset(32, seed=0),
                    processing_class=tokenizer, peft_config=peft_config)
    assert (t.beta, t.reward_kl_coef) == (0.0, 0.05)
    seen, reference = [], t._reference_logps

    def spy(batch):
        out = reference(batch)
        seen.append(({k: batch[k].clone() for k in ("prompt_ids", "prompt_mask", "completion_ids",
                                                     "completion_mask")}, out.clone()))
        return out

    t._reference_logps = spy
    t.train()
    assert len(seen) == 3
    initial = AutoModelForCausalLM.from_pretrained(ckpt).eval()
    for batch, logps in seen:
        mask = batch["completion_mask"].bool()
        assert logps[mask] == pytest.approx(completion_logps(initial, batch)[mask], abs=1e-5)
    last, last_logps = seen[-1]
    mask = last["completion_mask"].bool()
    policy = completion_logps(t.model.eval(), last)  # the policy moved, so a reference equal to it would fail above
    assert (policy[mask] - last_logps[mask]).abs().max() > 1e-3
    assert all("kl" in h for h in t.state.log_history[:-1])


def test_composes_with_skipping_sized_refills_and_a_budget(tmp_path, ckpt, tokenizer):
    # 2 groups a step; 8 prompts so refills revisit (and may skip) the odd-answer ones, whose groups are all 0
    args = RLOOConfig(**common(tmp_path, max_steps=20, beta=0.0, dynamic_sampling=True,
                               dynamic_sampling_signal="informative_if_even", dynamic_sampling_skip_probability=0.6,
                               dynamic_sampling_sized_refill=True, max_generated_completions=60))
    t = build(RLOOTrainer, args, ckpt, tokenizer, informative_if_even, n=8)
    t.train()
    totals = t.dynamic_sampling_totals
    assert totals["generated_groups"] * 4 <= 60  # sized rounds never overrun the budget
    # the budget stops training once less than one first round (8 completions) is left
    assert 60 - totals["generated_groups"] * 4 < 8
    assert totals["informative"] == totals["trained"] + t.pooled_groups + totals["dropped"]
    assert totals["skipped_prompts"] == sum(h.get("dynamic_sampling/skipped_prompts", 0) for h in t.state.log_history)
    assert all(math.isfinite(h["loss"]) for h in t.state.log_history[:-1])
