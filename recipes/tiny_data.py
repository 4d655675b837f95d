"""Write the embedded addition task as the local files the tiny command configs read (recipes/configs/*-tiny.yaml).

    python recipes/tiny_data.py runs/data      # sft.jsonl, pairs.jsonl, prompts.jsonl (+ runs/tiny-base, the model)

* ``sft.jsonl``: 4000 conversational prompt/completion demonstrations (half of them with chatter, as in the pipeline);
* ``pairs.jsonl``: 2000 (prompt, chosen, rejected) rows: the right sum alone over a demonstrator's slip (chatter,
  swapped digits, a forgotten carry, a wrong digit);
* ``prompts.jsonl``: 2000 RL prompts with their ``answer`` column (``trl_ext.toy.task.oracle_correct`` checks them).

The model is the embedded tiny checkpoint, written to ``runs/tiny-base`` beside the data folder.
"""

import random
import sys
from pathlib import Path

from datasets import Dataset

from trl_ext.toy import AdditionTask, ensure_tiny_checkpoint
from trl_ext.toy.task import ERROR_KINDS

TASK = AdditionTask(low=10, high=49)  # the pipeline's default operands (recipes/configs/tiny.yaml)


def preference_pairs(n: int, seed: int) -> Dataset:
    rng = random.Random(seed)
    sloppy = AdditionTask(low=TASK.low, high=TASK.high, demo_error_rate=1.0, demo_error_kinds=ERROR_KINDS)
    rows = []
    for _ in range(n):
        a, b = rng.choice(TASK.train_pairs())
        rows.append({
            "prompt": [{"role": "user", "content": TASK.question(a, b)}],
            "chosen": [{"role": "assistant", "content": str(a + b)}],
            "rejected": [{"role": "assistant", "content": sloppy.demonstrate(a, b, rng)}],
        })
    return Dataset.from_list(rows)


def main(folder: str) -> None:
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    TASK.sft_dataset(4000, seed=0).to_json(out / "sft.jsonl")
    preference_pairs(2000, seed=1).to_json(out / "pairs.jsonl")
    TASK.prompt_dataset(2000, seed=2).to_json(out / "prompts.jsonl")
    print(ensure_tiny_checkpoint(out.parent / "tiny-base"))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "runs/data")
