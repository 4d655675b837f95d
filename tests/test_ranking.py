"""RankingRewardTrainer: the ranking losses on hand-computed numbers, then the trainer on the tiny local model."""

import math

import pytest
import torch
from datasets import Dataset
from transformers import AutoModelForSequenceClassification
from trl import ModelConfig, RewardConfig, RewardTrainer, get_peft_config

from trl_ext import RankingRewardConfig, RankingRewardTrainer
from trl_ext.models import load_sequence_classifier, match_trainable_dtype_to_compute
from trl_ext.ranking import (
    DataCollatorForRanking, center_rewards_penalty, pair_metrics, pairs_from_tiers, plackett_luce_loss,
    ranking_pairwise_loss,
)

# ---- pure math --------------------------------------------------------------------------------------------------------
# Batch of two rankings: row 0 has K=4, rewards [1.0, 0.0, 2.0, 0.5], tiers [[2], [0, 3], [1]] (0 and 3 tied);
# row 1 has K=2, rewards [0.0, 0.0], tiers [[0], [1]].
REWARDS = torch.tensor([1.0, 0.0, 2.0, 0.5, 0.0, 0.0])
GROUP = torch.tensor([0, 0, 0, 0, 1, 1])
TIER = torch.tensor([1, 2, 0, 1, 0, 1])


def test_pairs_from_tiers_skips_ties():
    assert pairs_from_tiers([[2], [0, 3], [1]]) == [(2, 0), (2, 3), (2, 1), (0, 1), (3, 1)]
    assert len(pairs_from_tiers([[0], [1], [2], [3]])) == 6  # C(4, 2) without ties


def test_pairwise_loss_weights_each_ranking_equally():
    # row 0's pairs and margins: (2,0) 1.0, (2,3) 1.5, (2,1) 2.0, (0,1) 1.0, (3,1) 0.5; -log sigmoid(m) = log(1+e^-m):
    # 0.313262, 0.201413, 0.126928, 0.313262, 0.474077 -> mean 0.285788. Row 0: one pair, margin 0 -> log 2 = 0.693147.
    loss = ranking_pairwise_loss(REWARDS, GROUP, TIER)
    assert loss.item() == pytest.approx((0.285788 + 0.693147) / 2, abs=1e-5)  # 0.489468
    # the pairs shuffled together (TRL's pairwise rows) would weigh row 0 five times: (1.428942 + 0.693147) / 6
    assert abs(loss.item() - 0.353681) > 0.1


def test_center_penalty_and_pair_metrics():
    # (r_w + r_l)^2 over row 0's pairs: 9, 6.25, 4, 1, 0.25 -> mean 4.1; row 1: 0. Mean over rows: 2.05.
    assert center_rewards_penalty(REWARDS, GROUP, TIER).item() == pytest.approx(2.05)
    metrics = pair_metrics(REWARDS, GROUP, TIER)
    assert metrics["accuracy"].item() == pytest.approx(5 / 6)  # row 1's tie (margin 0) is not a correct order
    assert metrics["margin"].item() == pytest.approx((1 + 1.5 + 2 + 1 + 0.5 + 0) / 6)


def test_plackett_luce_on_a_total_order_and_with_ties():
    # [[0], [1], [2]] with r = [2, 1, 0]: -(2 - log(e^2+e^1+e^0)) = 0.407606, -(1 - log(e^1+e^0)) = 0.313262; mean 0.360434
    one = plackett_luce_loss(torch.tensor([2.0, 1.0, 0.0]), torch.tensor([0, 0, 0]), torch.tensor([0, 1, 2]))
    assert one.item() == pytest.approx(0.360434, abs=1e-5)
    # row 0 of the batch: item 2 chosen from {0,1,2,3}: log(e^2+e^1+e^0+e^.5) - 2 = 0.546006; items 0 and 3 (tied) each
    # from {0,1,3}: log(e^1+e^.5+e^0) = 1.680270, minus 1 and minus 0.5 -> 0.680270, 1.180270; mean 0.802182.
    # row 1 (K=2): log(1 + e^0) = 0.693147, the pairwise loss. Batch: (0.802182 + 0.693147) / 2.
    assert plackett_luce_loss(REWARDS, GROUP, TIER).item() == pytest.approx((0.802182 + 0.693147) / 2, abs=1e-5)


def test_plackett_luce_with_two_completions_is_the_pairwise_loss():
    r, g, t = torch.tensor([0.3, -1.2]), torch.tensor([0, 0]), torch.tensor([0, 1])
    assert plackett_luce_loss(r, g, t).item() == pytest.approx(math.log1p(math.exp(-1.5)), abs=1e-6)


def test_collator_lays_rows_out_row_major():
    batch = DataCollatorForRanking(pad_token_id=0)(
        [
            {"completion_ids": [[5, 6], [7], [8, 9, 9]], "ranking": [[1], [0, 2]]},
            {"completion_ids": [[3], [4, 4]], "ranking": [[1], [0]]},
        ]
    )
    assert batch["input_ids"].tolist() == [[5, 6, 0], [7, 0, 0], [8, 9, 9], [3, 0, 0], [4, 4, 0]]
    assert batch["attention_mask"].sum(1).tolist() == [2, 1, 3, 1, 2]
    assert batch["group"].tolist() == [0, 0, 0, 1, 1]
    assert batch["tier"].tolist() == [1, 0, 1, 1, 0]


# ---- the trainer on the tiny model --------------------------------------------------------------------------------
def _conv(text, role="assistant"):
    return [{"role": role, "content": text}]


def rankings_dataset(n_rows=12):
    """Rows with K = 2, 3, 4 in turn; the right sum is ranked first, '<n> I think' second, wrong sums last."""
    rows = []
    for i in range(n_rows):
        a, b = 10 + i, 20 + i
        k = 2 + i % 3
        answers = [str(a + b), f"{a + b} I think", str(a + b + 1), str(a + b - 7)][:k]
        tiers = [[0], [1], list(range(2, k))] if k > 2 else [[0], [1]]
        rows.append({"prompt": _conv(f"{a}+{b}=", "user"), "completions": [_conv(x) for x in answers], "ranking": tiers})
    return Dataset.from_list(rows)


def _args(tmp_path, **kw):
    base = dict(
        output_dir=str(tmp_path), per_device_train_batch_size=4, learning_rate=1e-3, report_to=[], use_cpu=True,
        bf16=False, save_strategy="no", logging_steps=1, gradient_checkpointing=False, max_length=32,
    )
    return RankingRewardConfig(**{**base, **kw})


def _rm(ckpt):
    return AutoModelForSequenceClassification.from_pretrained(ckpt, num_labels=1)


def test_one_forward_pass_per_completion(tmp_path, ckpt, tokenizer):
    ds = rankings_dataset(12)  # K = 2, 3, 4, ... : sum K = 4 * (2 + 3 + 4) = 36; 2 x pairs would be 2 * 4 * (1+3+5)
    trainer = RankingRewardTrainer(_rm(ckpt), _args(tmp_path, num_train_epochs=1), train_dataset=ds, processing_class=tokenizer)
    sizes = []
    trainer.model.register_forward_pre_hook(lambda m, a, kw: sizes.append(kw["input_ids"].shape[0]), with_kwargs=True)
    trainer.train()
    assert len(sizes) == 3  # one forward per optimizer step (12 rows / 4)
    assert sum(sizes) == 36


def test_loss_on_a_fixed_batch_is_the_hand_computation(tmp_path, ckpt, tokenizer):
    ds = rankings_dataset(3)  # rows with K = 2, 3, 4
    trainer = RankingRewardTrainer(
        _rm(ckpt), _args(tmp_path, center_rewards_coefficient=0.01), train_dataset=ds, processing_class=tokenizer
    )
    rows = [trainer.train_dataset[i] for i in range(3)]
    model = trainer.model.eval()
    with torch.no_grad():  # each sequence alone, unpadded: r[row][k]
        r = [[model(input_ids=torch.tensor([ids])).logits.item() for ids in row["completion_ids"]] for row in rows]
        batch = trainer.data_collator(rows)
        loss = trainer.compute_loss(model, batch).item()
    nll = lambda w, l: math.log1p(math.exp(-(w - l)))  # -log sigmoid(r_w - r_l)
    # row 0 [[0],[1]]: one pair. row 1 [[0],[1],[2]]: 3 pairs. row 2 [[0],[1],[2,3]]: 5 pairs (2 and 3 tied)
    pairs = [[(0, 1)], [(0, 1), (0, 2), (1, 2)], [(0, 1), (0, 2), (0, 3), (1, 2), (1, 3)]]
    ranking = sum(sum(nll(r[b][w], r[b][l]) for w, l in p) / len(p) for b, p in enumerate(pairs)) / 3
    center = sum(sum((r[b][w] + r[b][l]) ** 2 for w, l in p) / len(p) for b, p in enumerate(pairs)) / 3
    assert loss == pytest.approx(ranking + 0.01 * center, abs=1e-5)


def test_plackett_luce_trainer_loss_is_the_hand_computation(tmp_path, ckpt, tokenizer):
    ds = rankings_dataset(3).select([2])  # K = 4, tiers [[0], [1], [2, 3]]
    trainer = RankingRewardTrainer(_rm(ckpt), _args(tmp_path, loss_type="plackett_luce"), train_dataset=ds, processing_class=tokenizer)
    row = trainer.train_dataset[0]
    model = trainer.model.eval()
    with torch.no_grad():
        r = [model(input_ids=torch.tensor([ids])).logits.item() for ids in row["completion_ids"]]
        loss = trainer.compute_loss(model, trainer.data_collator([row])).item()
    e = [math.exp(x) for x in r]
    # 0 chosen from {0,1,2,3}; 1 from {1,2,3}; the last tier chooses nothing
    expected = -((r[0] - math.log(sum(e))) + (r[1] - math.log(e[1] + e[2] + e[3]))) / 2
    assert loss == pytest.approx(expected, abs=1e-5)


def test_two_completions_match_trl_reward_trainer(tmp_path, ckpt, tokenizer):
    """A ranking of K = 2 is a pair: the same loss and accuracy as TRL's RewardTrainer on (chosen, rejected)."""
    pairs = Dataset.from_list(
        [{"prompt": _conv(f"{a}+3=", "user"), "chosen": _conv(str(a + 3)), "rejected": _conv(f"{a} I think")} for a in range(10, 14)]
    )
    ranked = Dataset.from_list([{"prompt": p["prompt"], "completions": [p["chosen"], p["rejected"]], "ranking": [[0], [1]]} for p in pairs])
    common = dict(output_dir=str(tmp_path), report_to=[], use_cpu=True, bf16=False, center_rewards_coefficient=0.1)
    trl_trainer = RewardTrainer(_rm(ckpt), RewardConfig(**common), train_dataset=pairs, processing_class=tokenizer)
    ours = RankingRewardTrainer(_rm(ckpt), RewardConfig(**common), train_dataset=ranked, processing_class=tokenizer)
    with torch.no_grad():
        a = trl_trainer.compute_loss(trl_trainer.model.eval(), trl_trainer.data_collator(list(trl_trainer.train_dataset)))
        b = ours.compute_loss(ours.model.eval(), ours.data_collator(list(ours.train_dataset)))
    assert b.item() == pytest.approx(a.item(), abs=1e-5)
    assert ours._metrics["eval"]["accuracy"] == trl_trainer._metrics["eval"]["accuracy"]


def test_plain_text_completions_get_eos_as_in_trl(tmp_path, ckpt, tokenizer):
    ds = Dataset.from_list([{"prompt": "1+1=", "completions": ["2", "3" + tokenizer.eos_token], "ranking": [[0], [1]]}])
    trainer = RankingRewardTrainer(_rm(ckpt), _args(tmp_path), train_dataset=ds, processing_class=tokenizer)
    ids = trainer.train_dataset[0]["completion_ids"]
    assert ids == [tokenizer("1+1=2" + tokenizer.eos_token)["input_ids"], tokenizer("1+1=3" + tokenizer.eos_token)["input_ids"]]


def _moved(before, model):
    after = dict(model.named_parameters())
    return [n for n, p in before.items() if not torch.equal(after[n], p)]


def test_full_training_moves_parameters_and_saves(tmp_path, ckpt, tokenizer):
    trainer = RankingRewardTrainer(_rm(ckpt), _args(tmp_path, max_steps=4), train_dataset=rankings_dataset(), processing_class=tokenizer)
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train()
    moved = _moved(before, trainer.model)
    assert "score.weight" in moved and any("layers.0" in n for n in moved)
    logged = trainer.state.log_history[0]
    assert {"loss", "accuracy", "margin", "min_reward", "mean_reward", "max_reward", "num_tokens"} <= set(logged)
    trainer.save_model(str(tmp_path / "rm"))
    assert (tmp_path / "rm" / "model.safetensors").exists()


def test_lora(tmp_path, ckpt, tokenizer):
    from peft import LoraConfig

    peft_config = LoraConfig(task_type="SEQ_CLS", r=4, lora_alpha=8, target_modules="all-linear")
    trainer = RankingRewardTrainer(
        _rm(ckpt), _args(tmp_path, max_steps=3), train_dataset=rankings_dataset(), processing_class=tokenizer,
        peft_config=peft_config,
    )
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train()
    moved = _moved(before, trainer.model)
    assert any("lora_B" in n for n in moved) and any("score" in n for n in moved)
    assert all("lora_" in n or "score" in n for n in moved)  # the base stayed frozen


def test_4bit_lora_on_this_cpu(tmp_path, ckpt, tokenizer):
    import bitsandbytes as bnb

    model_args = ModelConfig(
        model_name_or_path=str(ckpt), load_in_4bit=True, use_peft=True, lora_r=8, lora_target_modules="all-linear"
    )
    model = load_sequence_classifier(model_args, num_labels=1)  # switches off the AVX512-BF16 repack
    peft_config = get_peft_config(model_args)
    peft_config.task_type = "SEQ_CLS"
    args = _args(tmp_path, max_steps=3)
    trainer = RankingRewardTrainer(
        model, args, train_dataset=rankings_dataset(), eval_dataset=rankings_dataset(3), processing_class=tokenizer,
        peft_config=peft_config,
    )
    match_trainable_dtype_to_compute(trainer.model, args.bf16)  # TRL casts LoRA to bf16; fp32 here (no autocast)
    assert all(m.support_avx512bf16_for_cpu is False for m in trainer.model.modules() if isinstance(m, bnb.nn.Linear4bit))
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.evaluate()  # an eval forward before training is what breaks the repacking path
    trainer.train()
    moved = _moved(before, trainer.model)
    assert any("lora_B" in n for n in moved)
    assert all(torch.isfinite(torch.tensor(h["loss"])) for h in trainer.state.log_history if "loss" in h)


@pytest.mark.parametrize(
    "completions, ranking, message",
    [
        (["a", "b", "c"], [[0], [3], [1, 2]], "row 1: `ranking` .* index 3, out of range for K=3"),
        (["a", "b", "c"], [[0], [1, 0], [2]], "row 1: .* lists completion 0 twice"),
        (["a", "b", "c"], [[0], [1]], r"row 1: .* completion\(s\) \[2\] in no tier"),
        (["a"], [[0]], "row 1: `completions` has K=1 answers; a ranking needs K >= 2"),
        (["a", "b"], [[0], []], "row 1: .* empty tier"),
    ],
)
def test_bad_rankings_fail_at_construction_naming_the_row(tmp_path, ckpt, tokenizer, completions, ranking, message):
    good = {"prompt": "1+1=", "completions": ["2", "3"], "ranking": [[0], [1]]}
    ds = Dataset.from_list([good, {"prompt": "2+2=", "completions": completions, "ranking": ranking}])
    with pytest.raises(ValueError, match=message):
        RankingRewardTrainer(_rm(ckpt), _args(tmp_path), train_dataset=ds, processing_class=tokenizer)


def test_all_tied_rows_are_skipped_with_one_warning_that_counts_them(tmp_path, ckpt, tokenizer, caplog):
    ranked = {"prompt": "1+1=", "completions": ["2", "3"], "ranking": [[0], [1]]}
    tied = {"prompt": "2+2=", "completions": ["4", "four", "5", "6"], "ranking": [[0, 1, 2, 3]]}
    ds = Dataset.from_list([tied, ranked, tied, ranked, ranked])
    with caplog.at_level("WARNING", logger="trl_ext.ranking"):
        trainer = RankingRewardTrainer(_rm(ckpt), _args(tmp_path, max_steps=1), train_dataset=ds,
                                       processing_class=tokenizer)
    warnings = [r.getMessage() for r in caplog.records if "tied" in r.getMessage()]
    assert warnings == ["train dataset: 2 of 5 rankings have all answers tied (a single tier) and imply no pair; "
                        "they were skipped."]
    assert len(trainer.train_dataset) == 3 and all(len(r) == 2 for r in trainer.train_dataset["ranking"])
    trainer.train()  # every batch implies pairs: the loss is finite
    assert all(math.isfinite(h["loss"]) for h in trainer.state.log_history if "loss" in h)
    with pytest.raises(ValueError, match=r"train dataset: all 2 rankings have a single tier .* implies no pair"):
        RankingRewardTrainer(_rm(ckpt), _args(tmp_path), train_dataset=Dataset.from_list([tied, tied]),
                             processing_class=tokenizer)


def test_a_flat_ranking_is_not_tiers(tmp_path, ckpt, tokenizer):
    ds = Dataset.from_list([{"prompt": "1+1=", "completions": ["2", "3"], "ranking": [0, 1]}])
    with pytest.raises(ValueError, match=r"row 0: `ranking` must be a list of tiers .* got \[0, 1\]"):
        RankingRewardTrainer(_rm(ckpt), _args(tmp_path), train_dataset=ds, processing_class=tokenizer)


def test_missing_columns_are_named(tmp_path, ckpt, tokenizer):
    ds = Dataset.from_list([{"prompt": "1+1=", "chosen": "2", "rejected": "3"}])
    with pytest.raises(ValueError, match="needs `completions`"):
        RankingRewardTrainer(_rm(ckpt), _args(tmp_path), train_dataset=ds, processing_class=tokenizer)


def test_unknown_loss_type():
    with pytest.raises(ValueError, match="loss_type='listnet' is unknown"):
        RankingRewardConfig(output_dir="/tmp/x", loss_type="listnet", use_cpu=True)


def test_mixed_plain_and_conversational_row_is_named(tmp_path, ckpt, tokenizer):
    ds = Dataset.from_list([{"prompt": "1+1=", "completions": [_conv("2"), _conv("3")], "ranking": [[0], [1]]}])
    with pytest.raises(ValueError, match="row 0: `prompt` and `completions` must be all plain strings or all conv"):
        RankingRewardTrainer(_rm(ckpt), _args(tmp_path), train_dataset=ds, processing_class=tokenizer)


def test_rows_longer_than_max_length_are_dropped_whole(tmp_path, ckpt, tokenizer):
    ds = Dataset.from_list([
        {"prompt": "1+1=", "completions": ["2", "3"], "ranking": [[0], [1]]},
        {"prompt": "1+1=", "completions": ["2", "3" * 40], "ranking": [[0], [1]]},  # 45 tokens > max_length 32
    ])
    trainer = RankingRewardTrainer(_rm(ckpt), _args(tmp_path), train_dataset=ds, processing_class=tokenizer)
    assert len(trainer.train_dataset) == 1 and len(trainer.train_dataset[0]["completion_ids"]) == 2
