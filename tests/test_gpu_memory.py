"""benchmarks/gpu_memory.py, the GPU kit: its report's arithmetic (hand-computed), the committed "not measured" table,
and a ``--smoke`` run on CPU (tiny shapes of every architecture, every trainer and setting) so the kit cannot rot
between GPU loans."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

import gpu_memory  # noqa: E402
import gpu_report  # noqa: E402
import gpu_shapes  # noqa: E402

GPU_META = {"mode": "gpu", "env": {"context_mib": 500.0}, "cap_gib": 25.0}


def test_a_card_fits_when_reserved_plus_context_is_at_most_its_size():
    ok = {"status": "ok"}
    assert gpu_report.card({**ok, "peak_reserved_mib": 8192 - 500}, GPU_META) == "8 GB"  # exactly 8 GiB
    assert gpu_report.card({**ok, "peak_reserved_mib": 8192 - 499}, GPU_META) == "12 GB"
    assert gpu_report.card({**ok, "peak_reserved_mib": 24 * 1024}, GPU_META) == "> 24 GB"
    assert gpu_report.card({"status": "oom"}, GPU_META) == "> 24 GB (OOM at the 25 GiB cap)"
    assert gpu_report.card({"status": "skipped"}, GPU_META) == "skipped"


def test_step_time_is_the_median_after_the_warm_up_step_and_the_ratios_divide_like_runs():
    runs = [
        {"kind": "train", "role": "ratio", "pair": 0, "arch": "a", "setting": "nf4_lora", "trainer": "dapo_off",
         "status": "ok", "step_s": [9.0, 1.02, 1.06, 1.04], "peak_alloc_mib": 1300.0},
        {"kind": "train", "role": "ratio", "pair": 0, "arch": "a", "setting": "nf4_lora", "trainer": "grpo",
         "status": "ok", "step_s": [7.0, 1.0, 1.0, 1.0], "peak_alloc_mib": 1000.0},
        {"kind": "train", "role": "fit", "arch": "a", "setting": "nf4_lora", "trainer": "ppo_shared",
         "status": "ok", "step_s": [2.0], "peak_alloc_mib": 1250.0},
        {"kind": "score", "n": 64, "method": "adapter_bs16", "status": "ok", "peak_mib": 100.0},
        {"kind": "score", "n": 64, "method": "trl_one_shot", "status": "ok", "peak_mib": 400.0},
        {"kind": "score", "n": 1024, "method": "adapter_bs16", "status": "ok", "peak_mib": 128.0},
        {"kind": "score", "n": 1024, "method": "trl_one_shot", "status": "oom"},
    ]
    assert gpu_report.step_time(runs[2]) == 2.0  # one step: that step
    out = gpu_report.ratios(runs, GPU_META)
    assert out["dapo_off_over_grpo"][0]["ratio"] == pytest.approx(1.04)
    # ppo_shared has a fit run, grpo only the ratio run of the same cell: the table uses it
    assert [p["ratio"] for p in out["ppo_shared_over_grpo"] if p["setting"] == "nf4_lora"] == [pytest.approx(1.25)]
    by_n = {p["n"]: p for p in out["adapter_over_trl"]}
    assert by_n[64]["ratio"] == pytest.approx(0.25)
    assert by_n[1024]["ratio"] is None and by_n[1024]["ratio_below"] == pytest.approx(128 / (25 * 1024))


def test_prompts_and_pairs_have_the_exact_token_lengths_the_settings_name():
    tok = gpu_shapes.build_tokenizer(vocab_size=300, max_length=64)
    assert len(tok) == 300
    prompt = gpu_shapes.prompt_dataset(tok, 2, prompt_tokens=12)[0]["prompt"]
    ids = tok.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"]
    assert len(ids) == 12
    pair = gpu_shapes.preference_dataset(tok, 1, length=40)[0]
    for side in ("chosen", "rejected"):
        assert len(tok.apply_chat_template(pair[side], tokenize=True, return_dict=True)["input_ids"]) == 40
    assert tok.decode(tok("w7 w8 w299")["input_ids"]) == "w7 w8 w299"  # completions round-trip through the RM


def test_committed_fit_table_is_the_dry_run_of_the_current_plan(tmp_path):
    """benchmarks/results/gpu_memory.md, while "not measured", must list what the kit runs now."""
    if "**Not measured" not in (ROOT / "benchmarks" / "results" / "gpu_memory.md").read_text():
        pytest.skip("a measured fit table is committed: it records the plan of the commit that measured it")
    gpu_memory.main(["--dry_run", "--not_measured", "no GPU lent to this task", "--results_dir", str(tmp_path)])
    fresh, committed = ([line for line in (p / "gpu_memory.md").read_text().splitlines()
                         if not line.startswith("Written by")] for p in (tmp_path, ROOT / "benchmarks" / "results"))
    assert fresh == committed, "regenerate it: python benchmarks/gpu_memory.py --dry_run --not_measured '...'"


@pytest.mark.slow
def test_smoke_run_writes_every_trainer_and_setting_with_measured_numbers(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "TQDM_DISABLE": "1"}
    proc = subprocess.run(
        [sys.executable, "benchmarks/gpu_memory.py", "--smoke", "--results_dir", str(tmp_path), "--work_dir",
         str(tmp_path / "work")], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    md = (tmp_path / "gpu_memory.md").read_text()
    assert (tmp_path / "gpu_memory.png").stat().st_size > 0
    data = json.loads((tmp_path / "gpu_memory.json").read_text())
    assert data["meta"]["mode"] == "smoke" and "process RSS" in md
    runs = {r["id"]: r for r in data["runs"]}
    settings = gpu_shapes.recipe_settings("qwen2.5-1.5b", "grpo", smoke=True)["rl"]
    # one generation round per step: per_device_train_batch_size completions of max_completion_length tokens each
    tokens_per_step = settings["per_device_train_batch_size"] * settings["max_completion_length"]
    for arch in gpu_shapes.ARCHS:
        for setting in gpu_shapes.SETTINGS:
            for trainer in gpu_memory.TRAINERS:
                r = gpu_report.fit_row(data["runs"], arch, setting, trainer)
                assert r is not None and r["status"] == "ok", (arch, setting, trainer, r and r.get("traceback"))
                assert r["peak_rss_mib"] > 0 and all(s > 0 for s in r["step_s"]) and r["trainable_params_m"] > 0
                assert len(r["step_s"]) == r["steps"]
                if trainer == "rm":
                    assert r["gen_tokens"] == 0
                elif trainer == "dapo":  # dynamic sampling may refill: whole generation rounds
                    assert r["gen_tokens"] >= tokens_per_step and r["gen_tokens"] % tokens_per_step == 0
                else:  # every completion ran to max_completion_length (min_new_tokens)
                    assert r["gen_tokens"] == tokens_per_step * r["steps"], (arch, setting, trainer)
                assert f"| {arch} | {trainer} |" in md
    ratio = data["ratios"]
    assert ratio["dapo_off_over_grpo"][0]["ratio"] > 0
    assert {p["arch"] for p in ratio["ppo_shared_over_grpo"] if p["ratio"]} == set(gpu_shapes.ARCHS)
    scores = [r for r in runs.values() if r["kind"] == "score"]
    assert {(r["method"], r["n"]) for r in scores} == {(m, n) for m in gpu_memory.SCORE_METHODS for n in (8, 32)}
    assert all(r["status"] == "ok" and r["time_s"] > 0 and r["peak_mib"] >= 0 for r in scores)
