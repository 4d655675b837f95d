"""Run bookkeeping shared by every stage: the stage markers (``stage.json`` when complete, ``stage.pending.json``
while running) and their fingerprints, training with resume from the newest complete checkpoint, Ctrl-C as "save and
stop", and writing ``folder/model`` (LoRA merged)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import torch
from transformers import TrainerCallback
from trl import ModelConfig

from ..models import safe_from_pretrained
from ..resume import newest_complete_checkpoint

logger = logging.getLogger("trl_ext.pipeline")


class StageMismatchError(RuntimeError):
    """A stage folder was made with other settings than the ones given now."""


class StageInterrupted(RuntimeError):
    """Training was stopped by Ctrl-C after saving a checkpoint; rerunning the same command resumes it."""


class _SaveAndStopOnSigint(TrainerCallback):
    """First Ctrl-C: finish the current optimizer step, save a checkpoint, stop. A second Ctrl-C stops at once."""

    def __init__(self):
        self.requested = False
        self._previous = None

    def install(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)

    def uninstall(self):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        logger.warning("Ctrl-C: saving a checkpoint after this step, then stopping (press again to stop at once).")

    def on_step_end(self, args, state, control, **kwargs):
        if self.requested:
            control.should_save = True
            control.should_training_stop = True
        return control


def fingerprint(payload: dict) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def write_json_atomic(path: Path, payload) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=str))
    os.replace(tmp, path)


def _as_recorded(settings: dict) -> dict:
    return json.loads(json.dumps(settings, default=str))


def _changed_settings(now: dict, before: dict) -> list[str]:
    now = _as_recorded(now)  # compare as they were recorded
    return sorted(k for k in set(now) | set(before) if now.get(k) != before.get(k))


def run_stage(run_dir: Path, name: str, settings: dict, fn: Callable[[Path], dict]) -> dict:
    """Run ``fn(folder)`` unless the stage is already complete with the same settings; record time and metrics."""
    folder = run_dir / name
    marker = folder / "stage.json"
    digest = fingerprint(settings)
    if marker.exists():
        info = json.loads(marker.read_text())
        if info["fingerprint"] != digest:
            changed = _changed_settings(settings, info["settings"])
            raise StageMismatchError(
                f"stage {name!r} in {folder} was made with other settings (changed: {changed}). Use a new "
                f"--output_dir, or delete {folder} (and the stages after it) to redo it."
            )
        logger.info("stage %s: complete in %s, skipped", name, folder)
        return info
    pending = folder / "stage.pending.json"  # what a cut-off run of this stage was started with
    if pending.exists() and (folder / "checkpoints").is_dir():
        started = json.loads(pending.read_text())
        if started["fingerprint"] != digest:
            changed = _changed_settings(settings, started["settings"])
            raise StageMismatchError(
                f"stage {name!r} in {folder} was cut off while running with other settings (changed: {changed}), so "
                f"its checkpoints cannot be resumed with these. Run with the earlier settings to finish it, or delete "
                f"{folder / 'checkpoints'} to start the stage again."
            )
    folder.mkdir(parents=True, exist_ok=True)
    write_json_atomic(pending, {"fingerprint": digest, "settings": _as_recorded(settings)})
    logger.info("stage %s: running in %s", name, folder)
    start = time.perf_counter()
    metrics = fn(folder)
    info = {
        "stage": name,
        "fingerprint": digest,
        "settings": _as_recorded(settings),
        "wall_time_s": round(time.perf_counter() - start, 2),
        "metrics": metrics,
    }
    write_json_atomic(marker, info)
    pending.unlink(missing_ok=True)
    return info


def train_resumable(trainer, folder: Path, callbacks=None) -> dict:
    """Train, resuming from the newest complete checkpoint in ``folder/checkpoints`` if an earlier run was cut off.

    A checkpoint folder that a kill -9 left half-written is skipped and deleted (see
    :func:`trl_ext.resume.newest_complete_checkpoint`); the log names it.
    """
    for callback in callbacks or ():
        trainer.add_callback(callback)
    ckpt_dir = folder / "checkpoints"
    last = newest_complete_checkpoint(ckpt_dir, trainer.args.world_size, remove_incomplete=trainer.args.should_save)
    if last:
        logger.info("resuming from %s", last)
    interrupt = _SaveAndStopOnSigint()
    trainer.add_callback(interrupt)
    interrupt.install()
    try:
        result = trainer.train(resume_from_checkpoint=last)
    finally:
        interrupt.uninstall()
    if interrupt.requested:
        saved = newest_complete_checkpoint(ckpt_dir, trainer.args.world_size)
        raise StageInterrupted(
            f"stage {folder.name!r} interrupted; checkpoint saved at {saved}. Run the same command again to resume."
        )
    if trainer.args.should_save:  # the report's training curves (and a resumed run's history, which includes the
        write_json_atomic(folder / "log_history.json", trainer.state.log_history)  # checkpoint's)
    metrics = {"train_loss": result.training_loss, "global_step": result.global_step, "resumed_from": last}
    if last:
        metrics.update(whole_run_loss(trainer.state, int(Path(last).name.split("-")[-1]), result.training_loss))
    return metrics


def whole_run_loss(state, resumed_at: int, loss_since_resume: float) -> dict:
    """``train_loss`` over every step of a resumed run; Trainer's own covers only the steps since the resume.

    The steps before ``resumed_at`` are known from the logged losses in the checkpoint's log history, which cover
    them all when the checkpoint step is a logging step (``save_steps`` a multiple of ``logging_steps``). Otherwise
    the loss of the steps since the resume is kept, and ``train_loss_first_step`` says where it starts.
    """
    logged = [(h["step"], h["loss"]) for h in state.log_history if "loss" in h and h["step"] <= resumed_at]
    if not logged or logged[-1][0] != resumed_at:
        return {"train_loss_first_step": resumed_at + 1}
    total, previous = 0.0, 0
    for step, loss in logged:  # each logged loss is the mean over the steps since the previous log
        total += loss * (step - previous)
        previous = step
    return {"train_loss": (total + loss_since_resume * (state.global_step - resumed_at)) / state.global_step}


def save_model(trainer, folder: Path, base_name: str, model_args: ModelConfig, auto_cls, tokenizer, **load_kw) -> str:
    """Write ``folder/model`` as a full checkpoint: LoRA adapters are merged into a full-precision copy of the base."""
    target = folder / "model"
    tmp = folder / "model.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    model = trainer.accelerator.unwrap_model(trainer.model)
    if hasattr(model, "peft_config"):  # a PeftModel: merge into an unquantised base so later stages load one folder
        adapter_dir = folder / "adapter"
        model.save_pretrained(adapter_dir)
        tokenizer.save_pretrained(adapter_dir)
        from peft import PeftModel

        dtype = torch.float32 if not torch.cuda.is_available() else torch.bfloat16
        base = safe_from_pretrained(auto_cls, base_name, dtype=dtype, **load_kw)
        merged = PeftModel.from_pretrained(base, adapter_dir).merge_and_unload()
        merged.save_pretrained(tmp, safe_serialization=True)
    else:
        model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    shutil.rmtree(target, ignore_errors=True)
    os.replace(tmp, target)
    return f"{folder.name}/model"  # relative to the run folder
