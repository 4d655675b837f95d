"""DAPOTrainer: DAPO (arXiv 2503.14476) as a drop-in ``trl.GRPOTrainer`` (see :mod:`trl_ext.dapo`)."""

from __future__ import annotations

import copy
import inspect
import logging

import torch
from tqdm.auto import tqdm
from trl import GRPOTrainer
from trl.trainer.utils import get_config_model_id

from ..advantages import RoundRewards, weighted_reward
from ..cards import DAPO_PAPER, ModelCardMixin
from ..checks import check_prompt_dataset
from ..groups import (
    PAD_RULES,
    RECOMPUTED_KEYS,
    GroupPool,
    concat_batches,
    describe_uninformative,
    informative_groups,
    moving_groups,
    process_rows,
    rows_of_groups,
    select_rows,
)
from ..models import disable_bnb_cpu_repack
from ..resume import GenerationStateMixin
from ..shaping import OverlongPenalty
from .config import DAPOConfig

logger = logging.getLogger(__name__)


def liger_bypasses_loss() -> bool:
    """Whether the installed GRPOTrainer hands the loss to Liger (skipping ``_compute_loss``) when Liger is on."""
    return "liger" in inspect.getsource(GRPOTrainer.compute_loss).lower()


class DAPOTrainer(ModelCardMixin, GenerationStateMixin, GRPOTrainer):
    """Decoupled Clip and Dynamic sAmpling Policy Optimization (DAPO, https://huggingface.co/papers/2503.14476).

    Clip-higher and the token-level loss are TRL knobs that :class:`DAPOConfig` sets; the loss is TRL's, untouched.
    Overlong shaping is one more reward function (:class:`trl_ext.shaping.OverlongPenalty`, weight 1) appended to
    ``reward_funcs``. Hooks overridden:

    * ``_calculate_rewards``: calls the parent, then makes the overlong column NaN where every other reward function
      returned None (so shaping alone cannot make an unscorable completion look scored), and records the round's
      rewards once, for the gathered batch: per function, the weighted total and the dynamic sampling signal
      (``self._round_rewards``, a :class:`trl_ext.advantages.RoundRewards`; subclasses read it, e.g. RLOO's total).
    * ``_generate_and_score_completions`` (train mode, dynamic sampling on): calls the parent once per round --
      first on the dataloader's batch, then on fresh prompts from the training data -- gathers each round's output
      from all ranks, keeps the groups whose signal varies and whose advantages are not all zero, and stops when
      the pool holds ``generation_batch_size // num_generations`` groups. Every rank holds the same pool and trains
      on its own contiguous slice, so the per-rank batch size is exactly TRL's. Informative surplus stays in the pool for at most
      ``dynamic_sampling_max_staleness`` steps. Each round goes through ``_generate_round``, the one place a
      subclass (e.g. :class:`trl_ext.RLOOTrainer`) replaces the advantages, so it inherits all of the above.
    * ``_save_optimizer_and_scheduler`` / ``_load_optimizer_and_scheduler`` (through
      :class:`trl_ext.resume.GenerationStateMixin`): every checkpoint also holds the carried surplus (with its
      behaviour log-probabilities and generation step), the refill stream's position, the staleness counter and the
      running totals, besides GRPO's generation buffer, in ``trl_ext_state_{process_index}.pt``. A resumed run
      therefore trains on the surplus the interrupted one had carried and matches an uninterrupted run. The pool
      holds global rows and is the same on every rank; each rank saves and restores its own copy.
    * ``create_model_card`` (through :class:`trl_ext.cards.ModelCardMixin`): the card names DAPO, cites its paper
      and trl_ext.
    """

    _tag_names = ["trl", "dapo", "trl_ext"]
    _name, _paper = "DAPO", DAPO_PAPER  # the model card's method and citation (trl_ext.cards)

    config_class = DAPOConfig  # subclasses name their own config; it must subclass DAPOConfig

    def __init__(
        self,
        model,
        reward_funcs=None,
        args: DAPOConfig | None = None,
        train_dataset=None,
        eval_dataset=None,
        processing_class=None,
        reward_processing_classes=None,
        **kwargs,
    ):
        config_class = self.config_class
        if args is None:
            model_name = model if isinstance(model, str) else get_config_model_id(model.config)
            args = config_class(f"{model_name.split('/')[-1]}-{config_class.__name__.removesuffix('Config')}")
        if not isinstance(args, config_class):
            raise TypeError(
                f"{type(self).__name__} needs a {config_class.__name__}, got {type(args).__name__}. Build the config "
                f"with trl_ext.{config_class.__name__}(...): the GRPOConfig fields plus its own."
            )
        if args.use_liger_kernel and liger_bypasses_loss():
            raise ValueError(
                "use_liger_kernel=True makes this TRL version compute the loss in Liger, bypassing the DAPO loss. "
                "Set use_liger_kernel=False."
            )
        check_prompt_dataset(train_dataset, "train_dataset", type(self).__name__)
        check_prompt_dataset(eval_dataset, "eval_dataset", type(self).__name__)
        if reward_funcs is None:
            reward_funcs = []
        reward_funcs = list(reward_funcs) if isinstance(reward_funcs, (list, tuple)) else [reward_funcs]
        reward_processing_classes = self._check_reward_lists(args, reward_funcs, reward_processing_classes)
        args = copy.copy(args)  # reward_weights may grow by the overlong column; leave the caller's config alone
        self._overlong_index = None
        if args.overlong_buffer_length > 0 and args.overlong_penalty_factor > 0:
            self._overlong_index = len(reward_funcs)
            reward_funcs.append(
                OverlongPenalty(args.max_completion_length, args.overlong_buffer_length, args.overlong_penalty_factor)
            )
            if args.reward_weights is not None:
                args.reward_weights = [*args.reward_weights, 1.0]
            if reward_processing_classes is not None:
                reward_processing_classes = [*reward_processing_classes, None]
        kwargs.update(eval_dataset=eval_dataset, processing_class=processing_class,
                      reward_processing_classes=reward_processing_classes)
        if args.dynamic_sampling and train_dataset is not None and not (
            hasattr(train_dataset, "__getitem__") and hasattr(train_dataset, "__len__")
        ):
            raise ValueError(
                "dynamic sampling refills with prompts drawn by index from train_dataset, which needs a map-style "
                "dataset (an IterableDataset was given). Pass a datasets.Dataset or set dynamic_sampling=False."
            )
        super().__init__(model, reward_funcs, args=args, train_dataset=train_dataset, **kwargs)
        disable_bnb_cpu_repack(self.model)  # no-op unless 4-bit on CPU; see trl_ext.models

        signal = args.dynamic_sampling_signal
        if signal != "reward" and signal not in self.reward_func_names:
            raise ValueError(
                f"dynamic_sampling_signal={signal!r} is neither 'reward' nor a reward function name; names here: "
                f"{self.reward_func_names}."
            )
        self._signal_index = None if signal == "reward" else self.reward_func_names.index(signal)
        self._round_rewards: RoundRewards | None = None  # this round's rewards, set by _calculate_rewards
        self._ds_pool = GroupPool(self.num_generations, self._tokenizer.pad_token_id)
        self._ds_refill_order = None
        self._ds_refill_drawn = 0  # prompts taken from the refill stream so far (a resumed run skips them)
        self._ds_step = 0
        # running totals across the run (the benchmark reads them): groups generated / informative / trained on
        self.dynamic_sampling_totals = {
            "generated_groups": 0, "informative": 0, "trained": 0, "dropped": 0, "padded": 0,
        }
        if args.dynamic_sampling and len(self.train_dataset) < args.generation_batch_size // self.num_generations:
            logger.warning(
                "train_dataset has %d prompts, fewer than the %d one generation round needs: refills will repeat "
                "prompts within a round.", len(self.train_dataset), args.generation_batch_size // self.num_generations
            )

    @staticmethod
    def _check_reward_lists(args, reward_funcs: list, reward_processing_classes):
        """The user's ``reward_weights`` and ``reward_processing_classes`` counted against the user's reward functions.

        TRL accepts one tokenizer for one reward model (not in a list); it is listed here so that the built-in overlong
        column, appended after the user's functions, gets ``None`` beside it. Counting here, before that column
        exists, keeps the overlong term out of the numbers in the messages.
        """
        n = len(reward_funcs)
        if args.reward_weights is not None and len(args.reward_weights) != n:
            raise ValueError(
                f"reward_weights has {len(args.reward_weights)} weights for {n} reward function(s); give one weight "
                "per function in reward_funcs, in the same order (the built-in overlong penalty needs none: its scale "
                "is overlong_penalty_factor)."
            )
        if reward_processing_classes is None:
            return None
        if not isinstance(reward_processing_classes, list):
            reward_processing_classes = [reward_processing_classes]
        if len(reward_processing_classes) != n:
            raise ValueError(
                f"reward_processing_classes has {len(reward_processing_classes)} entries for {n} reward function(s); "
                "give one per function in reward_funcs (None for a function that is not a model), or a single "
                "tokenizer when there is a single reward model."
            )
        return list(reward_processing_classes)

    # ---- rewards ---------------------------------------------------------------------------------------------------
    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        rewards_per_func = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)  # (N, F)
        i = self._overlong_index
        if i is not None and rewards_per_func.size(1) > 1:
            others = torch.cat([rewards_per_func[:, :i], rewards_per_func[:, i + 1 :]], dim=1)
            rewards_per_func[torch.isnan(others).all(dim=1), i] = torch.nan
        weights = self.reward_weights.to(rewards_per_func.device)
        self._round_rewards = RoundRewards(
            rewards_per_func, weighted_reward(rewards_per_func, weights), self._signal(rewards_per_func, weights)
        )
        return rewards_per_func

    def _signal(self, rewards_per_func: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """What dynamic sampling requires to vary, (N,): one named function's rewards, or the weighted total of the
        given functions as GRPOTrainer forms it with the overlong term left out (NaN if none of them scored)."""
        if self._signal_index is not None:
            return rewards_per_func[:, self._signal_index]
        given = [j for j in range(rewards_per_func.size(1)) if j != self._overlong_index]
        return weighted_reward(rewards_per_func[:, given], weights[given])

    # ---- dynamic sampling ------------------------------------------------------------------------------------------
    def _generate_and_score_completions(self, inputs):
        if not (self.model.training and self.args.dynamic_sampling):
            return self._generate_round(inputs)
        return self._dynamic_sampling_step(inputs)

    def _generate_round(self, inputs):
        """One pass of GRPOTrainer's generation and scoring; the place where a subclass changes the advantages."""
        return super()._generate_and_score_completions(inputs)

    def _dynamic_sampling_step(self, inputs):
        args, pool, G = self.args, self._ds_pool, self.num_generations
        need = args.generation_batch_size // G  # groups per generation batch, all ranks together
        self._ds_step += 1  # dynamic-sampling steps (generation batches): staleness is counted in them
        step = self._ds_step
        dropped = pool.drop_stale(step, args.dynamic_sampling_max_staleness)
        carried_in = pool.num_groups
        rounds = generated = informative = zero_advantage = 0
        rejected, reasons = [], []
        progress = None
        while pool.num_groups < need and rounds <= args.dynamic_sampling_max_refill_rounds:
            if rounds > 0:
                inputs = self._refill_inputs()
                if progress is None:
                    progress = tqdm(
                        total=need, initial=pool.num_groups, desc="dynamic sampling refill", leave=False,
                        disable=args.disable_tqdm or not self.accelerator.is_main_process,
                    )
            output = self._generate_round(inputs)
            batch = self._gather_output(output)  # (N_global, ...) identical on every rank
            varies = informative_groups(self._round_rewards.signal, G, args.dynamic_sampling_tolerance)  # (N_global / G,)
            # the advantages that reach the loss come from the total reward (shaping included) or, in a subclass,
            # from another estimator: a group is kept only if they move too (see DAPOConfig.dynamic_sampling)
            moves = moving_groups(batch["advantages"], G, args.dynamic_sampling_tolerance)
            keep = varies & moves
            rows = rows_of_groups(keep, G)
            pool.add(select_rows(batch, rows), step)
            rejected.append(select_rows(batch, ~rows))
            reasons.append(describe_uninformative(self._round_rewards.signal, G, varies))
            if (varies & ~moves).any():
                reasons.append(f"{int((varies & ~moves).sum())} whose {args.dynamic_sampling_signal!r} varies but "
                               "whose advantages are all zero (the overlong penalty or another term cancels it)")
            rounds += 1
            generated += keep.numel()
            informative += int(keep.sum())
            zero_advantage += int((varies & ~moves).sum())
            if progress is not None:
                progress.n = min(pool.num_groups, need)
                progress.refresh()
        if progress is not None:
            progress.close()

        padded = 0
        if pool.num_groups < need:
            message = (
                f"Dynamic sampling found {pool.num_groups} informative groups of the {need} this step needs after "
                f"{rounds} generation rounds (the cap is 1 + dynamic_sampling_max_refill_rounds="
                f"{args.dynamic_sampling_max_refill_rounds}). Of the {generated} groups generated, "
                f"{generated - informative} carried no signal: {'; '.join(r for r in reasons if r != 'none')}."
            )
            fixes = ("raise dynamic_sampling_max_refill_rounds, use prompts the model solves sometimes but not always, "
                     "pick another dynamic_sampling_signal, or check that the reward function returns numbers")
            if args.dynamic_sampling_on_cap == "raise":
                raise RuntimeError(f"{message} To go on, {fixes}, or set dynamic_sampling_on_cap='train_on_kept'.")
            padded = need - pool.num_groups
            logger.warning(
                "%s Training on them with %d masked filler groups (no gradient; the metric "
                "dynamic_sampling/padded_groups counts them). If this repeats, %s; set dynamic_sampling_on_cap='raise' "
                "to stop instead.", message, padded, fixes,
            )
            pool.add(self._filler(rejected, padded), step)
        batch = pool.take(need)

        if args.dynamic_sampling_max_staleness > 0 and not self._parent_computes_old_logps():
            self._store_behaviour_logps(pool)

        local = select_rows(batch, process_rows(need * G, self.accelerator.process_index, self.accelerator.num_processes))
        if "old_per_token_logps" in local:  # carried rows have it; fill the fresh rows with the current policy's
            missing = torch.isnan(local["old_per_token_logps"]).any(dim=1)
            if missing.any():
                fresh = self._policy_logps(local)
                local["old_per_token_logps"] = torch.where(missing.unsqueeze(1), fresh, local["old_per_token_logps"])
        loss_mask = batch["completion_mask"] * batch["tool_mask"] if "tool_mask" in batch else batch["completion_mask"]
        local["num_items_in_batch"] = loss_mask.sum()

        totals = self.dynamic_sampling_totals
        totals["generated_groups"] += generated
        totals["informative"] += informative
        totals["trained"] += need - padded
        totals["dropped"] += dropped
        totals["padded"] += padded
        metrics = self._metrics["train"]
        metrics["dynamic_sampling/refill_rounds"].append(max(rounds - 1, 0))
        metrics["dynamic_sampling/generated_groups"].append(generated)
        metrics["dynamic_sampling/kept_groups"].append(informative)
        if generated:  # 0 when the carried surplus alone filled the batch
            metrics["dynamic_sampling/frac_informative"].append(informative / generated)
        metrics["dynamic_sampling/carried_in_groups"].append(carried_in)
        metrics["dynamic_sampling/surplus_carried"].append(pool.num_groups)
        metrics["dynamic_sampling/surplus_dropped"].append(dropped)
        metrics["dynamic_sampling/padded_groups"].append(padded)
        metrics["dynamic_sampling/zero_advantage_groups"].append(zero_advantage)
        return local

    def _gather_output(self, output: dict) -> dict:
        """All ranks' rows of one parent output, in rank order (TRL's global layout)."""
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
            pad = self._tokenizer.pad_token_id if pad == "pad" else pad
            if value.dim() >= 2:
                value = self.accelerator.pad_across_processes(value, dim=1, pad_index=pad, pad_first=side == "left")
            gathered[key] = self.accelerator.gather(value)
        return gathered

    def _refill_inputs(self) -> list[dict]:
        """This rank's rows of one fresh generation batch, laid out as TRL's RepeatSampler + dataloader would."""
        G, n_prompts = self.num_generations, self.args.generation_batch_size // self.num_generations
        stream = self._refill_prompt_indices()
        indices = [next(stream) for _ in range(n_prompts)]
        self._ds_refill_drawn += n_prompts
        rows = [i for i in indices for _ in range(G)]  # each prompt G times, consecutively
        local = rows[process_rows(len(rows), self.accelerator.process_index, self.accelerator.num_processes)]
        return [self.train_dataset[i] for i in local]

    def _refill_prompt_indices(self):
        # one endless stream, identical on every rank (same seed), reshuffled each pass over the dataset
        if self._ds_refill_order is None:
            def stream():
                generator = torch.Generator().manual_seed(self.args.seed + 1)
                while True:
                    yield from torch.randperm(len(self.train_dataset), generator=generator).tolist()
            self._ds_refill_order = stream()
            for _ in range(self._ds_refill_drawn):  # resumed: continue where the checkpointed run stopped
                next(self._ds_refill_order)
        return self._ds_refill_order

    # ---- checkpoints -----------------------------------------------------------------------------------------------
    def _resume_state(self) -> dict:
        return {
            **super()._resume_state(),
            "dynamic_sampling": {
                "pool": self._ds_pool.state_dict(), "step": self._ds_step,
                "refill_drawn": self._ds_refill_drawn, "totals": dict(self.dynamic_sampling_totals),
            },
        }

    def _load_resume_state(self, state: dict, checkpoint: str) -> None:
        super()._load_resume_state(state, checkpoint)
        ds = state.get("dynamic_sampling")
        if ds is None:
            return
        self._ds_pool.load_state_dict(ds["pool"])
        self._ds_step = ds["step"] if "step" in ds else ds["generation"]  # "generation": older checkpoints
        self._ds_refill_drawn, self._ds_refill_order = ds["refill_drawn"], None
        self.dynamic_sampling_totals.update(ds["totals"])
        if self._ds_pool.num_groups:
            logger.info("dynamic sampling: %d surplus groups restored from %s", self._ds_pool.num_groups, checkpoint)

    def _filler(self, rejected: list[dict], num_groups: int) -> dict:
        """``num_groups`` groups of real rows with their loss masked out: they keep the batch size, add no gradient."""
        source = concat_batches(rejected, self._tokenizer.pad_token_id)
        G = self.num_generations
        available = source["completion_ids"].size(0) // G
        index = torch.arange(num_groups * G) % (available * G)
        filler = select_rows(source, index)
        filler["completion_mask"] = torch.zeros_like(filler["completion_mask"])
        filler["advantages"] = torch.zeros_like(filler["advantages"])
        return filler

    def _parent_computes_old_logps(self) -> bool:
        generate_every = self.args.steps_per_generation * self.num_iterations
        return self.args.gradient_accumulation_steps % generate_every != 0 or (
            self.use_vllm and self.vllm_importance_sampling_correction
        )

    @torch.no_grad()
    def _policy_logps(self, batch: dict) -> torch.Tensor:
        input_ids = torch.cat([batch["prompt_ids"], batch["completion_ids"]], dim=1)
        attention_mask = torch.cat([batch["prompt_mask"], batch["completion_mask"]], dim=1)
        logps, _, _ = self._get_per_token_logps_and_entropies(
            self.model, input_ids, attention_mask, batch["completion_ids"].size(1),
            batch_size=self.args.per_device_train_batch_size,
        )
        return logps

    def _store_behaviour_logps(self, pool: GroupPool) -> None:
        """Surplus is trained on later, by a changed policy: record the log-probs of the policy that sampled it."""
        for chunk in pool.chunks():
            old = chunk.batch.get("old_per_token_logps")
            if old is None or torch.isnan(old).any():
                fresh = self._policy_logps(chunk.batch)
                if old is not None:  # keep the rows that already hold an older policy's log-probs
                    fresh = torch.where(torch.isnan(old).any(dim=1, keepdim=True), fresh, old)
                chunk.batch["old_per_token_logps"] = fresh
