"""RewardAdapter: scores equal each reward model's own forward on its own tokenisation; batching, shared base, errors.

Tiny models only (the embedded Qwen3 checkpoint and a Llama RM with a foreign tokenizer built here); every numeric
check is an equality within 1e-5, never a timing.
"""

from __future__ import annotations

import functools
import logging
import math

import numpy as np
import pytest
import torch
from datasets import Dataset
from peft import LoraConfig, PeftModel, get_peft_model
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    LlamaConfig,
    LlamaForSequenceClassification,
    PreTrainedTokenizerFast,
)

from trl_ext import RewardAdapter
from trl_ext.rewards import RunningNorm, micro_batches
from trl_ext.toy import ensure_tiny_checkpoint
from trl_ext.toy.model import CHARS

TOL = 1e-5

PROMPTS = [[{"role": "user", "content": f"{a}+{b}"}] for a, b in [(12, 34), (5, 99), (71, 8), (40, 40), (3, 2), (88, 17)]]
ANSWERS = ["46", "104 is the sum", "79", "", "5, surely; I checked twice", "105"]
COMPLETIONS = [[{"role": "assistant", "content": a}] for a in ANSWERS]


# ---- fixtures --------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def base_path(tmp_path_factory):
    return ensure_tiny_checkpoint(tmp_path_factory.mktemp("tiny") / "base")


@pytest.fixture(scope="module")
def toy_tokenizer(base_path):
    return AutoTokenizer.from_pretrained(base_path)


@pytest.fixture(scope="module")
def toy_rm(base_path):
    torch.manual_seed(0)
    return AutoModelForSequenceClassification.from_pretrained(base_path, num_labels=1)


def build_foreign_tokenizer() -> PreTrainedTokenizerFast:
    """A tokenizer unlike the policy's: other vocabulary order, other special tokens, BOS added by the tokenizer for
    plain text and written by the chat template for conversations, ``[INST]``-style template, right padding."""
    specials = ["<unk>", "<s>", "</s>", "<pad>", "[INST]", "[/INST]"]
    vocab = {tok: i for i, tok in enumerate(list(reversed(CHARS)) + ["sum", "the"] + specials)}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex("sum|the|."), behavior="isolated")
    backend.decoder = decoders.Fuse()
    backend.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", vocab["<s>"])])
    tok = PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>",
        additional_special_tokens=["[INST]", "[/INST]"], padding_side="right", model_max_length=96,
    )
    tok.chat_template = (
        "{{ bos_token }}{% for m in messages %}{% if m['role'] == 'user' %}[INST]{{ m['content'] }}[/INST]"
        "{% else %}{{ m['content'] }}{{ eos_token }}{% endif %}{% endfor %}"
    )
    return tok


@pytest.fixture(scope="module")
def foreign():
    tok = build_foreign_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=1, max_position_embeddings=96, num_labels=1, pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
    )
    torch.manual_seed(1)
    return LlamaForSequenceClassification(config).eval(), tok


def own_forward(model, ids: list[int]) -> float:
    """The RM's own forward on one unpadded sequence."""
    with torch.no_grad():
        return model(input_ids=torch.tensor([ids])).logits[0, 0].item()


def chat_ids(tok, prompt, completion) -> list[int]:
    return tok.apply_chat_template(prompt + completion, tokenize=True, return_dict=True)["input_ids"]


def assert_close(a, b, tol=TOL):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert abs(x - y) <= tol, (a, b)


# ---- reward models -----------------------------------------------------------------------------------------------------
def test_scores_equal_rm_forward_conversational(toy_rm, toy_tokenizer):
    adapter = RewardAdapter.from_model(toy_rm, toy_tokenizer, batch_size=4)
    expected = [own_forward(toy_rm, chat_ids(toy_tokenizer, p, c)) for p, c in zip(PROMPTS, COMPLETIONS)]
    assert_close(adapter(prompts=PROMPTS, completions=COMPLETIONS), expected)
    assert adapter.__name__ == "rm_base"


def test_rm_from_a_saved_folder_and_a_missing_one(toy_rm, toy_tokenizer, tmp_path):
    toy_rm.save_pretrained(tmp_path / "rm")
    toy_tokenizer.save_pretrained(tmp_path / "rm")
    adapter = RewardAdapter.from_model(tmp_path / "rm", batch_size=4)
    expected = [own_forward(toy_rm, chat_ids(toy_tokenizer, p, c)) for p, c in zip(PROMPTS, COMPLETIONS)]
    assert_close(adapter.score(PROMPTS, COMPLETIONS), expected)
    assert adapter.__name__ == "rm"  # a folder named rm logs as rewards/rm/..., not rm_rm
    with pytest.raises(FileNotFoundError, match="reward model='/nowhere/rm' does not exist"):
        RewardAdapter.from_model("/nowhere/rm")


def test_foreign_tokenizer_rm_rerenders_with_its_own_template(foreign, toy_tokenizer):
    model, tok = foreign
    adapter = RewardAdapter.from_model(model, tok, batch_size=2, name="foreign_rm")
    expected = [own_forward(model, chat_ids(tok, p, c)) for p, c in zip(PROMPTS, COMPLETIONS)]
    assert_close(adapter(prompts=PROMPTS, completions=COMPLETIONS), expected)
    # the policy's rendering would be different ids altogether: the adapter must not have used it
    policy_ids = chat_ids(toy_tokenizer, PROMPTS[0], COMPLETIONS[0])
    assert policy_ids != chat_ids(tok, PROMPTS[0], COMPLETIONS[0])
    assert chat_ids(tok, PROMPTS[0], COMPLETIONS[0])[0] == tok.bos_token_id


def test_plain_text_gets_bos_and_eos_like_reward_trainer(foreign):
    model, tok = foreign
    prompts = ["12+34=", "5+99=", "the sum of 3 and 2 is "]
    completions = ["46", "104", "5</s>"]  # the last already ends with EOS: not doubled
    adapter = RewardAdapter.from_model(model, tok, batch_size=8)
    ids = [tok(p + c if c.endswith("</s>") else p + c + "</s>")["input_ids"] for p, c in zip(prompts, completions)]
    assert all(i[0] == tok.bos_token_id and i[-1] == tok.eos_token_id and i.count(tok.eos_token_id) == 1 for i in ids)
    assert_close(adapter(prompts=prompts, completions=completions), [own_forward(model, i) for i in ids])


@pytest.mark.parametrize("batch_size", [1, 2, 5])
def test_micro_batched_equals_one_shot(foreign, batch_size):
    model, tok = foreign
    one_shot = RewardAdapter.from_model(model, tok, batch_size=len(PROMPTS))(prompts=PROMPTS, completions=COMPLETIONS)
    micro = RewardAdapter.from_model(model, tok, batch_size=batch_size)(prompts=PROMPTS, completions=COMPLETIONS)
    assert_close(micro, one_shot)


def test_same_scores_as_trl_builtin_path_where_tokenisation_agrees(toy_rm, toy_tokenizer):
    """TRL's GRPO path renders the chat template to text and tokenises it without special tokens: for the toy
    tokenizer (no BOS) that is the same ids, so the scores must agree."""
    texts = [toy_tokenizer.apply_chat_template(p + c, tokenize=False) for p, c in zip(PROMPTS, COMPLETIONS)]
    inputs = toy_tokenizer(text=texts, return_tensors="pt", padding=True, padding_side="right", add_special_tokens=False)
    with torch.inference_mode():
        trl_scores = toy_rm(**inputs).logits[:, 0].tolist()
    assert_close(RewardAdapter.from_model(toy_rm, toy_tokenizer, batch_size=2).score(PROMPTS, COMPLETIONS), trl_scores)


def test_train_state_restored_and_no_grad(foreign):
    model, tok = foreign
    model.train()
    try:
        adapter = RewardAdapter.from_model(model, tok, batch_size=2)
        adapter.score(PROMPTS[:2], COMPLETIONS[:2])
        assert model.training
    finally:
        model.eval()
    assert all(p.grad is None for p in model.parameters())


def test_peft_rm_in_memory_and_from_folder(toy_rm, toy_tokenizer, base_path, tmp_path):
    torch.manual_seed(2)
    peft_rm = get_peft_model(
        AutoModelForSequenceClassification.from_pretrained(base_path, num_labels=1),
        LoraConfig(task_type="SEQ_CLS", r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False),
    )
    peft_rm.config.pad_token_id = toy_tokenizer.pad_token_id
    expected = [own_forward(peft_rm, chat_ids(toy_tokenizer, p, c)) for p, c in zip(PROMPTS, COMPLETIONS)]
    assert_close(RewardAdapter.from_model(peft_rm, toy_tokenizer, batch_size=4).score(PROMPTS, COMPLETIONS), expected)
    peft_rm.save_pretrained(tmp_path / "rm")
    toy_tokenizer.save_pretrained(tmp_path / "rm")
    from_folder = RewardAdapter.from_model(tmp_path / "rm", batch_size=3)
    assert_close(from_folder.score(PROMPTS, COMPLETIONS), expected)


# ---- truncation -------------------------------------------------------------------------------------------------------
def test_long_inputs_lose_prompt_tokens_not_completion_tokens(foreign):
    model, tok = foreign
    prompt = [{"role": "user", "content": "7+8 " * 30}]
    completion = [{"role": "assistant", "content": "15"}]
    full = chat_ids(tok, prompt, completion)
    limit = 40
    assert len(full) > limit
    seen = {}
    adapter = RewardAdapter.from_model(model, tok, max_length=limit)
    (score,) = adapter(prompts=[prompt], completions=[completion], log_metric=lambda k, v: seen.__setitem__(k, v))
    kept = full[:1] + full[len(full) - (limit - 1) :]  # BOS, then the last tokens: the whole completion survives
    assert abs(score - own_forward(model, kept)) <= TOL
    assert adapter.stats["prompt_truncated"] == 1 and adapter.stats["completion_truncated"] == 0
    assert seen[f"rewards/{adapter.__name__}/prompt_truncated"] == 1.0


def test_completion_longer_than_limit_errors_or_is_counted(foreign):
    model, tok = foreign
    prompt, completion = [{"role": "user", "content": "1+1"}], [{"role": "assistant", "content": "2" * 50}]
    with pytest.raises(ValueError, match="Row 0: the completion alone"):
        RewardAdapter.from_model(model, tok, max_length=20, completion_overflow="error").score([prompt], [completion])
    adapter = RewardAdapter.from_model(model, tok, max_length=20)
    (score,) = adapter.score([prompt], [completion])
    full = chat_ids(tok, prompt, completion)
    assert abs(score - own_forward(model, full[:1] + full[-19:])) <= TOL
    assert adapter.stats["completion_truncated"] == 1


# ---- bad input ----------------------------------------------------------------------------------------------------------
def test_rm_with_several_labels_needs_label_index(foreign):
    _, tok = foreign
    config = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_labels=3, pad_token_id=tok.pad_token_id)
    model = LlamaForSequenceClassification(config).eval()
    with pytest.raises(ValueError, match="num_labels=3.*label_index"):
        RewardAdapter.from_model(model, tok)
    scores = RewardAdapter.from_model(model, tok, label_index=2).score(PROMPTS[:2], COMPLETIONS[:2])
    with torch.no_grad():
        expected = [model(input_ids=torch.tensor([chat_ids(tok, p, c)])).logits[0, 2].item()
                    for p, c in zip(PROMPTS[:2], COMPLETIONS[:2])]
    assert_close(scores, expected)


def test_tokenizer_without_pad_token_pads_with_eos(foreign):
    model, _ = foreign
    tok = build_foreign_tokenizer()
    tok.pad_token = None
    model.config.pad_token_id = None
    try:
        scores = RewardAdapter.from_model(model, tok, batch_size=3).score(PROMPTS, COMPLETIONS)
        assert model.config.pad_token_id == tok.eos_token_id  # what TRL's RewardTrainer sets too
        expected = [own_forward(model, chat_ids(tok, p, c)) for p, c in zip(PROMPTS, COMPLETIONS)]
        assert_close(scores, expected)
        tok.eos_token = None
        model.config.pad_token_id = None
        with pytest.raises(ValueError, match="pad_token_id"):
            RewardAdapter.from_model(model, tok)
    finally:
        model.config.pad_token_id = build_foreign_tokenizer().pad_token_id


def test_function_returning_wrong_count_or_non_numbers():
    def short(prompts, completions, **kwargs):
        return [1.0] * (len(prompts) - 1)

    def words(prompts, completions, **kwargs):
        return ["good"] * len(prompts)

    def scalar(prompts, completions, **kwargs):
        return 1.0

    def mixed_types(prompts, completions, **kwargs):
        return np.array([True, 0.5, 2])  # bools and numpy values are numbers, as TRL takes them

    assert RewardAdapter.from_function(mixed_types).score(["a"] * 3, ["x"] * 3) == [1.0, 0.5, 2.0]
    with pytest.raises(ValueError, match="'short' returned 1 values for 2 completions"):
        RewardAdapter.from_function(short).score(["a", "b"], ["x", "y"])
    with pytest.raises(TypeError, match="'words' returned 'good' \\(str\\) for row 0"):
        RewardAdapter.from_function(words).score(["a", "b"], ["x", "y"])
    with pytest.raises(TypeError, match="'scalar' returned a float"):
        RewardAdapter.from_function(scalar).score(["a"], ["x"])


def test_nan_scores_raise_or_become_none(foreign):
    def half_nan(prompts, completions, **kwargs):
        return [float("nan"), 1.0, None]

    with pytest.raises(FloatingPointError, match=r"NaN reward for rows \[0\]"):
        RewardAdapter.from_function(half_nan).score(["a", "b", "c"], ["x", "y", "z"])
    adapter = RewardAdapter.from_function(half_nan, nan_policy="none")
    assert adapter.score(["a", "b", "c"], ["x", "y", "z"]) == [None, 1.0, None]
    assert adapter.stats["nan"] == 1

    model, tok = foreign
    broken = LlamaForSequenceClassification(model.config).eval()
    with torch.no_grad():
        broken.score.weight.fill_(float("nan"))
    with pytest.raises(FloatingPointError, match="NaN reward for rows"):
        RewardAdapter.from_model(broken, tok).score(PROMPTS[:2], COMPLETIONS[:2])


def test_empty_completion_is_scored_or_given_a_fixed_reward(foreign):
    model, tok = foreign
    empty = [{"role": "assistant", "content": ""}]
    (score,) = RewardAdapter.from_model(model, tok).score([PROMPTS[0]], [empty])
    assert math.isfinite(score) and abs(score - own_forward(model, chat_ids(tok, PROMPTS[0], empty))) <= TOL
    adapter = RewardAdapter.from_model(model, tok, empty_completion_reward=-1.0)
    scores = adapter.score(PROMPTS[:2], [empty, COMPLETIONS[1]])
    assert scores[0] == -1.0 and abs(scores[1] - own_forward(model, chat_ids(tok, PROMPTS[1], COMPLETIONS[1]))) <= TOL
    assert adapter.stats["empty"] == 1


def test_conversations_need_a_chat_template(foreign):
    model, _ = foreign
    tok = build_foreign_tokenizer()
    tok.chat_template = None
    with pytest.raises(ValueError, match="has no chat_template"):
        RewardAdapter.from_model(model, tok).score(PROMPTS[:1], COMPLETIONS[:1])


# ---- functions, mixtures, normalisation --------------------------------------------------------------------------------
def length_reward(prompts, completions, completion_ids=None, scale=1.0, **kwargs):
    return [scale * len(c[0]["content"]) for c in completions]


def test_function_gets_trl_kwargs_and_a_readable_name():
    seen = {}

    def exact(prompts, completions, answer, trainer_state=None, **kwargs):
        seen.update(trainer_state=trainer_state, kwargs=kwargs)
        return [float(c[0]["content"] == a) for c, a in zip(completions, answer)]

    adapter = RewardAdapter.from_function(exact)
    scores = adapter(prompts=PROMPTS[:2], completions=COMPLETIONS[:2], completion_ids=[[1], [2]],
                     answer=["46", "104"], trainer_state="S", log_metric=None)
    assert scores == [1.0, 0.0] and adapter.__name__ == "exact" and seen["trainer_state"] == "S"
    assert RewardAdapter.from_function(functools.partial(length_reward, scale=2.0)).__name__ == "length_reward"


def test_mixture_weights_none_and_name():
    def maybe(prompts, completions, **kwargs):
        return [None, 2.0, None]

    def never(prompts, completions, **kwargs):
        return [None] * len(prompts)

    mix = RewardAdapter.mixture([length_reward, maybe, never], weights=[0.5, 3.0, 7.0])
    completions = [[{"role": "assistant", "content": s}] for s in ["ab", "abcd", ""]]
    assert mix.score(["p"] * 3, completions) == [1.0, 8.0, 0.0]
    assert mix.__name__ == "mix_length_reward_maybe_never"
    assert RewardAdapter.mixture([never]).score(["p"], [[{"role": "assistant", "content": "x"}]]) == [None]
    with pytest.raises(ValueError, match="2 weights for 3 sources"):
        RewardAdapter.mixture([length_reward, maybe, never], weights=[1, 2])


def test_mixture_of_model_and_rule(toy_rm, toy_tokenizer):
    rm = RewardAdapter.from_model(toy_rm, toy_tokenizer, batch_size=2)
    mix = RewardAdapter.mixture([rm, length_reward], weights=[2.0, 0.1])
    expected = [2 * r + 0.1 * len(a) for r, a in zip(rm.score(PROMPTS, COMPLETIONS), ANSWERS)]
    assert_close(mix.score(PROMPTS, COMPLETIONS), expected)


def test_running_norm_matches_hand_computed_statistics():
    norm = RunningNorm(normalize=True, clip=1.5)
    first = norm([1.0, 3.0, None])  # mean 2, std 1
    assert first == [-1.0, 1.0, None]
    second = norm([8.0])  # values 1, 3, 8: mean 4, population std sqrt(26/3)
    assert abs(second[0] - min((8 - 4) / math.sqrt(26 / 3), 1.5)) < 1e-12
    state = norm.state_dict()
    other = RunningNorm(normalize=True)
    other.load_state_dict(state)
    assert other.mean == 4.0 and other.count == 3


def test_micro_batches_sort_longest_first():
    assert micro_batches([3, 9, 1, 7, 5], 2) == [[1, 3], [4, 0], [2]]


# ---- shared base -----------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained_rm_adapter(base_path, toy_tokenizer, tmp_path_factory):
    """A SEQ_CLS LoRA reward adapter trained for a few RewardTrainer steps on the tiny base, saved as TRL saves it."""
    from trl import RewardConfig, RewardTrainer

    out = tmp_path_factory.mktemp("rm_lora")
    rows = {
        "prompt": [[{"role": "user", "content": f"{a}+{a}"}] for a in range(10, 26)],
        "chosen": [[{"role": "assistant", "content": str(2 * a)}] for a in range(10, 26)],
        "rejected": [[{"role": "assistant", "content": str(2 * a + 1)}] for a in range(10, 26)],
    }
    args = RewardConfig(output_dir=str(out), max_steps=3, per_device_train_batch_size=8, learning_rate=1e-2,
                        report_to=[], save_strategy="no", use_cpu=True, bf16=False, disable_tqdm=True, seed=0)
    model = AutoModelForSequenceClassification.from_pretrained(base_path, num_labels=1)
    trainer = RewardTrainer(
        model=model, args=args, train_dataset=Dataset.from_dict(rows), processing_class=toy_tokenizer,
        peft_config=LoraConfig(task_type="SEQ_CLS", r=4, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]),
    )
    trainer.train()
    trainer.save_model(str(out))
    return out, trainer.model.eval()


def make_policy(base_path, **kwargs):
    """A LoRA policy whose own adapter is not zero, so that running the wrong adapter would show in its logits."""
    torch.manual_seed(3)
    base = AutoModelForCausalLM.from_pretrained(base_path, **kwargs)
    return get_peft_model(base, LoraConfig(task_type="CAUSAL_LM", r=4, target_modules=["q_proj", "v_proj", "up_proj"],
                                           init_lora_weights=False))


def base_storage(model) -> set[int]:
    """Where the non-LoRA weights live (wrapping a layer with LoRA renames its weight to ``base_layer.weight``)."""
    return {p.data_ptr() for name, p in model.named_parameters() if "lora_" not in name}


def test_shared_base_adapter_matches_seq_cls_model_and_leaves_policy_alone(base_path, toy_tokenizer, trained_rm_adapter):
    folder, seq_cls = trained_rm_adapter
    policy = make_policy(base_path).train()
    ids = torch.tensor([toy_tokenizer.apply_chat_template(PROMPTS[0], add_generation_prompt=True, return_dict=True)["input_ids"]])
    with torch.no_grad():
        logits_before = policy(input_ids=ids).logits.clone()
    ptr_before = base_storage(policy)
    grad_before = {n: p.requires_grad for n, p in policy.named_parameters() if "lora_" in n}

    adapter = RewardAdapter.shared_base(policy, folder, batch_size=4)
    scores = adapter(prompts=PROMPTS, completions=COMPLETIONS)

    expected = [own_forward(seq_cls, chat_ids(toy_tokenizer, p, c)) for p, c in zip(PROMPTS, COMPLETIONS)]
    assert_close(scores, expected)
    assert len(set(expected)) > 1  # the trained head is not constant
    # the policy: same logits, same active adapter, same trainable set, train mode back, base storage shared
    with torch.no_grad():
        assert torch.equal(policy(input_ids=ids).logits, logits_before)
    assert policy.training and policy.active_adapter == "default"
    assert base_storage(policy) == ptr_before  # the very same base tensors, no copy
    new = {n for n, _ in policy.named_parameters() if "lora_" in n} - set(grad_before)
    assert new and all(".reward." in n for n in new)  # only the reward adapter's LoRA matrices were added
    assert {n: p.requires_grad for n, p in policy.named_parameters() if n in grad_before} == grad_before
    assert not any(p.requires_grad for n, p in policy.named_parameters() if n in new)
    one_shot = RewardAdapter.shared_base(policy, folder, adapter_name="reward2", batch_size=len(PROMPTS))
    assert_close(one_shot.score(PROMPTS, COMPLETIONS), scores)


def test_shared_base_needs_a_peft_policy(base_path, trained_rm_adapter):
    folder, _ = trained_rm_adapter
    with pytest.raises(TypeError, match="get_peft_model"):
        RewardAdapter.shared_base(AutoModelForCausalLM.from_pretrained(base_path), folder)


# bitsandbytes runs a 4-bit layer's eval-mode forward on CPU in one of two ways: on CPUs with AVX512-BF16 (this
# project's machines) it first repacks the weight in place for a bf16 kernel; elsewhere, or once a layer has
# support_avx512bf16_for_cpu=False, it dequantises and multiplies in the compute dtype. The test runs both; its id says
# which path ran ("plain" forces the second with the flag bitsandbytes itself sets from the CPU).
BNB_CPU_PATHS = ["avx512bf16_repack", "plain"]


@pytest.mark.parametrize("bnb_cpu_path", BNB_CPU_PATHS)
def test_shared_base_on_a_4bit_policy(base_path, toy_tokenizer, trained_rm_adapter, bnb_cpu_path):
    import copy

    import bitsandbytes as bnb
    from transformers import BitsAndBytesConfig

    if bnb_cpu_path == "avx512bf16_repack" and not bnb.functional.has_avx512bf16():
        pytest.skip("this CPU has no AVX512-BF16, so bitsandbytes never repacks 4-bit weights here")
    folder, _ = trained_rm_adapter
    quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.float32)
    policy = make_policy(base_path, quantization_config=quant, device_map={"": "cpu"})
    linear4 = [m for m in policy.modules() if isinstance(m, bnb.nn.Linear4bit)]
    if bnb_cpu_path == "plain":
        for m in linear4:
            m.support_avx512bf16_for_cpu = False
    # What the policy must stay: its weights as loaded, except that the repack rounds the block scales to bf16 (the
    # packed kernel's dtype); one rounding, no more. The copy computes on the plain path.
    reference = copy.deepcopy(policy)
    for m in reference.modules():
        if isinstance(m, bnb.nn.Linear4bit):
            m.support_avx512bf16_for_cpu = False
            if bnb_cpu_path == "avx512bf16_repack":
                m.weight.quant_state.absmax = m.weight.quant_state.absmax.bfloat16().float()
    ids = torch.tensor([toy_tokenizer.apply_chat_template(PROMPTS[1], add_generation_prompt=True, return_dict=True)["input_ids"]])
    # from_pretrained leaves every module in eval mode and get_peft_model wraps them in a PeftModel in train mode:
    # this forward is an eval-mode forward of every 4-bit layer, the one that repacks
    with torch.no_grad():
        logits_before = policy(input_ids=ids).logits.clone()
    packed = [bool(getattr(m.weight.quant_state, "packing_format_for_cpu", False)) for m in linear4]
    assert all(packed) if bnb_cpu_path == "avx512bf16_repack" else not any(packed)
    ptr_before = base_storage(policy)
    bytes_before = sum(p.numel() * p.element_size() for n, p in policy.named_parameters() if "lora_" not in n)

    adapter = RewardAdapter.shared_base(policy, folder, batch_size=2)
    scores = adapter.score(PROMPTS, COMPLETIONS)

    # reference: the same adapter switched on by hand, one unpadded sequence at a time
    policy.set_adapter("reward")
    try:
        with torch.no_grad():
            expected = []
            for p, c in zip(PROMPTS, COMPLETIONS):
                hidden = policy.get_base_model().model(input_ids=torch.tensor([chat_ids(toy_tokenizer, p, c)]))
                expected.append(adapter._source.head(hidden.last_hidden_state[0, -1]).item())
    finally:
        policy.set_adapter("default")
    assert_close(scores, expected)
    # the policy's 4-bit weights are the reference's, code for code and scale for scale, in the layout training uses
    ref_linear4 = [m for m in reference.modules() if isinstance(m, bnb.nn.Linear4bit)]
    for m, r in zip(linear4, ref_linear4, strict=True):
        assert not getattr(m.weight.quant_state, "packing_format_for_cpu", False) and not m.support_avx512bf16_for_cpu
        assert torch.equal(m.weight.data, r.weight.data)
        assert torch.equal(m.weight.quant_state.absmax, r.weight.quant_state.absmax)
    with torch.no_grad():
        logits_after = policy(input_ids=ids).logits
        assert torch.equal(logits_after, reference(input_ids=ids).logits)
    if bnb_cpu_path == "plain":  # nothing was rounded: the very same logits and the very same base tensors
        assert torch.equal(logits_after, logits_before)
        assert base_storage(policy) == ptr_before
    else:  # the packed kernel computed in bf16: close, not equal (scrambled scales would be off by ~0.35)
        assert (logits_after - logits_before).abs().max() < 0.05
    assert sum(p.numel() * p.element_size() for n, p in policy.named_parameters() if "lora_" not in n) == bytes_before
    # training reaches every LoRA matrix of the policy (on a still-packed base none would get a gradient)
    policy.train()
    policy(input_ids=ids, labels=ids).loss.backward()
    assert all(p.grad is not None for n, p in policy.named_parameters() if ".default." in n)


# ---- inside a TRL trainer -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("algorithm", ["GRPO", "RLOO"])
def test_trl_trainers_accept_the_adapter(algorithm, base_path, toy_tokenizer, toy_rm, tmp_path):
    import trl

    Config, Trainer = getattr(trl, f"{algorithm}Config"), getattr(trl, f"{algorithm}Trainer")
    rm = RewardAdapter.from_model(toy_rm, toy_tokenizer, batch_size=3)
    mix = RewardAdapter.mixture([rm, length_reward], weights=[1.0, 0.1], name="rm_plus_length")
    args = Config(output_dir=str(tmp_path), max_steps=1, per_device_train_batch_size=4, num_generations=4,
                      max_completion_length=4, report_to=[], use_cpu=True, bf16=False, logging_steps=1,
                      disable_tqdm=True, save_strategy="no")
    trainer = Trainer(model=str(base_path), reward_funcs=[mix], args=args, processing_class=toy_tokenizer,
                          train_dataset=Dataset.from_dict({"prompt": PROMPTS[:4]}))
    trainer.train()
    logged = {k for entry in trainer.state.log_history for k in entry}
    assert {"rewards/rm_plus_length/mean", "rewards/rm_plus_length/length_reward", "rewards/rm_base/prompt_truncated"} <= logged
    assert rm.stats["rows"] == 4
    assert not toy_rm.training


def test_grpo_trains_the_policy_adapter_and_never_the_shared_reward_adapter(base_path, toy_tokenizer,
                                                                            trained_rm_adapter, tmp_path):
    from trl import GRPOConfig, GRPOTrainer

    folder, _ = trained_rm_adapter
    policy = make_policy(base_path)
    reward = RewardAdapter.shared_base(policy, folder, batch_size=3)
    before = {n: p.detach().clone() for n, p in policy.named_parameters() if "lora_" in n}
    args = GRPOConfig(output_dir=str(tmp_path), max_steps=2, per_device_train_batch_size=4, num_generations=4,
                      max_completion_length=4, learning_rate=1e-2, report_to=[], use_cpu=True, bf16=False,
                      disable_tqdm=True, save_strategy="no")
    trainer = GRPOTrainer(model=policy, reward_funcs=[reward], args=args, processing_class=toy_tokenizer,
                          train_dataset=Dataset.from_dict({"prompt": PROMPTS[:4]}))
    trainer.train()
    moved = {n for n, p in policy.named_parameters() if n in before and not torch.equal(p, before[n])}
    assert moved and all(".default." in n for n in moved)  # the policy learned, the reward adapter did not
    assert reward.stats["rows"] == 8 and policy.active_adapter == "default"
