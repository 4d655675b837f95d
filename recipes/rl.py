"""Stage 3, RL: optimise the SFT policy against the learned reward model with the algorithm named in the config.

Runs the stages before it first if their folders are not complete (they are skipped when they are), so it can be
called on its own. CPU, embedded tiny model:

    python recipes/rl.py --config recipes/configs/tiny.yaml

GPU, a hub model with 4-bit + LoRA (not run here; see README):

    python recipes/rl.py --config recipes/configs/qwen2.5-0.5b-qlora.yaml
"""

import sys

from trl_ext.cli import main

if __name__ == "__main__":
    sys.exit(main(["pipeline", *sys.argv[1:], "--until", "rl"]))
