"""The seam: the one module that reads, calls or writes GRPOTrainer's private parts.

trl_ext's trainers subclass ``trl.GRPOTrainer``; everything they need from its internals goes through here, so a TRL
upgrade is an audit of this file and ``tests/test_trl_contract.py`` (which checks what is listed below against the
installed TRL and fails first, with the reason). Checked against **trl 1.16.0** (``trl/trainer/grpo_trainer.py``).

Private names touched, and where:

* hooks trl_ext's trainers override (:data:`OVERRIDDEN_HOOKS`; defined on the trainers, calling ``super()``):
  ``_calculate_rewards``, ``_generate_and_score_completions``, ``_compute_loss``, ``_save_optimizer_and_scheduler``,
  ``_load_optimizer_and_scheduler``, ``_save``, ``_load_from_checkpoint``, ``create_optimizer``, ``create_model_card``;
* parent methods called (:data:`CALLED_HOOKS`): ``_generate_and_score_completions`` (:func:`scored_round`),
  ``_get_per_token_logps_and_entropies`` (:func:`per_token_logps`, :func:`reference_logps`),
  ``_log_completion_extra`` (:func:`log_completion_column`), ``compute_loss`` (:func:`check_loss_routing`);
* attributes (:data:`PRIVATE_ATTRIBUTES`): ``_metrics`` (:func:`metrics`), ``_logs["advantages"]``
  (:func:`replace_advantages`), ``_tokenizer`` (:func:`tokenizer`), ``_step`` and ``_buffered_inputs``
  (:func:`generation_buffer`, :func:`restore_generation_buffer`); public but internal: ``ref_model`` and ``beta``
  (:func:`reference_logps`, :func:`move_kl_out_of_the_loss`);
* the generation output's keys (``trl_ext.groups.PAD_RULES``) and the keys GRPO's loss reads from it
  (:data:`GRPO_LOSS_KEYS`: what a trl_ext loss that replaces GRPO's does with each).

The rules: the reference is GRPO's (``ref_model``, else under PEFT the adapter ``"ref"`` or all adapters off); whether
behaviour log-probs exist is read from the output the parent returned (``old_per_token_logps``), never re-derived; the
round's rewards are recorded by ``_calculate_rewards`` exactly once per parent round, checked here.
"""

from __future__ import annotations

import torch
from accelerate.utils import is_peft_model
from trl import GRPOTrainer
from trl.trainer.utils import use_adapter

from .adapters import keep_requires_grad

CHECKED_WITH = ("1.16.0",)

OVERRIDDEN_HOOKS = (
    "_calculate_rewards", "_generate_and_score_completions", "_compute_loss", "_save_optimizer_and_scheduler",
    "_load_optimizer_and_scheduler", "_save", "_load_from_checkpoint", "create_optimizer", "create_model_card",
)
# parent method -> the parameters trl_ext passes, in order (positional ones first)
CALLED_HOOKS = {
    "_generate_and_score_completions": ("inputs",),
    "_get_per_token_logps_and_entropies": ("model", "input_ids", "attention_mask", "logits_to_keep", "batch_size",
                                           "compute_entropy"),
    "_log_completion_extra": ("column", "values"),
    "compute_loss": ("model", "inputs"),
}
PRIVATE_ATTRIBUTES = ("_metrics", "_logs", "_tokenizer", "_step", "_buffered_inputs")

# Every key GRPOTrainer._compute_loss reads from its inputs, and what a trl_ext loss that replaces it (PPO's) does.
GRPO_LOSS_KEYS = {
    "prompt_ids": "read", "prompt_mask": "read", "completion_ids": "read", "completion_mask": "read",
    "advantages": "read (PPO's are per token, (B, T))", "num_items_in_batch": "read (the token-level normaliser)",
    "old_per_token_logps": "read (PPO always sets it)", "ref_per_token_logps": "read when beta != 0 (GRPO's k3 term)",
    "importance_sampling_ratio": "applied to the policy term (importance_sampling_ratio())",
    "sampling_per_token_logps": "unused: only GRPO's off_policy_mask_threshold reads it, which PPOConfig refuses",
    "tool_mask": "unused: PPOTrainer refuses tools",
    **dict.fromkeys(("pixel_values", "image_grid_thw", "num_images", "pixel_attention_mask", "spatial_shapes",
                     "num_tiles", "image_sizes", "token_type_ids", "mm_token_type_ids", "image_position_ids"),
                    "unused: PPO's loss passes no image inputs (text models)"),
}


# ---- one generation round and its rewards (a stale record is never read) -------------------------------------------
_ROUND = "_trl_ext_round_rewards"  # the open round's records, a list; None outside a round


def record_round_rewards(trainer, rewards) -> None:
    """Called by a trainer's ``_calculate_rewards``: this round's reward record (e.g. a ``RoundRewards``)."""
    records = getattr(trainer, _ROUND, None)
    if records is not None:  # outside a round (a direct call) nothing reads it
        records.append(rewards)


def scored_round(trainer, parent_generate, inputs):
    """``parent_generate(inputs)`` (the trainer's ``super()._generate_and_score_completions``) and the reward record
    its ``_calculate_rewards`` made: (output, rewards). The record is emptied before the parent runs and must hold
    exactly one entry after it, so a TRL that scores a round twice, or not through that hook, fails here."""
    setattr(trainer, _ROUND, [])
    try:
        output = parent_generate(inputs)
        records = getattr(trainer, _ROUND)
    finally:
        setattr(trainer, _ROUND, None)
    if len(records) != 1:
        raise RuntimeError(
            f"GRPOTrainer._generate_and_score_completions called {type(trainer).__name__}._calculate_rewards "
            f"{len(records)} times for one generation round; trl_ext reads that round's rewards from the one call "
            f"(checked with trl {', '.join(CHECKED_WITH)}). The installed TRL changed how it scores a round: read its "
            "_generate_and_score_completions and update trl_ext/seam.py."
        )
    return output, records[0]


# ---- logs ------------------------------------------------------------------------------------------------------------
def metrics(trainer, mode: str | None = None) -> dict:
    """GRPOTrainer's per-step metric lists for ``mode`` (default: the model's train/eval mode), averaged at ``log``."""
    return trainer._metrics[mode or ("train" if trainer.model.training else "eval")]


def log_completion_column(trainer, column: str, values: list) -> None:
    """One more column of the completions table (what a reward function's ``log_extra`` does), local rows."""
    trainer._log_completion_extra(column, values)


def replace_advantages(trainer, output: dict, advantages: torch.Tensor, rows) -> None:
    """Make ``advantages`` (N_global,) the ones that reach the loss: ``output["advantages"]`` gets this rank's
    ``rows``, and the completions table (``_logs["advantages"]``, where GRPOTrainer appended its own advantages of the
    same round, all ranks' rows in order) gets them in place of GRPO's. TRL 1.16 forms and logs its advantages in one
    body, so there is no seam between the two; the table's tail is checked to be this round's before it is replaced."""
    logged = trainer._logs["advantages"]
    n = min(advantages.numel(), len(logged))  # the table is a deque of generation_batch_size rows
    tail = torch.tensor(list(logged)[len(logged) - n:], dtype=output["advantages"].dtype)  # global rows N-n .. N-1
    first = advantages.numel() - n
    local = torch.arange(advantages.numel())[rows]  # this rank's global row numbers
    in_tail = local >= first
    shown, ours = local[in_tail], output["advantages"].cpu()[in_tail]
    if not torch.equal(tail[shown - first].nan_to_num(), ours.nan_to_num()):
        raise RuntimeError(
            f"The completions table's last {n} advantages are not the ones GRPOTrainer just returned (checked with trl "
            f"{', '.join(CHECKED_WITH)}): TRL changed where it logs them. Update trl_ext/seam.py:replace_advantages."
        )
    for _ in range(n):
        logged.pop()
    logged.extend(advantages.tolist())
    output["advantages"] = advantages[rows]


# ---- log-probabilities ----------------------------------------------------------------------------------------------
def model_inputs(batch: dict) -> tuple[torch.Tensor, torch.Tensor, int]:
    """(input_ids (B, P+C), attention_mask (B, P+C), logits_to_keep = C) of a GRPO batch: prompt left-padded, then
    completion."""
    input_ids = torch.cat([batch["prompt_ids"], batch["completion_ids"]], dim=1)
    attention_mask = torch.cat([batch["prompt_mask"], batch["completion_mask"]], dim=1)
    return input_ids, attention_mask, batch["completion_ids"].size(1)


def per_token_logps(trainer, model, input_ids, attention_mask, logits_to_keep: int, batch_size: int | None = None,
                    compute_entropy: bool = False):
    """(log-probs (B, C), entropies (B, C) or None) of the completion tokens under ``model``, temperature-scaled, as
    GRPOTrainer computes them for its loss (its fused LM head)."""
    logps, entropies, _ = trainer._get_per_token_logps_and_entropies(
        model, input_ids, attention_mask, logits_to_keep, batch_size=batch_size, compute_entropy=compute_entropy
    )
    return logps, entropies


def has_reference(trainer, ref_model=None) -> bool:
    """Whether :func:`reference_logps` has a reference: a model, or a PEFT policy whose base (or "ref") is one."""
    ref_model = getattr(trainer, "ref_model", None) if ref_model is None else ref_model
    return ref_model is not None or is_peft_model(trainer.accelerator.unwrap_model(trainer.model))


def reference_logps(trainer, input_ids, attention_mask, logits_to_keep: int, batch_size: int | None = None,
                    ref_model=None) -> torch.Tensor:
    """The reference policy's per-token log-probs (B, C), by GRPOTrainer's rule: ``ref_model`` (default: the
    trainer's), else the PEFT policy with the adapter ``"ref"`` active (the starting adapter's copy GRPOTrainer makes
    when re-training an existing adapter) or with every adapter off. Every parameter's ``requires_grad`` is kept (PEFT's
    switch rewrites them; PPO's critic adapter must stay trainable)."""
    ref_model = getattr(trainer, "ref_model", None) if ref_model is None else ref_model
    if ref_model is not None:
        return per_token_logps(trainer, ref_model, input_ids, attention_mask, logits_to_keep, batch_size)[0]
    model = trainer.accelerator.unwrap_model(trainer.model)
    with keep_requires_grad(model), use_adapter(model, adapter_name="ref" if "ref" in model.peft_config else None):
        return per_token_logps(trainer, trainer.model, input_ids, attention_mask, logits_to_keep, batch_size)[0]


def behaviour_logps(output: dict) -> torch.Tensor | None:
    """The sampling policy's per-token log-probs (B, T) where the parent computed them (it does when the batch is
    trained on off-policy, or for vLLM's importance sampling), else None: read from its output, never re-derived."""
    return output.get("old_per_token_logps")


def importance_sampling_ratio(inputs: dict) -> torch.Tensor | None:
    """TRL's vLLM importance-sampling correction, (B, T) or (B, 1), where the parent computed it (None otherwise):
    GRPO's loss multiplies its policy term by it."""
    return inputs.get("importance_sampling_ratio")


def move_kl_out_of_the_loss(trainer) -> float:
    """Set GRPOTrainer's loss KL coefficient ``beta`` to 0 after its ``__init__`` loaded the reference (so the
    reference stays and no k3 term is added to the loss, nor reference log-probs computed at generation); returns the
    coefficient it had."""
    beta, trainer.beta = trainer.beta, 0.0
    return beta


# ---- the loss routing --------------------------------------------------------------------------------------------
def check_loss_routing(trainer_cls, args) -> None:
    """A trainer that replaces GRPOTrainer's ``_compute_loss`` relies on ``GRPOTrainer.compute_loss`` calling it.
    Older TRLs computed the loss in Liger instead when ``use_liger_kernel=True`` (TRL 1.16 applies only Liger's layer
    kernels and still calls ``_compute_loss``): with Liger on, the installed ``compute_loss`` is run on a stand-in
    trainer and must return what ``_compute_loss`` returned, else the combination is refused, naming the trainer."""
    if not args.use_liger_kernel or trainer_cls._compute_loss is GRPOTrainer._compute_loss:
        return  # the loss is TRL's own: wherever TRL computes it, it is the same loss
    routed = object()

    class StandIn:  # what compute_loss may branch on, and the hook it should end in; anything else raises
        use_liger_kernel = True

        def __init__(self):
            self.args = args

        def _compute_loss(self, model, inputs):
            return routed

    try:
        reaches = GRPOTrainer.compute_loss(StandIn(), None, {}) is routed
    except Exception:  # it went another way (e.g. to Liger's loss, which needs a real trainer)
        reaches = False
    if not reaches:
        raise ValueError(
            f"use_liger_kernel=True: the installed TRL's GRPOTrainer.compute_loss does not call "
            f"{trainer_cls.__name__}._compute_loss with Liger on (it computes GRPO's loss in Liger), so "
            f"{trainer_cls.__name__}'s own loss would be skipped silently. Set use_liger_kernel=False."
        )


# ---- resuming -------------------------------------------------------------------------------------------------------
def generation_buffer(trainer) -> dict:
    """GRPOTrainer's micro-step counter and, mid-block, its buffer of generated batches: ``_prepare_inputs``
    regenerates when ``_step % (steps_per_generation * num_iterations) == 0`` (or the buffer is None), otherwise the
    rest of the block trains on ``_buffered_inputs``, which a Trainer checkpoint leaves out."""
    state = {"step": trainer._step}
    generate_every = trainer.args.steps_per_generation * trainer.num_iterations
    if trainer._step % generate_every != 0 and trainer._buffered_inputs is not None:
        state["buffered_inputs"] = trainer._buffered_inputs
    return state


def restore_generation_buffer(trainer, state: dict) -> None:
    trainer._step = state["step"]
    trainer._buffered_inputs = state.get("buffered_inputs")


def tokenizer(trainer):
    """The text tokenizer (GRPOTrainer keeps a processor's in ``_tokenizer``; trainers without it: processing_class)."""
    return getattr(trainer, "_tokenizer", None) or trainer.processing_class
