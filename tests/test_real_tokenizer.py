"""Every command and trainer on a real chat tokenizer: SmolLM2-135M-Instruct's (49k BPE, ChatML, ``<|im_end|>`` is
EOS *and* pad, the template injects a default system prompt), carried by a tiny random Llama (``smollm2_tiny``).

The toy's character tokenizer hides what a real one shows: pad == eos, a system prompt the user never wrote, a BOS
that is really a turn marker, completions that never stop, an RM whose tokenizer is not the policy's. Each command
runs 2 LoRA steps on conversational rows and must save an adapter that loads and whose lora_B moved.
"""

import json
import logging
import sys

import pytest
import torch
from datasets import Dataset
from peft import AutoPeftModelForCausalLM, LoraConfig, PeftModel
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

from trl_ext import DAPOConfig, DAPOTrainer, GoldRewardCallback, RankingRewardTrainer, RewardAdapter
from trl_ext.cli import main
from trl_ext.ranking import RankingRewardConfig

PAIRS = [(a, b) for a in range(10, 20) for b in range(1, 4)]  # 30 small additions
SYSTEM = "You are a helpful AI assistant named SmolLM"  # what SmolLM2's template writes when no system turn is given

# each call's completions, kept so a test can check what TRL handed the reward function
REWARDS_PY = '''
SEEN = []

def length(completions, prompts, **kwargs):
    SEEN.append((prompts, completions))
    return [float(len(c[0]["content"] if isinstance(c, list) else c)) for c in completions]
'''
FAST = ["--max_steps", "2", "--report_to", "none", "--logging_steps", "1", "--save_strategy", "no"]
LORA = ["--use_peft", "--lora_r", "4", "--lora_target_modules", "q_proj", "v_proj"]
RL = [*FAST, *LORA, "--per_device_train_batch_size", "4", "--num_generations", "2", "--max_completion_length", "6",
      "--learning_rate", "1e-2"]


def user(text):
    return [{"role": "user", "content": text}]


def assistant(text):
    return [{"role": "assistant", "content": text}]


@pytest.fixture(scope="module")
def smol_tok(smollm2_tiny):
    return AutoTokenizer.from_pretrained(smollm2_tiny)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("smol_data")

    def write(name, rows):
        (folder / name).write_text("".join(json.dumps(r) + "\n" for r in rows))

    write("sft.jsonl", [{"messages": user(f"{a}+{b}") + assistant(str(a + b))} for a, b in PAIRS])
    write("prompts.jsonl", [{"prompt": user(f"{a}+{b}")} for a, b in PAIRS])
    write("pairs.jsonl", [{"prompt": user(f"{a}+{b}"), "chosen": assistant(str(a + b)),
                           "rejected": assistant(f"{a + b + 1} I think")} for a, b in PAIRS])
    (folder / "my_rewards.py").write_text(REWARDS_PY)
    return folder


@pytest.fixture
def in_data(data, monkeypatch):
    monkeypatch.chdir(data)
    sys.modules.pop("my_rewards", None)  # a fresh SEEN per test
    return data


def run(*argv) -> int:
    return main([str(a) for a in argv])


def lm(path):
    return AutoModelForCausalLM.from_pretrained(path)


def rm_from(path):
    return AutoModelForSequenceClassification.from_pretrained(path, num_labels=1)


def lora_moved(folder) -> bool:
    """lora_B starts at zero: any non-zero lora_B weight in the saved adapter means the step trained it."""
    weights = load_file(folder / "adapter_model.safetensors")
    lora_b = [v for k, v in weights.items() if "lora_B" in k]
    return bool(lora_b) and any(v.abs().sum() > 0 for v in lora_b)


# ---- the commands, LoRA, conversational rows ------------------------------------------------------------------------
def test_sft_dpo_rm_commands(in_data, smollm2_tiny, tmp_path):
    for name, dataset in (("sft", "sft.jsonl"), ("dpo", "pairs.jsonl"), ("rm", "pairs.jsonl")):
        out = tmp_path / name
        assert run(name, "--model_name_or_path", smollm2_tiny, "--dataset_name", dataset, "--output_dir", out,
                   "--per_device_train_batch_size", "4", "--learning_rate", "1e-2", *FAST, *LORA) == 0, name
        assert lora_moved(out), name
    AutoPeftModelForCausalLM.from_pretrained(tmp_path / "sft")
    # the RM LoRA scores the same on its own base and on a policy's (shared base): both read the score at the last
    # token that is not pad, and pad == <|im_end|> here, so that is the "\n" after the answer's <|im_end|>
    prompts, completions = [user("12+3"), user("10+1")], [assistant("15"), assistant("The answer is 11")]
    alone = RewardAdapter.from_model(tmp_path / "rm").score(prompts, completions)
    policy = PeftModel.from_pretrained(lm(smollm2_tiny), tmp_path / "sft")
    shared = RewardAdapter.shared_base(policy, tmp_path / "rm").score(prompts, completions)
    assert shared == pytest.approx(alone, abs=1e-5) and alone[0] != pytest.approx(alone[1], abs=1e-6)


@pytest.mark.parametrize("name", ["grpo", "dapo", "rloo", "ppo"])
def test_rl_commands(name, in_data, smollm2_tiny, tmp_path):
    extra = ["--reward_model_name_or_path", smollm2_tiny] if name == "ppo" else []  # PPO's critic from the RM
    assert run(name, "--model_name_or_path", smollm2_tiny, "--dataset_name", "prompts.jsonl", "--reward_funcs",
               "my_rewards.length", "--output_dir", tmp_path, *extra, *RL) == 0
    AutoPeftModelForCausalLM.from_pretrained(tmp_path)
    assert lora_moved(tmp_path)
    prompts, completions = sys.modules["my_rewards"].SEEN[0]
    # conversational prompts -> conversational completions: one assistant message, its text without <|im_end|>
    assert all(isinstance(p, list) and p[0]["role"] == "user" for p in prompts)
    assert all(isinstance(c, list) and [m["role"] for m in c] == ["assistant"] for c in completions)
    assert not any("<|im_end|>" in c[0]["content"] for c in completions)


# ---- inside a DAPOTrainer step ----------------------------------------------------------------------------------------
# A random model says <|im_end|> (id 2) about once in 49k tokens; +8.5 on its logit makes that ~1 in 11, so about
# half of 6-token completions stop and half are cut at max_completion_length.
EOS_BIAS = {"sequence_bias": [[[2], 8.5]]}


def dapo_args(tmp_path, **overrides):
    base = dict(output_dir=str(tmp_path / "out"), per_device_train_batch_size=4, num_generations=2,
                max_completion_length=6, max_steps=1, learning_rate=1e-2, logging_steps=1, report_to="none",
                save_strategy="no", seed=0, use_cpu=True, bf16=False, disable_tqdm=True)
    return DAPOConfig(**{**base, **overrides})


def prompts_dataset(n=8, system=False):
    head = [{"role": "system", "content": "Add."}] if system else []
    return Dataset.from_list([{"prompt": head + user(f"{a}+{b}")} for a, b in PAIRS[:n]])


def length_reward(completions, **kwargs):
    return [float(len(c[0]["content"] if isinstance(c, list) else c)) for c in completions]


def capture(obj, name, store):
    """Wrap the bound method ``obj.name`` to record (args, kwargs, result) of every call."""
    original = getattr(obj, name)

    def spy(*args, **kwargs):
        result = original(*args, **kwargs)
        store.append((args, kwargs, result))
        return result

    setattr(obj, name, spy)


def test_completions_stop_at_im_end_and_the_eos_is_in_the_loss(tmp_path, smollm2_tiny, smol_tok):
    """pad == eos == <|im_end|>: the completion mask must end AT the first <|im_end|> (TRL masks from lengths, not
    from ``ids != pad``), on the rows that reach the loss after dynamic sampling pooled and re-padded them."""
    trainer = DAPOTrainer(
        lm(smollm2_tiny), reward_funcs=[length_reward], train_dataset=prompts_dataset(),
        args=dapo_args(tmp_path, generation_kwargs=EOS_BIAS, max_steps=2), processing_class=smol_tok,
    )
    losses = []
    capture(trainer, "_compute_loss", losses)
    trainer.train()
    eos, stopped = smol_tok.eos_token_id, 0
    assert smol_tok.pad_token_id == eos
    for args, _, _ in losses:
        inputs = args[1]
        for ids, mask in zip(inputs["completion_ids"].tolist(), inputs["completion_mask"].tolist()):
            length = int(sum(mask))
            assert mask == [1] * length + [0] * (len(mask) - length)
            first_eos = ids.index(eos) if eos in ids else None
            if first_eos is not None and first_eos < length:
                stopped += 1
                assert length == first_eos + 1  # the <|im_end|> itself is trained on, nothing after it
            else:
                assert length == 6  # never stopped: cut at max_completion_length
    assert stopped > 0 and losses


@pytest.mark.parametrize("policy_side", ["toy", "smollm2"])
def test_reward_model_with_the_other_tokenizer_sees_its_own_chat_template(policy_side, tmp_path, ckpt, tokenizer,
                                                                          smollm2_tiny, smol_tok):
    """Policy and RM tokenize differently: the RM must get prompt + completion re-rendered in ITS template (for
    SmolLM2: its system prompt, the completion's turn closed by <|im_end|>\\n) and nothing of the policy's EOS."""
    policy, policy_tok, rm_path, rm_tok = (ckpt, tokenizer, smollm2_tiny, smol_tok) if policy_side == "toy" else (
        smollm2_tiny, smol_tok, ckpt, tokenizer)
    rm = rm_from(rm_path)
    seen_ids, calls = [], []
    rm.register_forward_pre_hook(
        lambda module, args, kwargs: seen_ids.extend(
            [row[m.bool()].tolist() for row, m in zip(kwargs["input_ids"], kwargs["attention_mask"])]),
        with_kwargs=True)
    adapter = RewardAdapter.from_model(rm, rm_tok, batch_size=3)
    capture(adapter, "_source", calls)
    trainer = DAPOTrainer(lm(policy), reward_funcs=[adapter, length_reward], train_dataset=prompts_dataset(),
                          args=dapo_args(tmp_path, dynamic_sampling=False), processing_class=policy_tok)
    trainer.train()
    (prompts, completions, *_), _, _ = calls[0]
    expected = [rm_tok.apply_chat_template(p + c, tokenize=True, return_dict=True)["input_ids"]
                for p, c in zip(prompts, completions)]
    assert sorted(map(tuple, seen_ids[: len(expected)])) == sorted(map(tuple, expected))
    policy_eos = policy_tok.eos_token
    for p, c in zip(prompts, completions):
        assert isinstance(c, list) and c[0]["role"] == "assistant" and policy_eos not in c[0]["content"]
    if policy_side == "toy":  # the RM is SmolLM2's: its system prompt, the answer's turn closed by <|im_end|>\n
        for ids, c in zip(expected, completions):
            text = rm_tok.decode(ids)
            assert text.startswith(f"<|im_start|>system\n{SYSTEM}")
            assert text.endswith(f"<|im_start|>assistant\n{c[0]['content']}<|im_end|>\n")


def test_rm_side_truncation_cuts_the_prompt_and_keeps_the_completion(smollm2_tiny, smol_tok):
    """The system prompt SmolLM2's template injects makes every RM input ~20 tokens longer than what the user wrote;
    cutting to max_length must take tokens from the prompt's side and keep the whole rendered completion."""
    rm = rm_from(smollm2_tiny)
    seen = []
    rm.register_forward_pre_hook(lambda m, a, kw: seen.extend(kw["input_ids"].tolist()), with_kwargs=True)
    prompt, completion = user("12+3"), assistant("The answer is 15.")
    full = smol_tok.apply_chat_template(prompt + completion, tokenize=True, return_dict=True)["input_ids"]
    head = smol_tok.apply_chat_template(prompt, tokenize=True, return_dict=True, add_generation_prompt=True)
    tail = full[len(head["input_ids"]):]  # the completion's tokens: "The answer is 15.<|im_end|>\n"
    limit = len(tail) + 6
    adapter = RewardAdapter.from_model(rm, smol_tok, max_length=limit)
    adapter.score([prompt], [completion])
    (ids,) = seen
    assert len(ids) == limit and ids[-len(tail):] == tail and ids == full[-limit:]
    assert adapter.stats["prompt_truncated"] == 1 and adapter.stats["completion_truncated"] == 0


# ---- bad input: a chat model given plain-string prompts ---------------------------------------------------------------
def test_plain_string_prompts_to_a_chat_model_warn_once_and_train_on_the_raw_text(tmp_path, smollm2_tiny, smol_tok,
                                                                                    caplog, monkeypatch):
    """TRL trains on plain strings without the chat template (a drop-in must too), so this is a one-time warning that
    says what the model sees and how to pass messages; strings already rendered with the template pass silently."""
    from trl_ext import checks

    monkeypatch.setattr(checks, "_warned_plain_prompts", set())
    plain = Dataset.from_list([{"prompt": f"{a}+{b}="} for a, b in PAIRS[:8]])
    with caplog.at_level(logging.WARNING, logger="trl_ext.checks"):
        trainer = DAPOTrainer(lm(smollm2_tiny), reward_funcs=[length_reward], train_dataset=plain,
                              args=dapo_args(tmp_path, dynamic_sampling=False), processing_class=smol_tok)
        DAPOTrainer(lm(smollm2_tiny), reward_funcs=[length_reward], train_dataset=plain,
                    args=dapo_args(tmp_path, dynamic_sampling=False), processing_class=smol_tok)
    warnings = [r.getMessage() for r in caplog.records if "plain-string prompts" in r.getMessage()]
    assert len(warnings) == 1, warnings
    assert "'10+1='" in warnings[0] and "{'role': 'user', 'content': row['prompt']}" in warnings[0]
    # what happens: the model is given the raw text, no system prompt, no <|im_start|>user ... <|im_start|>assistant
    calls = []
    capture(trainer, "_generate", calls)
    trainer.train()
    prompt_ids = calls[0][2][0]
    assert prompt_ids and all(smol_tok.decode(ids) in plain["prompt"] for ids in prompt_ids)

    caplog.clear()
    rendered = Dataset.from_list([{"prompt": smol_tok.apply_chat_template(user("1+2"), tokenize=False,
                                                                          add_generation_prompt=True)}])
    assert not checks.warn_plain_prompts_for_chat_model(rendered, smol_tok, "train_dataset", "DAPOTrainer")
    monkeypatch.setattr(checks, "_warned_plain_prompts", set())
    assert not checks.warn_plain_prompts_for_chat_model(prompts_dataset(), smol_tok, "train_dataset", "DAPOTrainer")
    assert checks.warn_plain_prompts_for_chat_model(plain, smol_tok, "train_dataset", "DAPOTrainer")


# ---- 4-bit + LoRA, SFT's labels, ranking RM, gold callback ------------------------------------------------------------
def test_dapo_4bit_lora_command(in_data, smollm2_tiny, tmp_path, monkeypatch):
    """QLoRA on these AVX512-BF16 CPUs goes through trl_ext.models.disable_bnb_cpu_repack: the step must train the
    LoRA weights (a repacked 4-bit layer gives them no gradient) on the 4-bit layers."""
    import bitsandbytes as bnb

    from trl_ext.assembly import trainers

    seen = {}
    prepare = trainers.prepare

    def spy(trainer):
        layers = [m for m in trainer.model.modules() if isinstance(m, bnb.nn.Linear4bit)]
        seen["4bit"] = len(layers)
        seen["repack"] = {m.support_avx512bf16_for_cpu for m in layers}
        return prepare(trainer)

    monkeypatch.setattr(trainers, "prepare", spy)
    assert run("dapo", "--model_name_or_path", smollm2_tiny, "--dataset_name", "prompts.jsonl", "--reward_funcs",
               "my_rewards.length", "--output_dir", tmp_path, "--load_in_4bit", *RL) == 0
    assert seen["4bit"] > 0 and seen["repack"] == {False}
    assert lora_moved(tmp_path)
    AutoPeftModelForCausalLM.from_pretrained(tmp_path)


def test_sft_trains_on_the_im_end_that_is_also_the_pad_token(smollm2_tiny, smol_tok, tmp_path):
    """pad == eos: the <|im_end|> that closes the assistant turn must keep its label (a collator that masks
    ``ids == pad`` would drop it, and the model would never learn to stop)."""
    from trl import SFTConfig, SFTTrainer

    rows = Dataset.from_list([{"prompt": user("12+3"), "completion": assistant("15")},
                              {"prompt": user("10+1"), "completion": assistant("The answer is 11")}])
    trainer = SFTTrainer(lm(smollm2_tiny), args=SFTConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False,
                                                          report_to="none"),
                         train_dataset=rows, processing_class=smol_tok)
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(2)])
    eos = smol_tok.eos_token_id
    for ids, labels, mask in zip(batch["input_ids"].tolist(), batch["labels"].tolist(),
                                 batch["attention_mask"].tolist()):
        length = sum(mask)
        trained = [i for i, label in enumerate(labels) if label != -100]
        assert labels[trained[0]:trained[-1] + 1] == ids[trained[0]:trained[-1] + 1]
        assert eos in [ids[i] for i in trained]  # the turn's <|im_end|> is learned
        assert all(label == -100 for label in labels[length:])  # the padding (also <|im_end|>) is not


def test_dpo_scores_the_im_end_that_is_also_the_pad_token(smollm2_tiny, smol_tok, tmp_path):
    from trl import DPOConfig, DPOTrainer

    rows = Dataset.from_list([{"prompt": user("12+3"), "chosen": assistant("15"),
                               "rejected": assistant("The answer is 16")}] * 2)
    trainer = DPOTrainer(lm(smollm2_tiny), args=DPOConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False,
                                                          report_to="none"),
                         train_dataset=rows, processing_class=smol_tok)
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(2)])
    end = smol_tok.encode("<|im_end|>\n")
    for ids, mask in zip(batch["input_ids"].tolist(), batch["completion_mask"].tolist()):
        scored = [t for t, m in zip(ids, mask) if m]
        assert scored[-2:] == end  # chosen and rejected both end with their turn's <|im_end|>\n, in the loss
        last = max(i for i, m in enumerate(mask) if m)
        assert all(t == smol_tok.pad_token_id for t in ids[last + 1:])  # padding with the same id stays out


def test_ranking_reward_trainer_on_the_chat_template(smollm2_tiny, smol_tok, tmp_path):
    rows = [{"prompt": user(f"{a}+{b}"), "completions": [assistant(str(a + b)), assistant(f"{a + b + 1}"),
                                                       assistant("I do not know")], "ranking": [[0], [1, 2]]}
            for a, b in PAIRS[:8]]
    model = rm_from(smollm2_tiny)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    args = RankingRewardConfig(output_dir=str(tmp_path), per_device_train_batch_size=4, max_steps=2,
                               learning_rate=1e-2, use_cpu=True, bf16=False, report_to="none", save_strategy="no")
    trainer = RankingRewardTrainer(model, args, train_dataset=Dataset.from_list(rows), processing_class=smol_tok,
                                   peft_config=LoraConfig(task_type="SEQ_CLS", r=4, target_modules=["q_proj", "v_proj"]))
    row = trainer.train_dataset[0]
    for ids, completion in zip(row["completion_ids"], rows[0]["completions"]):
        text = smol_tok.decode(ids)
        assert text.startswith(f"<|im_start|>system\n{SYSTEM}")
        assert text.endswith(f"<|im_start|>assistant\n{completion[0]['content']}<|im_end|>\n")
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(2)])
    assert batch["input_ids"].shape[0] == 6 and batch["group"].tolist() == [0, 0, 0, 1, 1, 1]
    trainer.train()
    trainer.save_model(tmp_path / "rm")
    assert lora_moved(tmp_path / "rm")
    head = load_file(tmp_path / "rm" / "adapter_model.safetensors")
    score = next(v for k, v in head.items() if k.endswith("score.weight"))
    assert not torch.equal(score, before["score.weight"])  # the head trains with the LoRA (SEQ_CLS modules_to_save)
    # what was saved is what trained: the folder scores (through RewardAdapter) as the trainer's model does
    ids = smol_tok.apply_chat_template(user("12+3") + assistant("15"), tokenize=True, return_dict=True)["input_ids"]
    trainer.model.eval()
    with torch.no_grad():
        trained = trainer.model(input_ids=torch.tensor([ids])).logits[0, 0].item()
    (saved,) = RewardAdapter.from_model(tmp_path / "rm").score([user("12+3")], [assistant("15")])
    assert saved == pytest.approx(trained, abs=1e-5)


def test_gold_reward_callback_on_a_lora_dapo_run(smollm2_tiny, smol_tok, tmp_path):
    """The callback samples with the trainer's generation config: its samples stop at <|im_end|> (kept in the ids the
    KL is computed on, as TRL keeps it; stripped from the text), and its gold function gets conversational
    completions of prompts whose own system turn replaces the template's default one."""
    gold_calls = []

    def gold(prompts, completions, **kwargs):
        gold_calls.append(completions)
        return [float(len(c[0]["content"])) for c in completions]

    cb = GoldRewardCallback(gold=gold, eval_dataset=prompts_dataset(4, system=True), eval_steps=1, num_samples=2)
    kl_samples = []
    original_kl = cb._kl
    cb._kl = lambda samples: kl_samples.append(samples) or original_kl(samples)
    trainer = DAPOTrainer(lm(smollm2_tiny), reward_funcs=[length_reward], train_dataset=prompts_dataset(),
                          args=dapo_args(tmp_path, generation_kwargs=EOS_BIAS, max_steps=2), processing_class=smol_tok,
                          peft_config=LoraConfig(r=4, target_modules=["q_proj", "v_proj"]), callbacks=[cb])
    trainer.train()
    logs = [h for h in trainer.state.log_history if "gold/reward" in h]
    assert [h["step"] for h in logs] == [0, 1, 2]
    assert logs[0]["gold/kl"] == pytest.approx(0.0, abs=1e-6)  # LoRA B = 0 at the start: policy == reference
    assert all(isinstance(c, list) and c[0]["role"] == "assistant" for call in gold_calls for c in call)
    eos, stopped = smol_tok.eos_token_id, 0
    samples = kl_samples[-1]
    for prompt_ids in samples.prompt_ids:  # the given system turn replaces the default one
        assert smol_tok.decode(prompt_ids).startswith("<|im_start|>system\nAdd.<|im_end|>")
    for ids in (ids for per_prompt in samples.completion_ids for ids in per_prompt):
        if eos in ids:
            stopped += 1
            assert ids.index(eos) == len(ids) - 1
        else:
            assert len(ids) == 6
    assert stopped > 0
    assert not any("<|im_end|>" in t for texts in samples.texts for t in texts)


def test_ppo_command_with_a_reward_model_of_another_tokenizer(in_data, ckpt, smollm2_tiny, tmp_path, monkeypatch):
    """The command's critic defaults to the reward model, but a critic reads the policy's token ids: an RM with
    another tokenizer (RewardAdapter scores it fine) must leave the critic to the policy's checkpoint, not fail."""
    from trl_ext.assembly import trainers

    seen = {}
    prepare = trainers.prepare

    def spy(trainer):
        critic = trainer.accelerator.unwrap_model(trainer.critic)
        seen["critic_vocab"] = critic.model.get_input_embeddings().num_embeddings
        return prepare(trainer)

    monkeypatch.setattr(trainers, "prepare", spy)
    (in_data / "toy_prompts.jsonl").write_text("".join(
        json.dumps({"prompt": user(f"{a}+{b}")}) + "\n" for a, b in PAIRS[:8]))
    assert run("ppo", "--model_name_or_path", ckpt, "--dataset_name", "toy_prompts.jsonl",
               "--reward_model_name_or_path", smollm2_tiny, "--output_dir", tmp_path, *RL) == 0
    assert seen["critic_vocab"] == len(AutoTokenizer.from_pretrained(ckpt))
    assert lora_moved(tmp_path)


def test_trl_grpo_command_warns_about_plain_string_prompts_too(in_data, smollm2_tiny, tmp_path, caplog, monkeypatch):
    """TRL's own GRPOTrainer does not warn; the command does, once, naming the dataset."""
    from trl_ext import checks

    monkeypatch.setattr(checks, "_warned_plain_prompts", set())
    (in_data / "plain.jsonl").write_text("".join(json.dumps({"prompt": f"{a}+{b}="}) + "\n" for a, b in PAIRS[:8]))
    with caplog.at_level(logging.WARNING, logger="trl_ext.checks"):
        assert run("grpo", "--model_name_or_path", smollm2_tiny, "--dataset_name", "plain.jsonl", "--reward_funcs",
                   "my_rewards.length", "--output_dir", tmp_path, *RL) == 0
    warnings = [r.getMessage() for r in caplog.records if "plain-string prompts" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].startswith("ResumableGRPOTrainer: --dataset_name='plain.jsonl'")


def test_ppo_missing_eos_penalty_sees_the_im_end_that_is_also_pad(smollm2_tiny, smol_tok, tmp_path):
    """PPO's ``missing_eos_penalty`` hits exactly the completions that did not stop: with pad == eos the padding after
    a short completion is <|im_end|> too, so the EOS flag must come from the last unmasked token, not from the row."""
    from trl_ext import PPOConfig, PPOTrainer

    args = PPOConfig(output_dir=str(tmp_path), per_device_train_batch_size=8, max_completion_length=6, max_steps=1,
                     learning_rate=1e-3, report_to="none", save_strategy="no", use_cpu=True, bf16=False, seed=0,
                     missing_eos_penalty=100.0, generation_kwargs=EOS_BIAS, disable_tqdm=True)
    trainer = PPOTrainer(lm(smollm2_tiny), [length_reward], args=args, train_dataset=prompts_dataset(),
                         processing_class=smol_tok, peft_config=LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    calls = []
    capture(trainer, "_scores", calls)
    trainer.train()
    eos, stopped = smol_tok.eos_token_id, 0
    for (output, rewards), _, (scores, contains_eos) in calls:
        total = rewards.total  # (N,): the weighted reward before the penalty
        for i, (ids, mask) in enumerate(zip(output["completion_ids"].tolist(), output["completion_mask"].tolist())):
            ended = eos in ids[: int(sum(mask))]
            stopped += ended
            assert bool(contains_eos[i]) == ended
            assert float(scores[i]) == pytest.approx(float(total[i]) - (0.0 if ended else 100.0))
    assert 0 < stopped < 8 * len(calls)  # both kinds were checked
