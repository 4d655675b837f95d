import math

import pytest
import torch

from trl_ext.advantages import group_relative_advantages, leave_one_out_advantages, weighted_reward

nan = math.nan


def test_leave_one_out_hand_computed():
    # group 1: [1, 0, 0, 1] -> 1 - 1/3, 0 - 2/3, 0 - 2/3, 1 - 1/3
    # group 2: [3, 5, 1, 3] -> 3 - 3, 5 - 7/3, 1 - 11/3, 3 - 3
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 3.0, 5.0, 1.0, 3.0])
    got = leave_one_out_advantages(rewards, 4)
    expected = [2 / 3, -2 / 3, -2 / 3, 2 / 3, 0.0, 8 / 3, -8 / 3, 0.0]
    assert got.tolist() == pytest.approx(expected)
    # the identity A_i = k/(k-1) (r_i - mean)
    grouped = rewards.view(2, 4)
    assert got.view(2, 4) == pytest.approx(4 / 3 * (grouped - grouped.mean(1, keepdim=True)))


def test_leave_one_out_with_unscorable_rows():
    # [2, nan, 0]: baselines over scorable siblings only -> 2 - 0, 0, 0 - 2; [nan, 4, nan]: nobody to compare -> 0
    got = leave_one_out_advantages(torch.tensor([2.0, nan, 0.0, nan, 4.0, nan]), 3)
    assert got.tolist() == [2.0, 0.0, -2.0, 0.0, 0.0, 0.0]


def test_leave_one_out_with_one_generation_has_no_baseline_and_gives_zero():
    # num_generations_eval=1: each completion is alone in its group, nobody to compare with (trl.RLOOTrainer: 0)
    assert leave_one_out_advantages(torch.tensor([3.0, -1.0, nan]), 1).tolist() == [0.0, 0.0, 0.0]
    with pytest.raises(ValueError, match="num_generations >= 1"):
        leave_one_out_advantages(torch.zeros(3), 0)


def test_group_relative_hand_computed():
    # one function, G = 2: groups [1, 3] and [2, 2]; std (n - 1) of [1, 3] is sqrt(2), of [2, 2] is 0
    per_func, ones = torch.tensor([[1.0], [3.0], [2.0], [2.0]]), torch.ones(1)
    got = group_relative_advantages(per_func, ones, 2)
    assert got.tolist() == pytest.approx([-1 / (2**0.5 + 1e-4), 1 / (2**0.5 + 1e-4), 0.0, 0.0])
    assert group_relative_advantages(per_func, ones, 2, scale_rewards="none").tolist() == [-1.0, 1.0, 0.0, 0.0]
    # batch std of [1, 3, 2, 2]: sqrt(2 / 3)
    batch = group_relative_advantages(per_func, ones, 2, scale_rewards="batch")
    assert batch.tolist() == pytest.approx([-1 / ((2 / 3) ** 0.5 + 1e-4), 1 / ((2 / 3) ** 0.5 + 1e-4), 0.0, 0.0])
    # G = 1 (evaluation on one completion per prompt): no group to compare with; an unscorable row gets 0
    assert group_relative_advantages(per_func, ones, 1).tolist() == [0.0] * 4
    assert group_relative_advantages(torch.tensor([[nan], [1.0]]), ones, 2).tolist() == [0.0, 0.0]


def test_weighted_reward_by_hand():
    per_func = torch.tensor([[1.0, 2.0], [nan, 3.0], [nan, nan], [0.5, nan]])
    total = weighted_reward(per_func, torch.tensor([2.0, -1.0]))
    # 2·1 − 2 = 0; the None term is absent: −3; every function None: unscorable (NaN); 2·0.5 = 1
    assert total[[0, 1, 3]].tolist() == [0.0, -3.0, 1.0]
    assert math.isnan(total[2].item())
