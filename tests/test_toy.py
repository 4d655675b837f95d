import random

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

from trl_ext.toy import AdditionTask, Labeller, ensure_tiny_checkpoint, oracle_correct, oracle_utility, pairs_from_ranking
from trl_ext.toy.model import EOS


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return ensure_tiny_checkpoint(tmp_path_factory.mktemp("tiny") / "model")


def test_checkpoint_loads_through_auto_classes(checkpoint):
    assert (checkpoint / "model.safetensors").exists() and (checkpoint / "tokenizer.json").exists()
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    model = AutoModelForCausalLM.from_pretrained(checkpoint)
    assert model.config.vocab_size == len(tokenizer)
    assert 300_000 < sum(p.numel() for p in model.parameters()) < 5_000_000
    # the weights on disk are the ones the Auto class loaded
    on_disk = load_file(checkpoint / "model.safetensors")
    torch.testing.assert_close(on_disk["model.embed_tokens.weight"], model.model.embed_tokens.weight)
    rm = AutoModelForSequenceClassification.from_pretrained(checkpoint, num_labels=1)
    assert rm.config.pad_token_id == tokenizer.pad_token_id


def test_tokenizer_is_character_level_and_round_trips(checkpoint):
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    text = "27+15 = 42, ok!"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert len(ids) == len(text)
    assert tokenizer.decode(ids) == text
    rendered = tokenizer.apply_chat_template(
        [{"role": "user", "content": "27+15"}, {"role": "assistant", "content": "42"}], tokenize=False
    )
    assert rendered == "<|user|>27+15<|end|><|assistant|>42<|end|>"
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "1+2"}], tokenize=False, add_generation_prompt=True)
    assert prompt.endswith("<|assistant|>")
    assert tokenizer.eos_token == EOS and tokenizer.pad_token_id != tokenizer.eos_token_id


def test_build_is_deterministic_and_cached(tmp_path, checkpoint):
    again = ensure_tiny_checkpoint(tmp_path / "again")
    a, b = load_file(checkpoint / "model.safetensors"), load_file(again / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    mtime = (again / "model.safetensors").stat().st_mtime_ns
    ensure_tiny_checkpoint(again)
    assert (again / "model.safetensors").stat().st_mtime_ns == mtime  # reused, not rebuilt


def test_eval_pairs_are_held_out_of_every_training_split():
    task = AdditionTask()
    held_out = set(task.eval_pairs())
    assert len(held_out) == task.eval_size
    seen = {AdditionTask.parse_question(p[0]["content"]) for p in task.sft_dataset(3000, seed=0)["prompt"]}
    seen |= {AdditionTask.parse_question(p[0]["content"]) for p in task.prompt_dataset(3000, seed=1)["prompt"]}
    assert not held_out & seen


def test_demonstrators_err_at_the_configured_rate_with_the_configured_slip():
    task = AdditionTask(demo_error_rate=0.3, demo_error_kinds=("swap",))
    ds = task.sft_dataset(4000, seed=0)
    wrong = swapped = 0
    for prompt, completion in zip(ds["prompt"], ds["completion"]):
        a, b = AdditionTask.parse_question(prompt[0]["content"])
        answer = completion[0]["content"]
        if answer != str(a + b):
            wrong += 1
            swapped += answer == str(a + b)[::-1]
    # binomial(4000, 0.3): sd = 29 answers; palindromic sums (e.g. 44) fall back to a one-digit slip
    assert abs(wrong - 1200) < 120
    assert swapped / wrong > 0.85
    assert AdditionTask(demo_error_kinds=("carry",)).demonstrate(27, 15, _AlwaysWrong()) == "32"
    chatty = AdditionTask(demo_error_kinds=("chatter",)).demonstrate(27, 15, _AlwaysWrong())
    assert chatty.startswith("42") and chatty != "42"
    assert oracle_utility([{"role": "user", "content": "27+15"}], chatty) == 2  # right, but not the number alone


class _AlwaysWrong(random.Random):
    def random(self):
        return 0.0


def test_oracle():
    prompts = [[{"role": "user", "content": "27+15"}]] * 4
    completions = ["42", [{"role": "assistant", "content": "42"}], "42 I think", "24", "24!", "x4"]
    prompts = prompts[:1] * len(completions)
    assert oracle_correct(prompts, completions) == [1.0, 1.0, 0.0, 0.0, 0.0, 0.0]
    assert [oracle_utility(p, c) for p, c in zip(prompts, completions)] == [3, 3, 2, 1, 0, -1]


def test_labeller_ranks_in_tiers_and_pairs_cover_every_strict_preference():
    prompt = [{"role": "user", "content": "27+15"}]
    answers = ["24", "42", "x4", "33", "42!"]  # wrong, right, no number, wrong, right but chatty
    tiers = Labeller(noise=0.0).rank(prompt, answers, random.Random(0))
    assert tiers == [[1], [4], [0, 3], [2]]  # "B > E > A = D > C"
    pairs = pairs_from_ranking(tiers, answers)
    assert sorted(pairs) == sorted([(1, 4), (1, 0), (1, 3), (1, 2), (4, 0), (4, 3), (4, 2), (0, 2), (3, 2)])
    # K answers in K distinct tiers give K(K-1)/2 pairs; identical texts give none
    assert len(pairs_from_ranking([[0], [1], [2], [3]], ["a", "b", "c", "d"])) == 6
    assert pairs_from_ranking([[0], [1]], ["42", "42"]) == []


def test_labeller_noise_reorders_neighbouring_tiers_at_its_rate_and_never_breaks_ties():
    prompt = [{"role": "user", "content": "27+15"}]
    rng = random.Random(0)
    labeller = Labeller(noise=0.2)
    flips = sum(labeller.rank(prompt, ["42", "24"], rng) != [[0], [1]] for _ in range(5000))
    assert abs(flips / 5000 - 0.2) < 0.03  # binomial sd 0.006
    assert all(labeller.rank(prompt, ["24", "33"], rng) == [[0, 1]] for _ in range(200))  # two wrong answers tie


@pytest.mark.parametrize(
    "kwargs, field",
    [({"demo_error_rate": 1.5}, "demo_error_rate"), ({"demo_error_kinds": ("typo",)}, "demo_error_kinds"),
     ({"low": 50, "high": 10}, "low")],
)
def test_task_rejects_bad_settings(kwargs, field):
    with pytest.raises(ValueError, match=field):
        AdditionTask(**kwargs)


def test_ranking_needs_two_answers():
    with pytest.raises(ValueError, match="K >= 2"):
        Labeller().rank([{"role": "user", "content": "1+1"}], ["2"], random.Random(0))
