"""Rewards for TRL's trainers, by idea:

* :mod:`.adapter` -- :class:`RewardAdapter`, one reward callable for reward models, shared-base LoRA reward adapters,
  rules and mixtures;
* :mod:`.sources` -- what each kind of adapter scores with;
* :mod:`.bridge` -- re-tokenising a policy's text for a reward model with another tokenizer (:class:`RMTokenizer`);
* :mod:`.normalize` -- running normalisation and clipping (:class:`RunningNorm`);
* :mod:`.functions` -- what a reward function is, the text it reads (:func:`completion_text`), importing one named in
  a config (:func:`import_reward_function`).
"""

from .adapter import RewardAdapter
from .bridge import RMTokenizer, Tokenised
from .functions import RewardFunc, completion_text, import_reward_function
from .normalize import RunningNorm
from .sources import RawScores, micro_batches

__all__ = [
    "RMTokenizer",
    "RawScores",
    "RewardAdapter",
    "RewardFunc",
    "RunningNorm",
    "Tokenised",
    "completion_text",
    "import_reward_function",
    "micro_batches",
]
