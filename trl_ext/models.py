"""Loading a policy or a reward model from TRL's ``ModelConfig``: LoRA, 4-bit, CPU quirks, clear errors.

TRL's own helpers (``get_quantization_config``, ``get_peft_config``, ``get_kbit_device_map``) do the work; this module
adds what they leave to each script: a readable error for a path that does not exist, the bitsandbytes CPU workaround,
and one place that decides device maps, dtypes and ``trust_remote_code`` (off unless the user turned it on).
"""

from __future__ import annotations

import logging
import os
import sys
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
    """Keep bitsandbytes' 4-bit weights in the layout training uses, on every CPU; returns how many layers were touched.

    On CPUs with AVX512-BF16, bitsandbytes 0.50's ``Linear4bit.forward`` in eval mode (``module.training`` False, no
    grad) repacks the weight in place for a bf16 inference kernel: the nibbles are reordered and the per-block scales
    (``quant_state.absmax``) are rounded to bf16 and stored transposed, (blocks,) -> (K / blocksize, N). Three things
    go wrong after that on a model that is trained:

    * a training forward still takes the packed kernel, which has no autograd: the LoRA adapters get no gradient
      (or the step fails, "a view of a leaf Variable that requires grad is being used in an in-place operation");
    * eval forwards compute in bf16, training forwards in the compute dtype, so sampled and trained log-probs differ;
    * any ``state_dict()`` (PEFT's ``set_peft_model_state_dict`` when an adapter is loaded, Trainer's checkpoint save)
      runs bitsandbytes' inverse, which restores the nibbles but, without double quantisation, leaves ``absmax`` in
      the transposed bf16 layout: the next forward reads the scales of the wrong blocks (logits off by ~0.35 on the
      tiny model). That is what "loading a reward adapter changes the policy" was.

    So this sets ``support_avx512bf16_for_cpu = False`` on every ``bnb.nn.Linear4bit`` (the value bitsandbytes
    itself uses on CPUs without AVX512-BF16, so both kinds of CPU run the same code from here on) and puts a layer
    that was already packed back into the standard layout (:func:`unpack_bnb_cpu_weight`). Call it right after
    loading and before anything reads ``state_dict()``; trl_ext's loaders, trainers and reward adapters do.
    """
    if "bitsandbytes" not in sys.modules:  # nothing can be 4-bit without it; importing it just to check would print
        return 0
    import bitsandbytes as bnb

    touched = unpacked = 0
    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit):
            module.support_avx512bf16_for_cpu = False
            unpacked += unpack_bnb_cpu_weight(module)
            touched += 1
    if touched:
        from ._bnb_notice import release

        release()  # bitsandbytes' import-time notice about its CPU kernel concerns 4-bit users: log it now
    if unpacked:
        logger.warning(
            "%d 4-bit layers had been repacked by bitsandbytes for CPU inference (an eval-mode forward on an "
            "AVX512-BF16 CPU) and were put back into the training layout; their block scales stay rounded to bf16. "
            "Call trl_ext.models.disable_bnb_cpu_repack(model) right after loading to keep them as loaded.", unpacked,
        )
    return touched


def unpack_bnb_cpu_weight(module) -> bool:
    """Undo bitsandbytes' CPU inference packing of one ``Linear4bit``; returns whether it was packed.

    The packing keeps the 4-bit codes (only their order changes) and turns the block scales into a bf16
    (K / blocksize, N) matrix, the transpose of the original (N * K / blocksize,) order, dequantising double-quantised
    scales first. ``bitsandbytes.functional._convert_weight_packed_for_cpu_inverse`` restores the codes' order but
    leaves single-quantised scales transposed, and re-quantises double-quantised ones to 8 bits (a second rounding).
    Here the codes come back through that inverse and the scales are put back in their original order as float32
    (the dtype ``quantize_4bit`` gives them), single-quantised: exactly the values the packed kernel computed with.
    """
    weight = module.weight
    state = getattr(weight, "quant_state", None)
    if state is None or not getattr(state, "packing_format_for_cpu", False):
        return False
    from bitsandbytes.functional import _convert_weight_packed_for_cpu_inverse

    state.original_nested = False  # keep the scales as they are; re-quantising them would round them again
    weight.data, state = _convert_weight_packed_for_cpu_inverse(weight.data, state)
    state.absmax = state.absmax.T.reshape(-1).float().contiguous()  # (K/bs, N) -> (N, K/bs) -> (N*K/bs,)
    weight.quant_state = state
    if getattr(module, "quant_state", None) is not None:
        module.quant_state = state
    return True


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


def cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies bf16 matrices in hardware (AVX512-BF16 or AMX), so bf16 autocast is a speed-up
    rather than the ~10x slower emulation older CPUs fall back to."""
    is_avx512_bf16 = getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    is_amx = getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    return bool(is_avx512_bf16() or is_amx())


def cpu_training_defaults() -> dict:
    """The training-argument defaults trl_ext picks on a machine without CUDA (a flag or YAML value still wins).

    * ``use_cpu=True``: transformers otherwise looks for an accelerator;
    * ``bf16``: on where the CPU has bf16 units (see :func:`cpu_has_native_bf16`), off elsewhere. TRL's configs default
      to bf16, which transformers refuses on a CPU it thinks cannot do it and which older CPUs emulate slowly. On a
      LoRA step of SmolLM2-135M it halves the forward + backward (benchmarks/results/cpu_step.md); the weights and
      optimizer stay fp32, only the matmuls run in bf16 (autocast), and the loss moves within bf16 rounding;
    * ``gradient_checkpointing=False``: TRL 1.16 turns it on to save accelerator memory; on a CPU with a small model
      it only recomputes every forward (one more forward per step) to save memory that is not short.
    """
    return dict(use_cpu=True, bf16=cpu_has_native_bf16(), gradient_checkpointing=False)


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
