"""Resume after kill -9: the continuation of a seeded run is the uninterrupted run, bit for bit (same machine, same
number of threads). Killed runs run in a subprocess (tests/resume_worker.py); the rest in this process."""

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import TrainerCallback

from trl_ext.pipeline import PipelineConfig, run_pipeline
from trl_ext.resume import newest_complete_checkpoint

from test_pipeline import SMALL as _SMALL

# The RM of TRL's pairwise route: DAPO's surplus test below needs an RM under which some groups are uninformative,
# and the tiny default (48 rankings, one RM step with rm_loss: ranking) gives none. The ranking route is tested in
# test_pipeline.py and test_ranking.py; what is tested here is resuming RL.
SMALL = {**_SMALL, "rm_loss": "pairwise"}
WORKER = Path(__file__).with_name("resume_worker.py")
EARLIER = ("base", "sft", "labels", "rm")
# steps_per_generation=2: each generated batch trains two steps, and checkpoint-3 falls inside such a block
GRPO = {"max_steps": 6, "save_steps": 3, "logging_steps": 1, "per_device_train_batch_size": 8, "num_generations": 4,
        "steps_per_generation": 2}
# a high tolerance makes some RM-scored groups uninformative, so refills happen and surplus is carried
DAPO = {"max_steps": 6, "save_steps": 2, "logging_steps": 1, "per_device_train_batch_size": 8, "num_generations": 4,
        "dynamic_sampling_tolerance": 0.6, "dynamic_sampling_on_cap": "train_on_kept"}
PPO = {"max_steps": 4, "save_steps": 2, "logging_steps": 1, "per_device_train_batch_size": 8, "num_generations": 4}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The killed worker and the in-process runs must use the same number of threads to agree bit for bit; one thread
    is also the fastest for models this small, and keeps this module quick on a busy 2-core machine."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def stages(tmp_path_factory):
    """A run folder with complete SFT, labels and RM stages; each test copies it (run folders are movable)."""
    cfg = PipelineConfig(**{**SMALL, "output_dir": str(tmp_path_factory.mktemp("resume") / "run"), "until": "rm"})
    run_pipeline(cfg)
    return Path(cfg.output_dir)


def rl_config(stages, folder, algorithm, rl) -> PipelineConfig:
    for stage in EARLIER:
        shutil.copytree(stages / stage, folder / stage)
    return PipelineConfig(**{**SMALL, "output_dir": str(folder), "until": "rl", "algorithm": algorithm, "rl": rl})


def run_worker(cfg: PipelineConfig, *kill) -> subprocess.CompletedProcess:
    path = Path(cfg.output_dir).with_suffix(".json")
    path.write_text(json.dumps(asdict(cfg)))
    env = {**os.environ, "PYTHONPATH": str(WORKER.parent.parent), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, str(WORKER), str(path), *kill], env=env, capture_output=True, text=True,
                          timeout=900)


def weights(run) -> dict:
    return load_file(Path(run) / "rl" / "model" / "model.safetensors")


def logged(run) -> list[dict]:
    """Per-step logged metrics of the rl stage, timings left out."""
    last = newest_complete_checkpoint(Path(run) / "rl" / "checkpoints")
    history = json.loads((Path(last) / "trainer_state.json").read_text())["log_history"]
    return [{k: v for k, v in h.items() if "time" not in k and "per_second" not in k} for h in history]


def fingerprints(run) -> dict:
    return {s: ((Path(run) / s / "stage.json").read_text(), (Path(run) / s / "stage.json").stat().st_mtime_ns)
            for s in EARLIER[1:]}


def assert_same_run(a, b):
    wa, wb = weights(a), weights(b)
    assert all(torch.equal(wa[k], wb[k]) for k in wa), max((wa[k] - wb[k]).abs().max().item() for k in wa)
    assert logged(a) == logged(b)
    ma, mb = (json.loads((Path(r) / "rl" / "stage.json").read_text())["metrics"] for r in (a, b))
    assert mb["resumed_from"] is not None and ma["resumed_from"] is None
    assert {k: v for k, v in ma.items() if k != "resumed_from"} == {k: v for k, v in mb.items() if k != "resumed_from"}


@pytest.fixture(scope="module")
def uninterrupted_grpo(stages, tmp_path_factory):
    cfg = rl_config(stages, tmp_path_factory.mktemp("grpo") / "run", "grpo", GRPO)
    run_pipeline(cfg)
    return cfg.output_dir


@pytest.mark.slow
def test_kill_9_during_rl_then_rerun_continues_as_if_never_killed(stages, uninterrupted_grpo, tmp_path):
    cfg = rl_config(stages, tmp_path / "run", "grpo", GRPO)
    before = fingerprints(cfg.output_dir)
    killed = run_worker(cfg, "--kill-at-step", "5")  # checkpoint-3 was saved, steps 4 and 5 are lost
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    checkpoints = tmp_path / "run" / "rl" / "checkpoints"
    assert newest_complete_checkpoint(checkpoints) == str(checkpoints / "checkpoint-3")
    assert not (tmp_path / "run" / "rl" / "stage.json").exists()

    run_pipeline(cfg)  # the same command again, without the killer
    info = json.loads((tmp_path / "run" / "rl" / "stage.json").read_text())["metrics"]
    assert info["resumed_from"].endswith("checkpoint-3") and info["global_step"] == 6
    assert fingerprints(cfg.output_dir) == before  # finished stages are neither redone nor rewritten
    assert_same_run(uninterrupted_grpo, cfg.output_dir)


@pytest.mark.slow
def test_kill_9_while_saving_a_checkpoint_resumes_from_the_previous_one(stages, uninterrupted_grpo, tmp_path, caplog):
    cfg = rl_config(stages, tmp_path / "run", "grpo", GRPO)
    killed = run_worker(cfg, "--kill-in-save", "6")  # checkpoint-6 gets its weights, not its optimizer or state
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    half = tmp_path / "run" / "rl" / "checkpoints" / "checkpoint-6"
    assert (half / "model.safetensors").exists() and not (half / "trainer_state.json").exists()

    with caplog.at_level(logging.WARNING, logger="trl_ext.resume"):
        run_pipeline(cfg)
    assert f"skipping incomplete checkpoint {half} (missing: trainer_state.json)" in caplog.text
    info = json.loads((tmp_path / "run" / "rl" / "stage.json").read_text())["metrics"]
    assert info["resumed_from"].endswith("checkpoint-3") and info["global_step"] == 6
    assert_same_run(uninterrupted_grpo, cfg.output_dir)


class StopAfterSave(TrainerCallback):
    def __init__(self, step):
        self.step = step

    def on_save(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            raise KeyboardInterrupt(f"cut off after the checkpoint of step {self.step}")


@pytest.mark.slow
def test_dapo_surplus_is_saved_with_the_checkpoint_and_restored(stages, tmp_path, caplog):
    uninterrupted = rl_config(stages, tmp_path / "a", "dapo", DAPO)
    run_pipeline(uninterrupted)
    cfg = rl_config(stages, tmp_path / "b", "dapo", DAPO)
    with pytest.raises(KeyboardInterrupt):
        run_pipeline(cfg, callbacks=[StopAfterSave(4)])
    state = torch.load(tmp_path / "b/rl/checkpoints/checkpoint-4/trl_ext_state_0.pt", weights_only=True)
    surplus = sum(chunk["num_groups"] for chunk in state["dynamic_sampling"]["pool"])
    assert surplus > 0  # otherwise this test would show nothing

    with caplog.at_level(logging.INFO, logger="trl_ext.dapo"):
        run_pipeline(cfg)
    assert f"dynamic sampling: {surplus} surplus groups restored" in caplog.text
    step5 = [h for h in logged(cfg.output_dir) if h["step"] == 5][0]
    assert step5["dynamic_sampling/carried_in_groups"] == surplus
    assert_same_run(uninterrupted.output_dir, cfg.output_dir)


@pytest.mark.slow
def test_ppo_resumes_its_critic_and_matches_an_uninterrupted_run(stages, tmp_path):
    uninterrupted = rl_config(stages, tmp_path / "a", "ppo", PPO)
    run_pipeline(uninterrupted)
    cfg = rl_config(stages, tmp_path / "b", "ppo", PPO)
    with pytest.raises(KeyboardInterrupt):
        run_pipeline(cfg, callbacks=[StopAfterSave(2)])  # inside a generated batch: PPO trains it for 4 steps
    run_pipeline(cfg)
    assert_same_run(uninterrupted.output_dir, cfg.output_dir)


def _checkpoint(folder: Path, step: int, *, state="{}", weights=True, ranks=None) -> Path:
    path = folder / f"checkpoint-{step}"
    path.mkdir(parents=True)
    if state is not None:
        (path / "trainer_state.json").write_text(state)
    if weights:
        (path / "model.safetensors").write_bytes(b"weights")
    for rank in ranks or ():
        (path / f"rng_state_{rank}.pth").write_bytes(b"rng")
    return path


def test_newest_complete_checkpoint_skips_and_removes_half_written_ones(tmp_path, caplog):
    good = _checkpoint(tmp_path, 20, ranks=[0, 1])
    _checkpoint(tmp_path, 10, ranks=[0, 1])
    no_state = _checkpoint(tmp_path, 30, state=None, ranks=[0, 1])
    truncated = _checkpoint(tmp_path, 40, state='{"global_step": 4', ranks=[0, 1])
    no_weights = _checkpoint(tmp_path, 50, weights=False, ranks=[0, 1])
    one_rank = _checkpoint(tmp_path, 60, ranks=[0])
    (tmp_path / "checkpoint-70").write_text("a file, not a checkpoint")

    assert newest_complete_checkpoint(tmp_path, world_size=1) == str(one_rank)
    with caplog.at_level(logging.WARNING, logger="trl_ext.resume"):
        assert newest_complete_checkpoint(tmp_path, world_size=2, remove_incomplete=True) == str(good)
    assert "missing: rng_state_1.pth" in caplog.text and "missing: model weights" in caplog.text
    assert "missing: trainer_state.json" in caplog.text
    assert not any(p.exists() for p in (no_state, truncated, no_weights, one_rank))
    assert (tmp_path / "checkpoint-10").is_dir() and good.is_dir()
    assert newest_complete_checkpoint(tmp_path / "nothing") is None


def prompt_length(prompts, completions, **kwargs):
    return [float(len(p)) for p in prompts]


def test_reward_normalisation_statistics_resume_with_the_run(tmp_path):
    """RewardAdapter(normalize=True) keeps running mean/std; a resumed run continues them instead of starting afresh.

    Four prompts of lengths 1..4, two completions each, two prompts per step: the two steps see every prompt once,
    so the statistics after step 2 are those of {1,1,2,2,3,3,4,4}: count 8, mean 2.5, sum of squares about it 10."""
    from datasets import Dataset
    from trl import GRPOConfig

    from trl_ext import RewardAdapter
    from trl_ext.resume import ResumableGRPOTrainer
    from trl_ext.toy import ensure_tiny_checkpoint

    base = str(ensure_tiny_checkpoint())
    data = Dataset.from_dict({"prompt": ["1", "22", "333", "4444"]})

    def run(resume_from=None):
        reward = RewardAdapter.from_function(prompt_length, normalize=True)
        args = GRPOConfig(output_dir=str(tmp_path / "out"), max_steps=2, save_steps=1, per_device_train_batch_size=4,
                          num_generations=2, max_completion_length=2, report_to=[], use_cpu=True, bf16=False,
                          disable_tqdm=True, seed=0)
        trainer = ResumableGRPOTrainer(model=base, reward_funcs=[reward], args=args, train_dataset=data)
        trainer.train(resume_from_checkpoint=resume_from)
        return reward.norm

    whole = run()
    assert (whole.count, whole.mean) == (8, 2.5) and whole.m2 == pytest.approx(10.0)
    saved = torch.load(tmp_path / "out" / "checkpoint-1" / "trl_ext_state_0.pt", weights_only=True)
    assert saved["reward_funcs"][0]["state"]["norm"]["count"] == 4  # step 1: two prompts x two completions
    resumed = run(resume_from=str(tmp_path / "out" / "checkpoint-1"))
    assert (resumed.count, resumed.mean, resumed.m2) == (whole.count, whole.mean, whole.m2)
