"""DAPOConfig: GRPOConfig with DAPO's defaults (arXiv 2503.14476) and the fields TRL lacks."""

from __future__ import annotations

from dataclasses import dataclass, field

from trl import GRPOConfig

ON_CAP_CHOICES = ("raise", "train_on_kept")


@dataclass
class DAPOConfig(GRPOConfig):
    """``GRPOConfig`` with DAPO's defaults and the fields TRL lacks.

    Re-defaulted TRL field: ``epsilon_high=0.28`` (clip-higher, the paper's Section 3.1; TRL's default is None, i.e.
    ``epsilon``). TRL's own defaults already are the paper's other settings: ``epsilon=0.2``, ``loss_type="dapo"``
    (token-level loss) and ``beta=0.0`` (no reference model is loaded); ``loss_type`` and ``beta`` are declared again
    with those same defaults only to pin them should TRL's change, and to say in ``--help`` why DAPO uses them.
    Overlong filtering is TRL's ``mask_truncated_completions`` (off by default, as the paper's final recipe uses the
    soft punishment instead).

    Dynamic sampling keeps a group when its ``dynamic_sampling_signal`` varies (the given rewards, shaping left out)
    *and* its advantages, as they reach the loss, are not all zero (they come from the total reward, overlong term
    included). Both are needed: the first stops a length penalty from making a solved group look informative, the
    second stops a group whose accuracy varies, but whose total the penalty makes constant, from diluting the
    token-level loss with zero-advantage tokens. When the refill cap is hit, the default
    ``dynamic_sampling_on_cap='train_on_kept'`` trains on what was kept (with a warning), as GRPO would train on.

    Dynamic sampling's carried surplus is saved with every checkpoint and restored on resume (not dropped): see
    ``dynamic_sampling_max_staleness`` and :class:`DAPOTrainer`. ``max_generated_completions`` budgets the run in
    generated completions rather than steps (refills make a step's cost vary), e.g. to compare with GRPO on equal
    generation work.
    """

    epsilon_high: float | None = field(
        default=0.28, metadata={"help": "Upper clip bound (clip-higher, DAPO Section 3.1). Must be >= epsilon."}
    )
    loss_type: str = field(default="dapo", metadata={"help": "Token-level loss (DAPO Section 3.3)."})
    beta: float = field(default=0.0, metadata={"help": "KL coefficient; DAPO drops the KL term (Section 2.3)."})

    overlong_buffer_length: int | None = field(
        default=None,
        metadata={
            "help": "L_cache of the soft overlong punishment (DAPO Eq. 13); the hard limit L_max is "
            "max_completion_length. None: max_completion_length // 5 (the paper's 4096 of 20480). 0 disables it. "
            "The penalty is added to the reward for the advantages only and logged as shaping/overlong/*; the "
            "logged reward stays the weighted sum of reward_funcs, as in GRPOTrainer."
        },
    )
    overlong_penalty_factor: float = field(
        default=1.0,
        metadata={"help": "Scale of the overlong penalty: a completion of max_completion_length tokens gets "
                  "-overlong_penalty_factor. 0 disables it."},
    )
    dynamic_sampling: bool = field(
        default=True,
        metadata={
            "help": "Keep only informative groups and refill with new prompts (DAPO Section 3.2). A group is kept when "
            "its dynamic_sampling_signal varies AND the advantages that reach the loss (computed from the total "
            "reward, overlong term included, or by a subclass such as RLOO) are not all zero: shaping alone cannot "
            "make a solved group look informative, and a group whose variation shaping cancels is not trained on."
        },
    )
    dynamic_sampling_signal: str = field(
        default="reward",
        metadata={
            "help": "What must vary inside a group: 'reward' (the weighted total of the given reward functions as "
            "GRPOTrainer logs it, without the overlong shaping) or the name of one reward function (e.g. "
            "'accuracy', verl's acc), so that a shaping term cannot make a solved group look informative."
        },
    )
    dynamic_sampling_tolerance: float = field(
        default=1e-6, metadata={"help": "A group is informative when max - min of its signal exceeds this."}
    )
    dynamic_sampling_max_refill_rounds: int = field(
        default=8,
        metadata={"help": "Generation rounds allowed per step after the first one; then dynamic_sampling_on_cap."},
    )
    dynamic_sampling_on_cap: str = field(
        default="train_on_kept",
        metadata={
            "help": "At the refill cap: 'train_on_kept' (default: train on the informative groups found, the rest of "
            "the batch is masked filler so the batch size is unchanged; a warning says why and the metric "
            "dynamic_sampling/padded_groups counts the filler) or 'raise' (stop with an error that says what to "
            "change). The default keeps a run going where trl.GRPOTrainer would (e.g. a sparse reward at the start)."
        },
    )
    dynamic_sampling_max_staleness: int = field(
        default=1,
        metadata={
            "help": "Informative surplus is kept for later generation batches if generated at most this many "
            "generation batches ago (its behaviour log-probabilities are stored for the clipped ratio). 0 throws "
            "surplus away. The surplus is saved with every checkpoint and restored on resume."
        },
    )
    max_generated_completions: int | None = field(
        default=None,
        metadata={
            "help": "Budget of generated completions for the whole run, all processes together (dynamic sampling "
            "only): each step's refill rounds are capped to what the rest of the budget pays for, and training stops "
            "before a step it could not pay for. None: no budget (max_steps alone)."
        },
    )

    dynamic_sampling_skip_probability: float = field(
        default=0.0,
        metadata={
            "help": "Skip before generating (GRESO, arXiv 2506.02177): a refill prompt whose most recent groups all "
            "carried no signal (all right or all wrong) is skipped, before its completions are generated, with "
            "probability min(dynamic_sampling_max_skip_probability, 1 - (1 - p) ** streak), streak being its "
            "consecutive zero-variance groups (any group with signal resets it). A per-prompt record keyed by a hash "
            "of the prompt, kept over the run and checkpointed. A skipped prompt of the dataloader's batch is "
            "replaced by one from the refill stream; a skipped refill prompt is passed over. 0 (default): off. "
            "The count is logged as dynamic_sampling/skipped_prompts."
        },
    )
    dynamic_sampling_max_skip_probability: float = field(
        default=0.9,
        metadata={"help": "Upper bound of the skip probability (< 1), so a skipped prompt is still drawn at least "
                  "1 - this of the times and revisited as the policy changes (GRESO's exploration floor)."},
    )
    dynamic_sampling_sized_refill: bool = field(
        default=False,
        metadata={
            "help": "Refill sized to the shortfall (as OpenRLHF dispatches one prompt per dropped group, but at the "
            "observed rate): each refill round draws about missing / rate prompts, rate being the run's informative "
            "fraction so far (at least dynamic_sampling_refill_rate_floor), rounded up to a multiple of the number "
            "of processes and at most a generation batch, instead of a whole generation batch. Extra informative "
            "groups are carried as surplus. False (default): whole generation batches (DAPO's refill)."
        },
    )
    dynamic_sampling_refill_rate_floor: float = field(
        default=0.1,
        metadata={"help": "Lowest informative rate the sized refill assumes (in (0, 1]); bounds a refill round when "
                  "almost nothing was informative so far."},
    )

    def __post_init__(self):
        # checked before GRPOConfig's own checks so the message names the DAPO fields
        if self.dynamic_sampling and self.num_generations is not None and self.num_generations < 2:
            raise ValueError(
                f"num_generations={self.num_generations}: dynamic sampling judges whether rewards vary inside a "
                "group, which needs num_generations >= 2. Raise num_generations (DAPO uses 16) or set "
                "dynamic_sampling=False."
            )
        if self.epsilon_high is not None and self.epsilon_high < self.epsilon:
            raise ValueError(
                f"epsilon_high={self.epsilon_high} < epsilon={self.epsilon}: clip-higher needs an upper bound at "
                "least as wide as the lower one. Set epsilon_high >= epsilon (the paper uses 0.28 with 0.2)."
            )
        if self.overlong_buffer_length is None:
            self.overlong_buffer_length = self.max_completion_length // 5
        if not 0 <= self.overlong_buffer_length <= self.max_completion_length:
            raise ValueError(
                f"overlong_buffer_length={self.overlong_buffer_length} must be in [0, max_completion_length="
                f"{self.max_completion_length}]; 0 disables the soft overlong punishment."
            )
        if self.overlong_penalty_factor < 0:
            raise ValueError(f"overlong_penalty_factor={self.overlong_penalty_factor} must be >= 0 (0 disables it).")
        if self.dynamic_sampling_on_cap not in ON_CAP_CHOICES:
            raise ValueError(f"dynamic_sampling_on_cap={self.dynamic_sampling_on_cap!r}: use one of {ON_CAP_CHOICES}.")
        if self.dynamic_sampling_max_refill_rounds < 0:
            raise ValueError("dynamic_sampling_max_refill_rounds must be >= 0 (0: only the first round is drawn).")
        if self.dynamic_sampling_tolerance < 0:
            raise ValueError("dynamic_sampling_tolerance must be >= 0.")
        if not 0 <= self.dynamic_sampling_skip_probability < 1:
            raise ValueError(f"dynamic_sampling_skip_probability={self.dynamic_sampling_skip_probability} must be in "
                             "[0, 1) (0: prompts are never skipped).")
        if not self.dynamic_sampling_skip_probability <= self.dynamic_sampling_max_skip_probability < 1:
            raise ValueError(
                f"dynamic_sampling_max_skip_probability={self.dynamic_sampling_max_skip_probability} must be in "
                f"[dynamic_sampling_skip_probability={self.dynamic_sampling_skip_probability}, 1): below 1 so a "
                "skipped prompt is still revisited."
            )
        if not 0 < self.dynamic_sampling_refill_rate_floor <= 1:
            raise ValueError(f"dynamic_sampling_refill_rate_floor={self.dynamic_sampling_refill_rate_floor} must be "
                             "in (0, 1].")
        if self.dynamic_sampling_max_staleness < 0:
            raise ValueError("dynamic_sampling_max_staleness must be >= 0 (0: surplus is discarded).")
        super().__post_init__()
        if self.max_generated_completions is not None:  # after GRPOConfig has derived generation_batch_size
            self._check_generation_budget()

    def _check_generation_budget(self) -> None:
        budget, per_step = self.max_generated_completions, self.generation_batch_size
        if not self.dynamic_sampling:
            raise ValueError(
                f"max_generated_completions={budget} is for dynamic sampling, whose refills vary what a step "
                f"generates. Without dynamic sampling every step generates generation_batch_size={per_step} "
                f"completions, so set max_steps = budget // generation_batch_size = {budget // per_step} instead, "
                "and max_generated_completions=None."
            )
        if budget < per_step:
            raise ValueError(
                f"max_generated_completions={budget} < generation_batch_size={per_step}: not even the first step's "
                f"first round fits. Set max_generated_completions >= {per_step}, or lower per_device_train_batch_size "
                "or steps_per_generation."
            )
