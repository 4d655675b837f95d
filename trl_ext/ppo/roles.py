"""PPO's four roles (policy, reference, reward model, critic): the constructor's checks, the reference, and the
placeholder that holds a shared-base reward adapter until the policy's PeftModel exists, then is replaced."""

from __future__ import annotations

import os
from pathlib import Path

from accelerate.utils import is_peft_model, parse_flag_from_env
from torch import nn
from transformers import PreTrainedModel
from trl.trainer.utils import (
    add_fused_lm_head,
    create_model_from_path,
    disable_dropout_in_model,
)

from ..checks import check_prompt_dataset
from ..models import disable_bnb_cpu_repack
from ..rewards import RewardAdapter

REWARD_ADAPTER = "reward"


class PendingSharedBaseReward:
    """A reward-adapter folder in ``reward_funcs`` until the policy's PeftModel exists.

    GRPOTrainer builds the PeftModel from ``peft_config`` inside ``__init__``, after it has read ``reward_funcs`` (a
    string there would be loaded as a full reward model); :func:`put_shared_base_rewards` then puts
    :meth:`trl_ext.RewardAdapter.shared_base` on that model in this placeholder's place, under the same name.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.__name__ = f"reward_adapter:{self.path.name}"

    def __call__(self, *args, **kwargs):
        raise RuntimeError(f"{self.__name__} was never put on the policy's base; PPOTrainer does that in __init__.")


def is_adapter_dir(path) -> bool:
    return isinstance(path, (str, os.PathLike)) and (Path(path) / "adapter_config.json").exists()


def check_roles(args, model, reward_funcs, value_model, ref_model, peft_config, optimizers, kwargs, datasets) -> list:
    """Refuse what PPOTrainer cannot do, before any model is loaded; returns ``reward_funcs`` as a list, with each
    shared-base reward-adapter folder held by a :class:`PendingSharedBaseReward`. ``datasets``: (train, eval)."""
    if reward_funcs is None or (isinstance(reward_funcs, list) and not reward_funcs):
        raise ValueError(
            "PPOTrainer needs a reward: pass reward_funcs= a reward model (a folder with a sequence-classification "
            "checkpoint, an AutoModelForSequenceClassification, or with shared_base=True a LoRA reward-adapter "
            "folder) or reward callable(s) f(prompts, completions, **kw) -> list[float]."
        )
    for dataset, name in zip(datasets, ("train_dataset", "eval_dataset")):
        check_prompt_dataset(dataset, name, "PPOTrainer", kwargs.get("environment_factory") is not None)
    if optimizers[0] is not None:
        raise ValueError(
            "PPOTrainer builds its own optimizer so that the critic's parameters are in it (see create_optimizer); "
            "choose it with args.optim, args.learning_rate and args.critic_learning_rate instead of optimizers=."
        )
    if args.deepspeed or parse_flag_from_env("ACCELERATE_USE_DEEPSPEED"):
        raise NotImplementedError(
            "PPOTrainer does not run under DeepSpeed: the critic (a separate model, or the shared base's value "
            "head) is a second trainable module outside the model the DeepSpeed engine wraps, which ZeRO's "
            "sharding, gradient reduction and mixed precision are not known to handle. Train on several GPUs "
            "with DDP (recipes/configs/accelerate/ddp.yaml), or on one GPU with shared_base=True (and 4-bit)."
        )
    for unsupported in ("tools", "environment_factory"):
        if kwargs.get(unsupported):
            raise NotImplementedError(f"PPOTrainer does not support {unsupported}= (GAE assumes one contiguous "
                                      "completion per episode); use GRPOTrainer for tool use.")
    reward_funcs = list(reward_funcs) if isinstance(reward_funcs, (list, tuple)) else [reward_funcs]
    if args.shared_base:
        reward_funcs = _check_shared_base(model, reward_funcs, value_model, peft_config)
    if ref_model is not None:
        if isinstance(ref_model, nn.Module) and ref_model is model:
            raise ValueError(
                "ref_model is the policy itself; pass a separate copy (copy.deepcopy(model)), or no ref_model: the "
                "reference is then a fresh copy of the policy's checkpoint (or, with PEFT, its adapters disabled)."
            )
        if args.shared_base:
            raise ValueError(
                "ref_model= is for separate roles; with PPOConfig.shared_base=True the reference is the shared "
                "base with adapters disabled. Drop ref_model or set shared_base=False."
            )
    return reward_funcs


def _check_shared_base(model, reward_funcs: list, value_model, peft_config) -> list:
    if peft_config is None and not (isinstance(model, nn.Module) and is_peft_model(model)):
        raise ValueError(
            "PPOConfig.shared_base=True puts policy, critic, reference and reward model on one base as LoRA "
            "adapters, so it needs peft_config=LoraConfig(...) (or a PeftModel policy)."
        )
    if value_model is not None:
        raise ValueError(
            "value_model= is for separate roles; with PPOConfig.shared_base=True the critic is a LoRA adapter "
            "on the policy's base. Drop value_model or set shared_base=False."
        )
    for r in reward_funcs:
        if isinstance(r, nn.Module) or (isinstance(r, (str, os.PathLike)) and not is_adapter_dir(r)):
            raise ValueError(
                "PPOConfig.shared_base=True needs the reward model as a LoRA adapter folder "
                f"(adapter_config.json + adapter_model.safetensors with its score head), got {r!r}. Pass the "
                "adapter folder or a reward callable, or set shared_base=False for a separate reward model."
            )
    return [PendingSharedBaseReward(r) if is_adapter_dir(r) else r for r in reward_funcs]


def build_reference(ref, *, policy_id: str, tokenizer, args, dtype, temperature):
    """The frozen reference: ``ref`` (a model or a path, TRL 0.x's ``ref_model``) or the policy's checkpoint
    ``policy_id``; the caller puts it on the accelerator."""
    model_init_kwargs = dict(args.model_init_kwargs or {})
    model_init_kwargs.setdefault("trust_remote_code", args.trust_remote_code)
    model_init_kwargs.setdefault("dtype", dtype)
    if ref is None or isinstance(ref, (str, os.PathLike)):
        ref = create_model_from_path(policy_id if ref is None else str(ref), **model_init_kwargs)
    elif not isinstance(ref, PreTrainedModel) or is_peft_model(ref):
        raise TypeError(f"ref_model must be a causal LM (PreTrainedModel) or a path, got {type(ref).__name__} "
                        "(merge a PEFT reference first: merge_and_unload()).")
    if ref.get_input_embeddings().num_embeddings < len(tokenizer):
        raise ValueError(
            f"ref_model embeds {ref.get_input_embeddings().num_embeddings} tokens but the policy's tokenizer has "
            f"{len(tokenizer)}: the reference must use the policy's tokenizer."
        )
    ref.requires_grad_(False)
    disable_bnb_cpu_repack(ref)
    if args.disable_dropout:
        disable_dropout_in_model(ref)
    add_fused_lm_head(ref, temperature=temperature, cast_lm_head_to_fp32=args.cast_lm_head_to_fp32)
    return ref


def check_one_process(num_processes: int) -> None:
    """``shared_base`` is refused on several processes (checked once the accelerator exists)."""
    if num_processes > 1:
        raise NotImplementedError(
            "PPOConfig.shared_base=True runs in one process (the consumer-GPU setting): the critic adapter "
            "lives inside the DDP-wrapped policy but runs its own forward/backward. Use shared_base=False to "
            "train on several processes."
        )


def put_shared_base_rewards(peft_model, reward_funcs: list, chat_template_kwargs) -> Path | None:
    """In place: each reward-adapter folder becomes ``RewardAdapter.shared_base`` on the policy's base (the one
    shared-base scorer: RewardTrainer's tokenisation, EOS appended, truncation, micro-batches). Returns the first
    folder, which the critic starts from (same LoRA weights, same head), or None: the critic starts fresh."""
    pending = [(i, r) for i, r in enumerate(reward_funcs) if isinstance(r, PendingSharedBaseReward)]
    for k, (i, r) in enumerate(pending):
        reward_funcs[i] = RewardAdapter.shared_base(
            peft_model, r.path, adapter_name=REWARD_ADAPTER if k == 0 else f"{REWARD_ADAPTER}_{k}",
            chat_template_kwargs=chat_template_kwargs, name=r.__name__,
        )
    return pending[0][1].path if pending else None
