"""PPOTrainer: reward/KL math by hand, config and constructor errors, and short seeded runs on the tiny model."""

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForSequenceClassification, AutoTokenizer
from trl import GRPOConfig, ModelConfig

from trl_ext import PPOConfig, PPOTrainer
from trl_ext.models import load_causal_lm
from trl_ext.ppo import AdaptiveKLController, token_rewards
from trl_ext.toy import AdditionTask, build_tokenizer, ensure_tiny_checkpoint, oracle_correct
from trl_ext.toy.task import completion_text


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
        seed=0,
    )
    return PPOConfig(**{**defaults, **kw})


def starts_with_digit(prompts, completions, **kwargs):
    """1 when the answer starts with a digit: about 10/101 of a random character model's first tokens."""
    return [1.0 if completion_text(c)[:1].isdigit() else 0.0 for c in completions]


def always_one(prompts, completions, **kwargs):
    return [1.0] * len(completions)


# ---- pure math ----------------------------------------------------------------------------------------------------------
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


# ---- configuration errors -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("field,value", [("gamma", 1.5), ("gamma", -0.1), ("lam", 1.01), ("lam", -1.0)])
def test_config_rejects_invalid_gae_parameters(tmp_path, field, value):
    with pytest.raises(ValueError, match=rf"PPOConfig\.{field}="):
        _args(tmp_path, **{field: value})


def test_config_rejects_adaptive_kl_without_coefficient(tmp_path):
    with pytest.raises(ValueError, match="kl_target"):
        _args(tmp_path, kl_coef=0.0, kl_target=6.0)


def test_one_generation_per_prompt_is_allowed(tmp_path):
    args = _args(tmp_path, num_generations=1, per_device_train_batch_size=3)
    assert args.num_generations == 1 and type(args.num_generations) is int
    with pytest.raises(ValueError):  # GRPO itself still refuses it: only PPO has a critic for a baseline
        GRPOConfig(output_dir=str(tmp_path), num_generations=1, report_to=[], use_cpu=True)


# ---- constructor errors -------------------------------------------------------------------------------------------------
def test_missing_reward_model_is_a_clear_error(tmp_path, tiny, tokenizer):
    for missing in (None, []):
        with pytest.raises(ValueError, match="PPOTrainer needs a reward"):
            PPOTrainer(tiny, missing, args=_args(tmp_path), train_dataset=AdditionTask().prompt_dataset(8, 0),
                       processing_class=tokenizer)


@pytest.fixture(scope="module")
def foreign_critic(tiny, tmp_path_factory):
    """A sequence-classification checkpoint whose tokenizer has one extra token (so its ids differ from the policy's)."""
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


# ---- short seeded runs --------------------------------------------------------------------------------------------------
@torch.no_grad()
def _p_first_digit(model, tokenizer, prompts):
    """Expected `starts_with_digit` reward at temperature 1: probability mass of the digits as first answer token."""
    digits = [tokenizer.convert_tokens_to_ids(c) for c in "0123456789"]
    texts = [tokenizer.apply_chat_template(p, add_generation_prompt=True, tokenize=False) for p in prompts]
    batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
    logits = model(**batch).logits[:, -1]
    return logits.softmax(-1)[:, digits].sum(-1).mean().item()


def test_ppo_learns_the_reward(tmp_path, tiny, tokenizer):
    """PPO maximises expected reward; for this reward that is P(first token is a digit), ~0.11 for the random model."""
    task = AdditionTask()
    args = _args(tmp_path, per_device_train_batch_size=16, num_iterations=2, max_completion_length=2, max_steps=20,
                 learning_rate=3e-3, lr_scheduler_type="constant", kl_coef=0.01)
    trainer = PPOTrainer(tiny, starts_with_digit, args=args, train_dataset=task.prompt_dataset(400, seed=0),
                         processing_class=tokenizer)
    held_out = task.eval_dataset()["prompt"][:64]
    before = _p_first_digit(trainer.model, tokenizer, held_out)
    trainer.train()
    after = _p_first_digit(trainer.model, tokenizer, held_out)
    assert before < 0.15
    assert after > before + 0.2, (before, after)
    logs = trainer.state.log_history
    for key in ("ppo/value_loss", "ppo/policy_loss", "ppo/approx_kl", "ppo/explained_variance", "kl",
                "clip_ratio/region_mean", "ppo/value_clip_ratio", "entropy"):
        assert any(key in h for h in logs), key


def test_value_loss_falls(tmp_path, tiny, tokenizer):
    """Reward 1 for every completion, no KL, λ = 1: every return is exactly 1, so the critic regresses its values to 1."""
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
    args = _args(tmp_path, shared_base=True, num_iterations=2, max_steps=2, learning_rate=1e-2)
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
