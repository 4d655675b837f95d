"""Supervised fine-tuning with trl.SFTTrainer: the same as `trl-ext sft` (every flag of TRL's ScriptArguments, SFTConfig and ModelConfig).

CPU (the configs point at files the README's "Commands" section writes; any flag overrides the YAML):

    python recipes/sft.py --config recipes/configs/sft-tiny.yaml                      # CPU, embedded tiny model

GPU, a hub model in 4-bit + LoRA (not run here: no GPU or hub on the machines this was developed on):

    accelerate launch recipes/sft.py --config recipes/configs/sft-tiny.yaml \
        --model_name_or_path Qwen/Qwen2.5-0.5B-Instruct --dataset_name trl-lib/Capybara --load_in_4bit --use_peft \
        --lora_target_modules all-linear --bf16 true --output_dir runs/sft-qlora
"""

import sys

from trl_ext.cli import main

if __name__ == "__main__":
    sys.exit(main(["sft", *sys.argv[1:]]))
