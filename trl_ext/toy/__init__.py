"""The embedded default: a tiny locally built model and tokenizer, a synthetic task, an oracle and a labeller."""

from .graded import GradedAdditionTask, sum_correct
from .model import TinyModelSpec, build_tiny_model, build_tokenizer, ensure_tiny_checkpoint
from .task import AdditionTask, Labeller, oracle_correct, oracle_utility, pairs_from_ranking

__all__ = [
    "AdditionTask",
    "GradedAdditionTask",
    "Labeller",
    "TinyModelSpec",
    "build_tiny_model",
    "build_tokenizer",
    "ensure_tiny_checkpoint",
    "oracle_correct",
    "oracle_utility",
    "pairs_from_ranking",
    "sum_correct",
]
