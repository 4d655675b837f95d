"""PPOTrainer: PPO with a learned critic on GRPOTrainer's generation machinery (see :mod:`trl_ext.ppo`)."""

from __future__ import annotations

import torch
from accelerate.utils import is_peft_model
from datasets import Dataset
from torch import nn
from transformers import PreTrainedModel
from trl import GRPOTrainer
from trl.models.utils import disable_gradient_checkpointing
from trl.trainer.utils import disable_dropout_in_model, get_config_model_id

from .. import seam
from ..adapters import keep_requires_grad
from ..advantages import RoundRewards, gae, token_rewards, weighted_reward, whiten
from ..cards import INSTRUCTGPT_PAPER, PPO_PAPER, ModelCardMixin
from ..checks import warn_plain_prompts_for_chat_model
from ..groups import process_rows
from ..resume import GenerationStateMixin
from . import porting
from .config import AdaptiveKLController, PPOConfig
from .critic import build_separate_critic, build_shared_critic, critic_parameters, load_critic, optimizer_with_critic
from .critic import save_critic
from .losses import clipped_surrogate, clipped_value_loss
from .metrics import log_loss, log_rollout
from .roles import build_reference, check_one_process, check_roles, put_shared_base_rewards


class PPOTrainer(ModelCardMixin, GenerationStateMixin, GRPOTrainer):
    """
    PPO with a critic (Ouyang et al. 2022, arXiv:2203.02155; Schulman et al. 2017, arXiv:1707.06347) on GRPOTrainer.

    Hooks overridden w.r.t. [`trl.GRPOTrainer`], and why:

    * ``_calculate_rewards``: calls GRPO's and records the round's rewards (per function and the weighted total,
      [`trl_ext.advantages.weighted_reward`], NaN for a completion no function scored), handed back with GRPO's
      output by [`trl_ext.seam.scored_round`] (which checks the hook ran exactly once for the round).
    * ``_generate_and_score_completions``: replaces GRPO's group-relative advantages, in cleanRL's order, one method
      each: the rollout (GRPO's generation and reward scoring), the scores, π_old/reference log-probs and critic
      values, per-token KL-penalised rewards ([`token_rewards`]), GAE ([`trl_ext.advantages.gae`]) and whitening, the
      logs, the adaptive KL. The output gains ``values``, ``returns`` and per-token ``advantages`` (B, T);
      ``old_per_token_logps`` is always set.
    * ``_compute_loss``: clipped policy surrogate + ``vf_coef`` × clipped value loss, both token-level means over the
      generation batch (GRPO's ``"dapo"`` normalisation, so gradient accumulation is exact), in the one returned loss
      that Trainer back-propagates (no backward inside the hook, so the engine's backward/step stay Trainer's). The
      policy term is multiplied by TRL's vLLM importance-sampling ratio where GRPO's output carries one
      (``vllm_importance_sampling_correction``, on by default with vLLM), as GRPO's loss does. With
      ``use_liger_kernel=True`` the installed TRL must still route the loss here
      ([`trl_ext.seam.check_loss_routing`]; TRL 1.16 does).
    * ``create_optimizer``: one optimizer, scheduler and ``optimizer.step`` for policy and critic: Trainer's policy
      groups plus a critic group (``critic_learning_rate``), with the critic's gradients outside the policy model
      clipped and zeroed by optimizer hooks ([`trl_ext.ppo.critic.optimizer_with_critic`]).
    * ``_save``: also writes the critic (``critic/`` for a separate critic, the ``critic`` adapter + ``value_head.pt``
      when shared); ``_load_from_checkpoint`` reads it back on resume (Trainer restores only the policy), and the
      checkpoint's ``trl_ext_state_{rank}.pt`` holds the adaptive KL coefficient and GRPO's generation buffer
      (:class:`trl_ext.resume.GenerationStateMixin`), so a resumed run matches an uninterrupted one.

    Everything else (generation with transformers or vLLM, the RepeatSampler and ``steps_per_generation`` buffering,
    ``num_iterations`` reuse = PPO epochs, metrics and completion logging) is GRPO's, unchanged.

    Args beyond GRPOTrainer's:
        value_model: the critic as a sequence-classification model (instance or path), for separate roles. Default:
            a copy of the reward model when ``reward_funcs`` contains one, otherwise the policy's checkpoint loaded
            with a fresh ``num_labels=1`` head. Its tokenizer must be the policy's (it reads the policy's token ids).
        ref_model: the frozen reference of the KL penalty (a causal LM or a path), as in TRL 0.x. Default: a fresh
            copy of the policy's checkpoint, or with PEFT the policy with its adapters disabled.

    TRL 0.x's keywords are accepted too: ``config``/``policy``/``ref_policy``/``tokenizer`` (its older names) and
    ``reward_model`` (= ``reward_funcs``); ``data_collator`` and the old positional order are refused with the fix.
    DeepSpeed is refused (the critic is outside the engine's model); see docs/porting-from-trl-ppo.md.
    """

    _tag_names = ["trl", "trl_ext", "ppo"]
    _name = "PPO"
    _paper, _extra_papers = PPO_PAPER, (INSTRUCTGPT_PAPER,)  # model card (trl_ext.cards)

    def __init__(
        self,
        model=None,
        reward_funcs=None,
        args: PPOConfig | None = None,
        train_dataset: Dataset | None = None,
        eval_dataset=None,
        processing_class=None,
        reward_processing_classes=None,
        callbacks=None,
        optimizers=(None, None),
        peft_config=None,
        value_model: PreTrainedModel | str | None = None,
        ref_model: PreTrainedModel | str | None = None,
        **kwargs,
    ):
        named = dict(model=model, reward_funcs=reward_funcs, args=args, ref_model=ref_model,
                     processing_class=processing_class)
        named = porting.map_trainer_kwargs(named, kwargs)  # TRL 0.x's keywords (policy=, reward_model=, ...)
        model, reward_funcs, args, ref_model = named["model"], named["reward_funcs"], named["args"], named["ref_model"]
        processing_class = named["processing_class"]
        if args is None:
            model_name = model if isinstance(model, str) else get_config_model_id(model.config)
            args = PPOConfig(f"{str(model_name).split('/')[-1]}-PPO")
        if not isinstance(args, PPOConfig):
            raise TypeError(f"PPOTrainer needs args=PPOConfig(...), got {type(args).__name__}.")
        seam.check_loss_routing(type(self), args)
        reward_funcs = check_roles(args, model, reward_funcs, value_model, ref_model, peft_config, optimizers, kwargs,
                                   (train_dataset, eval_dataset))
        super().__init__(
            model, reward_funcs, args=args, train_dataset=train_dataset, eval_dataset=eval_dataset,
            processing_class=processing_class, reward_processing_classes=reward_processing_classes,
            callbacks=callbacks, optimizers=optimizers, peft_config=peft_config, **kwargs,
        )
        warn_plain_prompts_for_chat_model(train_dataset, seam.tokenizer(self), "train_dataset", "PPOTrainer")
        self.kl_coef = args.kl_coef
        self.kl_ctl = AdaptiveKLController(args.kl_coef, args.kl_target, args.kl_horizon) if args.kl_target else None
        self._setup_roles(value_model, ref_model)
        porting.check_stop_token_id(args.stop_token_id, self.eos_token_ids)
        for reward_func in self.reward_funcs:
            if isinstance(reward_func, nn.Module) and args.disable_dropout:
                disable_dropout_in_model(reward_func)

    # ---- construction: reference, reward model and critic beside GRPO's policy ------------------------------------
    def _setup_roles(self, value_model, ref_model) -> None:
        """The critic beside GRPO's policy, and the reference its KL penalty needs (separate roles); with a shared
        base, the reward adapters go onto the policy's base and the critic is an adapter there too."""
        unwrapped = self.accelerator.unwrap_model(self.model)
        if self.args.shared_base:
            check_one_process(self.accelerator.num_processes)
            reward_adapter = put_shared_base_rewards(unwrapped, self.reward_funcs, self.chat_template_kwargs)
            critic = build_shared_critic(unwrapped, reward_adapter, self.args.gradient_checkpointing_kwargs)
            self.critic = self.accelerator.prepare_model(critic)
            return
        critic = build_separate_critic(
            value_model, tokenizer=seam.tokenizer(self), reward_funcs=self.reward_funcs,
            reward_processing_classes=self.reward_processing_classes,
            policy_id=get_config_model_id(self.model.config), args=self.args, unwrap=self.accelerator.unwrap_model,
        )
        self.critic = self.accelerator.prepare_model(critic)
        # Reference: GRPO builds one only when its loss needs it (beta != 0); PPO's reward needs it for kl_coef > 0.
        if ref_model is not None or (self.kl_coef > 0 and self.ref_model is None and not is_peft_model(unwrapped)):
            ref = build_reference(ref_model, policy_id=get_config_model_id(self.model.config),
                                  tokenizer=seam.tokenizer(self), args=self.args, dtype=self.model.dtype,
                                  temperature=self.temperature)
            self.ref_model = self.accelerator.prepare_model(ref, evaluation_mode=True)

    def create_optimizer(self, model=None):
        """Trainer's optimizer class (``args.optim``) and policy groups, plus one group for the critic
        (``critic_learning_rate``): see :func:`trl_ext.ppo.critic.optimizer_with_critic`. Building the groups here,
        not in ``Trainer.create_optimizer``, keeps a shared critic adapter (inside the policy model) out of the
        policy's groups without touching any ``requires_grad``."""
        if self.optimizer is not None:
            return self.optimizer
        opt_model = self.model if model is None else model
        optimizer_cls, optimizer_kwargs = self.optimizer_cls_and_kwargs or self.get_optimizer_cls_and_kwargs(
            self.args, opt_model
        )
        inside, outside = self._critic_parameters()
        self.optimizer = optimizer_with_critic(
            optimizer_cls, optimizer_kwargs, opt_model, set(self.get_decay_parameter_names(opt_model)),
            inside=inside, outside=outside, args=self.args,
        )
        return self.optimizer

    def _critic_parameters(self) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
        """(parameters inside the policy model, parameters outside it) that the critic trains."""
        unwrap = self.accelerator.unwrap_model
        return critic_parameters(unwrap(self.critic), unwrap(self.model), self.args.shared_base)

    # ---- rollout -> scores -> values -> GAE (-> rollout logs) --------------------------------------------------------
    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        rewards_per_func = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        total = weighted_reward(rewards_per_func, self.reward_weights)  # (N_global,), NaN where unscorable
        seam.record_round_rewards(self, RoundRewards(rewards_per_func, total))
        return rewards_per_func

    def _generate_and_score_completions(self, inputs):
        output, rewards = self._rollout(inputs)
        mask = output["completion_mask"].float()  # (B, C)
        scores, contains_eos = self._scores(output, rewards)  # (B,) each
        # An unscorable completion (every reward function returned None: NaN score) carries no learning signal, as in
        # GRPO: GAE runs over the scored rows only, so its advantages are 0 on every token; its value target is the
        # critic's own rollout value. Its tokens stay in the loss normaliser (as GRPO's zero-advantage rows do).
        scored = (~torch.isnan(scores)).float().unsqueeze(1)  # (B, 1)
        scored_mask = mask * scored  # (B, C)
        with torch.no_grad(), disable_gradient_checkpointing(self.model, self.args.gradient_checkpointing_kwargs):
            logps, ref_logps = self._rollout_logps(output)  # (B, C) each; ref None without a KL penalty
            values = self._values(output)  # (B, C)
        rewards, kl = token_rewards(logps, ref_logps, scores.nan_to_num(0.0), mask, self.kl_coef)  # (B, C) each
        if self.args.whiten_rewards:
            rewards = whiten(rewards, scored_mask, shift_mean=False)
        advantages, returns = gae(rewards, values, scored_mask, gamma=self.args.gamma, lam=self.args.lam)
        if self.args.whiten_advantages:
            advantages = whiten(advantages, scored_mask)
        returns = torch.where(scored.bool(), returns, values * mask)
        self._log_table_advantages(output, advantages, mask)
        seq_kl = log_rollout(seam.metrics(self), self.accelerator, kl=kl,
                             kl_coef=self.kl_coef, scores=scores, contains_eos=contains_eos, values=values,
                             returns=returns, mask=mask)
        if self.kl_ctl is not None and self.model.training:
            self.kl_coef = self.kl_ctl.update(seq_kl, n_steps=mask.size(0) * self.accelerator.num_processes)
        output.update(advantages=advantages, returns=returns, values=values, old_per_token_logps=logps)
        if self.beta == 0.0:  # only GRPO's loss term reads it
            output.pop("ref_per_token_logps", None)
        return output

    def _log_table_advantages(self, output: dict, advantages: torch.Tensor, mask: torch.Tensor) -> None:
        """The completions table (``log_completions``) shows each completion's mean per-token GAE advantage, (B, C)
        -> (B,), all ranks' rows in TRL's order, where GRPOTrainer logged its group-relative ones (0 with one
        generation per prompt). Called while ``output["advantages"]`` still holds GRPO's, which the seam checks."""
        per_completion = (advantages * mask).sum(1) / mask.sum(1).clamp(min=1)  # (B,)
        accelerator = self.accelerator
        everyone = accelerator.gather(per_completion.contiguous()).cpu()  # (N_global,), process order
        rows = process_rows(everyone.numel(), accelerator.process_index, accelerator.num_processes)
        seam.replace_advantages(self, output, everyone, rows)

    def _rollout(self, inputs) -> tuple[dict, RoundRewards]:
        """GRPO's generation and reward scoring, and the round's rewards (its group-relative advantages are replaced
        by the caller)."""
        unwrapped = self.accelerator.unwrap_model(self.model)
        if not is_peft_model(unwrapped):
            return seam.scored_round(self, super()._generate_and_score_completions, inputs)
        with keep_requires_grad(unwrapped):  # GRPO's reference pass (beta != 0) disables adapters: critic refrozen
            return seam.scored_round(self, super()._generate_and_score_completions, inputs)

    def _scores(self, output, rewards: RoundRewards) -> tuple[torch.Tensor, torch.Tensor]:
        """The scalar score of each local completion, (B,): the round's weighted reward (:func:`weighted_reward`; NaN
        when no reward function scored it), minus ``missing_eos_penalty`` where it never emitted EOS; and that EOS
        flag."""
        completion_ids, completion_mask = output["completion_ids"], output["completion_mask"]
        device, n_local = completion_ids.device, completion_ids.size(0)
        process_slice = slice(self.accelerator.process_index * n_local, (self.accelerator.process_index + 1) * n_local)
        scores = rewards.total[process_slice]  # (B,)
        lengths = completion_mask.sum(1)
        last_token = completion_ids[torch.arange(n_local, device=device), (lengths - 1).clamp(min=0)]
        contains_eos = torch.isin(last_token, torch.tensor(self.eos_token_ids, device=device)) & (lengths > 0)
        if self.args.missing_eos_penalty is not None:
            scores = scores - self.args.missing_eos_penalty * (~contains_eos).float()
        return scores, contains_eos

    def _rollout_logps(self, output) -> tuple[torch.Tensor, torch.Tensor | None]:
        """π_old's per-token log-probs (GRPO's where its output has them; PPO needs them for the KL penalty and the
        ratio) and the reference's (GRPO's rule, :func:`trl_ext.seam.reference_logps`), (B, C) each."""
        input_ids, attention_mask, logits_to_keep, batch_size = self._model_inputs(output)
        logps = seam.behaviour_logps(output)
        if logps is None:
            logps = seam.per_token_logps(self, self.model, input_ids, attention_mask, logits_to_keep, batch_size)[0]
        ref_logps = output.get("ref_per_token_logps")
        if ref_logps is None and self.kl_coef > 0:
            ref_logps = seam.reference_logps(self, input_ids, attention_mask, logits_to_keep, batch_size)
        return logps, ref_logps

    def _values(self, output) -> torch.Tensor:
        """Critic values V(s_t) for completion token t, (B, C): the head on the hidden state that predicts token t."""
        input_ids, attention_mask, logits_to_keep, batch_size = self._model_inputs(output)
        out = []
        for start in range(0, input_ids.size(0), batch_size):
            v = self.critic(input_ids[start : start + batch_size], attention_mask[start : start + batch_size])
            out.append(v[:, -logits_to_keep - 1 : -1])
        return torch.cat(out).float()

    def _model_inputs(self, batch) -> tuple[torch.Tensor, torch.Tensor, int, int]:
        train = self.model.training
        batch_size = self.args.per_device_train_batch_size if train else self.args.per_device_eval_batch_size
        return *seam.model_inputs(batch), batch_size  # (B, P+C) twice, C, micro-batch

    # ---- loss (-> loss logs) ----------------------------------------------------------------------------------------
    def _compute_loss(self, model, inputs):
        """Clipped surrogate + ``vf_coef`` × clipped value loss: one loss, back-propagated once by Trainer (a backward
        here would be outside the engine's control). The critic's gradients come from the value loss alone (its
        graph does not reach the policy's LoRA, nor the policy's the critic's); the cost is that the critic's
        activations live until that backward, beside the policy's."""
        input_ids, attention_mask, logits_to_keep, _ = self._model_inputs(inputs)
        mask = inputs["completion_mask"].float()  # (B, C)
        # Token-level mean over the whole generation batch, split over processes and accumulation steps (as GRPO's
        # "dapo" loss): each micro-batch contributes its token sum / the generation batch's tokens per optimizer step.
        normalizer = inputs["num_items_in_batch"].clamp(min=1.0) / self.accelerator.num_processes
        if self.model.training:
            normalizer = normalizer * self.current_gradient_accumulation_steps / self.args.steps_per_generation
        values_new = self.critic(input_ids, attention_mask)[:, -logits_to_keep - 1 : -1].float()  # (B, C)
        vf_loss_tok, vf_clipped = clipped_value_loss(values_new, inputs["values"], inputs["returns"],
                                                     self.args.cliprange_value)
        logps, entropies = seam.per_token_logps(self, model, input_ids, attention_mask, logits_to_keep,
                                                compute_entropy=True)
        ref_logps = inputs["ref_per_token_logps"] if self.beta != 0.0 else None  # GRPO's optional k3 term
        pg_loss_tok, ratio, log_ratio = clipped_surrogate(logps, inputs["old_per_token_logps"], inputs["advantages"],
                                                          self.epsilon_low, self.epsilon_high, self.beta, ref_logps,
                                                          seam.importance_sampling_ratio(inputs))
        loss = (pg_loss_tok * mask).sum() / normalizer + self.args.vf_coef * (vf_loss_tok * mask).sum() / normalizer
        log_loss(seam.metrics(self), self.accelerator, mask=mask,
                 entropies=entropies, pg_loss_tok=pg_loss_tok, vf_loss_tok=vf_loss_tok, vf_clipped=vf_clipped,
                 ratio=ratio, log_ratio=log_ratio, advantages=inputs["advantages"], epsilon_low=self.epsilon_low,
                 epsilon_high=self.epsilon_high)
        return loss

    # ---- saving and resuming -----------------------------------------------------------------------------------------
    def _resume_state(self) -> dict:
        return {**super()._resume_state(), "kl_coef": self.kl_coef}

    def _load_resume_state(self, state: dict, checkpoint: str) -> None:
        super()._load_resume_state(state, checkpoint)
        self.kl_coef = state.get("kl_coef", self.kl_coef)
        if self.kl_ctl is not None:
            self.kl_ctl.value = self.kl_coef

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
        """Trainer restores the policy only; the critic comes back from what ``_save`` wrote beside it."""
        super()._load_from_checkpoint(resume_from_checkpoint, model)
        load_critic(self.accelerator.unwrap_model(self.critic), self.accelerator.unwrap_model(self.model),
                    resume_from_checkpoint)

    def _save(self, output_dir: str | None = None, state_dict=None):
        super()._save(output_dir, state_dict=state_dict)
        output_dir = output_dir if output_dir is not None else self.args.output_dir
        save_critic(self.accelerator.unwrap_model(self.critic), output_dir)

