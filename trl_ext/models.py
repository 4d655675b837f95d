"""Loading a policy or a reward model from TRL's ``ModelConfig``: LoRA, 4-bit, CPU quirks, clear errors.

TRL's own helpers (``get_quantization_config``, ``get_peft_config``, ``get_kbit_device_map``) do the work; this module
adds what they leave to each script: a readable error for a path that does not exist, the bitsandbytes CPU workaround,
and one place that decides device maps, dtypes and ``trust_remote_code`` (off unless the user turned it on).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
from accelerate import PartialState
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer, PreTrainedModel
from trl import ModelConfig, get_quantization_config

logger = logging.getLogger(__name__)


def _looks_local(name: str) -> bool:
    return name.startswith((".", "/", "~")) or name.count("/") > 1


def check_model_path(name: str | os.PathLike | None, field: str = "model_name_or_path") -> str:
    """Fail early with the field's name when a model path is missing; hub ids (``org/name``) pass through."""
    if name is None or str(name).strip() == "":
        raise ValueError(f"{field} is empty: pass a local checkpoint folder or a hub id such as Qwen/Qwen2.5-0.5B.")
    name = str(name)
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").exists():
            raise FileNotFoundError(
                f"{field}={name!r} exists but holds no config.json, so it is not a saved model. Point it at the folder "
                "a trainer's save_model() wrote (it contains config.json and model.safetensors)."
            )
        return str(path)
    if _looks_local(name):
        raise FileNotFoundError(
            f"{field}={name!r} does not exist. Check the path, or run the stage that writes it first "
            "(`trl-ext pipeline` builds the embedded tiny model itself when model_name_or_path is left empty)."
        )
    return name  # a hub id; from_pretrained reports a missing one


PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt")


def safe_from_pretrained(auto_cls, name: str, field: str = "model_name_or_path", **kwargs) -> PreTrainedModel:
    """``auto_cls.from_pretrained(name, **kwargs)`` that never runs code hidden in pickled weights.

    Weights come from ``*.safetensors`` when the checkpoint has them. A checkpoint with only pickled weights
    (``pytorch_model.bin`` ...) is loaded by transformers with ``torch.load(weights_only=True)``, which accepts tensors
    and plain containers only; a file holding anything else is refused with an error that names it (instead of
    torch's advice to retry with ``weights_only=False``). ``trust_remote_code`` stays whatever the caller passes:
    off unless the user turned it on.
    """
    import pickle

    path = Path(name).expanduser()
    if path.is_dir() and not any(path.glob("*.safetensors")):
        pickled = sorted(p.name for p in path.iterdir() if p.suffix in PICKLE_SUFFIXES)
        if pickled:
            logger.warning(
                "%s=%r has no .safetensors weights; loading %s with torch.load(weights_only=True). Re-save it with "
                "save_pretrained() to get safetensors.", field, name, pickled,
            )
    try:
        return auto_cls.from_pretrained(name, **kwargs)
    except ValueError as e:
        if "trust_remote_code=True" not in str(e):
            raise
        code = sorted(p.name for p in path.glob("*.py")) if path.is_dir() else []
        raise ValueError(
            f"{field}={name!r} can only be built by running Python code that comes with it "
            f"({code or 'auto_map in its config'}). "
            "trl_ext runs a checkpoint's code only when you allow it: read that code, then pass --trust_remote_code "
            "true (trust_remote_code: true in the YAML)."
        ) from None
    except pickle.UnpicklingError as e:
        detail = next((line for line in str(e).splitlines() if "GLOBAL" in line), str(e).splitlines()[0])
        raise ValueError(
            f"{field}={name!r}: its pickled weights hold more than tensors ({detail.strip()}), and trl_ext loads "
            "pickles only with torch.load(weights_only=True), never running code in them. If the checkpoint comes from "
            "a source you trust, load it once yourself and re-save it with save_pretrained() (safetensors); "
            "otherwise do not use it."
        ) from None


def _dtype(model_args: ModelConfig):
    if model_args.dtype in (None, "auto"):
        return "auto" if torch.cuda.is_available() else torch.float32
    return getattr(torch, model_args.dtype)


def from_pretrained_kwargs(model_args: ModelConfig, trust_remote_code: bool = False) -> dict:
    """Keyword arguments for ``from_pretrained`` that honour ModelConfig's dtype, 4-bit/8-bit and remote-code flags."""
    kwargs = dict(
        revision=model_args.model_revision,
        trust_remote_code=trust_remote_code,
        attn_implementation=model_args.attn_implementation,
        dtype=_dtype(model_args),
    )
    quantization_config = get_quantization_config(model_args)
    if quantization_config is not None:
        if not torch.cuda.is_available() and quantization_config.bnb_4bit_compute_dtype in (None, torch.float16):
            quantization_config.bnb_4bit_compute_dtype = torch.float32  # fp16 matmuls are not implemented on CPU
        kwargs["quantization_config"] = quantization_config
        # one whole copy per process: under `accelerate launch` each rank loads onto its own GPU
        kwargs["device_map"] = {"": PartialState().local_process_index} if torch.cuda.is_available() else {"": "cpu"}
    return kwargs


def disable_bnb_cpu_repack(model: torch.nn.Module) -> int:
    """Stop bitsandbytes from repacking 4-bit weights for CPU inference; returns how many layers were touched.

    On CPUs with AVX512-BF16, an eval-mode forward of ``bnb.nn.Linear4bit`` repacks its weight in place, and the next
    training forward fails with "a view of a leaf Variable that requires grad is being used in an in-place
    operation". RL alternates generation (eval) and training, so every 4-bit model trained on CPU goes through this.
    """
    try:
        import bitsandbytes as bnb
    except ImportError:
        return 0
    touched = 0
    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit):
            module.support_avx512bf16_for_cpu = False
            touched += 1
    return touched


def load_causal_lm(model_args: ModelConfig, name: str | None = None, trust_remote_code: bool = False) -> PreTrainedModel:
    """A causal LM as ModelConfig describes it (LoRA is applied later by the trainer from ``get_peft_config``)."""
    name = check_model_path(name or model_args.model_name_or_path)
    model = safe_from_pretrained(AutoModelForCausalLM, name, **from_pretrained_kwargs(model_args, trust_remote_code))
    disable_bnb_cpu_repack(model)
    return model


def load_sequence_classifier(
    model_args: ModelConfig, name: str | None = None, num_labels: int = 1, trust_remote_code: bool = False
) -> PreTrainedModel:
    """A sequence-classification model (reward model or critic) with a pad token id set, as TRL's RewardTrainer needs."""
    name = check_model_path(name or model_args.model_name_or_path)
    model = safe_from_pretrained(
        AutoModelForSequenceClassification, name, num_labels=num_labels,
        **from_pretrained_kwargs(model_args, trust_remote_code),
    )
    if model.config.pad_token_id is None:
        tokenizer = AutoTokenizer.from_pretrained(name, trust_remote_code=trust_remote_code)
        model.config.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    disable_bnb_cpu_repack(model)
    return model


def load_tokenizer(model_args: ModelConfig, name: str | None = None, trust_remote_code: bool = False):
    name = check_model_path(name or model_args.model_name_or_path)
    tokenizer = AutoTokenizer.from_pretrained(
        name, revision=model_args.model_revision, trust_remote_code=trust_remote_code
    )
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


# ---- shared-base LoRA reward adapters --------------------------------------------------------------------------------
# A reward model trained by TRL's RewardTrainer with ``peft_config=LoraConfig(task_type="SEQ_CLS")`` on the policy's
# base checkpoint is saved as LoRA weights for the transformer plus a full copy of the score head (``modules_to_save``).
# The transformer of ``XForSequenceClassification`` and of ``XForCausalLM`` is the same module (``model.layers...``), so
# the LoRA weights load as a second adapter on the policy's own base; only the head lives outside it.

REWARD_HEAD_MODULES = ("score", "classifier")  # what PEFT puts in modules_to_save for task_type SEQ_CLS


def backbone_of(model: torch.nn.Module) -> torch.nn.Module:
    """The bare transformer (e.g. ``Qwen3Model``) under a causal LM, a sequence classifier or a PeftModel of either."""
    if hasattr(model, "get_base_model"):  # PeftModel
        model = model.get_base_model()
    backbone = getattr(model, "base_model", model)  # PreTrainedModel.base_model: the module named by base_model_prefix
    if backbone is model:
        raise TypeError(
            f"{type(model).__name__} has no separate transformer (base_model_prefix={model.base_model_prefix!r}); a "
            "shared-base reward adapter needs a model of the form XForCausalLM / XForSequenceClassification."
        )
    return backbone


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
    """
    from peft import PeftConfig, PeftModel, set_peft_model_state_dict
    from safetensors.torch import load_file

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

    state = load_file(str(weights_file))
    head = {k: v for k, v in state.items() if k.split(".")[-2] in REWARD_HEAD_MODULES}
    lora = {k: v for k, v in state.items() if k not in head}
    if not head:
        raise ValueError(
            f"{weights_file} has no score head (no '*.score.weight' or '*.classifier.weight'). Train the reward "
            "adapter with task_type='SEQ_CLS' so PEFT saves the head with it (modules_to_save)."
        )
    (weight_key,) = [k for k in head if k.endswith("weight")]
    weight = head[weight_key]
    bias = head.get(weight_key[: -len("weight")] + "bias")

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

    device = next(policy.parameters()).device
    score = torch.nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None, device=device, dtype=torch.float32)
    with torch.no_grad():
        score.weight.copy_(weight)
        if bias is not None:
            score.bias.copy_(bias)
    score.requires_grad_(False)
    return score


def match_trainable_dtype_to_compute(model: torch.nn.Module, bf16: bool) -> int:
    """Cast a quantized model's trainable parameters back to fp32 when training does not autocast to bf16.

    TRL 1.16's RewardTrainer (and GRPOTrainer) move every trainable parameter of a quantized model to bf16 (the QLoRA
    recipe). Without bf16 autocast, as on CPUs without bf16 units, the fp32 activations then meet a bf16 score head or
    LoRA weight and the forward fails ("expected m1 and m2 to have the same dtype"). Returns the number cast.
    """
    if bf16 or not (getattr(model, "is_loaded_in_4bit", False) or getattr(model, "is_loaded_in_8bit", False)):
        return 0
    cast = 0
    for param in model.parameters():
        if param.requires_grad and param.dtype == torch.bfloat16:
            param.data = param.data.float()
            cast += 1
    return cast
