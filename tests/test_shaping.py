import math

import pytest
import torch

from trl_ext import DAPOConfig
from trl_ext.advantages import group_relative_advantages
from trl_ext.dapo.reward_columns import round_rewards, shaped_columns
from trl_ext.shaping import OverlongShaping, soft_overlong_penalty

nan = math.nan


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


def test_shaping_reads_completion_ids():
    shaping = OverlongShaping(max_length=10, buffer_length=4, penalty_factor=2.0)
    assert shaping([[1] * 8, [1] * 3]).tolist() == [-1.0, 0.0]
    assert OverlongShaping.from_config(DAPOConfig(output_dir="/tmp/x", max_completion_length=10, use_cpu=True)) == \
        OverlongShaping(10, 2, 1.0)  # the paper's L_cache = L_max // 5
    off = [dict(overlong_buffer_length=0), dict(overlong_penalty_factor=0.0)]
    assert all(OverlongShaping.from_config(DAPOConfig(output_dir="/tmp/x", use_cpu=True, **kw)) is None for kw in off)


def test_shaping_reaches_the_advantages_and_not_the_logged_reward():
    # G = 4, L_max = 6, L_cache = 2: the penalty is 0 up to 4 tokens, -0.5 at 5, -1 at 6
    lengths = [2, 5, 6, 6, 6, 6, 2, 2]
    accuracy = torch.tensor([[1.0], [1.0], [1.0], [1.0], [0.0], [1.0], [0.0], [1.0]])  # (N, F = 1)
    shaping = OverlongShaping(max_length=6, buffer_length=2)([[7] * n for n in lengths])
    rewards = round_rewards(accuracy, torch.ones(1), shaping, signal_index=None)
    assert rewards.total.tolist() == accuracy.squeeze(1).tolist()  # the logged reward: the function's own
    assert rewards.signal.tolist() == rewards.total.tolist()  # dynamic sampling never sees the shaping
    assert rewards.shaped_total.tolist() == [1.0, 0.5, 0.0, 0.0, -1.0, 0.0, 0.0, 1.0]
    got = group_relative_advantages(*shaped_columns(rewards, torch.ones(1)), num_generations=4)
    # group 1 (solved, but lengths differ) [1, .5, 0, 0]: mean .375, std sqrt(.6875 / 3)
    std1 = math.sqrt((0.625**2 + 0.125**2 + 2 * 0.375**2) / 3)
    # group 2 [-1, 0, 0, 1]: mean 0, std sqrt(2 / 3); without shaping it would be [0, 1, 0, 1]
    std2 = math.sqrt(2 / 3)
    expected = [x / (std1 + 1e-4) for x in (0.625, 0.125, -0.375, -0.375)] + [x / (std2 + 1e-4) for x in (-1, 0, 0, 1)]
    assert got.tolist() == pytest.approx(expected, abs=1e-6)


def test_shaping_cannot_score_an_unscored_completion():
    per_func = torch.tensor([[nan], [1.0]])  # the reward function returned None for the first completion
    rewards = round_rewards(per_func, torch.ones(1), torch.tensor([-1.0, -1.0]), signal_index=None)
    assert math.isnan(rewards.shaping[0]) and math.isnan(rewards.shaped_total[0]) and rewards.shaped_total[1] == 0.0
