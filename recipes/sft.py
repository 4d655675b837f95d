"""Stage 1, supervised fine-tuning: teach the base model the task's format from (noisy) demonstrations.

Runs the stages before it first if their folders are not complete (they are skipped when they are), so it can be
called on its own. CPU, embedded tiny model:

    python recipes/sft.py --config recipes/configs/tiny.yaml

GPU, a hub model with 4-bit + LoRA (not run here; see README):

    python recipes/sft.py --config recipes/configs/qwen2.5-0.5b-qlora.yaml
"""

import sys

from trl_ext.cli import main

if __name__ == "__main__":
    sys.exit(main(["pipeline", *sys.argv[1:], "--until", "sft"]))
