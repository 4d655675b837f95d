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
