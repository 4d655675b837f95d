"""bitsandbytes' import-time notice about a CPU kernel, held back until a 4-bit model is used.

transformers imports peft (``transformers.trainer_utils``) and peft imports bitsandbytes at module level
(``peft.helpers``), so ``import trl`` -- and with it every ``import trl_ext`` and every ``trl-ext`` command -- imports
bitsandbytes, which on CPUs with AVX512-BF16 logs at import time "Failed to load CPU gemm_4bit_forward from
kernels-community: ..." (the optional ``kernels`` package, fetched from the hub, is not installed). trl_ext cannot
avoid that import, and its own code imports bitsandbytes only inside the functions that handle 4-bit layers. So this
module, imported first by ``trl_ext/__init__.py`` before anything imports transformers, puts a filter on that one
logger that holds back that one message; :func:`release` logs it after all, once, when trl_ext meets a 4-bit model
(:func:`trl_ext.models.disable_bnb_cpu_repack`). Every other bitsandbytes message passes unchanged. If bitsandbytes
was imported before trl_ext, the message was printed already and nothing here changes that.
"""

from __future__ import annotations

import logging

LOGGER = "bitsandbytes.backends.cpu.ops"
MESSAGE = "Failed to load CPU gemm_4bit_forward from kernels-community"


class _HoldKernelNotice(logging.Filter):
    def __init__(self):
        super().__init__()
        self.held: list[logging.LogRecord] = []
        self.released = False

    def filter(self, record: logging.LogRecord) -> bool:
        if self.released or not str(record.msg).startswith(MESSAGE):
            return True
        self.held.append(record)
        return False


_filter = _HoldKernelNotice()
logging.getLogger(LOGGER).addFilter(_filter)


def release() -> None:
    """Log the held notice now (4-bit is in use, so it is relevant), and let later ones through."""
    if _filter.released:
        return
    _filter.released = True
    logger = logging.getLogger(LOGGER)
    for record in _filter.held:
        logger.handle(record)
    _filter.held.clear()
