"""The embedded default: a tiny locally built model and tokenizer, synthetic tasks, an oracle and a labeller; and an
arithmetic task with a checker for real chat models (:mod:`trl_ext.toy.arithmetic`)."""

from .arithmetic import ArithmeticTask, arithmetic_correct, arithmetic_utility
from .graded import GradedAdditionTask, sum_correct
from .model import TinyModelSpec, build_tiny_model, build_tokenizer, ensure_tiny_checkpoint
from .task import AdditionTask, Labeller, oracle_correct, oracle_utility, pairs_from_ranking

__all__ = [
    "AdditionTask",
    "ArithmeticTask",
    "GradedAdditionTask",
    "Labeller",
    "TinyModelSpec",
    "arithmetic_correct",
    "arithmetic_utility",
    "build_tiny_model",
    "build_tokenizer",
    "ensure_tiny_checkpoint",
    "oracle_correct",
    "oracle_utility",
    "pairs_from_ranking",
    "sum_correct",
]
