"""The one home of shared-base adapter plumbing: several LoRA adapters, one (optionally 4-bit) base.

A reward model trained by TRL's RewardTrainer with ``peft_config=LoraConfig(task_type="SEQ_CLS")`` on the policy's
base checkpoint is saved as LoRA weights for the transformer plus a full copy of the score head (``modules_to_save``).
The transformer of ``XForSequenceClassification`` and of ``XForCausalLM`` is the same module (``model.layers...``), so
those LoRA weights load as a second adapter on the policy's own PeftModel; only the head lives outside it. PPO's
critic is one more adapter of the same kind. Everything that switches between such adapters goes through here:

* :func:`backbone_of` -- the bare transformer under a causal LM, a classifier or a PeftModel (no LM head, no logits);
* :func:`active_adapter` -- run one adapter for a while, then give back the previous active adapter, every
  parameter's ``requires_grad`` (PEFT's ``set_adapter`` rewrites them for every adapter) and, if asked to run in eval
  mode, every module's train/eval flag;
* :func:`load_reward_adapter_onto` -- a RewardTrainer LoRA folder as a frozen, inactive adapter plus its score head.

Used by :meth:`trl_ext.RewardAdapter.shared_base` (the one shared-base reward scorer, which PPO uses too) and by
``trl_ext.ppo`` (the critic adapter).
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path

import torch

from .models import disable_bnb_cpu_repack

REWARD_HEAD_MODULES = ("score", "classifier")  # what PEFT puts in modules_to_save for task_type SEQ_CLS


def backbone_of(model: torch.nn.Module) -> torch.nn.Module:
    """The bare transformer (e.g. ``Qwen3Model``) under a causal LM, a sequence classifier or a PeftModel of either."""
    if hasattr(model, "get_base_model"):  # PeftModel
        model = model.get_base_model()
    backbone = getattr(model, "base_model", model)  # PreTrainedModel.base_model: the module named by base_model_prefix
    if backbone is model:
        raise TypeError(
            f"{type(model).__name__} has no separate transformer (base_model_prefix={model.base_model_prefix!r}); a "
            "shared-base adapter needs a model of the form XForCausalLM / XForSequenceClassification."
        )
    return backbone


@contextmanager
def keep_requires_grad(model: torch.nn.Module):
    """Give every parameter of ``model`` back the ``requires_grad`` it had on entry.

    PEFT's ``set_adapter`` and ``disable_adapter`` (via ``enable_adapters``) make only the active adapter trainable;
    the policy's optimizer (and PPO's critic group) must keep seeing the same trainable set, so every adapter switch is
    wrapped in this.
    """
    flags = [(p, p.requires_grad) for p in model.parameters()]
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


@contextmanager
def active_adapter(peft_model, name: str, *, eval_mode: bool = False):
    """Run the LoRA adapter ``name`` of ``peft_model`` inside the block, then restore what the switch changed.

    On exit: the previously active adapter, every parameter's ``requires_grad`` (:func:`keep_requires_grad`) and, with
    ``eval_mode=True`` (scoring: no dropout), every module's own train/eval flag -- module by module, since a model can
    be mixed (``from_pretrained`` leaves every module in eval mode, ``get_peft_model`` wraps it in a PeftModel in train
    mode), and ``model.train(flag)`` would flatten that. With ``eval_mode=False`` (PPO's critic forward, which trains
    the adapter) the adapter is made trainable for the block, as ``set_adapter`` does.
    """
    previous = peft_model.active_adapter
    modes = [(m, m.training) for m in peft_model.modules()] if eval_mode else []
    with keep_requires_grad(peft_model):
        peft_model.set_adapter(name, inference_mode=eval_mode)
        if eval_mode:
            peft_model.eval()
        try:
            yield
        finally:
            peft_model.set_adapter(previous)
            for module, training in modes:
                module.training = training


def load_reward_adapter_onto(
    policy: torch.nn.Module, adapter_path: str | os.PathLike, adapter_name: str = "reward"
) -> torch.nn.Linear:
    """Load a SEQ_CLS LoRA reward adapter onto ``policy`` (a ``PeftModel``) as a frozen, inactive second adapter.

    ``adapter_path`` is a folder written by ``PeftModelForSequenceClassification.save_pretrained`` (what
    ``RewardTrainer.save_model`` writes with a LoRA ``peft_config``): ``adapter_config.json`` and
    ``adapter_model.safetensors``. Its LoRA weights are added to ``policy`` under ``adapter_name`` with
    ``requires_grad=False``; the policy's active adapter is unchanged. Its score head (the ``score`` / ``classifier``
    weights) is returned as an ``nn.Linear`` in float32 on the policy's device; nothing of the base is copied.
    Raises if a LoRA weight has no matching layer in the policy (the adapter was trained on another architecture).

    A 4-bit base first gets :func:`trl_ext.models.disable_bnb_cpu_repack`: PEFT reads the policy's ``state_dict()``
    while loading, which on a base that bitsandbytes had packed for CPU inference would scramble its block scales.
    """
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    path, weights_file, config = _reward_adapter_files(policy, adapter_path, adapter_name)
    lora, weight, bias = _split_score_head(load_file(str(weights_file)), weights_file)

    disable_bnb_cpu_repack(policy)  # before set_peft_model_state_dict reads policy.state_dict()
    config.modules_to_save = None  # the head is kept outside the policy
    config.task_type = "CAUSAL_LM"
    config.inference_mode = True
    policy.add_adapter(adapter_name, config)
    result = set_peft_model_state_dict(policy, lora, adapter_name=adapter_name)
    unexpected = [k for k in result.unexpected_keys if f".{adapter_name}." in k or "lora_" in k]
    missing = [k for k in result.missing_keys if f".{adapter_name}." in k]
    if unexpected or missing:
        policy.delete_adapter(adapter_name)
        raise ValueError(
            f"{path} does not fit the policy's layers (unexpected: {unexpected[:3]}, missing: {missing[:3]}). The "
            "reward adapter must be trained on the same base checkpoint as the policy."
        )
    for name, param in policy.named_parameters():
        if f".{adapter_name}." in name:
            param.requires_grad_(False)

    device = next(p for p in policy.parameters() if p.dtype.is_floating_point).device
    score = torch.nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None, device=device, dtype=torch.float32)
    with torch.no_grad():
        score.weight.copy_(weight)
        if bias is not None:
            score.bias.copy_(bias)
    score.requires_grad_(False)
    return score


def _reward_adapter_files(policy, adapter_path, adapter_name: str):
    """Refuse what cannot be loaded, before the policy is touched; returns (folder, weights file, LoRA config)."""
    from peft import PeftConfig, PeftModel

    if not isinstance(policy, PeftModel):
        raise TypeError(
            f"policy is a {type(policy).__name__}, not a peft.PeftModel. A shared-base reward adapter needs a frozen "
            "base that only LoRA trains: wrap the policy first, policy = peft.get_peft_model(policy, LoraConfig(...)), "
            "and pass that PeftModel to the trainer (without peft_config)."
        )
    path = Path(adapter_path).expanduser()
    weights_file = path / "adapter_model.safetensors"
    if not (path / "adapter_config.json").exists() or not weights_file.exists():
        raise FileNotFoundError(
            f"adapter_path={str(adapter_path)!r} holds no adapter_config.json + adapter_model.safetensors. Point it at "
            "the folder RewardTrainer.save_model() wrote when trained with peft_config=LoraConfig(task_type='SEQ_CLS')."
        )
    if adapter_name in policy.peft_config:
        raise ValueError(f"adapter_name={adapter_name!r} is already an adapter of the policy; pick another name.")
    config = PeftConfig.from_pretrained(str(path))
    if config.peft_type.value != "LORA":
        raise ValueError(f"{path}: peft_type={config.peft_type.value}; only LoRA reward adapters can share the base.")
    return path, weights_file, config


def _split_score_head(state: dict, weights_file: Path):
    """The adapter's tensors split into (LoRA weights, score-head weight, score-head bias or None)."""
    head = {k: v for k, v in state.items() if k.split(".")[-2] in REWARD_HEAD_MODULES}
    lora = {k: v for k, v in state.items() if k not in head}
    if not head:
        raise ValueError(
            f"{weights_file} has no score head (no '*.score.weight' or '*.classifier.weight'). Train the reward "
            "adapter with task_type='SEQ_CLS' so PEFT saves the head with it (modules_to_save)."
        )
    (weight_key,) = [k for k in head if k.endswith("weight")]
    return lora, head[weight_key], head.get(weight_key[: -len("weight")] + "bias")
