"""Datasets handed straight to a trainer are checked at construction (trl_ext.checks), for every trainer."""

import pytest
from datasets import Dataset, IterableDataset
from transformers import AutoModelForCausalLM

from trl_ext import DAPOConfig, DAPOTrainer, PPOConfig, PPOTrainer, RLOOConfig, RLOOTrainer
from trl_ext.checks import check_prompt_dataset


def zero(prompts, **kwargs):
    return [0.0] * len(prompts)


@pytest.mark.parametrize(
    "dataset, match",
    [
        (Dataset.from_dict({"question": ["1+1="], "answer": ["2"]}),
         r"train_dataset has no `prompt` column; its columns are \['question', 'answer'\].*rename_column"),
        (Dataset.from_dict({"input_ids": [[1, 2, 3]], "attention_mask": [[1, 1, 1]]}),
         r"looks pre-tokenized \(columns \['input_ids', 'attention_mask'\]\).*`prompt` column of strings"),
        (Dataset.from_dict({"prompt": []}), "train_dataset has no rows"),
        (Dataset.from_dict({"prompt": [[5, 6]]}), "row 0 has a `prompt` of type list"),
        ([{"text": "1+1="}], r"no `prompt` column; its columns are \['text'\]"),
    ],
)
def test_bad_datasets_are_named_with_their_columns_and_the_fix(dataset, match):
    with pytest.raises(ValueError, match=match):
        check_prompt_dataset(dataset, "train_dataset", "DAPOTrainer")


def test_good_datasets_and_named_eval_sets():
    check_prompt_dataset(Dataset.from_dict({"prompt": ["1+1="], "answer": ["2"]}), "train_dataset", "T")
    check_prompt_dataset(Dataset.from_dict({"prompt": [[{"role": "user", "content": "1+1"}]]}), "train_dataset", "T")
    check_prompt_dataset(None, "eval_dataset", "T")
    stream = IterableDataset.from_generator(lambda: iter([{"prompt": "1+1="}]))
    check_prompt_dataset(stream, "train_dataset", "T")
    with pytest.raises(ValueError, match=r"eval_dataset\['hard'\] has no `prompt` column"):
        check_prompt_dataset({"easy": Dataset.from_dict({"prompt": ["1+1="]}),
                              "hard": Dataset.from_dict({"text": ["9+9="]})}, "eval_dataset", "T")


def test_prompt_is_optional_when_an_environment_gives_it():
    # TRL 1.16 with environment_factory: reset() may supply the prompt, so a row may carry only `environment`
    routing = Dataset.from_dict({"environment": ["maze", "chess"]})
    check_prompt_dataset(routing, "train_dataset", "T", prompt_optional=True)
    with pytest.raises(ValueError, match="no `prompt` column"):
        check_prompt_dataset(routing, "train_dataset", "T")
    with pytest.raises(ValueError, match="row 0 has a `prompt` of type list"):  # a prompt that is there is checked
        check_prompt_dataset(Dataset.from_dict({"prompt": [[5, 6]]}), "train_dataset", "T", prompt_optional=True)


@pytest.mark.parametrize("name", ["train_dataset", "eval_dataset"])
@pytest.mark.parametrize(
    "trainer_cls, config_cls",
    [(DAPOTrainer, DAPOConfig), (RLOOTrainer, RLOOConfig), (PPOTrainer, PPOConfig)],
)
def test_every_trainer_checks_its_datasets_at_construction(tmp_path, ckpt, tokenizer, trainer_cls, config_cls, name):
    good = Dataset.from_dict({"prompt": ["1+1="] * 8})
    bad = Dataset.from_dict({"question": ["1+1="] * 8})
    datasets = {"train_dataset": good, "eval_dataset": good, name: bad}
    args = config_cls(output_dir=str(tmp_path), per_device_train_batch_size=4, num_generations=2, report_to="none",
                      use_cpu=True, bf16=False)
    model = AutoModelForCausalLM.from_pretrained(ckpt)
    with pytest.raises(ValueError, match=rf"{trainer_cls.__name__}: {name} has no `prompt` column"):
        trainer_cls(model, zero, args=args, processing_class=tokenizer, **datasets)
