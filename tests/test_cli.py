"""`trl-ext pipeline` as a user runs it: a real Ctrl-C (SIGINT) to the process, then the same command again."""

import json
import signal
import subprocess
import sys
import time

import pytest

# the first checkpoint comes early; the 35 steps after it leave the parent seconds to interrupt
SFT = {"max_steps": 40, "save_steps": 5, "save_total_limit": 2, "per_device_train_batch_size": 8}


def command(run_dir):
    return [
        sys.executable, "-m", "trl_ext.cli", "pipeline", "--output_dir", str(run_dir), "--until", "sft",
        "--num_sft_examples", "64", "--sft", json.dumps(SFT),
    ]


@pytest.mark.slow
def test_sigint_saves_exits_130_with_the_resume_message_and_the_same_command_resumes(tmp_path):
    """Other settings cannot resume the cut-off stage; the same command can."""
    run_dir = tmp_path / "run"
    proc = subprocess.Popen(command(run_dir), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not list((run_dir / "sft" / "checkpoints").glob("checkpoint-*")):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "no checkpoint within 120 s"
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted; checkpoint saved at" in err and "Run the same command again to resume." in err
    assert "Traceback" not in err
    saved = int(err.split("checkpoint-")[-1].split(".")[0])
    assert 1 <= saved < SFT["max_steps"]
    assert not (run_dir / "sft" / "stage.json").exists()

    changed = subprocess.run(command(run_dir) + ["--seed", "1"], capture_output=True, text=True, timeout=300)
    assert changed.returncode == 2 and "was cut off while running with other settings (changed: ['seed'])" in changed.stderr

    done = subprocess.run(command(run_dir), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    metrics = json.loads((run_dir / "sft" / "stage.json").read_text())["metrics"]
    assert metrics["resumed_from"].endswith(f"checkpoint-{saved}") and metrics["global_step"] == SFT["max_steps"]
    assert not (run_dir / "sft" / "stage.pending.json").exists()
