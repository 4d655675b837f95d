"""GoldRewardCallback: the proxy reward, a held-out gold reward and the KL from the reference, measured during RL.

RL against a learned reward can raise the proxy while the truth falls (reward over-optimisation; Gao et al. 2022,
"Scaling Laws for Reward Model Overoptimization", arXiv 2210.10760, plot both against sqrt(KL)). This callback
measures exactly that on held-out prompts while any GRPO-family trainer trains: ``trl.GRPOTrainer``,
``trl.RLOOTrainer``, and trl_ext's DAPO, RLOO and PPO trainers.

Every ``eval_steps`` optimizer steps (and at the start and the end of training) it

1. samples ``num_samples`` completions for each held-out prompt with the current policy, in micro-batches, with the
   trainer's own generation config (temperature, top_p, top_k, min_p, repetition penalty, max_completion_length,
   ``generation_kwargs``) and chat template kwargs, from its own seed;
2. scores them with the proxy (the trainer's ``reward_funcs`` and ``reward_weights``) and with the gold reward(s);
3. computes the KL from the reference on those samples: per sequence ``sum_t log pi(y_t) - log pi_ref(y_t)`` over
   the completion tokens (log-probs of the temperature-scaled distributions, as TRL's own ``kl``), averaged over
   sequences. It is the Monte-Carlo estimate of KL(pi || pi_ref) per sequence: unbiased, but while the policy is
   still close to the reference it can come out slightly negative (seen: -0.002 nats over 400 samples), so
   ``gold/sqrt_kl`` is ``sqrt(max(kl, 0))``;
4. logs ``proxy/reward`` and ``gold/reward`` (the weighted totals' means), ``proxy/<name>`` and ``gold/<name>`` (each
   function's mean), ``gold/kl`` and ``gold/sqrt_kl`` through ``transformers.Trainer.log``, so ``log_history`` and
   every ``report_to`` integration (TensorBoard, trackio, W&B ...) receive them.

Design decisions, and why:

* **Finding the trainer.** transformers gives a callback the model, tokenizer, optimizer, scheduler and dataloaders,
  never the trainer, and the proxy (``reward_funcs``), the reference and the generation settings live on the trainer.
  ``callback.bind(trainer)`` sets it explicitly; when not bound, ``on_train_begin`` finds it on the call stack: the
  ``transformers.Trainer`` whose ``callback_handler`` holds *this* callback object (an identity check, so it cannot
  pick another trainer). That makes ``callbacks=[GoldRewardCallback(...)]`` in the trainer's constructor and
  ``trainer.add_callback(...)`` both work without the user writing anything else.
* **Logging.** GRPOTrainer's ``log`` override averages and then clears its per-step training metrics; calling it at
  an evaluation step that is not a logging step would split those averages. The callback therefore calls the base
  ``transformers.Trainer.log``, which appends to ``log_history`` and runs every integration's ``on_log``, and leaves
  the training metrics alone (it also keeps ``control.should_log``, which that call clears, so the Trainer's own log
  of the same step still happens). The evaluation's entries sit in ``log_history`` beside the training ones, at the
  same ``step``.
* **Training randomness is untouched.** The whole evaluation runs inside a guard that saves and restores the torch
  (CPU and every CUDA device), Python and NumPy RNG states; sampling is seeded from the callback's own ``seed`` (the
  same draw at every evaluation: common random numbers make the curves' step-to-step changes less noisy). Running
  normalisation inside a ``RewardAdapter`` proxy is saved before scoring and restored after, so the evaluation
  batch never enters the training reward's statistics. A run with the callback trains the same weights, bit for
  bit, as one without (``tests/test_callbacks.py``).
* **The reference.** The trainer's own, by GRPOTrainer's rule (:func:`trl_ext.seam.reference_logps`): its
  ``ref_model`` (``beta != 0``), or, for a PEFT policy, the same model with the adapter ``"ref"`` (GRPOTrainer's copy
  of an adapter it re-trains) or with its adapters disabled. When it has neither (``beta=0`` without PEFT, the
  GRPO/DAPO default) no second copy is kept unless asked: pass ``ref_model=`` (a path or a model, e.g. the
  checkpoint training started from), loaded once at
  ``on_train_begin`` and kept frozen; otherwise the KL is not logged (an info line says so). A frozen copy of the
  policy taken at ``on_train_begin`` would be wrong after a resume (it would copy the resumed weights).
* **vLLM.** A trainer that generates with vLLM has no transformers generation config: the callback builds one from
  the same arguments and samples with the training model's ``generate``.
* **Multi-process.** Every process runs the same evaluation (the same seed, the same weights); generation under
  ZeRO-3 needs every rank to take part anyway. It costs duplicated work, not correctness.
* **State.** The history of evaluations, the best gold score and the stop counter are an ``ExportableState``: the
  Trainer writes them into ``trainer_state.json`` at every checkpoint (``stateful_callbacks``), and the callback reads
  them back at ``on_train_begin`` of a resumed run, so its curves continue. (transformers'
  ``restore_callback_states_from_checkpoint=True`` would instead re-create callbacks from their constructor
  arguments, which a reward function cannot be stored as; leave it False.)
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import math
import random
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
import transformers
from transformers import TrainerCallback
from transformers.trainer_callback import ExportableState

from . import seam
from .evaluation import Samples, flatten_samples, sample_completions, score_completions

logger = logging.getLogger(__name__)


@contextlib.contextmanager
def preserved_rng():
    """Run the body and then put back every RNG state the training loop draws from (torch CPU and CUDA, Python, NumPy)."""
    py_state = random.getstate()
    try:
        import numpy as np

        np_state = np.random.get_state()
    except ImportError:  # pragma: no cover - numpy ships with torch wheels
        np, np_state = None, None
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        try:
            yield
        finally:
            random.setstate(py_state)
            if np is not None:
                np.random.set_state(np_state)


def _name_of(func) -> str:
    if isinstance(func, torch.nn.Module):
        return func.config._name_or_path.split("/")[-1] if hasattr(func, "config") else type(func).__name__
    base = func
    while hasattr(base, "func"):  # functools.partial
        base = base.func
    return getattr(func, "__name__", None) or getattr(base, "__name__", type(base).__name__)


def weighted_mean(per_func: Sequence[Sequence[float]], weights: Sequence[float]) -> tuple[float, list[float]]:
    """(mean of the weighted total, mean of each function), NaN-aware as TRL: a NaN score is left out of a row's sum
    (``nansum``), and a function's mean is over its non-NaN rows (NaN if it has none)."""
    scores = torch.tensor(per_func, dtype=torch.float64).T  # (N, F)
    total = (scores * torch.tensor(weights, dtype=torch.float64)).nansum(dim=1)  # (N,)
    means = [float(col[~col.isnan()].mean()) if (~col.isnan()).any() else math.nan for col in scores.T]
    return float(total.mean()), means


def falling_gold_while_proxy_rises(history: Sequence[dict]) -> int:
    """How many evaluations in a row, ending with the last one, gold fell while the proxy rose (each against the
    evaluation before it)."""
    run = 0
    for before, after in zip(history, history[1:]):
        falling = after["gold"] < before["gold"] and after["proxy"] > before["proxy"]
        run = run + 1 if falling else 0
    return run


class GoldRewardCallback(TrainerCallback, ExportableState):
    """Logs ``proxy/*``, ``gold/*`` and the KL from the reference on held-out prompts during RL (see the module docs).

    Args:
        gold: the gold reward: a TRL reward function ``f(prompts, completions, completion_ids, **columns)``, a
            :class:`trl_ext.RewardAdapter`, or a list of them (combined with ``gold_weights``).
        eval_dataset: held-out rows with a ``prompt`` column (conversational or text) and whatever columns the gold
            and proxy functions read (passed to them as keywords, as TRL does).
        eval_steps: evaluate every this many optimizer steps; also at the start (``eval_on_start``) and at the end.
        gold_weights: one weight per gold function (default 1 each); ``gold/reward`` is the weighted total's mean.
        num_prompts: use only the first ``num_prompts`` rows of ``eval_dataset`` (default: all).
        num_samples: completions sampled per prompt.
        batch_size: prompts per generation micro-batch; scoring and the KL use ``batch_size * num_samples`` rows.
        seed: seed of the evaluation's sampling (default: the trainer's ``args.seed``).
        ref_model: reference for the KL when the trainer has none of its own (see the module docs): a path or a model.
        save_best_to: folder that receives the model (``trainer.save_model``) each time ``gold/reward`` reaches a new
            best. Off by default.
        stop_after: stop training when gold has fallen while the proxy rose for this many evaluations in a row.
            Off by default.
        eval_on_start: evaluate before the first step too (the curves' KL = 0 point).
    """

    def __init__(
        self,
        gold: Callable | Sequence[Callable] | None = None,
        eval_dataset=None,
        eval_steps: int = 50,
        *,
        gold_weights: Sequence[float] | None = None,
        num_prompts: int | None = None,
        num_samples: int = 1,
        batch_size: int = 64,
        seed: int | None = None,
        ref_model=None,
        save_best_to: str | None = None,
        stop_after: int | None = None,
        eval_on_start: bool = True,
    ):
        if gold is None or eval_dataset is None:
            raise ValueError(
                "GoldRewardCallback needs gold= (a reward function, a RewardAdapter or a list) and eval_dataset= (rows "
                "with a 'prompt' column). If this appears when resuming: transformers' "
                "restore_callback_states_from_checkpoint=True re-creates callbacks from saved arguments, which a reward "
                "function cannot be; leave it False, this callback restores its own history from trainer_state.json."
            )
        golds = list(gold) if isinstance(gold, (list, tuple)) else [gold]
        for i, g in enumerate(golds):
            if not callable(g):
                raise TypeError(f"gold[{i}] is a {type(g).__name__}; give a reward function or a RewardAdapter.")
        weights = [1.0] * len(golds) if gold_weights is None else [float(w) for w in gold_weights]
        if len(weights) != len(golds):
            raise ValueError(f"gold_weights has {len(weights)} weights for {len(golds)} gold functions; give one each.")
        columns = getattr(eval_dataset, "column_names", None)
        if columns is None or "prompt" not in columns:
            raise ValueError(
                f"eval_dataset must be a datasets.Dataset with a 'prompt' column; it has {columns}. Rename the prompt "
                "column (dataset.rename_column) or build one with Dataset.from_dict({'prompt': [...]})."
            )
        if len(eval_dataset) == 0:
            raise ValueError("eval_dataset is empty; give at least one held-out prompt.")
        for name, value in (("eval_steps", eval_steps), ("num_samples", num_samples), ("batch_size", batch_size)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}={value!r} must be an integer >= 1.")
        if num_prompts is not None and num_prompts < 1:
            raise ValueError(f"num_prompts={num_prompts} must be >= 1 (or None for every row of eval_dataset).")
        if stop_after is not None and stop_after < 1:
            raise ValueError(f"stop_after={stop_after} must be >= 1 (or None: never stop).")
        self.gold, self.gold_weights = golds, weights
        self.gold_names = [_name_of(g) for g in golds]
        n = len(eval_dataset) if num_prompts is None else min(num_prompts, len(eval_dataset))
        self.eval_dataset = eval_dataset.select(range(n))
        self.eval_steps, self.num_samples, self.batch_size = eval_steps, num_samples, batch_size
        self.seed, self.ref_model, self.eval_on_start = seed, ref_model, eval_on_start
        self.save_best_to = save_best_to
        self.stop_after = stop_after
        self.trainer = None
        self._own_ref = None
        # state saved with every checkpoint (see state())
        self.history: list[dict] = []
        self.best_gold: float | None = None
        self.best_step: int | None = None

    # ---- the trainer -------------------------------------------------------------------------------------------------
    def bind(self, trainer) -> GoldRewardCallback:
        """Use ``trainer`` (a GRPO-family trainer). Optional: ``on_train_begin`` finds the trainer that runs this
        callback by itself. Checks that the trainer has what the callback reads."""
        missing = [a for a in ("reward_funcs", "reward_weights", "processing_class") if not hasattr(trainer, a)]
        if missing:
            raise TypeError(
                f"GoldRewardCallback needs a GRPO-family trainer (trl.GRPOTrainer, trl.RLOOTrainer, trl_ext's DAPO/"
                f"RLOO/PPO); {type(trainer).__name__} has no {missing}."
            )
        self.trainer = trainer
        return self

    def _find_trainer(self):
        frame = inspect.currentframe()
        try:
            while frame is not None:
                candidate = frame.f_locals.get("self")
                if isinstance(candidate, transformers.Trainer) and any(
                    cb is self for cb in candidate.callback_handler.callbacks
                ):
                    return candidate
                frame = frame.f_back
        finally:
            del frame
        raise RuntimeError(
            "GoldRewardCallback could not find the Trainer that runs it; call callback.bind(trainer) before train()."
        )

    # ---- state in checkpoints ------------------------------------------------------------------------------------------
    def state(self) -> dict:
        return {
            "args": {},
            "attributes": {"history": list(self.history), "best_gold": self.best_gold, "best_step": self.best_step},
        }

    def _restore(self, state) -> None:
        saved = (state.stateful_callbacks or {}).get(type(self).__name__)
        if isinstance(saved, list):  # several callbacks of this class: transformers keeps them in order
            mine = [cb for cb in self.trainer.callback_handler.callbacks if type(cb) is type(self)]
            saved = saved[mine.index(self)] if len(saved) == len(mine) else None
        attributes = (saved or {}).get("attributes") or {}
        self.history = [h for h in attributes.get("history", []) if h["step"] <= state.global_step]
        self.best_gold, self.best_step = attributes.get("best_gold"), attributes.get("best_step")
        if self.best_step is not None and self.best_step > state.global_step:
            self.best_gold = self.best_step = None
        # a checkpoint written without this callback has no entry; Trainer's _save_checkpoint indexes it
        state.stateful_callbacks.setdefault(type(self).__name__, self.state())

    # ---- hooks ---------------------------------------------------------------------------------------------------------
    def on_train_begin(self, args, state, control, **kwargs):
        if self.trainer is None:
            self.bind(self._find_trainer())
        self._check_proxy()
        self._restore(state)
        with preserved_rng():
            self._setup_reference()
        if self.eval_on_start and not self.history:
            self._evaluate_and_log(state, control)
        return control

    def on_step_end(self, args, state, control, **kwargs):
        # The last step is evaluated here rather than in on_train_end: report_to integrations (TensorBoard, trackio)
        # run before user callbacks and close their writers in on_train_end, so a log from there would not reach them.
        last = state.global_step >= state.max_steps or control.should_training_stop
        if state.global_step % self.eval_steps == 0 or last:
            self._evaluate_and_log(state, control)
        return control

    def on_train_end(self, args, state, control, **kwargs):
        # only when training ended in a way on_step_end could not see coming (log_history still gets it)
        if not self.history or self.history[-1]["step"] != state.global_step:
            self._evaluate_and_log(state, control)
        return control

    # ---- one evaluation ----------------------------------------------------------------------------------------------
    def _check_proxy(self) -> None:
        funcs = self.trainer.reward_funcs
        processing_classes = getattr(self.trainer, "reward_processing_classes", None) or [None] * len(funcs)
        for i, (func, processing_class) in enumerate(zip(funcs, processing_classes)):
            if isinstance(func, torch.nn.Module) and processing_class is None:
                raise ValueError(
                    f"the trainer's reward_funcs[{i}] is a reward model without a processing class; GoldRewardCallback "
                    "scores it as GRPOTrainer does and needs its tokenizer (reward_processing_classes)."
                )

    def _setup_reference(self) -> None:
        trainer = self.trainer
        if getattr(trainer, "ref_model", None) is not None or self.ref_model is None or self._own_ref is not None:
            return
        if _is_peft(trainer.accelerator.unwrap_model(trainer.model)):
            return  # the base with adapters disabled is the reference
        from trl.trainer.utils import add_fused_lm_head

        model = self.ref_model
        if isinstance(model, (str, Path)):
            from transformers import AutoModelForCausalLM

            from .models import safe_from_pretrained

            model = safe_from_pretrained(AutoModelForCausalLM, str(model), "ref_model", dtype=trainer.model.dtype)
        model.eval().requires_grad_(False)
        # the trainer's log-prob helper calls forward(fused_lm_head=True), with logits divided by the temperature
        cast = getattr(trainer.args, "cast_lm_head_to_fp32", False)  # trl.RLOOConfig has no such field
        add_fused_lm_head(model, temperature=trainer.temperature, cast_lm_head_to_fp32=cast)
        self._own_ref = trainer.accelerator.prepare_model(model, evaluation_mode=True)

    def _evaluate_and_log(self, state, control) -> None:
        trainer = self.trainer
        with preserved_rng():
            record = self.evaluate()
        record["step"] = state.global_step
        self.history.append(record)
        logs = {"proxy/reward": record["proxy"], "gold/reward": record["gold"]}
        logs.update({f"proxy/{k}": v for k, v in record["proxy_per_func"].items()})
        logs.update({f"gold/{k}": v for k, v in record["gold_per_func"].items()})
        if record.get("kl") is not None:
            logs["gold/kl"] = record["kl"]
            logs["gold/sqrt_kl"] = math.sqrt(max(record["kl"], 0.0))
        if self.save_best_to is not None and (self.best_gold is None or record["gold"] > self.best_gold):
            self.best_gold, self.best_step = record["gold"], state.global_step
            trainer.save_model(self.save_best_to)
            logger.info("gold reward %.4f at step %d is the best so far: model saved to %s", record["gold"],
                        state.global_step, self.save_best_to)
        if self.best_gold is not None:
            logs["gold/best_reward"] = self.best_gold
        falling = falling_gold_while_proxy_rises(self.history)
        logs["gold/falling_while_proxy_rises"] = float(falling)
        if self.stop_after is not None and falling >= self.stop_after:
            logger.warning(
                "gold reward fell while the proxy rose for %d evaluations in a row (stop_after=%d): stopping at step %d.",
                falling, self.stop_after, state.global_step,
            )
            control.should_training_stop = True
        # the base class's log: GRPOTrainer.log would merge and clear its training metrics here (see module docs).
        # CallbackHandler.on_log clears control.should_log, which would cancel the Trainer's own log of this step.
        should_log = control.should_log
        transformers.Trainer.log(trainer, logs)
        control.should_log = trainer.control.should_log = should_log

    def evaluate(self) -> dict:
        """Sample, score with proxy and gold, compute the KL; returns the numbers (nothing is logged)."""
        trainer = self.trainer
        samples = self._sample()
        prompts, completions, completion_ids, columns = self._rows(samples)
        common = dict(
            columns=columns, batch_size=self.batch_size * self.num_samples,
            chat_template_kwargs=getattr(trainer, "chat_template_kwargs", None),
            trainer_state=trainer.state, log_metric=lambda *a, **k: None, log_extra=lambda *a, **k: None,
        )
        with _frozen_statistics(trainer.reward_funcs):
            proxy = score_completions(
                trainer.reward_funcs, prompts, completions, completion_ids,
                processing_classes=getattr(trainer, "reward_processing_classes", None), **common,
            )
        gold = score_completions(self.gold, prompts, completions, completion_ids, **common)
        proxy_mean, proxy_means = weighted_mean(proxy, trainer.reward_weights.tolist())
        gold_mean, gold_means = weighted_mean(gold, self.gold_weights)
        proxy_names = getattr(trainer, "reward_func_names", None) or [_name_of(f) for f in trainer.reward_funcs]
        return {
            "proxy": proxy_mean,
            "gold": gold_mean,
            "proxy_per_func": dict(zip(_unique(proxy_names), proxy_means)),
            "gold_per_func": dict(zip(_unique(self.gold_names), gold_means)),
            "kl": self._kl(samples),
            "num_completions": len(completions),
        }

    def _sample(self) -> Samples:
        trainer = self.trainer
        from trl.models.utils import unwrap_model_for_generation

        seed = trainer.args.seed if self.seed is None else self.seed
        with unwrap_model_for_generation(
            trainer.model_wrapped, trainer.accelerator,
            gather_deepspeed3_params=getattr(trainer.args, "ds3_gather_for_generation", True),
            generation_kwargs=getattr(trainer, "generation_kwargs", None),
            gradient_checkpointing_kwargs=trainer.args.gradient_checkpointing_kwargs,
        ) as policy:
            return sample_completions(
                policy, seam.tokenizer(trainer), self.eval_dataset["prompt"], num_samples=self.num_samples,
                temperature=trainer.temperature, max_new_tokens=trainer.max_completion_length,
                batch_size=self.batch_size, seed=seed, generation_config=_generation_config(trainer),
                chat_template_kwargs=getattr(trainer, "chat_template_kwargs", None), return_ids=True,
            )

    def _rows(self, samples: Samples):
        """Flatten to one row per completion, prompts and dataset columns repeated ``num_samples`` times."""
        data = self.eval_dataset
        k = self.num_samples
        prompts, completions = flatten_samples(data["prompt"], samples.texts, as_messages=True)
        completion_ids = [ids for per_prompt in samples.completion_ids for ids in per_prompt]
        columns = {c: [v for v in data[c] for _ in range(k)] for c in data.column_names if c != "prompt"}
        return prompts, completions, completion_ids, columns

    @torch.no_grad()
    def _kl(self, samples: Samples) -> float | None:
        """Mean over sequences of sum_t (log pi - log pi_ref) on the sampled completion tokens; None without a reference."""
        trainer = self.trainer
        reference = getattr(trainer, "ref_model", None)
        reference = self._own_ref if reference is None else reference
        if not seam.has_reference(trainer, reference):
            if not self.history:
                logger.info("GoldRewardCallback: the trainer has no reference model (beta=0, no PEFT) and no ref_model "
                            "was given; gold/kl is not logged.")
            return None
        device = trainer.accelerator.device
        pad = seam.tokenizer(trainer).pad_token_id
        rows = [(p, c) for p, cs in zip(samples.prompt_ids, samples.completion_ids) for c in cs]
        total, count = 0.0, 0
        chunk = self.batch_size * self.num_samples
        was_training = trainer.model.training
        trainer.model.eval()
        try:
            for start in range(0, len(rows), chunk):
                batch = rows[start : start + chunk]
                input_ids, attention_mask, completion_mask = _left_right_pad(batch, pad, device)
                width = completion_mask.size(1)
                logps, _ = seam.per_token_logps(trainer, trainer.model, input_ids, attention_mask, width)
                ref = seam.reference_logps(trainer, input_ids, attention_mask, width, ref_model=reference)
                per_sequence = ((logps - ref) * completion_mask).sum(dim=1)  # (B,)
                total += float(per_sequence.sum())
                count += per_sequence.numel()
        finally:
            trainer.model.train(was_training)
        return total / max(count, 1)


def _generation_config(trainer):
    """The trainer's own generation config; a vLLM trainer has none, so the same fields are set from its args."""
    config = getattr(trainer, "generation_config", None)
    if config is not None:
        return config
    from transformers import GenerationConfig

    tokenizer = seam.tokenizer(trainer)
    return GenerationConfig(
        max_new_tokens=trainer.max_completion_length, do_sample=True, temperature=trainer.temperature,
        top_p=trainer.args.top_p, top_k=trainer.args.top_k, min_p=trainer.args.min_p,
        repetition_penalty=trainer.args.repetition_penalty, pad_token_id=tokenizer.pad_token_id,
        eos_token_id=getattr(trainer, "eos_token_ids", tokenizer.eos_token_id),
        **(trainer.args.generation_kwargs or {}),
    )


def _left_right_pad(rows, pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """TRL's layout: prompts left-padded to P, completions right-padded to C, concatenated to (B, P + C)."""
    P = max(len(p) for p, _ in rows)
    C = max(max(len(c) for _, c in rows), 1)
    input_ids = torch.full((len(rows), P + C), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), P + C), dtype=torch.long)
    for i, (p, c) in enumerate(rows):
        input_ids[i, P - len(p) : P] = torch.tensor(p, dtype=torch.long)
        attention_mask[i, P - len(p) : P] = 1
        input_ids[i, P : P + len(c)] = torch.tensor(c, dtype=torch.long)
        attention_mask[i, P : P + len(c)] = 1
    completion_mask = attention_mask[:, P:].float()  # (B, C)
    return input_ids.to(device), attention_mask.to(device), completion_mask.to(device)


def _unique(names: Sequence[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for n in names:
        seen[n] = seen.get(n, 0) + 1
        out.append(n if seen[n] == 1 else f"{n}_{seen[n]}")
    return out


def _is_peft(model) -> bool:
    from accelerate.utils import is_peft_model

    return is_peft_model(model)


@contextlib.contextmanager
def _frozen_statistics(reward_funcs):
    """A RewardAdapter with running normalisation updates its statistics on every call: scoring the evaluation
    batch must not change the training reward, so its state (and its counters) are put back afterwards."""
    from .rewards import RewardAdapter

    adapters = [f for f in reward_funcs if isinstance(f, RewardAdapter)]
    saved = [(a.state_dict(), dict(a.stats)) for a in adapters]
    try:
        yield
    finally:
        for adapter, (state, stats) in zip(adapters, saved):
            adapter.load_state_dict(state)
            adapter.stats.clear()
            adapter.stats.update(stats)
