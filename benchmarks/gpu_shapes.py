"""What benchmarks/gpu_memory.py trains: real architectures with random weights, a tokenizer of their vocabulary size,
data of exact token lengths, and the recipes' batch, group and length settings.

Memory and speed depend on a model's shapes, not on its trained weights. So each architecture is its public
``config.json`` (``benchmarks/configs/arch/*.json``, architecture fields only), built with ``from_config`` and random
weights, saved as an ordinary checkpoint (safetensors, tokenizer, chat template) together with a LoRA reward-model
adapter on it (``ppo_memory.save_rm_adapter``). Nothing is downloaded.

The tokenizer is a word-level one with exactly ``vocab_size`` entries (the embedding matrix's rows, so the LM head
and the logits have the real width): special tokens and the chat template of ``trl_ext.toy``, then the words
``w6 ... w<vocab_size-1>``. A text of n words is n tokens, so prompts, completions and preference pairs are built to
the exact lengths the settings name. Random weights give a nearly uniform next-token distribution, so a completion
almost never ends early; ``min_new_tokens`` makes it never, i.e. every completion has the maximum length: the worst
case, which is what a fit table needs.

``--smoke`` keeps every architecture's type and its config's other fields, and shrinks width, depth, heads and
vocabulary (``SMOKE_SHAPE``) and the recipes' batch and lengths (``SMOKE_SETTINGS``), so the same code runs on a CPU
in seconds.
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
ARCH_DIR = HERE / "configs" / "arch"
RECIPE_DIR = HERE.parent / "recipes" / "configs"
sys.path.insert(0, str(HERE))  # the sibling benchmark modules (ppo_memory, reward_adapter) are reused

ARCHS = ("qwen2.5-1.5b", "qwen2.5-0.5b", "llama-3.2-1b", "qwen2.5-3b")  # the order runs are scheduled in
SETTINGS = {"nf4_lora": "nf4 4-bit + LoRA", "bf16_lora": "bf16 + LoRA"}  # base precision; LoRA in both
RATIO_ARCH = "qwen2.5-0.5b"  # step-time ratio on the 0.5B recipe: 16-token completions, many steps per second
SCORE_ARCH = "qwen2.5-1.5b"  # reward-model scoring ratio on the shape of the absolute goal

# Which recipe's `rl:` / `rm:` maps (and LoRA settings) each architecture trains with. Only 0.5B and 1.5B have recipes
# of their own; 3B and Llama-3.2-1B take the 1.5B hub recipe's settings (the consumer chat setting).
RECIPES = {
    "qwen2.5-0.5b": {"rl": "qwen2.5-0.5b-qlora.yaml", "ppo": "qwen2.5-0.5b-ppo-shared.yaml"},
    "default": {"rl": "qwen2.5-1.5b-qlora-hub.yaml", "ppo": "qwen2.5-1.5b-qlora-hub.yaml"},
}
# Prompt length in tokens (chat template included). The recipes do not fix it; these are assumptions, stated in the
# report: the addition task's question in Qwen2.5's template with its default system prompt is ~35 tokens; the hub
# recipe's UltraFeedback prompts vary, 256 is a generous typical length.
PROMPT_TOKENS = {"qwen2.5-0.5b-qlora.yaml": 32, "qwen2.5-0.5b-ppo-shared.yaml": 32, "qwen2.5-1.5b-qlora-hub.yaml": 256}

SMOKE_SHAPE = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                   num_key_value_heads=2, vocab_size=512)
SMOKE_SETTINGS = dict(rl=dict(per_device_train_batch_size=4, num_generations=2, max_completion_length=4),
                      rm=dict(per_device_train_batch_size=2, gradient_accumulation_steps=1, max_length=16),
                      prompt_tokens=8)

PAD, EOS, UNK = "<|pad|>", "<|end|>", "<|unk|>"


def arch_config(name: str, smoke: bool = False):
    """The transformers config of architecture ``name`` (its JSON in configs/arch), shrunk for ``smoke``."""
    from transformers import AutoConfig

    path = ARCH_DIR / f"{name}.json"
    if not path.exists():
        known = sorted(p.stem for p in ARCH_DIR.glob("*.json"))
        raise FileNotFoundError(f"architecture {name!r}: no {path}; known: {known}")
    fields = {k: v for k, v in json.loads(path.read_text()).items() if not k.startswith("_") and k != "architectures"}
    for key in ("bos_token_id", "eos_token_id"):  # the local tokenizer's ids replace the hub tokenizer's
        fields.pop(key, None)
    if smoke:
        fields.update(SMOKE_SHAPE)
        if "head_dim" in fields:
            fields["head_dim"] = SMOKE_SHAPE["hidden_size"] // SMOKE_SHAPE["num_attention_heads"]
        if "max_window_layers" in fields:
            fields["max_window_layers"] = SMOKE_SHAPE["num_hidden_layers"]
    return AutoConfig.for_model(**fields)


def build_tokenizer(vocab_size: int, max_length: int):
    """A word-level tokenizer with exactly ``vocab_size`` tokens: trl_ext.toy's special tokens and chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from trl_ext.toy.model import CHAT_TEMPLATE, ROLE_TOKENS

    specials = [PAD, EOS, UNK, *ROLE_TOKENS]
    vocab = {tok: i for i, tok in enumerate(specials)}
    vocab.update({f"w{i}": i for i in range(len(specials), vocab_size)})
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    backend.decoder = decoders.WordPiece(prefix="##", cleanup=False)  # joins words with spaces: texts round-trip
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token=PAD, eos_token=EOS, unk_token=UNK,
        additional_special_tokens=ROLE_TOKENS, padding_side="left", model_max_length=max_length,
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def build_checkpoint(name: str, folder: Path, smoke: bool, lora_r: int, lora_alpha: int) -> dict:
    """Save ``name`` with random bf16 weights (built on the GPU when there is one), its tokenizer and a LoRA RM adapter.

    Returns ``{"base": folder, "tokenizer": folder/tokenizer, "rm_adapter": folder/rm_adapter, "params_m": ...}``; a
    complete folder is reused. The tokenizer has a folder of its own: next to a config.json of model_type qwen2,
    ``AutoTokenizer`` would build Qwen2's BPE tokenizer class around it instead of this word-level one."""
    import torch
    from transformers import AutoModelForCausalLM

    from ppo_memory import save_rm_adapter

    marker = folder / "gpu_kit.json"
    if marker.exists():
        return json.loads(marker.read_text())
    config = arch_config(name, smoke)
    tokenizer = build_tokenizer(config.vocab_size, config.max_position_embeddings)
    config.pad_token_id, config.eos_token_id, config.bos_token_id = tokenizer.pad_token_id, tokenizer.eos_token_id, None
    torch.manual_seed(0)
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.bos_token_id = None
    params_m = sum(p.numel() for p in model.parameters()) / 1e6
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder / "tokenizer")
    del model
    adapter = save_rm_adapter(str(folder), str(folder / "rm_adapter"), lora_r, lora_alpha, dtype=torch.bfloat16)
    tokenizer.save_pretrained(adapter)  # as RewardTrainer.save_model does: RewardAdapter.shared_base reads it there
    info = {"base": str(folder), "tokenizer": str(folder / "tokenizer"), "rm_adapter": adapter, "params_m": params_m,
            "model_type": config.model_type}
    marker.write_text(json.dumps(info))
    return info


# ---- settings --------------------------------------------------------------------------------------------------------
def recipe_file(arch: str, trainer: str) -> str:
    recipes = RECIPES.get(arch, RECIPES["default"])
    return recipes["ppo" if trainer.startswith("ppo") else "rl"]


def recipe_settings(arch: str, trainer: str, smoke: bool) -> dict:
    """The recipe's ``rl:`` and ``rm:`` maps, LoRA fields and the prompt length for (arch, trainer).

    ``rl``/``rm`` are what the pipeline passes over its own defaults (``trl_ext.pipeline.stage_args``); ``smoke``
    replaces batch, group and lengths with SMOKE_SETTINGS."""
    name = recipe_file(arch, trainer)
    recipe = yaml.safe_load((RECIPE_DIR / name).read_text())
    rl, rm = dict(recipe.get("rl", {})), dict(recipe.get("rm", {}))
    rl.pop("shared_base", None)  # the PPO runs choose it themselves
    prompt_tokens = PROMPT_TOKENS[name]
    if smoke:
        rl.update(SMOKE_SETTINGS["rl"])
        rm.update(SMOKE_SETTINGS["rm"])
        prompt_tokens = SMOKE_SETTINGS["prompt_tokens"]
    lora = {k: recipe[k] for k in ("lora_r", "lora_alpha", "lora_target_modules") if k in recipe}
    return {"recipe": name, "rl": rl, "rm": rm, "lora": lora, "prompt_tokens": prompt_tokens}


# ---- data of exact token lengths -------------------------------------------------------------------------------------
def _template_overhead(tokenizer, messages: list[dict], add_generation_prompt: bool) -> int:
    empty = [{**m, "content": ""} for m in messages]
    ids = tokenizer.apply_chat_template(empty, tokenize=True, add_generation_prompt=add_generation_prompt,
                                        return_dict=True)["input_ids"]
    return len(ids)


def _words(rng: random.Random, n: int, vocab_size: int) -> str:
    return " ".join(f"w{rng.randrange(6, vocab_size)}" for _ in range(n))


def prompt_dataset(tokenizer, n: int, prompt_tokens: int, seed: int = 0):
    """``n`` conversational prompts, each exactly ``prompt_tokens`` tokens once the chat template is applied."""
    from datasets import Dataset

    rng = random.Random(seed)
    user = [{"role": "user", "content": ""}]
    words = prompt_tokens - _template_overhead(tokenizer, user, add_generation_prompt=True)
    if words < 1:
        raise ValueError(f"prompt_tokens={prompt_tokens} leaves no room for content after the chat template.")
    rows = [[{"role": "user", "content": _words(rng, words, len(tokenizer))}] for _ in range(n)]
    return Dataset.from_dict({"prompt": rows})


def preference_dataset(tokenizer, n: int, length: int, seed: int = 0):
    """``n`` (chosen, rejected) conversations, each exactly ``length`` tokens (RewardTrainer drops longer ones)."""
    from datasets import Dataset

    rng = random.Random(seed)
    turns = [{"role": "user", "content": ""}, {"role": "assistant", "content": ""}]
    room = length - _template_overhead(tokenizer, turns, add_generation_prompt=False)
    if room < 2:
        raise ValueError(f"max_length={length} leaves no room for a prompt and an answer after the chat template.")
    prompt_words = room // 4  # a quarter prompt, three quarters answer

    def conversation():
        return [{"role": "user", "content": _words(rng, prompt_words, len(tokenizer))},
                {"role": "assistant", "content": _words(rng, room - prompt_words, len(tokenizer))}]

    return Dataset.from_dict({"chosen": [conversation() for _ in range(n)],
                              "rejected": [conversation() for _ in range(n)]})


def scoring_pairs(tokenizer, n: int, prompt_tokens: int, completion_tokens: int, seed: int = 0):
    """(prompts, completions) as a GRPO trainer hands them to a reward function: completions of full length."""
    prompts = prompt_dataset(tokenizer, n, prompt_tokens, seed)["prompt"]
    rng = random.Random(seed + 1)
    completions = [[{"role": "assistant", "content": _words(rng, completion_tokens, len(tokenizer))}]
                   for _ in range(n)]
    return prompts, completions
