import pytest
from transformers import AutoTokenizer

from trl_ext.toy import ensure_tiny_checkpoint


@pytest.fixture(scope="session")
def ckpt():
    """The embedded tiny checkpoint (built once into the cache, then reused)."""
    return ensure_tiny_checkpoint()


@pytest.fixture(scope="session")
def tokenizer(ckpt):
    return AutoTokenizer.from_pretrained(ckpt)


@pytest.fixture(scope="session")
def smollm2_tiny():
    """A tiny random Llama with SmolLM2-135M-Instruct's real tokenizer and chat template (see tests/smollm2.py)."""
    from smollm2 import ensure_tiny_smollm2

    return ensure_tiny_smollm2()
