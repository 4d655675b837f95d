"""CurveRecorder and completions_generated: the count against the rows a reward function actually scored, the
evaluation schedule, and evaluation time kept out of the training clock."""

import time

import pytest
import trl
from transformers import AutoModelForCausalLM

from trl_ext import DAPOConfig, DAPOTrainer
from trl_ext.curves import CurveRecorder, completions_generated
from trl_ext.toy import AdditionTask

TASK = AdditionTask()
COMMON = dict(
    per_device_train_batch_size=4, num_generations=2, max_completion_length=3, learning_rate=1e-3, logging_steps=1,
    report_to="none", save_strategy="no", seed=0, use_cpu=True, bf16=False, gradient_checkpointing=False,
    disable_tqdm=True,
)


class RowCounter:
    """A reward that counts the rows it is asked to score: every generated completion is scored exactly once, so
    this is what the trainer generated, counted independently of the trainer's own bookkeeping."""

    __name__ = "row_counter"

    def __init__(self):
        self.rows = 0

    def __call__(self, completions, **kwargs):
        self.rows += len(completions)
        return [float(len(c[0]["content"]) % 2) for c in completions]  # varied, so some groups carry signal


def _train(ckpt, tokenizer, tmp_path, cls, args, evaluate=None, eval_steps=2, extra_logs=None, eval_completions=None,
           probe=None):
    counter = RowCounter()
    trainer = cls(model=AutoModelForCausalLM.from_pretrained(ckpt), reward_funcs=[counter], args=args,
                  train_dataset=TASK.prompt_dataset(64, seed=0), processing_class=tokenizer)
    seen = []
    recorder = CurveRecorder(
        trainer, evaluate or (lambda model, step: {"seen": (seen.append(counter.rows), counter.rows)[1]}),
        None if eval_completions else eval_steps, eval_completions=eval_completions, extra_logs=extra_logs,
    )
    if probe is not None:
        trainer.add_callback(probe(counter))
    trainer.add_callback(recorder)
    trainer.train()
    return trainer, counter, recorder


def test_fixed_schedule_count_and_schedule(tmp_path, ckpt, tokenizer):
    """steps_per_generation=2 over 5 steps: generations at steps 1, 3, 5 -> 3 x generation_batch_size (8)."""
    args = trl.GRPOConfig(output_dir=str(tmp_path / "g"), **COMMON, max_steps=5, steps_per_generation=2)
    trainer, counter, recorder = _train(ckpt, tokenizer, tmp_path, trl.GRPOTrainer, args,
                                        extra_logs=lambda: {"mine": 1.0})
    assert args.generation_batch_size == 8
    assert counter.rows == 24 == completions_generated(trainer, 5)
    assert [p["step"] for p in recorder.curve] == [0, 2, 4, 5]  # start, every 2, the last step
    # at each evaluation, the count equals the rows scored so far (each point's "seen")
    assert [p["generated"] for p in recorder.curve] == [p["seen"] for p in recorder.curve] == [0, 8, 16, 24]
    assert recorder.curve[0]["wall_s"] == 0.0
    assert [h["step"] for h in recorder.logs] == [1, 2, 3, 4, 5]
    assert all(h["mine"] == 1.0 and "loss" in h for h in recorder.logs)


def test_dynamic_sampling_counts_refills_and_a_stopped_run_is_evaluated_at_its_last_step(tmp_path, ckpt, tokenizer):
    args = DAPOConfig(output_dir=str(tmp_path / "d"), **COMMON, max_steps=50, dynamic_sampling=True,
                      dynamic_sampling_max_refill_rounds=2, dynamic_sampling_on_cap="train_on_kept",
                      max_generated_completions=40)
    trainer, counter, recorder = _train(ckpt, tokenizer, tmp_path, DAPOTrainer, args, eval_steps=100)
    stopped = trainer.state.global_step
    assert stopped < 50  # the completions budget stopped it
    assert counter.rows == completions_generated(trainer, stopped) <= 40
    assert [p["step"] for p in recorder.curve] == [0, stopped]
    assert recorder.curve[-1]["generated"] == recorder.curve[-1]["seen"] == counter.rows


def test_evaluation_time_is_left_out_of_the_training_clock(tmp_path, ckpt, tokenizer):
    pause = 0.25

    def slow(model, step):
        time.sleep(pause)
        return {}

    args = trl.GRPOConfig(output_dir=str(tmp_path / "t"), **COMMON, max_steps=4)
    start = time.perf_counter()
    _, _, recorder = _train(ckpt, tokenizer, tmp_path, trl.GRPOTrainer, args, evaluate=slow, eval_steps=1)
    elapsed = time.perf_counter() - start
    assert len(recorder.curve) == 5 and recorder.eval_s >= 4 * pause  # steps 1..4 after the start
    walls = [p["wall_s"] for p in recorder.curve]
    assert walls == sorted(walls)
    assert walls[-1] <= elapsed - 5 * pause  # none of the five evaluations' sleep is in the training clock


def test_eval_steps_must_be_positive():
    with pytest.raises(ValueError, match="eval_steps=0"):
        CurveRecorder(None, lambda model, step: {}, 0)


def test_eval_completions_evaluates_at_the_first_step_past_each_multiple(tmp_path, ckpt, tokenizer):
    """Dynamic sampling generates 1 to 3 batches of 8 a step; with eval_completions=20 the k-th point after the start
    is the first step end at which the rows scored so far reach 20 k (rows counted by the reward, per step)."""
    from transformers import TrainerCallback

    rows_at_step = {0: 0}

    class Probe(TrainerCallback):
        def __init__(self, counter):
            self.counter = counter

        def on_step_end(self, args, state, control, **kwargs):
            rows_at_step[state.global_step] = self.counter.rows

    args = DAPOConfig(output_dir=str(tmp_path / "c"), **COMMON, max_steps=8, dynamic_sampling=True,
                      dynamic_sampling_max_refill_rounds=2, dynamic_sampling_on_cap="train_on_kept")
    trainer, counter, recorder = _train(ckpt, tokenizer, tmp_path, DAPOTrainer, args, eval_completions=20,
                                        probe=Probe)
    steps = [p["step"] for p in recorder.curve]
    expected, k = [0], 1
    for step in range(1, 9):
        if rows_at_step[step] >= 20 * k or step == 8:
            expected.append(step)
            k = len(expected)
    assert steps == expected and len(steps) >= 3
    assert [p["generated"] for p in recorder.curve] == [rows_at_step[s] for s in steps]


def test_exactly_one_schedule():
    with pytest.raises(ValueError, match="exactly one of eval_steps"):
        CurveRecorder(None, lambda model, step: {}, 2, eval_completions=8)
    with pytest.raises(ValueError, match="exactly one of eval_steps"):
        CurveRecorder(None, lambda model, step: {})
    with pytest.raises(ValueError, match="eval_completions=0"):
        CurveRecorder(None, lambda model, step: {}, eval_completions=0)
