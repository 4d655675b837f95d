"""The reward-model stage: a sequence classifier from the SFT model, on the labeller's whole rankings
(RankingRewardTrainer) or on the pairs (TRL's RewardTrainer)."""

from __future__ import annotations

from pathlib import Path

from datasets import Dataset, load_dataset
from transformers import AutoModelForSequenceClassification, set_seed
from trl import ModelConfig, RewardConfig, RewardTrainer, get_peft_config

from ..assembly.trainers import build_trainer
from ..models import load_sequence_classifier, load_tokenizer
from ..ranking import RankingRewardConfig, RankingRewardTrainer
from .bookkeeping import save_model, train_resumable
from .config import PipelineConfig, stage_args, stage_defaults, uses_embedded_model
from .labels import num_test_prompts


def rm_classes(cfg: PipelineConfig) -> tuple[type, type]:
    return (RankingRewardConfig, RankingRewardTrainer) if cfg.rm_loss == "ranking" else (RewardConfig, RewardTrainer)


def _train_rankings(cfg: PipelineConfig, labels: Path) -> Dataset:
    """The labeller's training rankings as RankingRewardTrainer rows; all-tied rankings (no pair) are left out."""
    ranked = load_dataset("json", data_files=str(labels / "rankings.jsonl"), split="train")
    ranked = ranked.select(range(num_test_prompts(cfg, len(ranked)), len(ranked))).filter(lambda r: len(r["ranking"]) > 1)
    return ranked.map(
        lambda r: {"completions": [[{"role": "assistant", "content": a}] for a in r["answers"]]},
        remove_columns=["answers"],
    )


def run_rm(cfg: PipelineConfig, model_args: ModelConfig, sft_model: str, labels: Path, folder: Path, callbacks=None) -> dict:
    """Train a sequence-classification reward model from the SFT model on the labels.

    ``rm_loss: ranking`` trains RankingRewardTrainer on the labeller's whole rankings; ``pairwise`` trains TRL's
    RewardTrainer on the pairs in ``train.jsonl``. Both are tested on the held-out pairs of ``test.jsonl``, each pair
    given to the ranking trainer as a ranking of K = 2 (one pair per row, so the same batches and the same accuracy).
    """
    set_seed(cfg.seed)
    tokenizer = load_tokenizer(model_args, sft_model, cfg.trust_remote_code)
    model = load_sequence_classifier(model_args, sft_model, num_labels=1, trust_remote_code=cfg.trust_remote_code)
    test = load_dataset("json", data_files=str(labels / "test.jsonl"), split="train")
    config_cls, trainer_cls = rm_classes(cfg)
    if cfg.rm_loss == "ranking":
        train = _train_rankings(cfg, labels)
        test = test.map(
            lambda p: {"completions": [p["chosen"], p["rejected"]], "ranking": [[0], [1]]},
            remove_columns=["chosen", "rejected"],
        )
    else:
        train = load_dataset("json", data_files=str(labels / "train.jsonl"), split="train")
    embedded = uses_embedded_model(model_args)
    args = stage_args(config_cls, stage_defaults("rm", embedded=embedded), cfg.rm, folder / "checkpoints", cfg.seed,
                      "rm", embedded=embedded)
    peft_config = get_peft_config(model_args)
    if peft_config is not None:
        peft_config.task_type = "SEQ_CLS"  # keeps the score head trainable (modules_to_save)
    trainer = build_trainer(
        trainer_cls, model=model, args=args, train_dataset=train, eval_dataset=test, processing_class=tokenizer,
        peft_config=peft_config,
    )
    metrics = train_resumable(trainer, folder, callbacks)
    evaluation = trainer.evaluate()
    metrics["test_pairwise_accuracy"] = evaluation["eval_accuracy"]
    metrics["test_pairs"] = len(test)
    metrics["rm_loss"] = cfg.rm_loss
    metrics["model"] = save_model(
        trainer, folder, sft_model, model_args, AutoModelForSequenceClassification, tokenizer, num_labels=1,
        trust_remote_code=cfg.trust_remote_code,
    )
    return metrics
