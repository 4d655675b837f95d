import math

import pytest
import torch

from trl_ext.shaping import OverlongPenalty, soft_overlong_penalty


def test_soft_overlong_penalty_hand_computed():
    # L_max = 10, L_cache = 4: free up to 6 tokens, then -(|y| - 6) / 4, saturating at -1 beyond 10
    got = soft_overlong_penalty([0, 5, 6, 7, 8, 9, 10, 12], max_length=10, buffer_length=4)
    assert got.tolist() == [0.0, 0.0, 0.0, -0.25, -0.5, -0.75, -1.0, -1.0]


def test_penalty_factor_scales_and_zero_buffer_disables():
    got = soft_overlong_penalty(torch.tensor([7, 10]), max_length=10, buffer_length=4, penalty_factor=0.5)
    assert got.tolist() == [-0.125, -0.5]
    assert soft_overlong_penalty([3, 10, 11], max_length=10, buffer_length=0).tolist() == [0.0, 0.0, 0.0]


def test_buffer_equal_to_max_is_linear_from_zero():
    got = soft_overlong_penalty([0, 2, 8], max_length=8, buffer_length=8)
    assert got.tolist() == [0.0, -0.25, -1.0]


@pytest.mark.parametrize("buffer", [-1, 11])
def test_invalid_buffer(buffer):
    with pytest.raises(ValueError, match="buffer_length"):
        soft_overlong_penalty([1], max_length=10, buffer_length=buffer)


def test_reward_function_reads_completion_ids():
    fn = OverlongPenalty(max_length=10, buffer_length=4, penalty_factor=2.0)
    assert fn.__name__ == "overlong_penalty"
    out = fn(prompts=["a", "b"], completions=["x", "y"], completion_ids=[[1] * 8, [1] * 3])
    assert out == [-1.0, 0.0] and not any(math.isnan(v) for v in out)
