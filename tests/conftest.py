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
