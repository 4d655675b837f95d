"""One way to build a trainer, for both front-ends: construct it, then make the one fix no trainer makes itself.

The other fix a 4-bit model needs on CPU, turning off bitsandbytes' CPU repack
(:func:`trl_ext.models.disable_bnb_cpu_repack`), is made where the model is loaded (``trl_ext.models.load_*``) and
again by :class:`trl_ext.DAPOTrainer` (and so RLOOTrainer) for a model loaded elsewhere; construction keeps it
(tests/test_assembly.py), so it is not repeated here.
"""

from __future__ import annotations


def prepare(trainer) -> None:
    """After the trainer wrapped the model: a quantized model's trainable parameters back to fp32 when training does
    not autocast to bf16 (TRL casts them to bf16; see :func:`trl_ext.models.match_trainable_dtype_to_compute`)."""
    from ..models import match_trainable_dtype_to_compute

    match_trainable_dtype_to_compute(trainer.model, trainer.args.bf16)


def build_trainer(trainer_cls, **kwargs):
    """``trainer_cls(**kwargs)`` (any TRL trainer or trl_ext's), then :func:`prepare`."""
    trainer = trainer_cls(**kwargs)
    prepare(trainer)
    return trainer
