"""A tiny causal LM and a character tokenizer, built locally and saved as an ordinary HF checkpoint.

Nothing here touches a hub. The checkpoint (``config.json``, ``model.safetensors``, ``tokenizer.json``,
``tokenizer_config.json`` with a chat template) loads with ``AutoModelForCausalLM.from_pretrained(path)`` and
``AutoTokenizer.from_pretrained(path)``, and as a reward model with
``AutoModelForSequenceClassification.from_pretrained(path, num_labels=1)``, exactly as a hub checkpoint would.
"""

from __future__ import annotations

import json
import os
import string
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast, Qwen3Config, Qwen3ForCausalLM

PAD, EOS, UNK = "<|pad|>", "<|end|>", "<|unk|>"
ROLE_TOKENS = ["<|system|>", "<|user|>", "<|assistant|>"]
SPECIAL_TOKENS = [PAD, EOS, UNK, *ROLE_TOKENS]
# One token per printable ASCII character: small vocabulary, and any text the toy tasks produce round-trips exactly.
CHARS = [c for c in string.printable if c not in "\t\n\r\x0b\x0c"]

# Each turn is "<|role|>content<|end|>"; the generation prompt is "<|assistant|>", so a completion is "42<|end|>".
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{ '<|' + message['role'] + '|>' + message['content'] + '<|end|>' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|assistant|>' }}{%- endif -%}"
)

_MARKER = "trl_ext_toy.json"  # written last: a folder without it is an interrupted build and is rebuilt


@dataclass(frozen=True)
class TinyModelSpec:
    """Shape of the embedded model. The defaults (3 layers, width 128, ~0.75M parameters) train in seconds on a CPU."""

    hidden_size: int = 128
    num_hidden_layers: int = 3
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    intermediate_size: int = 512
    max_position_embeddings: int = 128
    seed: int = 0


def build_tokenizer() -> PreTrainedTokenizerFast:
    """Character-level tokenizer: every printable ASCII character is one token, plus role and control tokens."""
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS + CHARS)}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    # Special tokens are matched before pre-tokenization; everything else is split into single characters.
    backend.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    backend.decoder = decoders.Fuse()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token=PAD,
        eos_token=EOS,
        unk_token=UNK,
        additional_special_tokens=ROLE_TOKENS,
        padding_side="left",
        model_max_length=TinyModelSpec.max_position_embeddings,
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def build_tiny_model(tokenizer: PreTrainedTokenizerFast, spec: TinyModelSpec = TinyModelSpec()) -> Qwen3ForCausalLM:
    """A randomly initialised Qwen3-style causal LM, deterministic in ``spec.seed``; dropout is zero everywhere."""
    config = Qwen3Config(
        vocab_size=len(tokenizer),
        hidden_size=spec.hidden_size,
        num_hidden_layers=spec.num_hidden_layers,
        num_attention_heads=spec.num_attention_heads,
        num_key_value_heads=spec.num_key_value_heads,
        head_dim=spec.hidden_size // spec.num_attention_heads,
        intermediate_size=spec.intermediate_size,
        max_position_embeddings=spec.max_position_embeddings,
        tie_word_embeddings=True,
        attention_dropout=0.0,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
    )
    state = torch.random.get_rng_state()
    try:
        torch.manual_seed(spec.seed)
        model = Qwen3ForCausalLM(config)
    finally:
        torch.random.set_rng_state(state)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.bos_token_id = None
    return model


def is_embedded_checkpoint(path: str | os.PathLike) -> bool:
    """Whether the local checkpoint at ``path`` is the embedded tiny model or one trained from it (its shape and its
    character vocabulary), e.g. an earlier run's ``sft/model``; False for anything else, hub ids included."""
    config = Path(path) / "config.json"
    if not config.is_file():
        return False
    shape = json.loads(config.read_text())
    spec = TinyModelSpec()
    return (shape.get("hidden_size"), shape.get("num_hidden_layers"), shape.get("vocab_size")) == (
        spec.hidden_size, spec.num_hidden_layers, len(SPECIAL_TOKENS + CHARS))


def default_cache_dir() -> Path:
    return Path(os.environ.get("TRL_EXT_CACHE", Path.home() / ".cache" / "trl_ext"))


def ensure_tiny_checkpoint(path: str | os.PathLike | None = None, spec: TinyModelSpec = TinyModelSpec()) -> Path:
    """Build the tiny base checkpoint at ``path`` (default: the cache) unless a complete one is already there.

    Returns the folder. The build is deterministic in ``spec``, so a cached folder is reused only when its recorded
    spec matches; otherwise it is rebuilt in place.
    """
    if path is None:
        path = default_cache_dir() / f"tiny-qwen3-h{spec.hidden_size}-l{spec.num_hidden_layers}-s{spec.seed}"
    path = Path(path)
    marker = path / _MARKER
    if marker.exists() and json.loads(marker.read_text()) == asdict(spec):
        return path
    path.mkdir(parents=True, exist_ok=True)
    marker.unlink(missing_ok=True)
    tokenizer = build_tokenizer()
    model = build_tiny_model(tokenizer, spec)
    model.save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)
    marker.write_text(json.dumps(asdict(spec)))
    return path
