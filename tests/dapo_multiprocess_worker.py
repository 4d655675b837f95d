"""Launched by test_dapo_multiprocess.py as `torchrun --nproc_per_node 2 dapo_multiprocess_worker.py OUT_DIR [MODE]`.

Each rank trains DAPOTrainer for a few steps and writes what its loss saw (prompts, advantages, batch sizes), the
dynamic-sampling metrics and a parameter checksum to OUT_DIR/rank{r}.json for the test to compare. With ``cheaper``
it turns on prompt skipping and sized refills, on 12 prompts (so refills revisit them) for 5 steps; with ``stream``
the 12 prompts come as a streaming dataset (``to_iterable_dataset``), and each rank also writes the refill prompts it
drew.
"""

import json
import os
import sys

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from trl_ext import DAPOConfig, DAPOTrainer
from trl_ext.toy import AdditionTask, ensure_tiny_checkpoint


def informative_if_even(prompts, completions, answer, **kwargs):
    # rows arrive in group order; a group may straddle the two ranks, each half still alternates 0,1
    return [float(i % 2) if int(a) % 2 == 0 else 0.0 for i, a in enumerate(answer)]


def main(out_dir, mode=None):
    cheaper, stream = mode == "cheaper", mode == "stream"
    rank = int(os.environ["RANK"])
    ckpt = ensure_tiny_checkpoint()
    tokenizer = AutoTokenizer.from_pretrained(ckpt)
    args = DAPOConfig(
        output_dir=os.path.join(out_dir, "run"), per_device_train_batch_size=6, num_generations=4,
        max_completion_length=6, max_steps=5 if mode else 3, learning_rate=1e-3, logging_steps=1, report_to="none",
        save_strategy="no", seed=0, use_cpu=True, bf16=False, disable_tqdm=True, overlong_buffer_length=2,
        dynamic_sampling_signal="informative_if_even",
        **(dict(dynamic_sampling_skip_probability=0.6, dynamic_sampling_sized_refill=True) if cheaper
           else {}),
    )
    data = AdditionTask().prompt_dataset(12 if mode else 48, seed=0)
    trainer = DAPOTrainer(
        AutoModelForCausalLM.from_pretrained(ckpt), [informative_if_even], args=args,
        train_dataset=data.to_iterable_dataset() if stream else data, processing_class=tokenizer,
    )
    refills, draw = [], trainer._draw_refill_prompts
    trainer._draw_refill_prompts = lambda n, record: [refills.append(r["prompt"]) or r for r in draw(n, record)]
    seen, original = [], trainer._prepare_inputs

    def spy(batch):
        out = original(batch)
        seen.append({
            "prompts": tokenizer.batch_decode(out["prompt_ids"], skip_special_tokens=True),
            "advantages": out["advantages"].tolist(),
            "num_items_in_batch": float(out["num_items_in_batch"]),
        })
        return out

    trainer._prepare_inputs = spy
    trainer.train()
    metrics = {k: [h[k] for h in trainer.state.log_history if k in h]
               for k in ("dynamic_sampling/generated_groups", "dynamic_sampling/kept_groups",
                         "dynamic_sampling/surplus_carried", "dynamic_sampling/refill_rounds",
                         "dynamic_sampling/skipped_prompts")}
    checksum = float(sum(p.detach().double().sum() for p in trainer.model.parameters()))
    with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
        json.dump({"world_size": trainer.accelerator.num_processes, "seen": seen, "metrics": metrics,
                   "totals": trainer.dynamic_sampling_totals, "checksum": checksum,
                   "history": trainer._ds_history.streaks if cheaper else None, "refills": refills,
                   "prompts": list(data["prompt"])}, f)
    trainer.accelerator.wait_for_everyone()  # leave gloo together: a rank exiting mid-teardown aborts the other
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    torch.set_num_threads(1)
    main(sys.argv[1], mode=sys.argv[2] if len(sys.argv) > 2 else None)
