"""Cheaper dynamic sampling (trl_ext.dapo.prompt_history and its use in DAPOTrainer): which refill prompts are skipped
before generating, how many prompts a sized refill draws, kept rows unchanged with the options off, resume."""

import hashlib
import json
import math
import re

import pytest
from transformers import TrainerCallback

from test_dapo import (G, check_dynamic_sampling_metrics, config, expected_dynamic_sampling, informative_if_even,
                       logged, record_answers_by_step, record_batches, trainer)
from trl_ext import DAPOConfig
from trl_ext.dapo.prompt_history import PromptHistory, draw_uniform, prompt_key, refill_prompts, skip_probability
from fingerprints import batch_fingerprint


# ---- the skip rule ------------------------------------------------------------------------------------------------
def test_skip_probability_grows_with_the_streak_up_to_the_bound():
    # 1 - 0.5 ** k: 0.5, 0.75, 0.875, 0.9375 -> capped at 0.9
    assert [skip_probability(k, 0.5, 0.9) for k in range(6)] == [0.0, 0.5, 0.75, 0.875, 0.9, 0.9]
    assert skip_probability(3, 0.0, 0.9) == 0.0  # off


def test_the_uniforms_depend_only_on_seed_and_draw():
    # pinned: the decisions below follow from these numbers, on every rank and after a resume
    assert [round(draw_uniform(7, d), 4) for d in range(8)] == [0.7014, 0.9893, 0.2514, 0.7744, 0.4358, 0.6385,
                                                                 0.6105, 0.008]


def test_which_prompts_are_skipped_given_a_history_and_a_seed():
    history = PromptHistory(0.5, 0.9, seed=7)
    history.record(["a", "b", "c", "d", "e"], [False] * 5)  # streaks 1
    history.record(["a", "c", "d", "e"], [True, False, False, False])  # a had signal: 0; c, d, e: 2
    history.record(["d", "e"], [False, False])  # 3
    history.record(["e", "e"], [False, False])  # e: 5
    assert history.streaks == {"a": 0, "b": 1, "c": 2, "d": 3, "e": 5}
    # draw:      0     1      2      3      4     5     6      7
    # key:       a     b      c      d      e     f     b      e
    # p_skip:    0     0.5    0.75   0.875  0.9   0     0.5    0.9
    # uniform:   .701  .989   .251   .774   .436  .639  .611   .008   -> skipped where uniform < p_skip
    keys = ["a", "b", "c", "d", "e", "f", "b", "e"]
    assert [history.skips(k, d) for d, k in enumerate(keys)] == [False, False, True, True, True, False, False, True]
    restored = PromptHistory(0.5, 0.9, seed=7)
    restored.load_state_dict(json.loads(json.dumps(history.state_dict())))
    assert [restored.skips(k, d) for d, k in enumerate(keys)] == [history.skips(k, d) for d, k in enumerate(keys)]


def test_prompt_key_is_stable_for_text_and_conversations():
    assert prompt_key("1+2=") == hashlib.sha1(b"1+2=").hexdigest()[:16]
    chat = [{"role": "user", "content": "1+2="}]
    assert prompt_key(chat) == prompt_key([{"content": "1+2=", "role": "user"}]) != prompt_key("1+2=")


# ---- the sized refill ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "missing, informative, generated, floor, full, procs, budget, expected",
    [
        (3, 6, 20, 0.1, 16, 1, None, 10),  # rate 0.3: 3 / 0.3 = 10 prompts
        (3, 6, 20, 0.1, 16, 4, None, 12),  # rounded up to a multiple of 4 processes
        (3, 2, 4, 0.1, 16, 1, None, 6),  # rate 0.5: exactly 6, no spurious rounding up
        (3, 1, 100, 0.25, 16, 1, None, 12),  # rate 0.01 < floor 0.25: 3 / 0.25
        (3, 0, 20, 0.1, 16, 1, None, 16),  # 30 wanted, at most a generation batch
        (3, 0, 0, 0.1, 16, 2, None, 4),  # nothing generated yet: rate 1, 3 rounded up to 4
        (3, 6, 20, 0.1, 16, 2, 7, 6),  # 10 wanted, 7 groups of budget left -> 6 (a multiple of 2)
        (3, 6, 20, 0.1, 16, 2, 1, 0),  # the budget cannot pay one group per process
    ],
)
def test_refill_draws_the_shortfall_over_the_observed_rate(missing, informative, generated, floor, full, procs,
                                                          budget, expected):
    assert refill_prompts(missing, informative, generated, floor, full, procs, budget) == expected


@pytest.mark.parametrize("overrides, match", [
    (dict(dynamic_sampling_skip_probability=1.0), "dynamic_sampling_skip_probability=1.0 must be in"),
    (dict(dynamic_sampling_skip_probability=0.5, dynamic_sampling_max_skip_probability=0.4),
     "dynamic_sampling_max_skip_probability=0.4 must be in"),
    (dict(dynamic_sampling_max_skip_probability=1.0), "below 1 so a skipped prompt is still revisited"),
    (dict(dynamic_sampling_refill_rate_floor=0.0), "dynamic_sampling_refill_rate_floor=0.0 must be in"),
])
def test_bad_options_fail_early_naming_the_field(tmp_path, overrides, match):
    with pytest.raises(ValueError, match=re.escape(match)):
        config(tmp_path, **overrides)


# ---- in the trainer -----------------------------------------------------------------------------------------------


def test_options_off_keep_the_rows_of_the_recorded_run(tmp_path, ckpt, tokenizer):
    # recorded with the code before these options existed (commit 2f7abdd), on this test's settings: 3 steps, one
    # with 2 refill rounds; token ids and advantages are identical, so the hashes are
    assert DAPOConfig.__dataclass_fields__["dynamic_sampling_skip_probability"].default == 0.0
    assert DAPOConfig.__dataclass_fields__["dynamic_sampling_sized_refill"].default is False
    t = trainer(ckpt, tokenizer, config(tmp_path, max_steps=3, overlong_buffer_length=0), [informative_if_even])
    seen = record_batches(t)
    t.train()
    assert [batch_fingerprint(b) for b in seen] == ["0bc258dbbc4bda84", "abafbfc37e0e5579", "4e26eb6c5c86929a"]
    assert logged(t, "dynamic_sampling/refill_rounds") == [0, 2, 0]
    assert "dynamic_sampling/skipped_prompts" not in t.state.log_history[0]


def _answer(prompt) -> int:
    a, b = re.search(r"(\d+)\+(\d+)", prompt).groups()
    return int(a) + int(b)


def test_sized_refill_rounds_draw_the_shortfall(tmp_path, ckpt, tokenizer):
    # 4 groups a step; informative_if_even keeps the groups with an even answer. A refill round draws
    # ceil(missing / rate) prompts, at most a generation batch (4), rate = the run's informative fraction so far
    # (at least the floor 0.1): counted here from the answers the reward function was given, round by round
    args = config(tmp_path, max_steps=4, overlong_buffer_length=0, per_device_train_batch_size=16,
                  dynamic_sampling_sized_refill=True)
    t = trainer(ckpt, tokenizer, args, [informative_if_even])
    t.reward_funcs[0], steps = record_answers_by_step(t, informative_if_even)
    seen = record_batches(t)
    t.train()
    even = lambda answers: sum(int(a) % 2 == 0 for a in answers[::G])  # noqa: E731: informative groups of a round
    expected = expected_dynamic_sampling(steps, lambda a: int(a) % 2 == 0, need=4)
    check_dynamic_sampling_metrics(t, expected)
    informative = generated = refills = 0
    for rounds, step in zip(steps, expected, strict=True):
        pooled = step["carried_in_groups"]
        for r, answers in enumerate(rounds):
            if r > 0:  # a refill: sized to what the pool still misses
                wanted = math.ceil((4 - pooled) / max(informative / generated, 0.1) - 1e-9)
                assert len(answers) // G == min(wanted, 4), (r, answers)
                refills += 1
            informative, generated = informative + even(answers), generated + len(answers) // G
            pooled += even(answers)
    assert refills and any(len(a) // G < 4 for rounds in steps for a in rounds[1:])  # some round was sized below 4
    for batch in seen:
        assert batch["completion_ids"].size(0) == 16
        assert all(_answer(p) % 2 == 0 for p in tokenizer.batch_decode(batch["prompt_ids"], skip_special_tokens=True))


def test_skipping_passes_over_only_prompts_that_never_had_signal(tmp_path, ckpt, tokenizer):
    # 8 prompts, so refills revisit them; an odd answer's group is always all 0 (skippable), an even one's is
    # 0,1,0,1 (its streak stays 0, so it is never skipped)
    args = config(tmp_path, max_steps=6, overlong_buffer_length=0, dynamic_sampling_skip_probability=0.6)
    t = trainer(ckpt, tokenizer, args, [informative_if_even], n_prompts=8)
    decided, original = [], t._ds_history.skips
    t._ds_history.skips = lambda key, draw: decided.append((key, draw, original(key, draw))) or decided[-1][2]
    seen = record_batches(t)
    t.train()
    answers = {prompt_key(row["prompt"]): int(row["answer"]) for row in t.train_dataset}
    skipped = [key for key, _, skip in decided if skip]
    assert skipped and all(answers[key] % 2 == 1 for key in skipped)
    # both kinds of decision ran: the dataloader's groups (keyed "first:step:group", replaced) and refill draws
    assert any(isinstance(d, str) and skip for _, d, skip in decided) and any(isinstance(d, int) for _, d, _ in decided)
    assert len(seen) == 6 and all(b["completion_ids"].size(0) == 8 for b in seen)
    assert sum(logged(t, "dynamic_sampling/skipped_prompts")) == t.dynamic_sampling_totals["skipped_prompts"]
    assert t.dynamic_sampling_totals["skipped_prompts"] == len(skipped)
    streaks = t._ds_history.streaks
    assert all(streaks[k] == 0 for k in streaks if answers[k] % 2 == 0)
    assert all(streaks[k] >= 1 for k in streaks if answers[k] % 2 == 1)


def test_options_resume_with_their_state(tmp_path, ckpt, tokenizer):
    # what the history and the refill stream held when checkpoint-2 was written is what the resumed run starts from,
    # and its first skip decision is the next draw of the stream (the uniform of that draw number)
    snapshots = {}

    class Snapshot(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            snapshots[state.global_step] = (dict(t._ds_history.streaks), t._ds_refill_drawn,
                                            dict(t.dynamic_sampling_totals))

    def build(resume=None):
        args = config(tmp_path, max_steps=4, overlong_buffer_length=0, save_strategy="steps", save_steps=1,
                      per_device_train_batch_size=16, dynamic_sampling_skip_probability=0.6,
                      dynamic_sampling_sized_refill=True)
        return trainer(ckpt, tokenizer, args, [informative_if_even], n_prompts=8)

    t = build()
    t.add_callback(Snapshot())
    t.train()
    streaks, drawn, totals = snapshots[2]
    assert t.dynamic_sampling_totals["skipped_prompts"] > 0 and any(streaks.values())

    resumed = build()
    restored, draws, original = [], [], resumed._load_resume_state

    def load(state, checkpoint):
        original(state, checkpoint)
        restored.append((dict(resumed._ds_history.streaks), resumed._ds_refill_drawn,
                         dict(resumed.dynamic_sampling_totals)))
        history_skips = resumed._ds_history.skips
        resumed._ds_history.skips = lambda key, draw: draws.append(draw) or history_skips(key, draw)

    resumed._load_resume_state = load
    resumed.train(resume_from_checkpoint=str(tmp_path / "checkpoint-2"))
    assert restored == [(streaks, drawn, totals)]
    draws = [d for d in draws if isinstance(d, int)]  # the refill stream's (the first round's are keyed by step)
    assert draws == list(range(drawn, drawn + len(draws))) and draws  # every draw is decided, in order


def test_sized_refill_is_cut_to_the_budget_and_says_so(tmp_path, ckpt, tokenizer, caplog):
    # a round of the generation batch is 2 groups (8 completions); budget 12 = 3 groups. Step 1: the first round's
    # 2 groups are all 0; the sized refill wants min(2 / 0.1, 2) = 2 groups, the budget pays for 1; then none is left:
    # 2 filler groups, and training stops (4 completions left < one first round)
    from test_dapo import always_zero

    args = config(tmp_path, max_steps=5, overlong_buffer_length=0, max_generated_completions=12,
                  dynamic_sampling_sized_refill=True)
    t = trainer(ckpt, tokenizer, args, [always_zero])
    with caplog.at_level("WARNING", logger="trl_ext.dapo"):
        t.train()
    assert t.state.global_step == 1 and t.dynamic_sampling_totals["generated_groups"] == 3
    assert logged(t, "dynamic_sampling/refill_rounds") == [1]
    assert logged(t, "dynamic_sampling/padded_groups") == [2]
    assert any("the sized refill stopped where max_generated_completions could pay for no more groups"
               in r.getMessage() for r in caplog.records)
