"""The pieces of one dynamic-sampling step that need no trainer (DAPO Section 3.2; the trainer's
``_dynamic_sampling_step``): a round's output gathered from all ranks, what the rounds
found, the cap's message, the masked filler, the surplus's behaviour log-probs, the step's running totals and
metrics, and the budget of generated completions (``max_generated_completions``)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from transformers import TrainerCallback

from .. import seam
from ..groups import PAD_RULES, RECOMPUTED_KEYS, GroupPool, concat_batches, select_rows

CAP_FIXES = ("raise dynamic_sampling_max_refill_rounds, use prompts the model solves sometimes but not always, "
             "pick another dynamic_sampling_signal, or check that the reward function returns numbers")


def gather_output(output: dict, accelerator, pad_token_id: int) -> dict:
    """All ranks' rows of one GRPOTrainer output, in rank order (TRL's global layout), padded to one width."""
    unknown = [k for k in output if k not in PAD_RULES and k not in RECOMPUTED_KEYS]
    if unknown:
        raise ValueError(
            f"dynamic sampling cannot pool the generation outputs {unknown} (only text batches are supported); "
            "set dynamic_sampling=False for this data."
        )
    gathered = {}
    for key, value in output.items():
        if key in RECOMPUTED_KEYS:
            continue
        side, pad = PAD_RULES[key]
        pad = pad_token_id if pad == "pad" else pad
        if value.dim() >= 2:  # (B, T) -> (B, T_max over ranks)
            value = accelerator.pad_across_processes(value, dim=1, pad_index=pad, pad_first=side == "left")
        gathered[key] = accelerator.gather(value)  # (B * num_processes, ...)
    return gathered


@dataclass
class StepRecord:
    """What one dynamic-sampling step generated and kept, round by round (groups count all ranks together)."""

    carried_in: int  # groups already in the pool when the step began (surplus of earlier steps)
    dropped: int  # stale surplus thrown away when the step began
    rounds: int = 0
    generated: int = 0
    informative: int = 0  # kept: signal varies and advantages move
    zero_advantage: int = 0  # signal varies, advantages all zero (shaping cancels it)
    padded: int = 0  # masked filler groups added at the cap
    skipped: int = 0  # prompts skipped before generating (dynamic_sampling_skip_probability)
    budget_spent: bool = False  # a sized refill found no budget left for one more group per rank
    rejected: list[dict] = field(default_factory=list)  # each round's uninformative rows, the filler's source
    reasons: list[str] = field(default_factory=list)  # why groups were rejected, for the cap's message

    def add_round(self, rejected: dict, keep: torch.Tensor, zero_advantage: torch.Tensor, uninformative: str,
                  signal_name: str) -> None:
        """One round: its rejected rows, the kept groups (G-groups,), and the groups whose advantages are all zero."""
        self.rejected.append(rejected)
        self.reasons.append(uninformative)
        if zero_advantage.any():
            self.reasons.append(f"{int(zero_advantage.sum())} whose {signal_name!r} varies but whose advantages are "
                                "all zero (the overlong penalty or another term cancels it)")
        self.rounds += 1
        self.generated += keep.numel()
        self.informative += int(keep.sum())
        self.zero_advantage += int(zero_advantage.sum())

    def cap_message(self, found: int, need: int, cap: str) -> str:
        """Why the step stopped short; ``cap`` describes the refill rounds allowed."""
        reasons = "; ".join(r for r in self.reasons if r != "none")
        return (
            f"Dynamic sampling found {found} informative groups of the {need} this step needs after "
            f"{self.rounds} generation rounds (the cap is 1 + {cap}). Of the {self.generated} groups generated, "
            f"{self.generated - self.informative} carried no signal: {reasons}."
        )


def masked_filler(rejected: list[dict], num_groups: int, num_generations: int, pad_token_id: int) -> dict:
    """``num_groups`` groups of real rows with their loss masked out: they keep the batch size, add no gradient."""
    source = concat_batches(rejected, pad_token_id)  # (N_rejected, ...) padded to one width
    G = num_generations
    available = source["completion_ids"].size(0) // G
    index = torch.arange(num_groups * G) % (available * G)  # (num_groups * G,) cycling through the rejected rows
    filler = select_rows(source, index)
    filler["completion_mask"] = torch.zeros_like(filler["completion_mask"])
    filler["advantages"] = torch.zeros_like(filler["advantages"])
    return filler


def store_behaviour_logps(pool: GroupPool, policy_logps) -> None:
    """Surplus is trained on later, by a changed policy: record the log-probs of the policy that sampled it, (B, T)
    per chunk, from ``policy_logps(batch)`` (the current policy), wherever GRPOTrainer's output did not bring them
    (whether it did is read from the output, :func:`trl_ext.seam.behaviour_logps`, not from TRL's rule)."""
    for chunk in pool.chunks():
        old = seam.behaviour_logps(chunk.batch)
        if old is None or torch.isnan(old).any():
            fresh = policy_logps(chunk.batch)
            if old is not None:  # keep the rows that already hold an older policy's log-probs
                fresh = torch.where(torch.isnan(old).any(dim=1, keepdim=True), fresh, old)
            chunk.batch["old_per_token_logps"] = fresh


def record_step(totals: dict, metrics: dict, record: StepRecord, need: int, surplus: int,
                skipping: bool = False) -> None:
    """Add the step to the run's ``totals`` and log it under ``dynamic_sampling/*``; ``surplus``: groups left in
    the pool for later steps; ``skipping``: prompt skipping is on (its count is logged)."""
    totals["generated_groups"] += record.generated
    totals["informative"] += record.informative
    totals["trained"] += need - record.padded
    totals["dropped"] += record.dropped
    totals["padded"] += record.padded
    totals["skipped_prompts"] += record.skipped
    metrics["dynamic_sampling/refill_rounds"].append(max(record.rounds - 1, 0))
    metrics["dynamic_sampling/generated_groups"].append(record.generated)
    metrics["dynamic_sampling/kept_groups"].append(record.informative)
    if record.generated:  # 0 when the carried surplus alone filled the batch
        metrics["dynamic_sampling/frac_informative"].append(record.informative / record.generated)
    metrics["dynamic_sampling/carried_in_groups"].append(record.carried_in)
    metrics["dynamic_sampling/surplus_carried"].append(surplus)
    metrics["dynamic_sampling/surplus_dropped"].append(record.dropped)
    metrics["dynamic_sampling/padded_groups"].append(record.padded)
    metrics["dynamic_sampling/zero_advantage_groups"].append(record.zero_advantage)
    if skipping:
        metrics["dynamic_sampling/skipped_prompts"].append(record.skipped)


def generated_completions(totals: dict, num_generations: int) -> int:
    """Completions generated so far by the run's dynamic-sampling steps, all processes together."""
    return totals["generated_groups"] * num_generations


def refill_rounds_allowed(args, generated: int) -> int:
    """``dynamic_sampling_max_refill_rounds``, lowered to what the rest of ``max_generated_completions`` pays for
    after the step's first round; ``generated``: completions generated so far."""
    if args.max_generated_completions is None:
        return args.dynamic_sampling_max_refill_rounds
    left = args.max_generated_completions - generated
    if left < args.generation_batch_size:  # GenerationBudget stops training before such a step
        raise RuntimeError(
            f"max_generated_completions={args.max_generated_completions} is spent ({left} completions left, a round "
            f"generates {args.generation_batch_size}): this run was resumed from the checkpoint at which the budget "
            "stopped it. Raise max_generated_completions to train on."
        )
    return max(0, min(args.dynamic_sampling_max_refill_rounds, left // args.generation_batch_size - 1))


class GenerationBudget(TrainerCallback):
    """``max_generated_completions``: at every optimizer step's end, stop training when the rest of the budget
    cannot pay for one more generation round. It reads the run's ``totals``, which checkpoints restore, so a resumed
    run keeps to the budget of the interrupted one."""

    def __init__(self, totals: dict, num_generations: int):
        self.totals, self.num_generations = totals, num_generations

    def on_step_end(self, args, state, control, **kwargs):
        left = args.max_generated_completions - generated_completions(self.totals, self.num_generations)
        if left < args.generation_batch_size:
            control.should_training_stop = True
        return control
