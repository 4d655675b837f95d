"""GAE and whitening against numbers worked out by hand (no model)."""

import pytest
import torch

from trl_ext.advantages import gae, whiten


def test_gae_gamma1_lam095_by_hand():
    # One completion of 3 tokens, score 1 at the last token (the RLHF case: γ = 1, λ = 0.95).
    #   t=2: δ = 1 + 0 − 0.3 = 0.7                      A = 0.7
    #   t=1: δ = 0 + 0.3 − 0.4 = −0.1                   A = −0.1 + 0.95·0.7   = 0.565
    #   t=0: δ = 0 + 0.4 − 0.5 = −0.1                   A = −0.1 + 0.95·0.565 = 0.43675
    rewards = torch.tensor([[0.0, 0.0, 1.0]])
    values = torch.tensor([[0.5, 0.4, 0.3]])
    mask = torch.ones(1, 3)
    adv, ret = gae(rewards, values, mask, gamma=1.0, lam=0.95)
    torch.testing.assert_close(adv, torch.tensor([[0.43675, 0.565, 0.7]]))
    torch.testing.assert_close(ret, torch.tensor([[0.93675, 0.965, 1.0]]))


def test_gae_padding_is_terminal_and_ignored():
    # Row 0 has 2 real tokens; whatever sits in the padded positions must not leak in.
    #   t=1: δ = 1.0 − 2.0 = −1.0                        A = −1.0
    #   t=0: δ = 0.5 + 0.9·2.0 − 1.0 = 1.3               A = 1.3 + 0.9·0.5·(−1.0) = 0.85
    rewards = torch.tensor([[0.5, 1.0, 9.0, 9.0], [0.0, 0.0, 0.0, 1.0]])
    values = torch.tensor([[1.0, 2.0, 7.0, 7.0], [0.0, 0.0, 0.0, 0.0]])
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]])
    adv, ret = gae(rewards, values, mask, gamma=0.9, lam=0.5)
    torch.testing.assert_close(adv[0], torch.tensor([0.85, -1.0, 0.0, 0.0]))
    torch.testing.assert_close(ret[0], torch.tensor([1.85, 1.0, 0.0, 0.0]))
    # Row 1, zero values: A_t = (γλ)^(3−t) · 1 = 0.45^(3−t)
    torch.testing.assert_close(adv[1], torch.tensor([0.45**3, 0.45**2, 0.45, 1.0]))


def test_gae_limits():
    torch.manual_seed(0)
    rewards, values = torch.randn(3, 5), torch.randn(3, 5)
    mask = torch.ones(3, 5)
    # λ = 1, γ = 1: Monte Carlo, A_t = Σ_{k≥t} r_k − V_t
    adv, ret = gae(rewards, values, mask, gamma=1.0, lam=1.0)
    mc = rewards.flip(1).cumsum(1).flip(1)
    torch.testing.assert_close(adv, mc - values)
    torch.testing.assert_close(ret, mc)
    # λ = 0: one-step TD error
    adv, _ = gae(rewards, values, mask, gamma=1.0, lam=0.0)
    next_v = torch.cat([values[:, 1:], torch.zeros(3, 1)], dim=1)
    torch.testing.assert_close(adv, rewards + next_v - values)


def test_gae_rejects_bad_input():
    x = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="gamma and lam"):
        gae(x, x, x, gamma=1.5, lam=0.95)
    with pytest.raises(ValueError, match=r"\(B, T\)"):
        gae(x, torch.zeros(2, 4), x)


def test_whiten_by_hand():
    x = torch.tensor([[2.0, 4.0, 6.0, 100.0]])
    mask = torch.tensor([[1, 1, 1, 0]])
    # mean 4, unbiased variance (4 + 0 + 4) / 2 = 4, std 2
    torch.testing.assert_close(whiten(x, mask), torch.tensor([[-1.0, 0.0, 1.0, 0.0]]), atol=1e-6, rtol=0)
    kept_mean = whiten(x, mask, shift_mean=False)
    torch.testing.assert_close(kept_mean, torch.tensor([[3.0, 4.0, 5.0, 0.0]]), atol=1e-6, rtol=0)
