"""Model cards name the method that ran, cite its paper, name trl_ext, and never link a local path as [None]."""

import pytest
from transformers import AutoModelForCausalLM

import trl_ext
from trl_ext import DAPOConfig, DAPOTrainer, PPOConfig, PPOTrainer, RLOOConfig, RLOOTrainer
from trl_ext.toy import AdditionTask


def zero(prompts, **kwargs):
    return [0.0] * len(prompts)


@pytest.mark.parametrize(
    "trainer_cls, config_cls, method, papers",
    [
        (DAPOTrainer, DAPOConfig, "DAPO", ["2503.14476"]),
        (RLOOTrainer, RLOOConfig, "RLOO", ["2402.14740"]),
        (PPOTrainer, PPOConfig, "PPO", ["1707.06347", "2203.02155"]),
    ],
)
def test_card_names_the_method_its_paper_and_trl_ext(tmp_path, ckpt, tokenizer, trainer_cls, config_cls, method,
                                                    papers):
    args = config_cls(output_dir=str(tmp_path), per_device_train_batch_size=4, num_generations=2, report_to="none",
                      use_cpu=True, bf16=False)
    t = trainer_cls(AutoModelForCausalLM.from_pretrained(ckpt), zero, args=args,
                    train_dataset=AdditionTask().prompt_dataset(8, seed=0), processing_class=tokenizer)
    t.create_model_card(model_name="my-model")
    card = (tmp_path / "README.md").read_text()
    assert f"This model was trained with {method}, a method introduced in" in card
    assert f"trained with {method} from trl_ext {trl_ext.__version__}" in card
    assert f"- trl_ext: {trl_ext.__version__}" in card
    for paper in papers:
        assert f"https://huggingface.co/papers/{paper}" in card
    assert f"Cite {method} as:\n\n```bibtex\n@" in card
    assert "GRPO" not in card and "DeepSeekMath" not in card and "2402.03300" not in card
    assert "[None]" not in card and "huggingface.co/None" not in card
    assert f"fine-tuned from a local checkpoint (`{ckpt.name}`)" in card
    assert f"- {method.lower()}" in card and "- trl_ext" in card  # TRL's metadata (tags) kept

    t.model.config._name_or_path = "Qwen/Qwen3-0.6B"  # a hub id is linked as TRL does
    t.create_model_card(model_name="my-model")
    card = (tmp_path / "README.md").read_text()
    assert "fine-tuned version of [Qwen/Qwen3-0.6B](https://huggingface.co/Qwen/Qwen3-0.6B)" in card
    assert "base_model: Qwen/Qwen3-0.6B" in card
