"""Trains DAPO (dynamic sampling) with GoldRewardCallback and report_to=[tensorboard, trackio], then reads trackio back.

Run by tests/test_callbacks.py in a fresh process, because trackio fixes its storage folder (TRACKIO_DIR, set by the
test to a tmp folder) when it is first imported. trackio logs locally: no Space id, HF_HUB_OFFLINE=1, no server.
Usage: python tests/report_to_worker.py OUT_DIR  (writes OUT_DIR/tb/ and OUT_DIR/trackio_read_back.json)
"""

import json
import os
import sys
from pathlib import Path

from transformers import AutoModelForCausalLM, AutoTokenizer

from trl_ext import DAPOConfig, DAPOTrainer, GoldRewardCallback
from trl_ext.toy import AdditionTask, ensure_tiny_checkpoint


def length_reward(completions, **kwargs):
    return [float(len(c[0]["content"])) for c in completions]


def answer_value(completions, answer, **kwargs):
    return [float(a) for a in answer]


def main(out: Path) -> None:
    os.environ["TENSORBOARD_LOGGING_DIR"] = str(out / "tb")
    ckpt = ensure_tiny_checkpoint()
    task = AdditionTask()
    args = DAPOConfig(
        output_dir=str(out / "run"), per_device_train_batch_size=8, num_generations=4, max_completion_length=4,
        max_steps=2, learning_rate=1e-3, logging_steps=1, save_strategy="no", seed=0, use_cpu=True, bf16=False,
        gradient_checkpointing=False, disable_tqdm=True, dynamic_sampling_on_cap="train_on_kept",
        report_to=["tensorboard", "trackio"], project="gold-callback-test", run_name="dapo",
    )
    callback = GoldRewardCallback(gold=answer_value, eval_dataset=task.eval_dataset(), eval_steps=1, num_prompts=4)
    trainer = DAPOTrainer(
        model=AutoModelForCausalLM.from_pretrained(ckpt), reward_funcs=[length_reward], args=args,
        train_dataset=task.prompt_dataset(32, seed=0), processing_class=AutoTokenizer.from_pretrained(ckpt),
        callbacks=[callback],
    )
    trainer.train()

    from trackio.sqlite_storage import SQLiteStorage

    rows = SQLiteStorage.get_logs("gold-callback-test", "dapo")
    gold = [r for r in rows if "train/gold/reward" in r]
    kept = [r for r in rows if "train/dynamic_sampling/kept_groups" in r]
    db = SQLiteStorage.get_project_db_path("gold-callback-test")
    (out / "trackio_read_back.json").write_text(json.dumps({
        "gold_steps": [r["train/global_step"] for r in gold],
        "gold_values": [r["train/gold/reward"] for r in gold],
        "dynamic_sampling_steps": [r["train/global_step"] for r in kept],
        "db_under_tmp": Path(db).resolve().is_relative_to(Path(os.environ["TRACKIO_DIR"]).resolve()),
    }))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
