"""PPO with a critic (trl_ext.PPOTrainer); reward model and critic as flags: the same as `trl-ext ppo`.

CPU (the configs point at files the README's "Commands" section writes; any flag overrides the YAML):

    python recipes/ppo.py --config recipes/configs/rl-tiny.yaml --output_dir runs/ppo-tiny \
        --reward_model_name_or_path runs/rm-tiny --reward_funcs null                          # CPU, after rm.py

GPU, a hub model in 4-bit + LoRA (not run here: no GPU or hub on the machines this was developed on):

    accelerate launch recipes/ppo.py --config recipes/configs/rl-tiny.yaml --reward_funcs null \
        --model_name_or_path Qwen/Qwen2.5-0.5B-Instruct --dataset_name trl-lib/ultrafeedback-prompt \
        --reward_model_name_or_path runs/rm-qlora --shared_base true --load_in_4bit --use_peft \
        --lora_target_modules all-linear --bf16 true --output_dir runs/ppo-qlora
"""

import sys

from trl_ext.cli import main

if __name__ == "__main__":
    sys.exit(main(["ppo", *sys.argv[1:]]))
