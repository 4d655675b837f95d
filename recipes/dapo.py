"""DAPO (trl_ext.DAPOTrainer) against reward functions and/or reward models: the same as `trl-ext dapo`.

CPU (the configs point at files the README's "Commands" section writes; any flag overrides the YAML):

    python recipes/dapo.py --config recipes/configs/rl-tiny.yaml --output_dir runs/dapo-tiny   # CPU, embedded tiny model

GPU, a hub model in 4-bit + LoRA (not run here: no GPU or hub on the machines this was developed on):

    accelerate launch recipes/dapo.py --config recipes/configs/rl-tiny.yaml \
        --model_name_or_path Qwen/Qwen2.5-0.5B-Instruct --dataset_name trl-lib/DeepMath-103K --reward_funcs accuracy_reward \
        --max_completion_length 512 --load_in_4bit --use_peft --lora_target_modules all-linear --bf16 true \
        --output_dir runs/dapo-qlora
"""

import sys

from trl_ext.cli import main

if __name__ == "__main__":
    sys.exit(main(["dapo", *sys.argv[1:]]))
