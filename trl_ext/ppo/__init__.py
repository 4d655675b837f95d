"""PPO with a learned critic (the pipeline's RL stage with ``algorithm: ppo``) on TRL's GRPO generation machinery.

TRL removed its ``PPOTrainer``, value-head models and multi-adapter RL in 2026. This module brings back the classic
RLHF recipe of Ziegler et al. 2019 (arXiv:1909.08593) and Ouyang et al. 2022 (arXiv:2203.02155), in the shape of the
"N implementation details of RLHF with PPO" (Huang et al. 2024, arXiv:2403.17031):

* per-token reward  r_t = −β·(log π(y_t) − log π_ref(y_t)),  plus the reward model's score at the last token
  (minus ``missing_eos_penalty`` when the completion never emitted EOS); β fixed or adapted to a KL target;
* advantages by GAE(γ, λ) against a critic's per-token values, whitened; returns = advantages + values;
* clipped policy surrogate and clipped value loss, several epochs (TRL's ``num_iterations``) per generated batch.

Four roles: policy, reference, reward model, critic. Either separate models (the critic is a sequence-classification
model initialised from the reward model), or all four on one (optionally 4-bit) base with ``shared_base=True``:
policy = LoRA adapter ``"default"``, critic = LoRA adapter ``"critic"`` + a value head, reference = adapters
disabled, reward model = LoRA adapter ``"reward"`` + its score head.

Layout: ``config.py`` (PPOConfig, the adaptive KL controller), ``roles.py`` (constructor checks, the reference, the
shared-base reward placeholder), ``critic.py`` (the two critics, built, saved, restored), ``trainer.py`` (the trainer,
read top to bottom in cleanRL's order: rollout -> scores -> values -> GAE -> loss -> logs), ``losses.py`` (the clipped
surrogate and the clipped value loss, pure functions), ``metrics.py`` (the rollout's and the loss's logs),
``porting.py`` (TRL 0.x PPO names). The per-token reward, GAE and whitening are pure functions in
:mod:`trl_ext.advantages`.
"""

from ..advantages import token_rewards
from .config import AdaptiveKLController, PPOConfig
from .critic import SeparateCritic, SharedCritic
from .trainer import PPOTrainer

__all__ = ["AdaptiveKLController", "PPOConfig", "PPOTrainer", "SeparateCritic", "SharedCritic", "token_rewards"]
