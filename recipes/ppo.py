"""PPO with a critic (trl_ext.PPOTrainer), reward model and critic given as flags: the same as `trl-ext ppo`.

CPU, the embedded tiny model (the config reads the files `python recipes/tiny_data.py runs/data` writes; see the
README's "Commands" section for the order; any flag overrides the YAML):

    python recipes/ppo.py --config recipes/configs/ppo-tiny.yaml

One GPU, a hub model in 4-bit + LoRA (not run here: no GPU or hub on the machines this was developed on):

    accelerate launch recipes/ppo.py --model_name_or_path Qwen/Qwen2.5-0.5B-Instruct \
        --dataset_name trl-lib/ultrafeedback-prompt --reward_model_name_or_path runs/rm-qlora --shared_base true \
        --output_dir runs/ppo-qlora --load_in_4bit --use_peft --lora_r 16 --lora_target_modules all-linear --bf16 true
"""

import sys

from trl_ext.cli import main

if __name__ == "__main__":
    sys.exit(main(["ppo", *sys.argv[1:]]))
