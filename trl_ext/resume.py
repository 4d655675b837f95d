"""Resuming after a crash: which checkpoint is whole, and the generation state a Trainer checkpoint leaves out.

transformers' ``Trainer._save_checkpoint`` writes straight into ``checkpoint-N/`` (model, then optimizer and
scheduler, then RNG state, then ``trainer_state.json``, then it deletes old checkpoints): it is not atomic, and a
kill -9 in the middle leaves a folder that ``get_last_checkpoint`` still picks. :func:`newest_complete_checkpoint`
picks the newest folder that has every piece instead.

GRPOTrainer keeps two things outside the checkpoint: its micro-step counter ``_step`` and the generation buffer
``_buffered_inputs`` (completions generated once and trained on over ``steps_per_generation`` steps). A run resumed
from a checkpoint inside such a block regenerates with other random numbers and trains on misaligned slices from
then on. :class:`GenerationStateMixin` saves both with each checkpoint, one file per process, and restores them, so a
resumed run continues exactly as the uninterrupted one would have; the running normalisation statistics of each
:class:`trl_ext.RewardAdapter` among the reward functions go with them. Subclasses add their own state (DAPO's dynamic
sampling pool, PPO's adaptive KL coefficient) through ``_resume_state`` / ``_load_resume_state``.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from pathlib import Path

import torch
from trl import GRPOTrainer

from . import seam

logger = logging.getLogger(__name__)

_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
# what Trainer.save_model writes, whole-model or adapter, single file or sharded; FSDP and DeepSpeed write folders
_WEIGHTS = (
    "model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json",
    "adapter_model.safetensors", "adapter_model.bin", "pytorch_model_fsdp.bin",
)
_WEIGHT_FOLDERS = ("pytorch_model_fsdp", "global_step")
STATE_FILE = "trl_ext_state_{rank}.pt"


def _missing_pieces(checkpoint: Path, world_size: int) -> list[str]:
    """What ``checkpoint`` lacks to be resumed from by ``world_size`` processes (empty list: it is whole)."""
    try:
        entries = list(checkpoint.iterdir())
    except OSError:  # deleted meanwhile by another process
        return ["everything"]
    missing = []
    state = checkpoint / "trainer_state.json"
    try:  # written last, after the model, optimizer and RNG state: its presence means those are complete
        json.loads(state.read_text())
    except (OSError, ValueError):
        missing.append("trainer_state.json")
    has_folder = any(p.is_dir() and p.name.startswith(_WEIGHT_FOLDERS) for p in entries)
    if not has_folder and not any((checkpoint / name).is_file() for name in _WEIGHTS):
        missing.append("model weights")
    # every process writes its own RNG state, and process 0 does not wait for the others before trainer_state.json
    if world_size > 1:
        missing += [f"rng_state_{i}.pth" for i in range(world_size) if not (checkpoint / f"rng_state_{i}.pth").is_file()]
    return missing


def newest_complete_checkpoint(folder: str | os.PathLike, world_size: int = 1, remove_incomplete: bool = False):
    """The newest ``checkpoint-N`` in ``folder`` that a Trainer can resume from, or None.

    Folders that lack a piece (a kill -9 landed while they were written, or while rotation deleted an old one) are
    skipped with a warning and, with ``remove_incomplete``, deleted: left in place, a half-written ``checkpoint-N``
    newer than the resumed one would make the Trainer's rotation (which orders by step number when mtime is
    unreliable) delete the next complete checkpoint instead. Pass ``remove_incomplete`` on one process only.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return None
    numbered = sorted(
        ((int(m.group(1)), p) for p in folder.iterdir() if p.is_dir() and (m := _CHECKPOINT.match(p.name))),
        reverse=True,
    )
    chosen, incomplete = None, []
    for _, path in numbered:
        missing = _missing_pieces(path, world_size)
        if not missing:
            if chosen is None:
                chosen = path
            continue
        incomplete.append(path)
        logger.warning(
            "skipping incomplete checkpoint %s (missing: %s): the run was killed while writing or deleting it%s",
            path, ", ".join(missing), "; deleting it" if remove_incomplete else "",
        )
    if remove_incomplete:
        for path in incomplete:
            shutil.rmtree(path, ignore_errors=True)
    return str(chosen) if chosen is not None else None


class GenerationStateMixin:
    """Saves what a ``GRPOTrainer`` needs beyond Trainer's checkpoint to resume exactly; put it before the trainer.

    Hooks overridden (the pair TRL itself uses for its adaptive-entropy state): ``_save_optimizer_and_scheduler``
    also writes ``trl_ext_state_{process_index}.pt`` (before ``trainer_state.json``, so a checkpoint that has that
    file has this one), and ``_load_optimizer_and_scheduler`` reads it back, with ``torch.load(weights_only=True)``:
    tensors, numbers, strings, lists and dicts only, nothing else is unpickled. A checkpoint without the file (made by
    another trainer or another number of processes) resumes as GRPOTrainer would, with a warning.
    """

    def _resume_state(self) -> dict:
        """Per-process state to save with a checkpoint: tensors, numbers, strings, lists and dicts only."""
        return {**seam.generation_buffer(self), "reward_funcs": self._reward_adapter_states()}

    def _load_resume_state(self, state: dict, checkpoint: str) -> None:
        seam.restore_generation_buffer(self, state)
        self._load_reward_adapter_states(state.get("reward_funcs", {}), checkpoint)

    def _reward_adapter_states(self) -> dict:
        """``{index: {"name", "state"}}`` of every :class:`trl_ext.RewardAdapter` in ``reward_funcs``: its running
        normalisation statistics (``normalize=True``), which scale every later reward."""
        from .rewards import RewardAdapter

        return {
            i: {"name": f.__name__, "state": f.state_dict()}
            for i, f in enumerate(self.reward_funcs) if isinstance(f, RewardAdapter)
        }

    def _load_reward_adapter_states(self, saved: dict, checkpoint: str) -> None:
        from .rewards import RewardAdapter

        for i, entry in saved.items():
            f = self.reward_funcs[i] if i < len(self.reward_funcs) else None
            if not isinstance(f, RewardAdapter) or f.__name__ != entry["name"]:
                logger.warning(
                    "%s saved the state of reward function %d %r, but that place now holds %r: its normalisation "
                    "statistics start afresh.", checkpoint, i, entry["name"], getattr(f, "__name__", f),
                )
                continue
            f.load_state_dict(entry["state"])

    def _save_optimizer_and_scheduler(self, output_dir: str) -> None:
        super()._save_optimizer_and_scheduler(output_dir)
        os.makedirs(output_dir, exist_ok=True)
        path = os.path.join(output_dir, STATE_FILE.format(rank=self.args.process_index))
        torch.save(self._resume_state(), path + ".tmp")
        os.replace(path + ".tmp", path)

    def _load_optimizer_and_scheduler(self, checkpoint: str | None) -> None:
        super()._load_optimizer_and_scheduler(checkpoint)
        if checkpoint is None:
            return
        path = os.path.join(checkpoint, STATE_FILE.format(rank=self.args.process_index))
        if not os.path.isfile(path):
            logger.warning(
                "%s has no %s: resuming without the generation buffer and sampling state, so the run continues "
                "validly but not exactly as an uninterrupted one would.", checkpoint, os.path.basename(path)
            )
            return
        self._load_resume_state(torch.load(path, map_location=self.accelerator.device, weights_only=True), checkpoint)


class ResumableGRPOTrainer(GenerationStateMixin, GRPOTrainer):
    """``trl.GRPOTrainer`` whose checkpoints also hold the generation buffer (see :class:`GenerationStateMixin`).

    Nothing else differs; the pipeline's ``algorithm: grpo`` uses it.
    """
