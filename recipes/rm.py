"""Stage 2b, reward model: train a sequence classifier (num_labels=1) from the SFT model on the ranked pairs with TRL's RewardTrainer; reports held-out pairwise accuracy.

Runs the stages before it first if their folders are not complete (they are skipped when they are), so it can be
called on its own. CPU, embedded tiny model:

    python recipes/rm.py --config recipes/configs/tiny.yaml

GPU, a hub model with 4-bit + LoRA (not run here; see README):

    python recipes/rm.py --config recipes/configs/qwen2.5-0.5b-qlora.yaml
"""

import sys

from trl_ext.cli import main

if __name__ == "__main__":
    sys.exit(main(["pipeline", *sys.argv[1:], "--until", "rm"]))
