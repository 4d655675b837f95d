"""TRL's GRPOTrainer through the same path as the DAPO/RLOO/PPO recipes: the same as `trl-ext grpo`.

CPU, the embedded tiny model (the config reads the files `python recipes/tiny_data.py runs/data` writes; see the
README's "Commands" section for the order; any flag overrides the YAML):

    python recipes/grpo.py --config recipes/configs/rl-tiny.yaml --output_dir runs/grpo-tiny

One GPU, a hub model in 4-bit + LoRA (not run here: no GPU or hub on the machines this was developed on):

    accelerate launch recipes/grpo.py --model_name_or_path Qwen/Qwen2.5-0.5B-Instruct \
        --dataset_name trl-lib/DeepMath-103K --reward_funcs accuracy_reward --max_completion_length 1024 \
        --output_dir runs/grpo-qlora --load_in_4bit --use_peft --lora_r 16 --lora_target_modules all-linear --bf16 true
"""

import sys

from trl_ext.cli import main

if __name__ == "__main__":
    sys.exit(main(["grpo", *sys.argv[1:]]))
