"""Runs the pipeline in its own process and, if asked, kills that process with SIGKILL (test-only, see test_resume.py).

    python tests/resume_worker.py CONFIG_JSON [--kill-at-step N | --kill-in-save N]

CONFIG_JSON holds PipelineConfig fields, and optionally ``model_args``: ModelConfig fields. ``--kill-at-step N``: SIGKILL at the end of optimizer step N, before the
checkpoint of that step (if any) is written. ``--kill-in-save N``: SIGKILL in the middle of the checkpoint save of
step N, after the model weights are written and before the optimizer state and trainer_state.json: what a kill -9
during a save leaves behind.
"""

import argparse
import json
import os
import signal

from transformers import Trainer, TrainerCallback
from trl import ModelConfig

from trl_ext.pipeline import PipelineConfig, run_pipeline


def _die():
    os.kill(os.getpid(), signal.SIGKILL)


class KillAtStep(TrainerCallback):
    def __init__(self, step):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            _die()


def kill_in_save(step):
    original = Trainer._save_optimizer_and_scheduler

    def save_then_die(self, output_dir):
        if self.state.global_step == step:
            _die()
        return original(self, output_dir)

    Trainer._save_optimizer_and_scheduler = save_then_die


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("config")
    parser.add_argument("--kill-at-step", type=int)
    parser.add_argument("--kill-in-save", type=int)
    cli = parser.parse_args()
    with open(cli.config) as f:
        fields = json.load(f)
    model_args = ModelConfig(**fields.pop("model_args", {}))
    cfg = PipelineConfig(**fields)
    callbacks = []
    if cli.kill_at_step is not None:
        callbacks.append(KillAtStep(cli.kill_at_step))
    if cli.kill_in_save is not None:
        kill_in_save(cli.kill_in_save)
    run_pipeline(cfg, model_args, callbacks=callbacks)
