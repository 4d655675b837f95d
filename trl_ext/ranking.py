"""A reward model trained on whole rankings of K answers, as InstructGPT did: :class:`RankingRewardTrainer`.

InstructGPT (Ouyang et al. 2022, arXiv 2203.02155, Section 3.5) has labellers rank K = 4..9 answers to a prompt and
trains the reward model on all C(K, 2) comparisons of one prompt as a single batch element: K forward passes instead
of the 2 x C(K, 2) that TRL's pairwise ``RewardTrainer`` needs on the expanded pairs, and no shuffling of one prompt's
comparisons into separate rows (which made their RM overfit after one pass). Its loss is

    loss(theta) = -1 / C(K, 2) * E_{(x, y_w, y_l) ~ D}[ log sigmoid(r(x, y_w) - r(x, y_l)) ].

Here a ranking is a list of tiers of completion indices, best first; completions in one tier are tied and form no
pair, so a ranking implies P = sum_{s < t} |T_s| |T_t| pairs (C(K, 2) when there are no ties) and 1 / C(K, 2)
becomes 1 / P: each ranking weighs the same in the loss whatever its K and its ties.

The math lives in pure tensor functions (:func:`pairs_from_tiers`, :func:`ranking_pairwise_loss`,
:func:`plackett_luce_loss`); the trainer tokenises, collates K sequences per row and calls them.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from datasets import Dataset, IterableDataset
from transformers import PreTrainedTokenizerBase
from transformers.data.data_collator import DataCollatorMixin
from trl import RewardConfig, RewardTrainer
from trl.data_utils import _tokenize
from trl.trainer.utils import get_config_model_id, global_then_local_main_first, pad

logger = logging.getLogger("trl_ext.ranking")
LOSS_TYPES = ("pairwise", "plackett_luce")


# ---- pure math ------------------------------------------------------------------------------------------------------
def pairs_from_tiers(tiers: Sequence[Sequence[int]]) -> list[tuple[int, int]]:
    """Every (winner, loser) pair a ranking implies: each completion against each completion in a lower tier.

    ``[[2], [0, 3], [1]]`` gives ``[(2, 0), (2, 3), (2, 1), (0, 1), (3, 1)]``; 0 and 3 are tied and form no pair.
    """
    return [(w, l) for s, upper in enumerate(tiers) for lower in tiers[s + 1 :] for w in upper for l in lower]


def implied_pairs(group: torch.Tensor, tier: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The batch's implied pairs as indices into the N completions, and each pair's weight 1 / (B |P_b|).

    Args:
        group: (N,) which ranking (0..B-1) each completion belongs to, N = sum_b K_b.
        tier: (N,) the completion's tier in its ranking, 0 = best.

    Returns ``winner``, ``loser`` (P,): completion ``winner[p]`` is ranked above ``loser[p]`` in the same ranking, and
    ``weight`` (P,), which sums to 1 and gives every ranking the same total weight.
    """
    same = group[:, None] == group[None, :]  # (N, N)
    winner, loser = (same & (tier[:, None] < tier[None, :])).nonzero(as_tuple=True)  # (P,) each
    num_rankings = int(group.max()) + 1
    pairs_per_ranking = torch.zeros(num_rankings, device=group.device).index_add_(
        0, group[winner], torch.ones(winner.shape, device=group.device)
    )  # (B,)
    if bool((pairs_per_ranking == 0).any()):
        raise ValueError("every ranking in the batch must imply at least one pair (two tiers or more).")
    weight = 1.0 / (num_rankings * pairs_per_ranking[group[winner]])  # (P,)
    return winner, loser, weight


def ranking_pairwise_loss(rewards: torch.Tensor, group: torch.Tensor, tier: torch.Tensor) -> torch.Tensor:
    """InstructGPT's K-wise loss with ties: the mean over each ranking's implied pairs, then over the B rankings.

    With ranking b implying the pair set P_b (every completion against every completion in a lower tier)::

        loss = 1/B sum_b 1/|P_b| sum_{(w, l) in P_b} -log sigmoid(r_w - r_l)

    Without ties |P_b| = C(K_b, 2), InstructGPT's normaliser; for K = 2 this is TRL's ``RewardTrainer`` loss.
    ``rewards`` (N,) is one score per completion; ``group`` and ``tier`` as in :func:`implied_pairs`.
    """
    winner, loser, weight = implied_pairs(group, tier)
    return (weight * -F.logsigmoid(rewards[winner] - rewards[loser])).sum()


def center_rewards_penalty(rewards: torch.Tensor, group: torch.Tensor, tier: torch.Tensor) -> torch.Tensor:
    """TRL's ``center_rewards_coefficient`` term (Eisenstein et al. 2023) on the implied pairs, with the loss's weights.

    ``1/B sum_b 1/|P_b| sum_{(w, l) in P_b} (r_w + r_l)^2``; TRL adds ``coefficient * mean((r_chosen + r_rejected)^2)``
    over its pairs, which this is for K = 2.
    """
    winner, loser, weight = implied_pairs(group, tier)
    return (weight * (rewards[winner] + rewards[loser]) ** 2).sum()


def pair_metrics(rewards: torch.Tensor, group: torch.Tensor, tier: torch.Tensor) -> dict[str, torch.Tensor]:
    """TRL's ``accuracy`` (share of pairs with r_w > r_l) and ``margin`` (mean r_w - r_l) over the batch's pairs.

    Uniform over pairs, not weighted per ranking: this is what TRL logs on a batch of the same pairs.
    """
    winner, loser, _ = implied_pairs(group, tier)
    margin = rewards[winner] - rewards[loser]  # (P,)
    return {"accuracy": (margin > 0).float().mean(), "margin": margin.mean()}


def plackett_luce_loss(rewards: torch.Tensor, group: torch.Tensor, tier: torch.Tensor) -> torch.Tensor:
    """Listwise loss: the negative Plackett-Luce log-likelihood of the tiers, ties as in Breslow's partial likelihood.

    A ranking T_1 > T_2 > ... > T_m is read as m - 1 choices: each completion i of tier T_s (s < m) is chosen out of
    everything not yet ranked above its tier, R_s = T_s u T_{s+1} u ... u T_m. With n = |T_1| + ... + |T_{m-1}|::

        loss_b = -1/n sum_{s < m} sum_{i in T_s} [ r_i - log sum_{j in R_s} exp(r_j) ]
        loss   = 1/B sum_b loss_b

    For a total order (every tier one completion) this is Plackett-Luce's own likelihood (the last choice, out of one,
    is log 1 = 0 and is left out). Tied completions share one denominator, so the likelihood does not depend on an
    order within a tier. With K = 2 it equals the pairwise loss -log sigmoid(r_w - r_l).

    Args: as :func:`ranking_pairwise_loss`. Returns the scalar loss.
    """
    same = group[:, None] == group[None, :]  # (N, N)
    at_or_below = same & (tier[None, :] >= tier[:, None])  # (N, N): [i, j] = j in R_{tier(i)}
    candidates = rewards[None, :].expand_as(at_or_below).masked_fill(~at_or_below, float("-inf"))  # (N, N)
    log_denominator = torch.logsumexp(candidates, dim=1)  # (N,): log sum_{j in R_tier(i)} exp(r_j)
    num_rankings = int(group.max()) + 1
    last_tier = torch.full((num_rankings,), -1, device=tier.device, dtype=tier.dtype).scatter_reduce_(
        0, group, tier, reduce="amax"
    )  # (B,)
    chooses = tier < last_tier[group]  # (N,): completions not in their ranking's last tier
    terms_per_ranking = torch.zeros(num_rankings, device=rewards.device).index_add_(0, group, chooses.float())  # (B,)
    if bool((terms_per_ranking == 0).any()):
        raise ValueError("every ranking in the batch must have two tiers or more.")
    weight = chooses.float() / (num_rankings * terms_per_ranking[group])  # (N,)
    return (weight * (log_denominator - rewards)).sum()


# ---- data -----------------------------------------------------------------------------------------------------------
def check_ranking(ranking: Any, num_completions: int, row: int) -> None:
    """Raise a ValueError naming ``row`` if ``ranking`` is not a partition of range(K) into tiers. A single tier (all
    answers tied) is a valid ranking that implies no pair: the trainer skips such rows (:func:`implies_a_pair`)."""
    where = f"row {row}: "
    if num_completions < 2:
        raise ValueError(f"{where}`completions` has K={num_completions} answers; a ranking needs K >= 2. Drop the row.")
    if not isinstance(ranking, (list, tuple)) or not all(isinstance(t, (list, tuple)) for t in ranking):
        raise ValueError(
            f"{where}`ranking` must be a list of tiers (lists of completion indices, best first), e.g. [[2], [0, 3], "
            f"[1]]; got {ranking!r}."
        )
    seen: set[int] = set()
    for tier in ranking:
        if not tier:
            raise ValueError(f"{where}`ranking` {ranking} has an empty tier; remove it.")
        for index in tier:
            if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < num_completions:
                raise ValueError(
                    f"{where}`ranking` {ranking} has index {index!r}, out of range for K={num_completions} completions "
                    f"(valid: 0..{num_completions - 1})."
                )
            if index in seen:
                raise ValueError(f"{where}`ranking` {ranking} lists completion {index} twice; each goes in one tier.")
            seen.add(index)
    missing = sorted(set(range(num_completions)) - seen)
    if missing:
        raise ValueError(
            f"{where}`ranking` {ranking} puts completion(s) {missing} in no tier; every one of the K={num_completions} "
            "completions must be in exactly one tier (tied answers share a tier)."
        )


def implies_a_pair(example: dict) -> bool:
    """Whether a row's ranking has two tiers or more; a row whose answers are all tied gives the loss nothing."""
    return len(example["ranking"]) >= 2


def _is_messages(value: Any) -> bool:
    return isinstance(value, list) and len(value) > 0 and isinstance(value[0], dict) and "role" in value[0]


@dataclass
class DataCollatorForRanking(DataCollatorMixin):
    """Pads the K_b sequences of each of the B rows into one batch of N = sum_b K_b sequences.

    Each example holds ``completion_ids`` (K lists of token ids, prompt + completion) and ``ranking`` (tiers). Returns
    ``input_ids`` and ``attention_mask`` (N, T), right-padded like TRL's ``DataCollatorForPreference``, and ``group``
    and ``tier`` (N,): the row of each sequence and its tier in that row's ranking (0 = best).
    """

    pad_token_id: int
    pad_to_multiple_of: int | None = None
    return_tensors: str = "pt"

    def torch_call(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        sequences, group, tier = [], [], []
        for b, example in enumerate(examples):
            tier_of = {i: t for t, members in enumerate(example["ranking"]) for i in members}
            for k, ids in enumerate(example["completion_ids"]):  # row-major: row b's K_b sequences, in order
                sequences.append(torch.tensor(ids))
                group.append(b)
                tier.append(tier_of[k])
        masks = [torch.ones_like(ids) for ids in sequences]
        multiple = self.pad_to_multiple_of
        return {
            "input_ids": pad(sequences, self.pad_token_id, padding_side="right", pad_to_multiple_of=multiple),  # (N, T)
            "attention_mask": pad(masks, 0, padding_side="right", pad_to_multiple_of=multiple),  # (N, T)
            "group": torch.tensor(group),  # (N,)
            "tier": torch.tensor(tier),  # (N,)
        }


# ---- config and trainer ---------------------------------------------------------------------------------------------
@dataclass
class RankingRewardConfig(RewardConfig):
    """TRL's ``RewardConfig`` plus the choice of the ranking loss; every other field is TRL's, with TRL's default."""

    loss_type: str = field(
        default="pairwise",
        metadata={
            "help": "'pairwise': InstructGPT's loss, the mean of -log sigmoid(r_w - r_l) over the pairs each ranking "
            "implies; 'plackett_luce': the listwise Plackett-Luce likelihood of the tiers (see plackett_luce_loss)."
        },
    )

    def __post_init__(self):
        super().__post_init__()
        if self.loss_type not in LOSS_TYPES:
            raise ValueError(f"loss_type={self.loss_type!r} is unknown; choose one of {list(LOSS_TYPES)}.")


class RankingRewardTrainer(RewardTrainer):
    """TRL's ``RewardTrainer`` on whole rankings: one forward pass per completion, every implied pair in one row.

    Dataset columns: ``prompt`` (optional, as in TRL: without it the completions are whole texts), ``completions``
    (K answers, plain strings or conversations, K may differ between rows) and ``ranking`` (tiers of completion indices,
    best first; tied answers share a tier and form no pair), e.g. ``{"prompt": "2+2=", "completions": ["4", "5",
    "four"], "ranking": [[0, 2], [1]]}``. A batch of ``per_device_train_batch_size`` rows runs sum_b K_b sequences.
    Rankings are checked when the trainer is built (an error names the row); a row whose answers are all tied (one
    tier: no pair) or with any sequence longer than ``max_length`` is dropped with a warning that counts them, as TRL
    drops a pair over ``max_length``.

    Tokenisation is TRL's: ``trl.data_utils._tokenize`` on prompt + completion (the chat template for conversations,
    with the row's ``tools`` and ``chat_template_kwargs``) and EOS appended to plain-text completions, as
    ``RewardTrainer._prepare_dataset`` does for chosen and rejected. Pre-tokenised datasets (``completion_ids`` +
    ``ranking``) are used as they are.

    Overridden hooks: ``_prepare_dataset`` (K sequences per row, validation), ``_set_signature_columns_if_needed``,
    ``compute_loss`` (the ranking loss; the same metrics under TRL's names: ``accuracy`` and ``margin`` over the
    implied pairs, ``min/mean/max_reward``, ``num_tokens``). Model loading, PEFT, 4-bit, ``log``, saving and the model
    card are TRL's. ``args`` may be a plain ``RewardConfig`` (the pairwise ranking loss) or a
    :class:`RankingRewardConfig`. TRL's per-pair ``margin`` column has no meaning for a ranking and is not read.
    """

    _tag_names = ["trl", "reward-trainer", "trl_ext", "ranking"]

    def __init__(self, model, args: RewardConfig | None = None, data_collator=None, *rest, **kwargs):
        if args is None:  # as TRL's default, but with this trainer's config
            name = model if isinstance(model, str) else get_config_model_id(model.config)
            args = RankingRewardConfig(f"{name.split('/')[-1]}-Reward")
        if data_collator is None:  # its pad id is set below, once TRL has resolved the pad token
            data_collator = DataCollatorForRanking(pad_token_id=-1, pad_to_multiple_of=args.pad_to_multiple_of)
            own_collator = True
        else:
            own_collator = False
        super().__init__(model, args, data_collator, *rest, **kwargs)
        if own_collator:
            self.data_collator.pad_token_id = self.processing_class.pad_token_id

    # -- data ---------------------------------------------------------------------------------------------------------
    def _prepare_dataset(self, dataset: Dataset | IterableDataset, processing_class, args, dataset_name: str):
        columns = set(dataset.column_names or next(iter(dataset)).keys())
        pretokenised = "completion_ids" in columns
        needed = {"completion_ids" if pretokenised else "completions", "ranking"}
        if not needed <= columns:
            raise ValueError(
                f"{dataset_name} dataset has columns {sorted(columns)}; RankingRewardTrainer needs `completions` (K "
                "answers per row) and `ranking` (tiers of completion indices, best first), plus `prompt` unless the "
                "completions are whole texts."
            )
        completions_key = "completion_ids" if pretokenised else "completions"
        if isinstance(dataset, Dataset):  # checked now; an IterableDataset is checked as it is read
            rows = zip(dataset[completions_key], dataset["ranking"], strict=True)
            for row, (completions, ranking) in enumerate(rows):
                check_ranking(ranking, len(completions), row)
        map_kwargs = {"num_proc": args.dataset_num_proc} if isinstance(dataset, Dataset) else {}
        with global_then_local_main_first():
            if not pretokenised:
                dataset = dataset.map(
                    _tokenize_row, fn_kwargs={"processing_class": processing_class}, with_indices=True,
                    remove_columns=["completions"], **map_kwargs,
                )
            dataset = _skip_tied_rows(dataset, dataset_name, map_kwargs)  # after the checks, which an iterable reads
            if args.max_length is not None:
                before = len(dataset) if isinstance(dataset, Dataset) else None
                dataset = dataset.filter(
                    lambda ex: all(len(ids) <= args.max_length for ids in ex["completion_ids"]), **map_kwargs
                )
                if before is not None and len(dataset) < before:
                    logger.warning(
                        "%s dataset: %d of %d rankings have a sequence longer than max_length=%d and were dropped "
                        "(TRL drops such pairs too); raise max_length to keep them.",
                        dataset_name, before - len(dataset), before, args.max_length,
                    )
        return dataset

    def _set_signature_columns_if_needed(self):
        if self._signature_columns is None:
            self._signature_columns = ["completion_ids", "ranking"]

    # -- loss ---------------------------------------------------------------------------------------------------------
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        mode = "train" if self.model.training else "eval"
        group, tier = inputs["group"], inputs["tier"]  # (N,) each
        outputs = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"], use_cache=False)
        rewards = outputs.logits.squeeze(-1)  # (N,)
        if getattr(self.args, "loss_type", "pairwise") == "plackett_luce":
            loss = plackett_luce_loss(rewards, group, tier)
        else:
            loss = ranking_pairwise_loss(rewards, group, tier)
        if self.args.center_rewards_coefficient is not None:
            loss = loss + self.args.center_rewards_coefficient * center_rewards_penalty(rewards, group, tier)
        with torch.no_grad():
            stats = pair_metrics(rewards, group, tier)
        self._record_metrics(mode, inputs["attention_mask"], outputs.logits, stats)
        return (loss, outputs) if return_outputs else loss

    def _record_metrics(self, mode: str, attention_mask: torch.Tensor, logits: torch.Tensor, stats: dict) -> None:
        """The metrics TRL's ``RewardTrainer.compute_loss`` records, under its names, into its ``_metrics``."""
        if mode == "train":
            tokens = self.accelerator.gather_for_metrics(attention_mask.sum()).sum().item()
            self._total_train_tokens += tokens // self._tp_size
        self._metrics[mode]["num_tokens"] = [self._total_train_tokens]
        with torch.no_grad():
            all_rewards = self.accelerator.gather(logits)
            self._metrics[mode]["min_reward"].append(all_rewards.min().item())
            self._metrics[mode]["mean_reward"].append(all_rewards.mean().item())
            self._metrics[mode]["max_reward"].append(all_rewards.max().item())
            for key in ("accuracy", "margin"):
                self._metrics[mode][key].append(self.accelerator.gather_for_metrics(stats[key].detach()).mean().item())


_MIXED = (
    "row {index}: `prompt` and `completions` must be all plain strings or all conversations (lists of "
    "{{'role', 'content'}} messages); this row mixes them."
)


def _skip_tied_rows(dataset, dataset_name: str, map_kwargs: dict):
    """Drop the rows whose answers are all tied (one tier: no pair), with one warning that counts them, as TRL drops
    pairs over ``max_length``; refuse a dataset with no row left. An IterableDataset is filtered as it is read."""
    if not isinstance(dataset, Dataset):
        return dataset.filter(implies_a_pair)
    before = len(dataset)
    dataset = dataset.filter(implies_a_pair, **map_kwargs)
    if len(dataset) == 0:
        raise ValueError(
            f"{dataset_name} dataset: all {before} rankings have a single tier (every answer tied), which implies no "
            "pair to train on. Rank the answers into two tiers or more (best first), e.g. [[0], [1, 2]]."
        )
    if len(dataset) < before:
        logger.warning(
            "%s dataset: %d of %d rankings have all answers tied (a single tier) and imply no pair; they were skipped.",
            dataset_name, before - len(dataset), before,
        )
    return dataset


def _tokenize_row(example: dict, index: int, processing_class) -> dict:
    """K token-id lists for one row, each prompt + completion, tokenised as TRL's RewardTrainer tokenises ``chosen``."""
    completions = example["completions"]
    check_ranking(example["ranking"], len(completions), index)  # again here for an IterableDataset, read lazily
    prompt = example.get("prompt")
    conversational = _is_messages(prompt) or _is_messages(completions[0])
    if prompt is None:
        prompt = [] if conversational else ""
    if conversational:
        if not all(_is_messages(x) for x in [*completions, *([prompt] if prompt else [])]):
            raise ValueError(_MIXED.format(index=index))
        tools = example.get("tools")
        tools = json.loads(tools) if isinstance(tools, str) else tools
        template_kwargs = {"tools": tools, **(example.get("chat_template_kwargs") or {})}
        ids = [_tokenize(processing_class, prompt + c, **template_kwargs)["input_ids"] for c in completions]
    else:  # plain text: TRL appends EOS to each answer that lacks it (the RM reads the score at the last token)
        if not all(isinstance(c, str) for c in completions) or not isinstance(prompt, str):
            raise ValueError(_MIXED.format(index=index))
        eos = processing_class.eos_token
        texts = [prompt + (c if c.endswith(eos) else c + eos) for c in completions]
        ids = [_tokenize(processing_class, text)["input_ids"] for text in texts]
    return {"completion_ids": ids}
