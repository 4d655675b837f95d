"""PPOTrainer: reward/KL math by hand, config and constructor errors, and short seeded runs on the tiny model."""

import math
import re
from pathlib import Path

import pytest
import torch
from datasets import Dataset
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForSequenceClassification, AutoTokenizer
from trl import GRPOConfig, ModelConfig

from trl_ext import PPOConfig, PPOTrainer
from trl_ext.models import load_causal_lm
from trl_ext.ppo import AdaptiveKLController, token_rewards
from trl_ext.toy import AdditionTask, build_tokenizer, ensure_tiny_checkpoint, oracle_correct


@pytest.fixture(scope="module")
def tiny():
    return str(ensure_tiny_checkpoint())


@pytest.fixture(scope="module")
def tokenizer(tiny):
    return AutoTokenizer.from_pretrained(tiny)


def _args(tmp_path, **kw):
    defaults = dict(
        output_dir=str(tmp_path / "out"),
        per_device_train_batch_size=8,
        max_completion_length=3,
        max_steps=2,
        logging_steps=1,
        report_to=[],
        save_strategy="no",
        use_cpu=True,
        bf16=False,  # TRL defaults to bf16 autocast, emulated (slowly) on CPUs
        seed=0,
    )
    return PPOConfig(**{**defaults, **kw})


def always_one(prompts, completions, **kwargs):
    return [1.0] * len(completions)


# ---- pure math -------------------------------------------------------------------------------------------------------
def test_token_rewards_by_hand():
    logps = torch.tensor([[-1.0, -2.0, -0.5], [-1.0, -1.0, 0.0]])
    ref = torch.tensor([[-1.5, -1.0, -0.5], [-2.0, -1.0, 0.0]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    scores = torch.tensor([2.0, -1.0])
    rewards, kl = token_rewards(logps, ref, scores, mask, kl_coef=0.1)
    # kl = logp − ref = [[0.5, −1, 0], [1, 0, (masked)]]; r = −0.1·kl, plus the score on each row's last real token
    torch.testing.assert_close(kl, torch.tensor([[0.5, -1.0, 0.0], [1.0, 0.0, 0.0]]))
    torch.testing.assert_close(rewards, torch.tensor([[-0.05, 0.1, 2.0], [-0.1, -1.0, 0.0]]))


def test_adaptive_kl_by_hand():
    ctl = AdaptiveKLController(0.1, target=6.0, horizon=100)
    # KL 12 is 100% over target: error clipped to +0.2, times n/horizon = 10/100 -> β·1.02
    assert ctl.update(12.0, n_steps=10) == pytest.approx(0.102)
    # KL 5.4 is 10% under: β·(1 − 0.1·50/100) = β·0.95
    assert ctl.update(5.4, n_steps=50) == pytest.approx(0.102 * 0.95)


# ---- configuration errors --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("field,value", [("gamma", 1.5), ("gamma", -0.1), ("lam", 1.01), ("lam", -1.0)])
def test_config_rejects_invalid_gae_parameters(tmp_path, field, value):
    with pytest.raises(ValueError, match=rf"PPOConfig\.{field}="):
        _args(tmp_path, **{field: value})


@pytest.mark.parametrize("batch", [dict(per_device_train_batch_size=3),
                                   dict(per_device_train_batch_size=1, gradient_accumulation_steps=2),
                                   dict(per_device_train_batch_size=1, steps_per_generation=3)])
def test_one_generation_passes_grpo_config_unchanged(tmp_path, batch):
    """num_generations=1 gets past GRPOConfig's `< 2` check with every other derivation as GRPO makes it: generation
    batch = per-device batch x steps, odd sizes included; both group-size fields come back as given."""
    args = _args(tmp_path, num_generations=1, **batch)
    assert args.num_generations == 1 and type(args.num_generations) is int and args.num_generations_eval is None
    steps = batch.get("steps_per_generation", batch.get("gradient_accumulation_steps", 1))
    assert args.generation_batch_size == batch["per_device_train_batch_size"] * steps
    with pytest.raises(ValueError, match="num_generations=1 with per_device_train_batch_size=1"):
        _args(tmp_path, num_generations=1, per_device_train_batch_size=1)


def test_config_rejects_adaptive_kl_without_coefficient(tmp_path):
    with pytest.raises(ValueError, match="kl_target"):
        _args(tmp_path, kl_coef=0.0, kl_target=6.0)


def test_config_refuses_grpo_loss_options_ppo_ignores(tmp_path):
    with pytest.raises(ValueError, match="PPOConfig.entropy_coef"):
        _args(tmp_path, entropy_coef=0.01)


def test_one_generation_per_prompt_is_allowed(tmp_path):
    args = _args(tmp_path, num_generations=1, per_device_train_batch_size=3)
    assert args.num_generations == 1 and type(args.num_generations) is int
    with pytest.raises(ValueError):  # GRPO itself still refuses it: only PPO has a critic for a baseline
        GRPOConfig(output_dir=str(tmp_path), num_generations=1, report_to=[], use_cpu=True)


# ---- constructor errors ----------------------------------------------------------------------------------------------
def test_missing_reward_model_is_a_clear_error(tmp_path, tiny, tokenizer):
    for missing in (None, []):
        with pytest.raises(ValueError, match="PPOTrainer needs a reward"):
            PPOTrainer(tiny, missing, args=_args(tmp_path), train_dataset=AdditionTask().prompt_dataset(8, 0),
                       processing_class=tokenizer)


@pytest.fixture(scope="module")
def foreign_critic(tiny, tmp_path_factory):
    """A sequence-classification checkpoint whose tokenizer has one extra token: its ids differ from the policy's."""
    path = tmp_path_factory.mktemp("foreign_critic")
    tok = build_tokenizer()
    tok.add_tokens(["<|tool|>"], special_tokens=True)
    model = AutoModelForSequenceClassification.from_pretrained(tiny, num_labels=1)
    model.resize_token_embeddings(len(tok))
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


def test_critic_with_another_tokenizer_is_refused(tmp_path, tiny, tokenizer, foreign_critic):
    data = AdditionTask().prompt_dataset(8, 0)
    with pytest.raises(ValueError, match="value_model=.*different tokenizer"):
        PPOTrainer(tiny, oracle_correct, args=_args(tmp_path), train_dataset=data, processing_class=tokenizer,
                   value_model=foreign_critic)
    # The default critic is a copy of the reward model: a reward model with another tokenizer is refused too.
    with pytest.raises(ValueError, match="reward model's tokenizer differs"):
        PPOTrainer(tiny, foreign_critic, args=_args(tmp_path), train_dataset=data, processing_class=tokenizer)


def test_shared_base_needs_lora_and_an_adapter_reward(tmp_path, tiny, tokenizer):
    data = AdditionTask().prompt_dataset(8, 0)
    with pytest.raises(ValueError, match="needs peft_config"):
        PPOTrainer(tiny, oracle_correct, args=_args(tmp_path, shared_base=True), train_dataset=data,
                   processing_class=tokenizer)
    lora = LoraConfig(task_type="CAUSAL_LM", r=4, target_modules=["q_proj", "v_proj"])
    with pytest.raises(ValueError, match="LoRA adapter folder"):
        PPOTrainer(tiny, tiny, args=_args(tmp_path, shared_base=True), train_dataset=data,
                   processing_class=tokenizer, peft_config=lora)


# ---- short seeded runs -----------------------------------------------------------------------------------------------
PAIRS = [(27, 15), (38, 45), (19, 24), (56, 17)]  # two-digit sums, so a "swap" slip is always a wrong answer


def _encode(tokenizer, a, b, answer):
    prompt = [{"role": "user", "content": AdditionTask.question(a, b)}]
    text = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=False)
    prompt_ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return prompt_ids, tokenizer(answer + tokenizer.eos_token, add_special_tokens=False)["input_ids"]


def _batch(tokenizer, rows):
    ids = [p + c for p, c in rows]
    width = max(map(len, ids))
    input_ids = torch.tensor([[tokenizer.pad_token_id] * (width - len(i)) + i for i in ids])  # (B, L) left-padded
    labels = torch.tensor([[-100] * (width - len(c)) + c for _, c in rows])  # loss on the answer tokens only
    return input_ids, (input_ids != tokenizer.pad_token_id).long(), labels


@torch.no_grad()
def _p_correct(model, tokenizer):
    """Per prompt, the probability of sampling exactly the right sum then EOS (temperature 1): the expected oracle
    accuracy, up to answers that parse to the same number (e.g. " 42"), which only add to it."""
    input_ids, mask, labels = _batch(tokenizer, [_encode(tokenizer, a, b, str(a + b)) for a, b in PAIRS])
    logps = model(input_ids=input_ids, attention_mask=mask).logits[:, :-1].log_softmax(-1)
    token_logps = logps.gather(-1, input_ids[:, 1:, None])[..., 0] * (labels[:, 1:] != -100)
    return token_logps.sum(1).exp()  # (4,)


@pytest.fixture(scope="module")
def noisy_sft(tiny, tokenizer, tmp_path_factory):
    """The SFT stage in miniature: 40 SFT steps on demonstrators who write the digits swapped half the time."""
    import random

    from transformers import AutoModelForCausalLM

    task = AdditionTask(demo_error_rate=0.5, demo_error_kinds=("swap",))
    rng = random.Random(0)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(40):
        pairs = (rng.choice(PAIRS) for _ in range(16))  # drawn lazily: choice, demonstrate, choice, ...
        rows = [_encode(tokenizer, a, b, task.demonstrate(a, b, rng)) for a, b in pairs]
        input_ids, mask, labels = _batch(tokenizer, rows)
        model(input_ids=input_ids, attention_mask=mask, labels=labels).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    path = tmp_path_factory.mktemp("noisy_sft")
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


@pytest.mark.slow
def test_ppo_raises_oracle_accuracy(tmp_path, tokenizer, noisy_sft):
    """After noisy SFT the right answer and its swap compete; PPO on the oracle's reward must favour the right one."""
    from transformers import AutoModelForCausalLM

    before = _p_correct(AutoModelForCausalLM.from_pretrained(noisy_sft), tokenizer)
    prompts = [[{"role": "user", "content": AdditionTask.question(a, b)}] for a, b in PAIRS]
    args = _args(tmp_path, per_device_train_batch_size=16, num_iterations=2, max_steps=12, learning_rate=3e-4,
                 lr_scheduler_type="constant", kl_coef=0.01)
    data = Dataset.from_dict({"prompt": prompts * 32})
    trainer = PPOTrainer(noisy_sft, oracle_correct, args=args, train_dataset=data, processing_class=tokenizer)
    trainer.train()
    after = _p_correct(trainer.model, tokenizer)
    assert 0.2 < before.mean() < 0.7, before  # the SFT model is unsure: room to improve
    assert after.mean() > before.mean() + 0.2, (before, after)
    logs = trainer.state.log_history
    for key in ("ppo/value_loss", "ppo/policy_loss", "ppo/approx_kl", "ppo/explained_variance", "kl",
                "clip_ratio/region_mean", "ppo/value_clip_ratio", "entropy"):
        assert any(key in h for h in logs), key


def _one_step(tmp_path, tiny, tokenizer, reward, **kw):
    """One PPO step on 8 prompts (no KL, no whitening): the trainer and the rollout that reached the loss."""
    args = _args(tmp_path, max_steps=1, num_iterations=1, kl_coef=0.0, whiten_advantages=False, **kw)
    trainer = PPOTrainer(tiny, reward, args=args, train_dataset=AdditionTask().prompt_dataset(8, 0),
                         processing_class=tokenizer)
    outputs = []
    generate = trainer._generate_and_score_completions
    trainer._generate_and_score_completions = lambda inputs: outputs.append(generate(inputs)) or outputs[-1]
    trainer.train()
    return trainer, outputs[0]


def test_unscorable_completion_gets_zero_advantage(tmp_path, tiny, tokenizer):
    """Every reward function returned None for a completion (weighted reward NaN, as in DAPO/RLOO): zero advantage on
    all its tokens and the critic's own value as its target; the scored rows are unaffected (return 1 on each token
    for reward 1 with no KL, γ = λ = 1, no whitening)."""

    def none_on_even_rows(prompts, completions, **kwargs):
        return [None if i % 2 == 0 else 1.0 for i in range(len(completions))]

    trainer, out = _one_step(tmp_path, tiny, tokenizer, none_on_even_rows, lam=1.0)
    mask = out["completion_mask"].bool()
    unscorable = torch.arange(mask.size(0)) % 2 == 0
    assert torch.equal(out["advantages"][unscorable], torch.zeros_like(out["advantages"][unscorable]))
    torch.testing.assert_close(out["returns"][unscorable], (out["values"] * mask)[unscorable])
    assert torch.allclose(out["returns"][~unscorable][mask[~unscorable]], torch.tensor(1.0))
    assert out["advantages"][~unscorable][mask[~unscorable]].abs().sum() > 0
    assert trainer.state.log_history[0]["ppo/score"] == 1.0  # the mean over the scored rows
    assert math.isfinite(trainer.state.log_history[0]["loss"])


def test_completions_table_shows_ppos_advantages_not_grpos(tmp_path, tiny, tokenizer):
    """With one generation per prompt GRPO's group-relative advantages are all 0; the completions table
    (log_completions) shows each completion's mean per-token GAE advantage, the one that reached the loss."""
    trainer, out = _one_step(tmp_path, tiny, tokenizer, always_one)
    mask = out["completion_mask"].float()
    expected = (out["advantages"] * mask).sum(1) / mask.sum(1)  # (B,)
    shown = torch.tensor(list(trainer._logs["advantages"]))
    assert shown.shape == expected.shape and expected.abs().sum() > 0  # GRPO's would be all zeros
    torch.testing.assert_close(shown, expected.cpu())


@pytest.mark.slow
def test_value_loss_falls(tmp_path, tiny, tokenizer):
    """Reward 1 for every completion, no KL, λ = 1: every return is exactly 1, so the critic's values go to 1."""
    args = _args(tmp_path, num_iterations=4, max_steps=16, learning_rate=1e-5, critic_learning_rate=1e-3,
                 kl_coef=0.0, lam=1.0, lr_scheduler_type="constant")
    trainer = PPOTrainer(tiny, always_one, args=args, train_dataset=AdditionTask().prompt_dataset(64, 0),
                         processing_class=tokenizer)
    assert trainer.ref_model is None  # kl_coef=0: no reference needed
    trainer.train()
    value_loss = [h["ppo/value_loss"] for h in trainer.state.log_history if "ppo/value_loss" in h]
    returns = [h["ppo/returns_mean"] for h in trainer.state.log_history if "ppo/returns_mean" in h]
    values = [h["ppo/values_mean"] for h in trainer.state.log_history if "ppo/values_mean" in h]
    assert all(r == pytest.approx(1.0) for r in returns)
    assert sum(value_loss[-4:]) < 0.25 * sum(value_loss[:4]), value_loss
    assert abs(values[-1] - 1.0) < abs(values[0] - 1.0), values
    # Trainer zeroes only the policy's gradients; the critic's are cleared after each step, not summed over the run
    assert all(p.grad is None for p in trainer.critic.parameters())
    trainer.save_model(str(tmp_path / "saved"))  # the critic is saved next to the policy
    assert (tmp_path / "saved" / "critic" / "config.json").exists()


def test_shared_base_reward_is_reward_adapters_with_reward_trainers_tokenisation(tmp_path, tiny, tokenizer):
    """PPO's shared-base reward is RewardAdapter.shared_base: a plain-text pair is scored as RewardTrainer trained it,
    ``prompt + completion + eos`` with the tokenizer's special tokens, through the RM's last token."""
    from trl_ext import RewardAdapter

    torch.manual_seed(0)
    rm = get_peft_model(AutoModelForSequenceClassification.from_pretrained(tiny, num_labels=1),
                        LoraConfig(task_type="SEQ_CLS", r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    rm.save_pretrained(tmp_path / "rm_adapter")
    rm.eval()
    prompts, completions = ["1+2=", "30+4=", "7+7="], ["3", "34 or so", "14"]

    def rm_score(text):
        with torch.no_grad():
            return rm(**tokenizer([text], return_tensors="pt")).logits[0, 0].item()

    eos = tokenizer.eos_token
    expected = [rm_score(p + c + eos) for p, c in zip(prompts, completions)]
    without_eos = [rm_score(p + c) for p, c in zip(prompts, completions)]
    assert max(abs(a - b) for a, b in zip(expected, without_eos)) > 1e-3  # the EOS token matters to this RM

    lora = LoraConfig(task_type="CAUSAL_LM", r=4, target_modules=["q_proj", "v_proj"])
    trainer = PPOTrainer(tiny, str(tmp_path / "rm_adapter"), args=_args(tmp_path, shared_base=True),
                         train_dataset=AdditionTask().prompt_dataset(8, 0), processing_class=tokenizer,
                         peft_config=lora)
    reward = trainer.reward_funcs[0]
    assert isinstance(reward, RewardAdapter) and trainer.reward_func_names == ["reward_adapter:rm_adapter"]
    assert reward(prompts=prompts, completions=completions) == pytest.approx(expected, abs=1e-5)
    # the same numbers as RewardAdapter on the full reward model, its tokenizer, one micro-batch of all rows
    full = RewardAdapter.from_model(rm, tokenizer, batch_size=len(prompts))
    assert full.score(prompts, completions) == pytest.approx(expected, abs=1e-5)
    assert set(trainer.model.peft_config) == {"default", "critic", "reward"}


@pytest.mark.parametrize("load_in_4bit", [False, True], ids=["fp32", "nf4"])
def test_shared_base_trains_only_policy_and_critic_adapters(tmp_path, tiny, tokenizer, load_in_4bit):
    """Four roles on one base: the policy and critic adapters and the value head move; base and reward adapter don't."""
    torch.manual_seed(0)
    rm = AutoModelForSequenceClassification.from_pretrained(tiny, num_labels=1)
    rm = get_peft_model(rm, LoraConfig(task_type="SEQ_CLS", r=4, target_modules=["q_proj", "v_proj"],
                                       init_lora_weights=False))
    rm.save_pretrained(tmp_path / "rm_adapter")
    expected = rm(**tokenizer(["<|user|>1+1<|end|><|assistant|>2<|end|>"], return_tensors="pt",
                              add_special_tokens=False)).logits[0, 0].item()

    lora = LoraConfig(task_type="CAUSAL_LM", r=4, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"])
    args = _args(tmp_path, shared_base=True, num_iterations=2, max_steps=2, learning_rate=1e-2,
                 kl_target=1.0, kl_horizon=100, missing_eos_penalty=1.0)
    policy = load_causal_lm(ModelConfig(model_name_or_path=tiny, load_in_4bit=True)) if load_in_4bit else tiny
    trainer = PPOTrainer(policy, str(tmp_path / "rm_adapter"), args=args,
                         train_dataset=AdditionTask().prompt_dataset(32, 0), processing_class=tokenizer,
                         peft_config=lora)
    model = trainer.model
    assert set(model.peft_config) == {"default", "critic", "reward"}
    assert trainer.ref_model is None  # reference = adapters disabled
    # The reward adapter scores exactly as the reward model it was saved from.
    score = trainer.reward_funcs[0]([[{"role": "user", "content": "1+1"}]], [[{"role": "assistant", "content": "2"}]])
    assert score[0] == pytest.approx(expected, abs=0.05 if load_in_4bit else 1e-4)

    # (4-bit weights are uint8 storage, frozen by construction; the float ones are compared)
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.dtype.is_floating_point}
    head_before = trainer.critic.value_head.weight.detach().clone()
    trainer.train()
    moved = {"default": 0, "critic": 0, "reward": 0, "base": 0}
    for n, p in model.named_parameters():
        if n not in before:
            continue
        role = next((a for a in ("default", "critic", "reward") if f".{a}." in n), "base")
        moved[role] += int(not torch.equal(p, before[n]))
    assert moved["default"] > 0 and moved["critic"] > 0, moved
    assert moved["reward"] == 0 and moved["base"] == 0, moved
    assert not torch.equal(trainer.critic.value_head.weight, head_before)
    assert model.active_adapter == "default"
    trainer.save_model(str(tmp_path / "saved"))
    assert (tmp_path / "saved" / "critic" / "adapter_model.safetensors").exists()
    assert (tmp_path / "saved" / "value_head.pt").exists()
    # Adaptive KL moved β; the no-EOS penalty took 1.0 off each completion that never emitted EOS.
    assert trainer.kl_coef != 0.05
    rollout = next(h for h in trainer.state.log_history if "ppo/score" in h)
    assert rollout["ppo/score"] == pytest.approx(rollout["reward"] - (1.0 - rollout["ppo/eos_ratio"]), abs=1e-5)


DDP_SCRIPT = '''
import sys, torch
from transformers import AutoTokenizer
from trl_ext import PPOConfig, PPOTrainer
from trl_ext.toy import AdditionTask, oracle_correct
tiny, out = sys.argv[1], sys.argv[2]
args = PPOConfig(output_dir=out, per_device_train_batch_size=4, gradient_accumulation_steps=2, num_iterations=2,
                 max_completion_length=3, max_steps=2, report_to=[], save_strategy="no", use_cpu=True, bf16=False, seed=0)
trainer = PPOTrainer(tiny, oracle_correct, args=args, train_dataset=AdditionTask().prompt_dataset(64, 0),
                     processing_class=AutoTokenizer.from_pretrained(tiny))
critic = trainer.accelerator.unwrap_model(trainer.critic)
before = [p.detach().clone() for p in critic.parameters()]
trainer.train()
moved = any(not torch.equal(a, b) for a, b in zip(before, critic.parameters()))
checksum = sum(float(p.detach().double().sum()) for p in critic.parameters())
print(f"RANK {trainer.accelerator.process_index} {moved} {checksum:.8f}", flush=True)
trainer.accelerator.wait_for_everyone()  # leave gloo together: a rank exiting mid-teardown aborts the other
torch.distributed.destroy_process_group()
'''


@pytest.mark.slow
def test_separate_critic_stays_in_sync_across_two_processes(tmp_path, tiny):
    """torchrun with 2 CPU processes (gloo): the critic trains and its weights agree on both ranks."""
    import os
    import subprocess
    import sys

    script = tmp_path / "ppo_ddp.py"
    script.write_text(DDP_SCRIPT)
    repo = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": repo + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script), tiny,
         str(tmp_path / "out")],
        capture_output=True, text=True, env=env, timeout=300,
    )
    # found anywhere in stdout: the other rank's Trainer log can land on the same line
    ranks = re.findall(r"RANK (\d) (True|False) (-?[\d.]+)", proc.stdout)
    assert proc.returncode == 0 and len(ranks) == 2, proc.stderr[-3000:]
    assert all(moved == "True" for _, moved, _ in ranks)
    assert ranks[0][2] == ranks[1][2]  # identical critic weights: gradients were all-reduced


# ---- one loss, back-propagated by Trainer ----------------------------------------------------------------------------
def _small_trainer(tmp_path, tiny, tokenizer, shared, **kw):
    roles = dict(shared_base=True) if shared else {}
    lora = LoraConfig(task_type="CAUSAL_LM", r=4, target_modules=["q_proj", "v_proj"])
    lora = {"peft_config": lora} if shared else {}
    args = _args(tmp_path, per_device_train_batch_size=4, kl_coef=0.0, **roles, **kw)
    return PPOTrainer(tiny, always_one, args=args, train_dataset=AdditionTask().prompt_dataset(32, 0),
                      processing_class=tokenizer, **lora)


@pytest.mark.parametrize("shared", [False, True], ids=["separate", "shared_base"])
def test_value_loss_reaches_only_the_critic_and_policy_loss_only_the_policy(tmp_path, tiny, tokenizer, shared):
    """_compute_loss returns policy loss + vf_coef x value loss as one tensor; backward through it must give the critic
    the value loss's gradient only (unchanged when the advantages, hence the policy loss, are zeroed) and the policy
    none of it (zero advantages -> exactly zero policy gradient), also when both are adapters on one base."""
    trainer = _small_trainer(tmp_path, tiny, tokenizer, shared)
    trainer.model.train()
    trainer.current_gradient_accumulation_steps = 1  # set by Trainer's loop, read by the loss normaliser
    data = trainer.train_dataset
    inputs = trainer._generate_and_score_completions([data[i] for i in range(4)])
    inside, outside = trainer._critic_parameters()
    critic = inside + outside
    critic_ids = {id(p) for p in critic}
    policy = [p for p in trainer.model.parameters() if p.requires_grad and id(p) not in critic_ids]

    def grads(advantage_scale):
        for p in critic + policy:
            p.grad = None
        batch = {**inputs, "advantages": inputs["advantages"] * advantage_scale}
        loss = trainer._compute_loss(trainer.model, batch)
        assert loss.requires_grad
        loss.backward()
        as_tensor = lambda ps: [torch.zeros_like(p) if p.grad is None else p.grad.clone() for p in ps]  # noqa: E731
        return as_tensor(critic), as_tensor(policy)

    critic_vf_only, policy_vf_only = grads(0.0)
    critic_both, policy_both = grads(1.0)
    assert all(not g.any() for g in policy_vf_only)  # no value-loss gradient leaks into the policy
    assert any(g.any() for g in policy_both) and any(g.any() for g in critic_vf_only)
    for a, b in zip(critic_vf_only, critic_both):
        torch.testing.assert_close(a, b)  # the policy loss adds nothing to the critic's gradient


@pytest.mark.parametrize("shared", [False, True], ids=["separate", "shared_base"])
def test_one_backward_per_step_critic_moves_and_its_gradients_do_not_accumulate(tmp_path, tiny, tokenizer, shared):
    """Trainer's backward is the only one (a backward inside the loss would step a DeepSpeed engine); the critic
    trains; each optimizer step starts from zero critic gradients (Trainer zeroes the policy model's, the optimizer's
    post-hook the critic parameters outside it)."""
    trainer = _small_trainer(tmp_path, tiny, tokenizer, shared, max_steps=3, num_iterations=1, steps_per_generation=3,
                             learning_rate=1e-3)
    inside, outside = trainer._critic_parameters()
    critic = inside + outside
    before = [p.detach().clone() for p in critic]
    backward_calls, clean_starts = [], []
    backward, training_step = trainer.accelerator.backward, trainer.training_step

    def counting_backward(loss, **kwargs):
        backward_calls.append(loss.detach())
        return backward(loss, **kwargs)

    def checking_training_step(*args, **kwargs):
        clean_starts.append(all(p.grad is None or not p.grad.any() for p in critic))
        return training_step(*args, **kwargs)

    trainer.accelerator.backward, trainer.training_step = counting_backward, checking_training_step
    trainer.train()
    assert len(backward_calls) == len(clean_starts) == 3  # one backward per optimizer step (no accumulation)
    assert clean_starts == [True, True, True]
    assert all(p.grad is None for p in outside)  # cleared after the last step too
    assert any(not torch.equal(a, p) for a, p in zip(before, critic))


@pytest.mark.parametrize("shape", ["token", "sequence"])
def test_vllm_importance_sampling_ratio_weights_the_policy_term_as_in_grpo(tmp_path, tiny, tokenizer, shape):
    """With vLLM, GRPO's output carries ``importance_sampling_ratio`` ((B, T) or (B, 1); TRL's correction, on by
    default) and GRPO's loss multiplies its policy term by it: so must PPO's. A ratio of 0 on rows 2-3 must give the
    loss of the same batch with those rows' advantages zeroed (their policy term gone, the value term untouched)."""
    trainer = _small_trainer(tmp_path, tiny, tokenizer, False)
    trainer.model.train()
    trainer.current_gradient_accumulation_steps = 1  # set by Trainer's loop, read by the loss normaliser
    inputs = trainer._generate_and_score_completions([trainer.train_dataset[i] for i in range(4)])
    keep = torch.tensor([1.0, 1.0, 0.0, 0.0]).unsqueeze(1)  # (B, 1)
    ratio = keep if shape == "sequence" else keep.expand_as(inputs["completion_mask"]).clone()  # (B, 1) or (B, T)

    def loss(**changes):
        with torch.no_grad():
            return float(trainer._compute_loss(trainer.model, {**inputs, **changes}))

    without = loss()
    with_ratio = loss(importance_sampling_ratio=ratio)
    rows_zeroed = loss(advantages=inputs["advantages"] * keep)
    assert loss(importance_sampling_ratio=torch.ones_like(ratio)) == without
    assert with_ratio == pytest.approx(rows_zeroed, abs=1e-7)
    assert abs(with_ratio - without) > 1e-4  # rows 2-3 did carry a policy term, so ignoring the ratio would show


def test_liger_is_refused_where_trl_would_skip_ppos_loss(tmp_path, tiny, tokenizer, monkeypatch):
    """Older TRLs computed GRPO's loss in Liger when use_liger_kernel=True, never calling ``_compute_loss``: PPO
    (whose loss replaces GRPO's) must refuse that, naming itself; DAPO's loss is TRL's, so it is unaffected."""
    from trl import GRPOTrainer

    from trl_ext import DAPOConfig, DAPOTrainer, seam

    def compute_loss_of_trl_0_19(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if self.use_liger_kernel:  # TRL 0.19's routing: the loss of GRPO, in Liger
            unwrapped_model = self.accelerator.unwrap_model(model)
            return self._forward_redirection(model, unwrapped_model, self.compute_liger_loss, unwrapped_model, inputs)
        return self._compute_loss(model, inputs)

    monkeypatch.setattr(GRPOTrainer, "compute_loss", compute_loss_of_trl_0_19)
    with pytest.raises(ValueError, match=r"PPOTrainer\._compute_loss.*PPOTrainer's own loss.*use_liger_kernel=False"):
        PPOTrainer(tiny, always_one, args=_args(tmp_path, use_liger_kernel=True),
                   train_dataset=AdditionTask().prompt_dataset(8, 0), processing_class=tokenizer)
    seam.check_loss_routing(PPOTrainer, _args(tmp_path))  # Liger off: nothing to check
    dapo_args = DAPOConfig(output_dir=str(tmp_path), use_liger_kernel=True, use_cpu=True, bf16=False, report_to=[],
                           per_device_train_batch_size=4, num_generations=2)
    seam.check_loss_routing(DAPOTrainer, dapo_args)  # TRL's own loss, wherever TRL computes it


def test_deepspeed_is_refused_at_construction(tmp_path, tiny, tokenizer, monkeypatch):
    args = _args(tmp_path)
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")  # what `accelerate launch` with a DeepSpeed config sets
    with pytest.raises(NotImplementedError, match="PPOTrainer does not run under DeepSpeed.*critic.*DDP"):
        PPOTrainer(tiny, always_one, args=args, train_dataset=AdditionTask().prompt_dataset(8, 0),
                   processing_class=tokenizer)
