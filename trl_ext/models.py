"""Loading a policy or a reward model from TRL's ``ModelConfig``: LoRA, 4-bit, CPU quirks, clear errors.

TRL's own helpers (``get_quantization_config``, ``get_peft_config``, ``get_kbit_device_map``) do the work; this module
adds what they leave to each script: a readable error for a path that does not exist, the bitsandbytes CPU workaround,
and one place that decides device maps, dtypes and ``trust_remote_code`` (off unless the user turned it on).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from accelerate import PartialState
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer, PreTrainedModel
from trl import ModelConfig, get_quantization_config


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
    model = AutoModelForCausalLM.from_pretrained(name, **from_pretrained_kwargs(model_args, trust_remote_code))
    disable_bnb_cpu_repack(model)
    return model


def load_sequence_classifier(
    model_args: ModelConfig, name: str | None = None, num_labels: int = 1, trust_remote_code: bool = False
) -> PreTrainedModel:
    """A sequence-classification model (reward model or critic) with a pad token id set, as TRL's RewardTrainer needs."""
    name = check_model_path(name or model_args.model_name_or_path)
    model = AutoModelForSequenceClassification.from_pretrained(
        name, num_labels=num_labels, **from_pretrained_kwargs(model_args, trust_remote_code)
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
