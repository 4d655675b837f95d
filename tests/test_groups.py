import math

import pytest
import torch

from trl_ext.groups import (
    GroupPool,
    concat_batches,
    describe_uninformative,
    informative_groups,
    moving_groups,
    process_rows,
    rows_of_groups,
)

nan = math.nan


def test_keep_mask_hand_computed():
    signal = torch.tensor(
        [
            1.0, 1.0, 1.0,  # solved: constant                    -> drop
            0.0, 1.0, 0.0,  # mixed                               -> keep
            nan, nan, nan,  # unscorable                          -> drop
            0.5, 0.5 + 1e-8, 0.5,  # varies below the tolerance   -> drop
            nan, 1.0, 0.0,  # two finite values that differ      -> keep
            nan, 2.0, nan,  # one finite value: nothing to compare -> drop
        ]
    )
    keep = informative_groups(signal, num_generations=3, tolerance=1e-6)
    assert keep.tolist() == [False, True, False, False, True, False]
    # a looser tolerance drops the 0/1 groups too
    assert not informative_groups(signal, 3, tolerance=1.0).any()
    assert rows_of_groups(keep, 3).tolist() == [False] * 3 + [True] * 3 + [False] * 6 + [True] * 3 + [False] * 3


def test_moving_groups_hand_computed():
    advantages = torch.tensor(
        [
            0.0, 0.0, 0.0,  # a total the penalty made constant -> all zero, drop
            0.5, -0.5, 0.0,  # moves                            -> keep
            1e-8, 0.0, -1e-8,  # float noise under the tolerance -> drop
            nan, nan, nan,  # nothing finite                     -> drop
        ]
    )
    assert moving_groups(advantages, 3, tolerance=1e-6).tolist() == [False, True, False, False]
    per_token = advantages.view(-1, 1).expand(-1, 4).clone()  # (rows, T): the same verdict
    assert moving_groups(per_token, 3, tolerance=1e-6).tolist() == [False, True, False, False]
    with pytest.raises(ValueError, match="multiple of num_generations"):
        moving_groups(torch.zeros(5), 3)


def test_keep_mask_rejects_bad_shape():
    with pytest.raises(ValueError, match="multiple of num_generations"):
        informative_groups(torch.zeros(5), num_generations=2)


def test_describe_uninformative():
    signal = torch.tensor([1.0, 1.0, 0.0, 0.0, 1.0, 1.0, 0.0, 1.0, nan, nan])
    keep = informative_groups(signal, 2)
    assert keep.tolist() == [False, False, False, True, False]
    assert describe_uninformative(signal, 2, keep) == (
        "2 all equal to 1, 1 all equal to 0, 1 with no finite value (the reward function returned None/NaN)"
    )


def test_process_rows():
    assert process_rows(8, 1, 2) == slice(4, 8)
    with pytest.raises(ValueError, match="evenly"):
        process_rows(6, 0, 4)


def _batch(n, width, start, with_old=True):
    b = {
        "prompt_ids": torch.full((n, 2), 7),
        "prompt_mask": torch.ones(n, 2, dtype=torch.long),
        "completion_ids": torch.arange(start, start + n).unsqueeze(1).repeat(1, width),
        "completion_mask": torch.ones(n, width, dtype=torch.long),
        "advantages": torch.arange(start, start + n, dtype=torch.float),
        "num_items_in_batch": torch.tensor(n * width),
    }
    if with_old:
        b["old_per_token_logps"] = torch.full((n, width), -1.0)
    return b


def test_concat_pads_each_key_on_its_side_and_marks_missing_keys():
    out = concat_batches([_batch(2, 3, 0), _batch(2, 1, 10, with_old=False)], pad_token_id=0)
    assert "num_items_in_batch" not in out
    assert out["completion_ids"].tolist() == [[0, 0, 0], [1, 1, 1], [10, 0, 0], [11, 0, 0]]
    assert out["completion_mask"].tolist() == [[1, 1, 1], [1, 1, 1], [1, 0, 0], [1, 0, 0]]
    assert out["advantages"].tolist() == [0, 1, 10, 11]
    old = out["old_per_token_logps"]
    assert old[:2].eq(-1).all()
    assert torch.isnan(old[2:, 0]).all() and old[2:, 1:].eq(0).all()  # NaN: not computed there (then padding)


def test_missing_per_token_key_takes_the_completion_width():
    # the batch without old log-probs is the wider one: its NaN rows must span its 4 completion tokens
    out = concat_batches([_batch(2, 2, 0), _batch(2, 4, 10, with_old=False)], pad_token_id=0)
    assert out["completion_ids"].shape == out["old_per_token_logps"].shape == (4, 4)
    assert out["old_per_token_logps"][:2].tolist() == [[-1, -1, 0, 0]] * 2
    assert torch.isnan(out["old_per_token_logps"][2:]).all()


def test_concat_rejects_unpoolable_keys():
    b = _batch(2, 1, 0)
    b["pixel_values"] = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="dynamic_sampling=False"):
        concat_batches([b], 0)


def test_pool_is_fifo_splits_chunks_and_drops_stale():
    pool = GroupPool(num_generations=2, pad_token_id=0)
    pool.add(_batch(4, 1, 0), step=0)  # groups {0,1}, {2,3}
    pool.add(_batch(6, 2, 10), step=1)  # groups {10,11}, {12,13}, {14,15}
    assert pool.num_groups == 5
    first = pool.take(3)
    assert first["advantages"].tolist() == [0, 1, 2, 3, 10, 11]
    assert first["completion_ids"].shape == (6, 2)
    assert pool.num_groups == 2
    assert pool.drop_stale(step=2, max_staleness=1) == 0
    assert pool.drop_stale(step=3, max_staleness=1) == 2 and pool.num_groups == 0
    with pytest.raises(ValueError, match="requested"):
        pool.take(1)


def _completion_logps(model, batch: dict) -> torch.Tensor:
    """Per-token log-probs of the completions, the way GRPOTrainer computes them: prompt + completion in one
    forward, the attention mask of both, no position ids. (B, T)"""
    ids = torch.cat([batch["prompt_ids"], batch["completion_ids"]], dim=1)
    mask = torch.cat([batch["prompt_mask"], batch["completion_mask"]], dim=1)
    T = batch["completion_ids"].size(1)
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask).logits[:, -T - 1:-1].float()
    return torch.log_softmax(logits, -1).gather(-1, batch["completion_ids"].unsqueeze(-1)).squeeze(-1)


def test_carried_rows_keep_their_log_probs_when_repadded_among_longer_prompts():
    """Surplus is scored (its behaviour log-probs stored) in the batch it was generated in, then pooled with rows
    whose prompts are longer, so it gets more left padding at loss time, and TRL passes no position ids. On a
    rotary (Llama-family, SmolLM2's) model the shift moves every position alike, so the log-probs of the real tokens
    are unchanged up to float rounding: the clipped ratio of a carried row does not see its re-padding."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                                         pad_token_id=0)).eval()

    def batch(prompt_len: int, completion_len: int, rows: int = 2) -> dict:
        prompt = torch.randint(1, 50, (rows, prompt_len))
        prompt_mask = torch.ones_like(prompt)
        prompt_mask[0, :1] = 0  # one row is already left-padded in its own batch
        prompt[0, :1] = 0
        completion = torch.randint(1, 50, (rows, completion_len))
        completion_mask = torch.ones_like(completion)
        completion_mask[1, -1] = 0  # and one ended early
        completion[1, -1] = 0
        return {"prompt_ids": prompt, "prompt_mask": prompt_mask, "completion_ids": completion,
                "completion_mask": completion_mask, "advantages": torch.ones(rows)}

    carried, fresh = batch(prompt_len=5, completion_len=6), batch(prompt_len=11, completion_len=4)
    stored = _completion_logps(model, carried)  # (2, 6), scored in its own batch
    pooled = concat_batches([carried, fresh], pad_token_id=0)
    assert pooled["prompt_ids"].shape == (4, 11)  # the carried rows got 6 more pad tokens on the left
    again = _completion_logps(model, pooled)[:2]  # (2, 6)
    real = carried["completion_mask"].bool()
    assert torch.allclose(again[real], stored[real], atol=1e-5)
