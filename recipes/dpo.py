"""DPO with trl.DPOTrainer on (chosen, rejected) pairs, no reward model: the same as `trl-ext dpo`.

CPU (the configs point at files the README's "Commands" section writes; any flag overrides the YAML):

    python recipes/dpo.py --config recipes/configs/dpo-tiny.yaml                      # CPU, embedded tiny model

GPU, a hub model in 4-bit + LoRA (not run here: no GPU or hub on the machines this was developed on):

    accelerate launch recipes/dpo.py --config recipes/configs/dpo-tiny.yaml \
        --model_name_or_path Qwen/Qwen2.5-0.5B-Instruct --dataset_name trl-lib/ultrafeedback_binarized --load_in_4bit \
        --use_peft --lora_target_modules all-linear --bf16 true --output_dir runs/dpo-qlora
"""

import sys

from trl_ext.cli import main

if __name__ == "__main__":
    sys.exit(main(["dpo", *sys.argv[1:]]))
