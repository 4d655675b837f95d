"""PPO's critic, a per-token value function V(s_t), in its two forms, and how each is built, saved and restored.

* :class:`SeparateCritic`: a sequence-classification model (by default a copy of the reward model) whose score head is
  applied to every hidden state.
* :class:`SharedCritic`: the LoRA adapter ``"critic"`` on the policy's own base plus a value head (``shared_base``);
  initialised from the reward adapter when there is one.

Both are optimised with the policy by one optimizer (:func:`optimizer_with_critic`).
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PreTrainedModel,
)
from transformers.trainer_optimizer import is_optimizer_factory
from trl.models.utils import disable_gradient_checkpointing
from trl.trainer.utils import disable_dropout_in_model

from ..adapters import active_adapter, backbone_of, load_reward_adapter_onto
from ..models import disable_bnb_cpu_repack, safe_from_pretrained

CRITIC_ADAPTER = "critic"


class SeparateCritic(nn.Module):
    """A sequence-classification model used as a per-token value function: its score head on every hidden state."""

    def __init__(self, model: PreTrainedModel):
        super().__init__()
        self.model = model
        head_name = next((n for n in ("score", "classifier") if hasattr(model, n)), None)
        if head_name is None:
            raise ValueError(
                f"value_model ({type(model).__name__}) has no `score` or `classifier` head; pass an "
                "AutoModelForSequenceClassification with num_labels=1."
            )
        self.head_name = head_name

    def forward(self, input_ids, attention_mask):  # -> (B, L)
        hidden = backbone_of(self.model)(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return getattr(self.model, self.head_name)(hidden).squeeze(-1)


class SharedCritic(nn.Module):
    """The LoRA adapter ``"critic"`` on the policy's base plus a value head; only the head is a submodule here.

    The adapter's weights live in the policy model (and in its optimizer group membership, see
    ``PPOTrainer.create_optimizer``); this module keeps an unregistered reference to it so its parameters are not
    counted twice.
    """

    def __init__(self, peft_model, value_head: nn.Linear, gradient_checkpointing_kwargs=None):
        super().__init__()
        object.__setattr__(self, "peft_model", peft_model)
        self.value_head = value_head
        self._gc_kwargs = gradient_checkpointing_kwargs

    def forward(self, input_ids, attention_mask):  # -> (B, L)
        base = self.peft_model.get_base_model()
        # Checkpointing would recompute this forward during backward with whichever adapter is active *then* (the
        # policy's): the critic's forward keeps its activations instead.
        with active_adapter(self.peft_model, CRITIC_ADAPTER), disable_gradient_checkpointing(base, self._gc_kwargs):
            hidden = backbone_of(base)(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return self.value_head(hidden.to(self.value_head.weight.dtype)).squeeze(-1)


def train_critic_adapter(peft_model) -> None:
    """Make the critic adapter trainable (PEFT leaves an added or re-loaded inactive adapter frozen)."""
    quantized = getattr(peft_model.get_base_model(), "is_loaded_in_4bit", False)
    for n, p in peft_model.named_parameters():
        if f".{CRITIC_ADAPTER}." in n:
            p.requires_grad_(True)
            if quantized and p.dtype != torch.bfloat16:  # as GRPO does for the policy adapter (QLoRA recipe)
                p.data = p.data.to(torch.bfloat16)
    peft_model.peft_config[CRITIC_ADAPTER].inference_mode = False


def critic_adapter_parameters(peft_model) -> list[nn.Parameter]:
    """The shared critic adapter's trainable parameters (inside the policy model)."""
    return [p for n, p in peft_model.named_parameters() if f".{CRITIC_ADAPTER}." in n and p.requires_grad]


def critic_parameters(critic: nn.Module, policy: nn.Module, shared_base: bool) -> tuple[list, list]:
    """(parameters inside the policy model, parameters outside it) that the critic trains; both unwrapped."""
    outside = [p for p in critic.parameters() if p.requires_grad]
    inside = critic_adapter_parameters(policy) if shared_base else []
    return inside, outside


def same_tokenizer(a, b) -> bool:
    return a.get_vocab() == b.get_vocab() and a.pad_token_id == b.pad_token_id


# ---- building ------------------------------------------------------------------------------------------------------
def build_separate_critic(value_model, *, tokenizer, reward_funcs, reward_processing_classes, policy_id, args,
                          unwrap) -> SeparateCritic:
    """``value_model`` (instance or path); by default a copy of the first reward model, else the policy's checkpoint
    with a fresh ``num_labels=1`` head. It must read the policy's token ids."""
    source = "value_model"
    if isinstance(value_model, (str, os.PathLike)):
        critic_tokenizer = AutoTokenizer.from_pretrained(value_model, trust_remote_code=args.trust_remote_code)
        if not same_tokenizer(critic_tokenizer, tokenizer):
            raise ValueError(
                f"value_model={str(value_model)!r} has a different tokenizer from the policy's (vocabulary or pad "
                "token differ). The critic reads the policy's token ids, so it must share its tokenizer: "
                "initialise it from a reward model trained on the policy's tokenizer."
            )
        value_model = safe_from_pretrained(
            AutoModelForSequenceClassification, str(value_model), "value_model", num_labels=1,
            **(args.model_init_kwargs or {}),
        )
    elif value_model is None:
        reward_models = [r for r in reward_funcs if isinstance(r, PreTrainedModel)]
        if reward_models:
            rm_tokenizer = reward_processing_classes[reward_funcs.index(reward_models[0])]
            if not same_tokenizer(rm_tokenizer, tokenizer):
                raise ValueError(
                    "The critic is initialised from the reward model, but the reward model's tokenizer differs "
                    "from the policy's. Pass value_model= a sequence-classification model that uses the policy's "
                    "tokenizer."
                )
            value_model, source = copy.deepcopy(unwrap(reward_models[0])), "reward model"
        else:
            value_model = safe_from_pretrained(
                AutoModelForSequenceClassification, policy_id, "value_model", num_labels=1,
                **(args.model_init_kwargs or {}),
            )
            source = "policy checkpoint"
    if not isinstance(value_model, PreTrainedModel):
        raise TypeError(f"value_model must be a PreTrainedModel or a path, got {type(value_model).__name__}.")
    vocab = value_model.get_input_embeddings().num_embeddings
    if vocab < len(tokenizer):
        raise ValueError(
            f"The critic ({source}) embeds {vocab} tokens but the policy's tokenizer has {len(tokenizer)}: their "
            "tokenizers differ. The critic must use the policy's tokenizer."
        )
    value_model.config.pad_token_id = tokenizer.pad_token_id
    disable_bnb_cpu_repack(value_model)
    if args.disable_dropout:
        disable_dropout_in_model(value_model)
    value_model.requires_grad_(True)
    value_model.train()
    return SeparateCritic(value_model)


def build_shared_critic(peft_model, reward_adapter: Path | None, gradient_checkpointing_kwargs) -> SharedCritic:
    """The ``critic`` adapter and a value head on the policy's base: the reward adapter's LoRA weights and score head
    when ``reward_adapter`` is a folder, else a fresh adapter (the policy's LoraConfig) and a small random head."""
    hidden = peft_model.get_base_model().config.get_text_config().hidden_size
    device = next(p for p in peft_model.parameters() if p.dtype.is_floating_point).device
    value_head = nn.Linear(hidden, 1).to(device)
    if reward_adapter is not None:
        head = load_reward_adapter_onto(peft_model, reward_adapter, adapter_name=CRITIC_ADAPTER)
        with torch.no_grad():
            value_head.weight.copy_(head.weight)
            value_head.bias.copy_(head.bias if head.bias is not None else torch.zeros(1))
    else:
        peft_model.add_adapter(CRITIC_ADAPTER, copy.deepcopy(peft_model.peft_config["default"]))
        with torch.no_grad():
            value_head.weight.normal_(0.0, 1.0 / (hidden + 1) ** 0.5)
            value_head.bias.zero_()
    train_critic_adapter(peft_model)
    disable_bnb_cpu_repack(peft_model)
    return SharedCritic(peft_model, value_head, gradient_checkpointing_kwargs)


# ---- optimizer -------------------------------------------------------------------------------------------------------
def optimizer_with_critic(optimizer_cls, optimizer_kwargs, policy: nn.Module, decay: set[str], *, inside, outside, args):
    """Trainer's two policy groups (decay / no decay, trainable parameters in ``named_parameters`` order), without the
    critic's parameters ``inside`` the policy model, plus one critic group (``inside + outside``); one optimizer, so one
    scheduler and one ``optimizer.step`` for both. Optimizers that build their own groups are refused.

    Trainer clips and zeroes the policy model's gradients, which include a shared critic adapter's; what lives
    ``outside`` the policy model (a separate critic, the value head) is clipped here to ``max_grad_norm`` as its own
    group by a step pre-hook, and zeroed by a post-hook (else it would add up every step's gradients since the start).
    """
    if is_optimizer_factory(optimizer_cls) or {"params", "model", "optimizer_dict"} & set(optimizer_kwargs):
        raise NotImplementedError(
            f"optim={args.optim!r} builds its own parameter groups, so PPO's critic group cannot be added; use a "
            "standard optimizer such as optim='adamw_torch'."
        )
    critic_ids = {id(p) for p in inside}
    trainable = [(n, p) for n, p in policy.named_parameters() if p.requires_grad and id(p) not in critic_ids]
    groups = [
        {"params": [p for n, p in trainable if n in decay], "weight_decay": args.weight_decay},
        {"params": [p for n, p in trainable if n not in decay], "weight_decay": 0.0},
        {"params": inside + outside, "lr": args.critic_learning_rate or args.learning_rate,
         "weight_decay": args.weight_decay},
    ]
    optimizer = optimizer_cls(groups, **optimizer_kwargs)
    if "bitsandbytes" in str(optimizer_cls) and optimizer_kwargs.get("optim_bits") == 8:
        _embeddings_in_fp32(policy)  # as Trainer.create_optimizer does for 8-bit optimizers
    max_norm = args.max_grad_norm
    if max_norm is not None and max_norm > 0:

        def clip_critic_grads(*_):
            torch.nn.utils.clip_grad_norm_(outside, max_norm)

        optimizer.register_step_pre_hook(clip_critic_grads)

    def zero_critic_grads(*_):
        for p in outside:
            p.grad = None

    optimizer.register_step_post_hook(zero_critic_grads)
    return optimizer


def _embeddings_in_fp32(model: nn.Module) -> None:
    """bitsandbytes' 8-bit optimizers keep embedding weights' state in 32 bits (its documented override)."""
    import bitsandbytes

    manager = bitsandbytes.optim.GlobalOptimManager.get_instance()
    for module in model.modules():
        if isinstance(module, nn.Embedding):
            manager.register_module_override(module, "weight", {"optim_bits": 32})


# ---- checkpoints -----------------------------------------------------------------------------------------------------
def save_critic(critic: nn.Module, output_dir: str) -> None:
    """A separate critic to ``critic/``; a shared one's head to ``value_head.pt`` (its adapter is saved with the
    policy's adapters)."""
    if isinstance(critic, SeparateCritic):
        critic.model.save_pretrained(os.path.join(output_dir, "critic"))
    else:
        torch.save(critic.value_head.state_dict(), os.path.join(output_dir, "value_head.pt"))


def load_critic(critic: nn.Module, policy, checkpoint: str) -> None:
    """Read back what :func:`save_critic` wrote. Trainer restores a shared critic's adapter with the policy's other
    adapters, frozen: it is made trainable again here."""
    if isinstance(critic, SeparateCritic):
        folder = os.path.join(checkpoint, "critic")
        index = os.path.join(folder, "model.safetensors.index.json")
        files = ["model.safetensors"]
        if os.path.exists(index):  # sharded
            files = sorted(set(json.loads(Path(index).read_text())["weight_map"].values()))
        state = {}
        for name in files:
            state.update(load_file(os.path.join(folder, name)))
        critic.model.load_state_dict(state)
    else:
        train_critic_adapter(policy)
        path = os.path.join(checkpoint, "value_head.pt")
        critic.value_head.load_state_dict(
            torch.load(path, map_location=critic.value_head.weight.device, weights_only=True)
        )
