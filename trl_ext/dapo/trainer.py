"""DAPOTrainer: DAPO (arXiv 2503.14476) as a drop-in ``trl.GRPOTrainer`` (see :mod:`trl_ext.dapo`)."""

from __future__ import annotations

import copy
import logging

import torch
from accelerate.utils import gather_object
from tqdm.auto import tqdm
from trl import GRPOTrainer
from trl.trainer.utils import get_config_model_id, nanstd

from .. import seam
from ..advantages import RoundRewards, group_relative_advantages
from ..cards import DAPO_PAPER, ModelCardMixin
from ..checks import check_prompt_dataset, warn_plain_prompts_for_chat_model
from ..groups import GroupPool, describe_uninformative, informative_groups, moving_groups, process_rows, rows_of_groups
from ..groups import select_rows
from ..models import disable_bnb_cpu_repack
from ..resume import GenerationStateMixin
from ..shaping import OverlongShaping
from .config import DAPOConfig
from .prompt_history import PromptHistory, prompt_key, refill_prompts
from .reward_columns import round_rewards, shaped_columns, signal_column
from .refill import StreamRefills, check_ranks_drew_alike, check_refillable, refill_source
from .step import CAP_FIXES, GenerationBudget, StepRecord, gather_output, generated_completions
from .step import masked_filler, record_step, refill_rounds_allowed, store_behaviour_logps

logger = logging.getLogger(__name__)


def _rotary(config) -> bool:
    """Whether a model config declares rotary positions (Llama, Qwen, SmolLM2, Gemma ...), under which a uniform
    left-padding shift leaves the log-probs of the real tokens unchanged (tests/test_groups.py)."""
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    return any(getattr(text, name, None) is not None for name in ("rope_parameters", "rope_theta", "rope_scaling"))


class DAPOTrainer(ModelCardMixin, GenerationStateMixin, GRPOTrainer):
    """Decoupled Clip and Dynamic sAmpling Policy Optimization (DAPO, https://huggingface.co/papers/2503.14476).

    Clip-higher and the token-level loss are TRL knobs that :class:`DAPOConfig` sets; the loss is TRL's, untouched.
    Overlong shaping (:class:`trl_ext.shaping.OverlongShaping`) post-processes the rewards after the reward functions
    have scored them; it is not a reward function, so ``reward_funcs``, ``reward_weights``, the logged ``reward`` and
    TRL's checks are the user's, and it is logged beside them as ``shaping/overlong/*``. Hooks overridden:

    * ``_calculate_rewards``: calls the parent (the user's reward functions, TRL's warnings), computes the shaping
      from the completion lengths, and records the round's rewards once, for the gathered batch: per function, the
      weighted total, the shaping and the dynamic sampling signal (a :class:`trl_ext.advantages.RoundRewards`, handed
      back with the parent's output by :func:`trl_ext.seam.scored_round`, which checks it was recorded exactly once;
      subclasses receive it, e.g. RLOO's shaped total).
    * ``_generate_and_score_completions`` (train mode, dynamic sampling on): calls the parent once per round -- first on
      the dataloader's batch, then on fresh prompts from the training data (the refill stream,
      :mod:`trl_ext.dapo.refill`: a permutation of a map-style dataset, or a streaming dataset's own rows) -- gathers
      each round's output from all ranks, keeps the groups whose signal varies and whose advantages are not all zero,
      and stops when the pool holds ``generation_batch_size // num_generations`` groups. Every rank holds the same pool
      and trains on its own contiguous slice, so the per-rank batch size is exactly TRL's. Informative surplus stays in
      the pool for at most ``dynamic_sampling_max_staleness`` steps. Each round goes through ``_generate_round``, where
      ``_round_advantages`` replaces GRPO's advantages with those of the shaped reward (GRPO's own formula,
      :func:`trl_ext.advantages.group_relative_advantages`; left as GRPO formed them when shaping moved no reward); a
      subclass (e.g. :class:`trl_ext.RLOOTrainer`) overrides ``_round_advantages`` and inherits all of the above. With
      ``max_generated_completions`` each step's refills are capped to the rest of that budget and a callback
      (:class:`trl_ext.dapo.step.GenerationBudget`) stops training before a step it could not pay for. Opt-in, cheaper
      refills (:mod:`trl_ext.dapo.prompt_history`): ``dynamic_sampling_skip_probability`` skips prompts whose recent
      groups carried no signal before generating them (GRESO; refill prompts are passed over, the dataloader's are
      replaced from the refill stream; the history is recorded from every round's gathered groups),
      ``dynamic_sampling_sized_refill`` draws about ``missing / informative rate`` prompts per refill round. Dropped
      rows are not spared TRL's old/reference log-prob forwards: the parent computes them for every row before the
      rewards exist (only when ``beta != 0`` or generation and optimisation steps are misaligned; neither with DAPO's
      defaults), with no seam between; docs/dynamic-sampling.md gives their measured cost.
    * ``_save_optimizer_and_scheduler`` / ``_load_optimizer_and_scheduler`` (through
      :class:`trl_ext.resume.GenerationStateMixin`): every checkpoint also holds the carried surplus (with its
      behaviour log-probabilities and generation step), the refill stream's position, the staleness counter and the
      running totals, besides GRPO's generation buffer, in ``trl_ext_state_{process_index}.pt``. A resumed run
      therefore trains on the surplus the interrupted one had carried and matches an uninterrupted run. The pool
      holds global rows and is the same on every rank; each rank saves and restores its own copy.
    * ``create_model_card`` (through :class:`trl_ext.cards.ModelCardMixin`): the card names DAPO, cites its paper
      and trl_ext.

    Everything read or written of GRPOTrainer's private parts goes through :mod:`trl_ext.seam`: among them the
    completions table, where GRPOTrainer logs its advantages in the body that forms them, so
    :func:`trl_ext.seam.replace_advantages` puts the replaced ones there. Its metrics (``reward``,
    ``rewards/<name>/*``, ``frac_reward_zero_std``) are left as GRPOTrainer logs them: the user's rewards.
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
        args = self._checked_args(model, args)
        # with an environment_factory the environment's reset() may supply the prompt (TRL 1.16)
        prompt_optional = kwargs.get("environment_factory") is not None
        check_prompt_dataset(train_dataset, "train_dataset", type(self).__name__, prompt_optional)
        check_prompt_dataset(eval_dataset, "eval_dataset", type(self).__name__, prompt_optional)
        if args.dynamic_sampling:
            check_refillable(train_dataset)
        super().__init__(model, reward_funcs, args=args, train_dataset=train_dataset, eval_dataset=eval_dataset,
                         processing_class=processing_class, reward_processing_classes=reward_processing_classes,
                         **kwargs)
        disable_bnb_cpu_repack(self.model)  # no-op unless 4-bit on CPU; see trl_ext.models
        warn_plain_prompts_for_chat_model(train_dataset, seam.tokenizer(self), "train_dataset", type(self).__name__)
        self._signal_index = signal_column(args.dynamic_sampling_signal, self.reward_func_names)
        self._overlong = OverlongShaping.from_config(args)  # None when off
        self._init_dynamic_sampling_state()
        if args.dynamic_sampling and args.dynamic_sampling_max_staleness > 0 and not _rotary(self.model.config):
            logger.warning(
                "%s has no rotary position settings (rope_*) in its config: if it adds absolute position embeddings "
                "(GPT-2, OPT), a carried surplus group re-padded among longer prompts sees other positions at loss "
                "time than when its behaviour log-probs were stored (TRL passes no position ids), which moves its "
                "clipped ratio. Set dynamic_sampling_max_staleness=0 to drop surplus instead of carrying it.",
                type(self.model).__name__)
        if args.max_generated_completions is not None:
            self.add_callback(GenerationBudget(self.dynamic_sampling_totals, self.num_generations))

    def _checked_args(self, model, args):
        """``args``, or the config class's defaults named after the model; refused if it is not that class."""
        config_class = self.config_class
        if args is None:
            model_name = model if isinstance(model, str) else get_config_model_id(model.config)
            args = config_class(f"{model_name.split('/')[-1]}-{config_class.__name__.removesuffix('Config')}")
        if not isinstance(args, config_class):
            raise TypeError(
                f"{type(self).__name__} needs a {config_class.__name__}, got {type(args).__name__}. Build the config "
                f"with trl_ext.{config_class.__name__}(...): the GRPOConfig fields plus its own."
            )
        seam.check_loss_routing(type(self), args)  # a no-op unless a subclass replaces TRL's loss
        return args

    def _init_dynamic_sampling_state(self) -> None:
        """The pool, the refill stream's position, the step counter and the run's totals (all checkpointed)."""
        args = self.args
        self._ds_pool = GroupPool(self.num_generations, seam.tokenizer(self).pad_token_id)
        self._ds_refills = refill_source(self.train_dataset, args.seed + 1)
        self._ds_refill_drawn = 0  # prompts taken from the refill stream so far (a resumed run skips them)
        self._ds_step = 0
        self._ds_capped_steps = 0  # steps that stopped at the refill cap, for the warning's count (not checkpointed)
        # running totals across the run (the benchmark reads them): groups generated / informative / trained on
        self.dynamic_sampling_totals = {
            "generated_groups": 0, "informative": 0, "trained": 0, "dropped": 0, "padded": 0, "skipped_prompts": 0,
        }
        self._ds_history = None  # GRESO-style prompt skipping (trl_ext.dapo.prompt_history), None when off
        if args.dynamic_sampling_skip_probability > 0:
            self._ds_history = PromptHistory(args.dynamic_sampling_skip_probability,
                                             args.dynamic_sampling_max_skip_probability, args.seed + 2)
        if (args.dynamic_sampling and not isinstance(self._ds_refills, StreamRefills)
                and len(self.train_dataset) < args.generation_batch_size // self.num_generations):
            logger.warning(
                "train_dataset has %d prompts, fewer than the %d one generation round needs: refills will repeat "
                "prompts within a round.", len(self.train_dataset), args.generation_batch_size // self.num_generations
            )

    # ---- rewards ---------------------------------------------------------------------------------------------------
    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        rewards_per_func = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)  # (N, F)
        shaping = None
        if self._overlong is not None:
            local = self._overlong(completion_ids_list).to(rewards_per_func.device)  # (N_local,)
            seam.log_completion_column(self, f"shaping/{self._overlong.name}", local.tolist())
            shaping = self.accelerator.gather(local)  # (N,), the rows in rewards_per_func's (TRL's global) order
        weights = self.reward_weights.to(rewards_per_func.device)
        seam.record_round_rewards(self, round_rewards(rewards_per_func, weights, shaping, self._signal_index))
        return rewards_per_func

    # ---- dynamic sampling ------------------------------------------------------------------------------------------
    def _generate_and_score_completions(self, inputs):
        if not (self.model.training and self.args.dynamic_sampling):
            return self._generate_round(inputs)[0]
        return self._dynamic_sampling_step(inputs)

    def _generate_round(self, inputs) -> tuple[dict, RoundRewards]:
        """One pass of GRPOTrainer's generation and scoring, then the advantages that reach the loss: GRPO's, or
        ``_round_advantages``'s where it gives any; logs the shaping. Returns the output and the round's rewards."""
        output, rewards = seam.scored_round(self, super()._generate_and_score_completions, inputs)
        mode = "train" if self.model.training else "eval"
        num_generations = self.num_generations if mode == "train" else self.num_generations_eval
        if rewards.shaping is not None:
            logged = seam.metrics(self, mode)
            logged[f"shaping/{self._overlong.name}/mean"].append(torch.nanmean(rewards.shaping).item())
            logged[f"shaping/{self._overlong.name}/std"].append(nanstd(rewards.shaping).item())
        advantages = self._round_advantages(output, rewards, num_generations, mode)  # (N_global,) or None
        if advantages is not None:
            rows = process_rows(advantages.numel(), self.accelerator.process_index, self.accelerator.num_processes)
            seam.replace_advantages(self, output, advantages, rows)  # the loss's and the completions table's
        return output, rewards

    def _round_advantages(self, output: dict, rewards: RoundRewards, num_generations: int,
                          mode: str) -> torch.Tensor | None:
        """GRPO's group-relative advantages of the shaped reward, (N_global,); None where shaping moved no reward,
        leaving GRPOTrainer's own (the same numbers). The place where a subclass forms its own advantages."""
        if rewards.shaping is None or not rewards.shaping.nan_to_num(0.0).any():
            return None
        per_func, weights = shaped_columns(rewards, self.reward_weights)  # (N, F + 1), (F + 1,)
        return group_relative_advantages(per_func, weights, num_generations, self.scale_rewards,
                                         self.multi_objective_aggregation)

    def _dynamic_sampling_step(self, inputs):
        """One generation batch of informative groups: draw rounds until the pool holds enough, handle the cap,
        take the batch (surplus stays in the pool), give this rank its slice, record the step."""
        args, pool = self.args, self._ds_pool
        need = args.generation_batch_size // self.num_generations  # groups per generation batch, all ranks together
        self._ds_step += 1  # dynamic-sampling steps (generation batches): staleness is counted in them
        dropped = pool.drop_stale(self._ds_step, args.dynamic_sampling_max_staleness)
        record = StepRecord(carried_in=pool.num_groups, dropped=dropped)
        max_refill_rounds = refill_rounds_allowed(args, generated_completions(self.dynamic_sampling_totals,
                                                                              self.num_generations))
        if self._ds_history is not None:
            inputs = self._skip_in_first_round(inputs, record)
        if args.dynamic_sampling_sized_refill:  # each sized round is capped to the budget itself, not whole rounds
            max_refill_rounds = args.dynamic_sampling_max_refill_rounds
        self._draw_rounds(inputs, need, record, max_refill_rounds)
        if pool.num_groups < need:
            record.padded = self._at_the_cap(need, record, max_refill_rounds)
        batch = pool.take(need)
        if args.dynamic_sampling_max_staleness > 0:  # where the parent returned none, the surplus gets them now
            store_behaviour_logps(pool, self._policy_logps)
        local = self._local_rows(batch, need)
        record_step(self.dynamic_sampling_totals, seam.metrics(self, "train"), record, need, pool.num_groups,
                    skipping=self._ds_history is not None)
        return local

    def _draw_rounds(self, inputs, need: int, record: StepRecord, max_refill_rounds: int) -> None:
        """Generation rounds until the pool holds ``need`` groups or ``max_refill_rounds`` refills were drawn: the
        first on the dataloader's batch, the refills on fresh prompts."""
        pool, progress = self._ds_pool, None
        while pool.num_groups < need and record.rounds <= max_refill_rounds:
            if record.rounds > 0:
                n_prompts = self._refill_size(need - pool.num_groups, record)
                if n_prompts == 0:  # the budget of generated completions cannot pay for one more group per rank
                    record.budget_spent = True
                    break
                inputs = self._refill_inputs(n_prompts, record)
                if progress is None:
                    progress = tqdm(
                        total=need, initial=pool.num_groups, desc="dynamic sampling refill", leave=False,
                        disable=self.args.disable_tqdm or not self.accelerator.is_main_process,
                    )
            self._keep_informative(*self._generate_round(inputs), record, inputs)
            if progress is not None:
                progress.n = min(pool.num_groups, need)
                progress.refresh()
        if progress is not None:
            progress.close()

    def _keep_informative(self, output: dict, rewards: RoundRewards, record: StepRecord, inputs: list[dict]) -> None:
        """Pool the round's groups whose signal varies and whose advantages move; note the rest in ``record``; with
        prompt skipping on, record each group's outcome under its prompt's key (``inputs``: this rank's rows)."""
        G, tolerance = self.num_generations, self.args.dynamic_sampling_tolerance
        batch = gather_output(output, self.accelerator, seam.tokenizer(self).pad_token_id)  # (N_global, ...)
        signal = rewards.signal  # (N_global,)
        varies = informative_groups(signal, G, tolerance)  # (N_global / G,)
        # the advantages that reach the loss come from the total reward (shaping included) or, in a subclass,
        # from another estimator: a group is kept only if they move too (see DAPOConfig.dynamic_sampling)
        moves = moving_groups(batch["advantages"], G, tolerance)
        keep = varies & moves
        if self._ds_history is not None and all("prompt" in x for x in inputs):
            keys = gather_object([prompt_key(x["prompt"]) for x in inputs])  # (N_global,) in TRL's rank order
            self._ds_history.record(keys[::G], varies.tolist())
        rows = rows_of_groups(keep, G)
        self._ds_pool.add(select_rows(batch, rows), self._ds_step)
        record.add_round(select_rows(batch, ~rows), keep, varies & ~moves, describe_uninformative(signal, G, varies),
                         self.args.dynamic_sampling_signal)

    def _at_the_cap(self, need: int, record: StepRecord, max_refill_rounds: int) -> int:
        """Too few informative groups after the last round allowed: raise, or pad the pool with masked filler
        (``dynamic_sampling_on_cap``); returns the number of filler groups."""
        args, pool = self.args, self._ds_pool
        cap = f"dynamic_sampling_max_refill_rounds={args.dynamic_sampling_max_refill_rounds}"
        if max_refill_rounds < args.dynamic_sampling_max_refill_rounds:
            cap += f", lowered to {max_refill_rounds} by what is left of max_generated_completions"
        if record.budget_spent:
            cap += "; the sized refill stopped where max_generated_completions could pay for no more groups"
        message = record.cap_message(pool.num_groups, need, cap)
        if args.dynamic_sampling_on_cap == "raise":
            raise RuntimeError(f"{message} To go on, {CAP_FIXES}, or set dynamic_sampling_on_cap='train_on_kept'.")
        padded = need - pool.num_groups
        self._ds_capped_steps += 1
        full = (f"{message} Training on them with {padded} masked filler groups (no gradient; the metric "
                f"dynamic_sampling/padded_groups counts them). If this repeats, {CAP_FIXES}; set "
                "dynamic_sampling_on_cap='raise' to stop instead.")
        # the whole story once, then a count at the 2nd, 4th, 8th ... capped step: a run in a sparse regime caps
        # most steps, and the same paragraph each step would bury every other line of the log (all at INFO)
        count = self._ds_capped_steps
        if count == 1:
            logger.warning(full)
        elif count & (count - 1) == 0:
            logger.warning("Dynamic sampling stopped short again: %d steps so far trained with masked filler groups "
                           "(this one: %d informative of %d needed, %d filler). The first such warning says why and "
                           "what to change.", count, pool.num_groups, need, padded)
        else:
            logger.info(full)
        pool.add(masked_filler(record.rejected, padded, self.num_generations, seam.tokenizer(self).pad_token_id),
                 self._ds_step)
        return padded

    def _local_rows(self, batch: dict, need: int) -> dict:
        """This rank's contiguous slice of the global batch, with behaviour log-probs and the loss normaliser."""
        accelerator = self.accelerator
        local = select_rows(batch, process_rows(need * self.num_generations, accelerator.process_index,
                                                accelerator.num_processes))
        if "old_per_token_logps" in local:  # carried rows have it; fill the fresh rows with the current policy's
            missing = torch.isnan(local["old_per_token_logps"]).any(dim=1)
            if missing.any():
                fresh = self._policy_logps(local)
                local["old_per_token_logps"] = torch.where(missing.unsqueeze(1), fresh, local["old_per_token_logps"])
        loss_mask = batch["completion_mask"] * batch["tool_mask"] if "tool_mask" in batch else batch["completion_mask"]
        local["num_items_in_batch"] = loss_mask.sum()
        return local

    def _refill_size(self, missing: int, record: StepRecord) -> int:
        """Prompts the next refill round draws: a whole generation batch, or with ``dynamic_sampling_sized_refill``
        about ``missing`` over the run's informative rate (:func:`trl_ext.dapo.prompt_history.refill_prompts`)."""
        args, totals, G = self.args, self.dynamic_sampling_totals, self.num_generations
        full_round = args.generation_batch_size // G
        if not args.dynamic_sampling_sized_refill:
            return full_round
        generated = totals["generated_groups"] + record.generated
        budget = None
        if args.max_generated_completions is not None:
            budget = args.max_generated_completions // G - generated
        return refill_prompts(missing, totals["informative"] + record.informative, generated,
                              args.dynamic_sampling_refill_rate_floor, full_round, self.accelerator.num_processes,
                              budget)

    def _skip_in_first_round(self, inputs: list[dict], record: StepRecord) -> list[dict]:
        """GRESO on the dataloader's batch: a prompt the history skips is replaced, before anything is generated, by
        a prompt from the refill stream (itself subject to skipping). Decided on the gathered batch, with uniforms
        keyed by (step, group), so every rank replaces the same groups; returns this rank's rows."""
        G, history = self.num_generations, self._ds_history
        if not all("prompt" in x for x in inputs):  # an environment supplies the prompt: nothing to key on
            return inputs
        rows = gather_object(list(inputs))  # (N_global,) dataset rows, TRL's rank order: groups of G consecutive
        skipped = [j for j in range(len(rows) // G)
                   if history.skips(prompt_key(rows[j * G]["prompt"]), f"first:{self._ds_step}:{j}")]
        if not skipped:
            return inputs
        record.skipped += len(skipped)
        for j, row in zip(skipped, self._draw_refill_prompts(len(skipped), record), strict=True):
            rows[j * G:(j + 1) * G] = [row] * G
        return rows[process_rows(len(rows), self.accelerator.process_index, self.accelerator.num_processes)]

    def _draw_refill_prompts(self, n_prompts: int, record: StepRecord) -> list[dict]:
        """``n_prompts`` dataset rows from the refill stream; with prompt skipping on, prompts the history skips
        are passed over (and counted in ``record``)."""
        history, stream = self._ds_history, self._ds_refills
        rows = []
        while len(rows) < n_prompts:
            row, draw = stream.next_row(), self._ds_refill_drawn
            self._ds_refill_drawn += 1  # skipped or not: a resumed run continues after it
            if history is not None and history.skips(prompt_key(row["prompt"]), draw):
                record.skipped += 1
                continue
            rows.append(row)
        if isinstance(stream, StreamRefills) and self.accelerator.num_processes > 1:
            check_ranks_drew_alike(rows)  # each rank reads the stream on its own
        return rows

    def _refill_inputs(self, n_prompts: int, record: StepRecord) -> list[dict]:
        """This rank's rows of ``n_prompts`` fresh prompts, laid out as TRL's RepeatSampler + dataloader would."""
        G = self.num_generations
        prompts = self._draw_refill_prompts(n_prompts, record)
        # each prompt G times, consecutively; copies, as a dataset gives a fresh row per access (and TRL's stream)
        rows = [copy.deepcopy(row) for row in prompts for _ in range(G)]
        return rows[process_rows(len(rows), self.accelerator.process_index, self.accelerator.num_processes)]

    @property
    def pooled_groups(self) -> int:
        """Informative groups waiting in the dynamic-sampling pool, carried to the next step (all ranks together)."""
        return self._ds_pool.num_groups

    # ---- checkpoints -----------------------------------------------------------------------------------------------
    def _resume_state(self) -> dict:
        return {
            **super()._resume_state(),
            "dynamic_sampling": {
                "pool": self._ds_pool.state_dict(), "step": self._ds_step,
                "refill_drawn": self._ds_refill_drawn, "totals": dict(self.dynamic_sampling_totals),
                **({"refill_stream": self._ds_refills.state_dict()} if isinstance(self._ds_refills, StreamRefills)
                   else {}),
                **({"prompt_history": self._ds_history.state_dict()} if self._ds_history is not None else {}),
            },
        }

    def _load_resume_state(self, state: dict, checkpoint: str) -> None:
        super()._load_resume_state(state, checkpoint)
        ds = state.get("dynamic_sampling")
        if ds is None:
            return
        self._ds_pool.load_state_dict(ds["pool"])
        self._ds_step = ds["step"]
        self._ds_refill_drawn = ds["refill_drawn"]
        if isinstance(self._ds_refills, StreamRefills) and "refill_stream" not in ds:
            logger.warning("%s holds no position of a streaming train_dataset (it was written by a run on a map-style "
                           "dataset): the refill stream starts again at the stream's first row.", checkpoint)
        else:
            self._ds_refills.load_state_dict(ds.get("refill_stream", {}), self._ds_refill_drawn)
        self.dynamic_sampling_totals.update(ds["totals"])
        if self._ds_history is not None and "prompt_history" in ds:
            self._ds_history.load_state_dict(ds["prompt_history"])
        if self._ds_pool.num_groups:
            logger.info("dynamic sampling: %d surplus groups restored from %s", self._ds_pool.num_groups, checkpoint)

    @torch.no_grad()
    def _policy_logps(self, batch: dict) -> torch.Tensor:
        """Per-token log-probabilities of ``batch``'s completions under the current policy, (B, T)."""
        return seam.per_token_logps(self, self.model, *seam.model_inputs(batch),
                                    batch_size=self.args.per_device_train_batch_size)[0]
