"""Dynamic sampling on a streaming train_dataset (datasets.IterableDataset, trl_ext.dapo.refill): TRL's own checks for
streams run, refills come from the stream itself in its order, a resumed run continues the stream where the
checkpoint left it (or says what it cannot restore), and a map-style run keeps the rows it kept before streams were
accepted. Two processes: tests/test_dapo_multiprocess.py."""

import json
import logging
import re

import pytest
from datasets import Dataset, IterableDataset
from transformers import AutoModelForCausalLM, TrainerCallback

from fingerprints import batch_fingerprint
from test_dapo import G, config, informative_if_even, logged, record_batches, trainer
from trl_ext import DAPOTrainer
from trl_ext.dapo.refill import StreamRefills
from trl_ext.toy import AdditionTask


def _answer(prompt) -> int:
    a, b = re.search(r"(\d+)\+(\d+)", prompt).groups()
    return int(a) + int(b)


# ---- the refill stream alone --------------------------------------------------------------------------------------
def _rows(n):
    return Dataset.from_dict({"prompt": [f"{i}+1=" for i in range(n)]})


def test_an_unshuffled_stream_is_read_in_its_order_and_wraps_around():
    refills = StreamRefills(_rows(5).to_iterable_dataset())
    assert [refills.next_row()["prompt"] for _ in range(12)] == [f"{i % 5}+1=" for i in range(12)]
    assert (refills.passes, refills.position) == (2, 2)


def test_a_shuffled_stream_is_reshuffled_each_pass_as_the_dataloader_reads_its_epochs():
    stream = _rows(8).to_iterable_dataset().shuffle(seed=3, buffer_size=4)
    refills = StreamRefills(stream)
    drawn = [refills.next_row()["prompt"] for _ in range(16)]
    expected = []
    for epoch in (0, 1):  # what a reader of the stream gets at epoch 0 and 1 (the Trainer's dataloader calls set_epoch)
        copy = _rows(8).to_iterable_dataset().shuffle(seed=3, buffer_size=4)
        copy.set_epoch(epoch)
        expected += [row["prompt"] for row in copy]
    assert drawn == expected
    assert drawn[:8] != drawn[8:] and sorted(drawn[:8]) == sorted(drawn[8:]) == sorted(f"{i}+1=" for i in range(8))


def test_a_restored_stream_continues_where_the_checkpoint_left_it():
    def stream():
        return _rows(5).to_iterable_dataset().shuffle(seed=1, buffer_size=3)

    original = StreamRefills(stream())
    for _ in range(7):  # into the second pass
        original.next_row()
    state = json.loads(json.dumps(original.state_dict()))
    resumed = StreamRefills(stream())
    resumed.load_state_dict(state, 7)
    assert [resumed.next_row()["prompt"] for _ in range(6)] == [original.next_row()["prompt"] for _ in range(6)]


def test_a_stream_that_changed_says_it_cannot_be_restored(caplog):
    source = {"rows": [f"{i}+1=" for i in range(5)]}
    stream = IterableDataset.from_generator(lambda: ({"prompt": p} for p in list(source["rows"])))
    original = StreamRefills(stream)
    for _ in range(3):
        original.next_row()
    source["rows"] = source["rows"][1:] + source["rows"][:1]  # read again, it yields another order
    resumed = StreamRefills(stream)
    resumed.load_state_dict(original.state_dict(), 3)
    with caplog.at_level(logging.WARNING, logger="trl_ext.dapo.refill"):
        assert resumed.next_row()["prompt"] == "4+1="  # the 4th row of the changed stream
    assert any("cannot be restored exactly" in r.getMessage() and "row 3" in r.getMessage() for r in caplog.records)


def test_an_empty_stream_is_refused_when_refilled():
    with pytest.raises(ValueError, match="yielded no rows for the dynamic sampling refill"):
        StreamRefills(IterableDataset.from_generator(lambda: iter([]))).next_row()


# ---- in the trainer -----------------------------------------------------------------------------------------------
def _stream_trainer(ckpt, tokenizer, args, n_prompts=6):
    data = AdditionTask().prompt_dataset(n_prompts, seed=0)
    model = AutoModelForCausalLM.from_pretrained(ckpt)
    t = DAPOTrainer(model, [informative_if_even], args=args, train_dataset=data.to_iterable_dataset(),
                    processing_class=tokenizer)
    return t, data["prompt"]


def record_refills(t):
    """The prompts of every refill round's rows, one entry per prompt (each arrives G times in a row)."""
    drawn, original = [], t._refill_inputs

    def spy(n_prompts, record):
        rows = original(n_prompts, record)
        prompts = [r["prompt"] for r in rows]
        assert all(prompts[i:i + G] == [prompts[i]] * G for i in range(0, len(prompts), G))
        drawn.extend(prompts[::G])
        return rows

    t._refill_inputs = spy
    return drawn


def test_a_stream_trains_with_refills_from_the_stream_itself(tmp_path, ckpt, tokenizer, caplog):
    args = config(tmp_path, max_steps=3, overlong_buffer_length=0, dataloader_num_workers=1)
    with caplog.at_level(logging.WARNING):
        t, prompts = _stream_trainer(ckpt, tokenizer, args, n_prompts=5)
    # TRL's own set-up for a stream ran: DAPOTrainer passes the stream to GRPOTrainer unchanged
    assert t.args.accelerator_config.dispatch_batches is False and t.args.dataloader_num_workers == 0
    assert any("dataloader_num_workers=0" in r.getMessage() for r in caplog.records)
    refills, seen = record_refills(t), record_batches(t)
    t.train()
    # the stream's rows in its order, from its first row, past its end into a second pass (5 prompts)
    assert len(refills) > len(prompts)
    assert refills == [prompts[i % len(prompts)] for i in range(len(refills))]
    assert len(seen) == 3
    for batch in seen:
        assert batch["completion_ids"].size(0) == 8
        texts = tokenizer.batch_decode(batch["prompt_ids"], skip_special_tokens=True)
        trained = [p for p, m in zip(texts, batch["completion_mask"].sum(1).tolist()) if m > 0]
        assert all(_answer(p) % 2 == 0 for p in trained)  # only informative groups reach the loss
    assert sum(logged(t, "dynamic_sampling/refill_rounds")) > 0


def test_trls_dispatch_batches_check_is_reached(tmp_path, ckpt, tokenizer):
    args = config(tmp_path, accelerator_config={"dispatch_batches": True})
    with pytest.raises(ValueError, match="Iterable datasets require `dispatch_batches=False`"):
        _stream_trainer(ckpt, tokenizer, args)


def test_a_resumed_stream_draws_the_refills_an_uninterrupted_run_draws(tmp_path, ckpt, tokenizer):
    def build():
        args = config(tmp_path, max_steps=4, overlong_buffer_length=0, save_strategy="steps", save_steps=1)
        return _stream_trainer(ckpt, tokenizer, args, n_prompts=5)

    t, prompts = build()
    at_step = {}

    class Snapshot(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            at_step[state.global_step] = t._ds_refill_drawn

    t.add_callback(Snapshot())
    full = record_refills(t)
    t.train()
    drawn = at_step[1]
    assert 0 < drawn < len(prompts) < len(full)  # the resumed run continues the first pass and wraps around

    resumed, _ = build()
    rest = record_refills(resumed)
    resumed.train(resume_from_checkpoint=str(tmp_path / "checkpoint-1"))
    assert rest == full[drawn:] and rest  # the same next refill prompts, in the same order
    assert rest == [prompts[i % len(prompts)] for i in range(drawn, drawn + len(rest))]
    assert resumed.dynamic_sampling_totals == t.dynamic_sampling_totals


def test_skipping_and_sized_refills_draw_from_the_stream(tmp_path, ckpt, tokenizer):
    args = config(tmp_path, max_steps=5, overlong_buffer_length=0, per_device_train_batch_size=16,
                  dynamic_sampling_skip_probability=0.6, dynamic_sampling_sized_refill=True)
    t, prompts = _stream_trainer(ckpt, tokenizer, args, n_prompts=8)
    refills, seen = record_refills(t), record_batches(t)
    t.train()
    totals = t.dynamic_sampling_totals
    assert totals["skipped_prompts"] > 0
    # every draw of the stream, skipped or not, advances it: drawn = passes * 8 + position
    stream = t._ds_refills
    assert t._ds_refill_drawn == stream.passes * len(prompts) + stream.position
    # the refilled prompts are the stream's rows in order with the skipped ones passed over: a subsequence
    order = iter(prompts[i % len(prompts)] for i in range(t._ds_refill_drawn))
    assert all(p in order for p in refills) and refills
    for batch in seen:
        assert batch["completion_ids"].size(0) == 16
    assert totals["informative"] == totals["trained"] + t.pooled_groups + totals["dropped"]




def test_a_map_style_run_keeps_the_rows_of_the_recorded_run(tmp_path, ckpt, tokenizer):
    # recorded with the code before streams were accepted (commit 609353f), skipping and sized refills on, so
    # that refill prompts replace the dataloader's and are passed over: rows, advantages and metrics are unchanged
    args = config(tmp_path, max_steps=4, overlong_buffer_length=0, per_device_train_batch_size=16,
                  dynamic_sampling_skip_probability=0.6, dynamic_sampling_sized_refill=True)
    t = trainer(ckpt, tokenizer, args, [informative_if_even], n_prompts=8)
    seen = record_batches(t)
    t.train()
    assert [batch_fingerprint(b) for b in seen] == RECORDED["fingerprints"]
    assert {k: logged(t, k) for k in RECORDED["metrics"]} == RECORDED["metrics"]
    assert t.dynamic_sampling_totals == RECORDED["totals"] and t._ds_refill_drawn == RECORDED["drawn"]


RECORDED = {
    "fingerprints": ["c4e7a40fedd7682e", "f4ae1fade391baae", "99bf885d08c5ece8", "68f419e4cb31cf64"],
    "metrics": {
        "dynamic_sampling/refill_rounds": [1.0, 1.0, 0.0, 0.0],
        "dynamic_sampling/generated_groups": [6.0, 8.0, 4.0, 4.0],  # step 1: a sized refill of 2 prompts, not 4
        "dynamic_sampling/kept_groups": [4.0, 6.0, 3.0, 3.0],
        "dynamic_sampling/skipped_prompts": [0.0, 2.0, 0.0, 3.0],
        "dynamic_sampling/surplus_carried": [0.0, 2.0, 1.0, 0.0],
        "dynamic_sampling/padded_groups": [0.0, 0.0, 0.0, 0.0],
    },
    "totals": {"generated_groups": 22, "informative": 16, "trained": 16, "dropped": 0, "padded": 0,
               "skipped_prompts": 5},
    "drawn": 11,
}
