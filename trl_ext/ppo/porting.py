"""TRL 0.x's PPO names on trl_ext's PPOConfig and PPOTrainer: each old name is mapped onto its new field, or refused
with a message that names the replacement. The table in ``docs/porting-from-trl-ppo.md`` is the reader's version.

TRL 0.x's ``PPOConfig`` (``OnPolicyConfig`` + PPO fields, ending in ``trl.experimental.ppo``) shared ``kl_coef``,
``vf_coef``, ``cliprange_value``, ``gamma``, ``lam``, ``whiten_rewards``, ``missing_eos_penalty``, ``temperature`` and
every ``TrainingArguments`` field with trl_ext's PPOConfig, with the same meaning; they need nothing here. The names
below are the ones PPOConfig does not otherwise have.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

# Old config names with one new field and the same meaning: mapped in PPOConfig.__post_init__.
RENAMED = {
    "num_ppo_epochs": "num_iterations",
    "cliprange": "epsilon",
    "response_length": "max_completion_length",
    "exp_name": "run_name",
}

# Old config names with no counterpart: refused whenever set, with the replacement.
_DERIVED = (
    "TRL 0.x computed it at run time from per_device_train_batch_size, gradient_accumulation_steps, "
    "num_mini_batches and the number of processes (a value passed in was overwritten); "
)
REFUSED = {
    "local_rollout_forward_batch_size": (
        "the rollout's no-grad forward passes (policy, reference, critic) run in chunks of per_device_train_batch_size "
        "(per_device_eval_batch_size in evaluation); drop it and size those instead."
    ),
    "model_adapter_name": (
        "the policy trains PEFT adapter 'default' (the one peft_config creates, or the PeftModel's active adapter); "
        "drop it, and make the adapter to train the active one."
    ),
    "ref_adapter_name": (
        "the reference of a PEFT policy is its base model with adapters disabled; for another reference pass "
        "PPOTrainer(ref_model=<model>) instead of a reference adapter."
    ),
    "num_total_batches": _DERIVED + "set total_episodes (mapped onto max_steps) or max_steps instead.",
    "batch_size": _DERIVED + "its counterpart is generation_batch_size (completions per generated batch, all "
    "processes).",
    "local_batch_size": _DERIVED + "its counterpart is per_device_train_batch_size x steps_per_generation.",
    "micro_batch_size": _DERIVED + "its counterpart is per_device_train_batch_size x the number of processes.",
    "mini_batch_size": _DERIVED + "an optimizer step takes per_device_train_batch_size x gradient_accumulation_steps "
    "x processes completions; set those.",
    "local_mini_batch_size": _DERIVED + "an optimizer step takes per_device_train_batch_size x "
    "gradient_accumulation_steps completions per process; set those.",
    "world_size": "the number of processes comes from the launcher (accelerate launch / torchrun); drop it.",
}

# Old trainer keyword arguments (TRL 0.12-0.x) and the PPOTrainer argument they became.
TRAINER_RENAMED = {
    "config": "args",
    "policy": "model",
    "ref_policy": "ref_model",
    "reward_model": "reward_funcs",
    "tokenizer": "processing_class",
}


def _help(text: str) -> dict:
    return {"help": "TRL 0.x PPOConfig name: " + text}


@dataclass
class TRL0PPONames:
    """TRL 0.x ``PPOConfig`` fields, kept so old scripts, YAML files and command lines run; all default to None (unset).

    Mapped (same meaning): ``num_ppo_epochs``, ``cliprange``, ``response_length``, ``exp_name``, ``num_mini_batches``,
    ``total_episodes``, ``stop_token='eos'``, ``stop_token_id`` (an EOS id), ``kl_estimator='k1'``,
    ``num_sample_generations=0``. Kept as in TRL 0.x, where only scripts read them: ``sft_model_path``,
    ``reward_model_path``, ``dataset_num_proc``. Refused, naming the replacement: see ``REFUSED``.
    """

    num_ppo_epochs: int | None = field(default=None, metadata=_help("num_iterations (PPO epochs per batch)."))
    cliprange: float | None = field(default=None, metadata=_help("epsilon (policy clip range, both sides)."))
    response_length: int | None = field(default=None, metadata=_help("max_completion_length."))
    exp_name: str | None = field(default=None, metadata=_help("run_name."))
    num_mini_batches: int | None = field(
        default=None,
        metadata=_help("mini-batches (optimizer steps) per generated batch and PPO epoch; sets steps_per_generation "
                       "= num_mini_batches x gradient_accumulation_steps."),
    )
    total_episodes: int | None = field(
        default=None,
        metadata=_help("completions to generate in the whole run; sets max_steps (optimizer steps)."),
    )
    stop_token: str | None = field(
        default=None, metadata=_help("'eos' is accepted: completions always end at the first EOS.")
    )
    stop_token_id: int | None = field(
        default=None, metadata=_help("accepted when it is one of the model's EOS ids (checked by PPOTrainer).")
    )
    kl_estimator: str | None = field(
        default=None, metadata=_help("'k1' is accepted (the per-token KL penalty is k1); 'k3' is refused.")
    )
    num_sample_generations: int | None = field(
        default=None, metadata=_help("0 is accepted; to log samples use log_completions, num_completions_to_print.")
    )
    sft_model_path: str | None = field(
        default=None, metadata=_help("for your script, as in TRL 0.x; the trainer takes the model as model=.")
    )
    reward_model_path: str | None = field(
        default=None, metadata=_help("for your script, as in TRL 0.x; the trainer takes it as reward_funcs=.")
    )
    dataset_num_proc: int | None = field(
        default=None, metadata=_help("for your script's dataset.map, as in TRL 0.x; the trainer does not preprocess.")
    )
    local_rollout_forward_batch_size: int | None = field(default=None, metadata=_help("refused (no counterpart)."))
    model_adapter_name: str | None = field(default=None, metadata=_help("refused (the policy adapter is 'default')."))
    ref_adapter_name: str | None = field(default=None, metadata=_help("refused; pass PPOTrainer(ref_model=...)."))
    num_total_batches: int | None = field(default=None, metadata=_help("refused (computed at run time in TRL 0.x)."))
    batch_size: int | None = field(default=None, metadata=_help("refused; see generation_batch_size."))
    local_batch_size: int | None = field(default=None, metadata=_help("refused (computed at run time in TRL 0.x)."))
    micro_batch_size: int | None = field(default=None, metadata=_help("refused (computed at run time in TRL 0.x)."))
    mini_batch_size: int | None = field(default=None, metadata=_help("refused (computed at run time in TRL 0.x)."))
    local_mini_batch_size: int | None = field(
        default=None, metadata=_help("refused (computed at run time in TRL 0.x).")
    )


def _default(config, name):
    f = next(f for f in dataclasses.fields(config) if f.name == name)
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default


def _set_from_old(config, old: str, new: str, value) -> None:
    """``new = value``, unless ``new`` was also given (differs from its default) with another value."""
    current = getattr(config, new)
    if current != _default(config, new) and current != value:
        raise ValueError(
            f"PPOConfig: {old}={getattr(config, old)!r} (TRL 0.x) sets {new}={value!r}, but {new}={current!r} was "
            f"given too. Pass only {new}."
        )
    setattr(config, new, value)


def refuse_unknown_kwargs(kwargs: dict) -> None:
    """Old names that cannot be dataclass fields (``world_size`` is a TrainingArguments property)."""
    if "world_size" in kwargs:
        raise ValueError(f"PPOConfig.world_size (TRL 0.x) is not a setting here: {REFUSED['world_size']}")


def map_config_names(config) -> None:
    """Before GRPOConfig.__post_init__ derives batch sizes: map or refuse the old names that are set."""
    for old, reason in REFUSED.items():
        if old != "world_size" and getattr(config, old) is not None:
            raise ValueError(f"PPOConfig.{old}={getattr(config, old)!r} (TRL 0.x) has no counterpart: {reason}")
    for old, new in RENAMED.items():
        if getattr(config, old) is not None:
            _set_from_old(config, old, new, getattr(config, old))
    if config.cliprange is not None and config.epsilon_high not in (None, config.cliprange):
        raise ValueError(
            f"PPOConfig.cliprange={config.cliprange} (TRL 0.x) is a symmetric clip range, but epsilon_high="
            f"{config.epsilon_high} was given too. Pass epsilon and epsilon_high instead of cliprange."
        )
    if config.num_mini_batches is not None:
        if config.num_mini_batches < 1:
            raise ValueError(f"PPOConfig.num_mini_batches={config.num_mini_batches} must be >= 1.")
        # TRL 0.x: per process, a batch of per_device x grad_accum x num_mini_batches; one optimizer step per mini-batch
        value = config.num_mini_batches * config.gradient_accumulation_steps
        _set_from_old(config, "num_mini_batches", "steps_per_generation", value)
    if config.stop_token not in (None, "eos"):
        raise ValueError(f"PPOConfig.stop_token={config.stop_token!r} (TRL 0.x) must be None or 'eos'.")
    if config.stop_token is not None and config.stop_token_id is not None:
        raise ValueError("PPOConfig: stop_token and stop_token_id (TRL 0.x) are mutually exclusive; pass one.")
    if config.kl_estimator == "k3":
        raise ValueError(
            "PPOConfig.kl_estimator='k3' (TRL 0.x) is not implemented: the per-token KL penalty in the reward is k1, "
            "log π − log π_ref (TRL 0.x's default). Drop kl_estimator, or add GRPO's k3 KL term to the loss with "
            "beta."
        )
    if config.kl_estimator not in (None, "k1"):
        raise ValueError(f"PPOConfig.kl_estimator={config.kl_estimator!r} (TRL 0.x) must be 'k1' or 'k3'.")
    if config.num_sample_generations not in (None, 0):
        raise ValueError(
            f"PPOConfig.num_sample_generations={config.num_sample_generations} (TRL 0.x) has no counterpart: "
            "completions are logged with log_completions=True (a table every logging step, "
            "num_completions_to_print of them printed); use those, or num_sample_generations=0."
        )


def map_total_episodes(config) -> None:
    """After GRPOConfig.__post_init__ (which derives generation_batch_size): total_episodes -> max_steps.

    An episode is one generated completion (TRL 0.x generated one per prompt). Each generated batch of
    generation_batch_size completions is optimised num_iterations times in steps_per_generation micro-batches, i.e.
    num_iterations x steps_per_generation / gradient_accumulation_steps optimizer steps (TRL 0.x: num_ppo_epochs x
    num_mini_batches), and TRL 0.x ran ceil(total_episodes / batch_size) batches.
    """
    if config.total_episodes is None:
        return
    if config.total_episodes < 1:
        raise ValueError(f"PPOConfig.total_episodes={config.total_episodes} must be >= 1.")
    batches = math.ceil(config.total_episodes / config.generation_batch_size)
    steps_per_batch = config.num_iterations * config.steps_per_generation / config.gradient_accumulation_steps
    _set_from_old(config, "total_episodes", "max_steps", math.ceil(batches * steps_per_batch))


def map_trainer_kwargs(named: dict, kwargs: dict) -> dict:
    """TRL 0.x's PPOTrainer keywords in ``kwargs`` -> the PPOTrainer arguments in ``named`` (model, reward_funcs, args,
    ref_model, processing_class), returned updated; ``kwargs`` loses the old names."""
    from transformers import TrainingArguments

    if isinstance(named["model"], TrainingArguments):
        raise TypeError(
            "PPOTrainer's first argument is the model; this looks like TRL 0.x's positional order (args, "
            "processing_class, model, ref_model, reward_model, train_dataset, ...). Pass keywords: "
            "PPOTrainer(model=..., reward_funcs=<reward model>, args=..., train_dataset=..., processing_class=..., "
            "ref_model=..., value_model=...)."
        )
    named = dict(named)
    for old, new in TRAINER_RENAMED.items():
        if old not in kwargs:
            continue
        value = kwargs.pop(old)
        if named[new] is not None:
            raise TypeError(f"PPOTrainer: {old}= (TRL 0.x) and {new}= both given; pass only {new}=.")
        named[new] = value
    collator = kwargs.pop("data_collator", None)
    if collator is not None:
        raise TypeError(
            "PPOTrainer(data_collator=...) (TRL 0.x) has no counterpart: like GRPOTrainer it reads a 'prompt' column "
            "(text or conversation) and tokenises it itself. Drop data_collator and give train_dataset a 'prompt' "
            "column instead of TRL 0.x's pre-tokenised input_ids (docs/porting-from-trl-ppo.md)."
        )
    if named["model"] is None:
        raise TypeError("PPOTrainer needs model= (the policy: a path or a causal LM; TRL 0.x's policy=).")
    return named


def check_stop_token_id(stop_token_id: int | None, eos_token_ids: list[int]) -> None:
    """TRL 0.x's ``stop_token_id``: completions end at the model's EOS ids, so only one of them is accepted."""
    if stop_token_id is not None and stop_token_id not in eos_token_ids:
        raise ValueError(
            f"PPOConfig.stop_token_id={stop_token_id} (TRL 0.x) is not an EOS id of the model "
            f"({eos_token_ids}); completions end at those. To stop at another token, add it to "
            "model.generation_config.eos_token_id before building the trainer, and drop stop_token_id."
        )
