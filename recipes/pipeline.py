"""SFT -> rankings -> reward model -> RL -> evaluation in one resumable run (the same as `trl-ext pipeline`).

    python recipes/pipeline.py --config recipes/configs/tiny.yaml                  # CPU, embedded tiny model
    python recipes/pipeline.py --config recipes/configs/tiny.yaml --use_peft --load_in_4bit   # LoRA + 4-bit on CPU
    python recipes/pipeline.py --config recipes/configs/qwen2.5-0.5b-qlora.yaml    # one consumer GPU (not run here)
    accelerate launch --config_file recipes/configs/accelerate/ddp.yaml recipes/pipeline.py --config ...

Rerun the same command after an interruption: complete stages are skipped, a cut-off stage resumes from its last
checkpoint.
"""

import sys

from trl_ext.cli import main

if __name__ == "__main__":
    sys.exit(main(["pipeline", *sys.argv[1:]]))
