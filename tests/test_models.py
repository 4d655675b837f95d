import bitsandbytes as bnb
import pytest
import torch
from trl import ModelConfig, SFTConfig, SFTTrainer, get_peft_config

from trl_ext.models import check_model_path, load_causal_lm, load_sequence_classifier, load_tokenizer
from trl_ext.toy import AdditionTask, ensure_tiny_checkpoint


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return str(ensure_tiny_checkpoint(tmp_path_factory.mktemp("tiny") / "model"))


def test_4bit_lora_training_step_on_cpu(base, tmp_path):
    model_args = ModelConfig(
        model_name_or_path=base, load_in_4bit=True, use_peft=True, lora_r=8, lora_target_modules="all-linear"
    )
    model = load_causal_lm(model_args)
    linear4 = [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert linear4 and all(m.support_avx512bf16_for_cpu is False for m in linear4)
    tokenizer = load_tokenizer(model_args)
    args = SFTConfig(
        output_dir=str(tmp_path), max_steps=3, per_device_train_batch_size=8, learning_rate=1e-2, report_to=[],
        save_strategy="no", use_cpu=True, logging_steps=1, max_length=32,
    )
    trainer = SFTTrainer(
        model=model, args=args, train_dataset=AdditionTask().sft_dataset(24, seed=0), processing_class=tokenizer,
        peft_config=get_peft_config(model_args),
    )
    lora = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if "lora_B" in n}
    frozen = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.dtype == torch.uint8}
    assert lora and frozen
    # RL alternates eval-mode generation and training: an eval forward in between must not break the next step
    trainer.model.eval()
    with torch.no_grad():
        trainer.model(**tokenizer(["<|user|>1+2<|end|><|assistant|>"], return_tensors="pt", add_special_tokens=False))
    trainer.model.train()
    trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert len(losses) == 3 and all(torch.isfinite(torch.tensor(losses)))
    after = dict(trainer.model.named_parameters())
    assert any(not torch.equal(after[n], p) for n, p in lora.items())  # LoRA moved (lora_B starts at zero)
    assert all(torch.equal(after[n], p) for n, p in frozen.items())  # the 4-bit base did not


def test_sequence_classifier_has_one_label_and_a_pad_token(base):
    rm = load_sequence_classifier(ModelConfig(model_name_or_path=base), num_labels=1)
    assert rm.config.num_labels == 1 and rm.config.pad_token_id is not None


def test_missing_model_paths_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"model_name_or_path='\./nope' does not exist"):
        check_model_path("./nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="holds no config.json"):
        check_model_path(str(tmp_path / "empty"))
    with pytest.raises(ValueError, match="model_name_or_path is empty"):
        check_model_path("")
    assert check_model_path("Qwen/Qwen2.5-0.5B") == "Qwen/Qwen2.5-0.5B"  # a hub id is passed through unchanged


# ---- bitsandbytes' import-time notice --------------------------------------------------------------------------------
NOTICE = "Failed to load CPU gemm_4bit_forward"


def _output(*args) -> str:
    """stdout and stderr, in order, of ``python *args`` run from the repository root (so it imports this checkout)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    done = subprocess.run([sys.executable, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=300, cwd=Path(__file__).resolve().parents[1], env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stdout[-2000:]
    return done.stdout


@pytest.mark.slow
@pytest.mark.skipif(not bnb.functional.has_avx512bf16(), reason="bitsandbytes logs the notice only on AVX512-BF16 CPUs")
def test_bitsandbytes_kernel_notice_appears_only_once_4bit_is_used(base):
    # transformers imports peft, which imports bitsandbytes: importing trl_ext cannot avoid it, only hold the notice
    assert NOTICE in _output("-c", "import bitsandbytes")  # the control: bitsandbytes alone logs it on this CPU
    assert NOTICE not in _output("-m", "trl_ext.cli", "--help")
    script = ("import sys, trl_ext; print('IMPORTED', file=sys.stderr, flush=True); "
              "from trl import ModelConfig; from trl_ext.models import load_causal_lm; "
              f"load_causal_lm(ModelConfig(model_name_or_path={base!r}, load_in_4bit=True)); "
              f"load_causal_lm(ModelConfig(model_name_or_path={base!r}, load_in_4bit=True))")
    before, after = _output("-c", script).split("IMPORTED")
    assert NOTICE not in before  # import trl_ext: held back
    assert after.count(NOTICE) == 1  # 4-bit in use: logged after all, once for two 4-bit models
