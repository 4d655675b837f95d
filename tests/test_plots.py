"""Figures from log histories: which points and panels are drawn (the PNG content itself is matplotlib's)."""

from trl_ext.plots import gold_points, plot_gold_curves, plot_training_curves, training_series

PNG = b"\x89PNG\r\n\x1a\n"


def test_gold_points_one_per_step_in_step_order():
    history = [
        {"step": 2, "gold/reward": 0.5, "proxy/reward": 1.0},
        {"step": 0, "gold/reward": 0.2, "proxy/reward": 0.1},
        {"step": 2, "loss": 0.3},
        {"step": 2, "gold/reward": 0.6, "proxy/reward": 1.1},  # a resumed run logged step 2 again: the later one wins
    ]
    assert [(p["step"], p["gold/reward"]) for p in gold_points(history)] == [(0, 0.2), (2, 0.6)]


def test_training_series_skips_the_callback_and_the_summary():
    history = [
        {"step": 1, "loss": 0.5, "reward": 1.0, "epoch": 0.1},
        {"step": 1, "gold/reward": 0.2, "proxy/reward": 0.1},
        {"step": 2, "loss": 0.4, "reward": 2.0, "dynamic_sampling/kept_groups": 3},
        {"step": 2, "train_runtime": 9.0, "train_loss": 0.45},
    ]
    assert training_series(history) == {
        "loss": [(1, 0.5), (2, 0.4)], "reward": [(1, 1.0), (2, 2.0)], "dynamic_sampling/kept_groups": [(2, 3.0)],
    }


def test_figures_are_written_or_skipped(tmp_path):
    gold = [{"step": s, "gold/reward": g, "proxy/reward": p, "gold/sqrt_kl": k}
            for s, g, p, k in [(0, 0.2, 0.0, 0.0), (10, 0.4, 1.0, 0.5), (20, 0.3, 2.0, 0.9)]]
    assert plot_gold_curves(gold, tmp_path / "g.png").read_bytes()[:8] == PNG
    assert plot_gold_curves([{"step": 1, "loss": 1.0}], tmp_path / "none.png") is None
    train = [{"step": s, "loss": 1.0 / s, "kl": 0.1 * s, "clip_ratio/high_mean": 0.0} for s in (1, 2, 3)]
    assert plot_training_curves(train, tmp_path / "t.png").read_bytes()[:8] == PNG
    assert plot_training_curves([{"step": 1, "grad_norm": 1.0}], tmp_path / "none.png") is None
    assert not (tmp_path / "none.png").exists()
