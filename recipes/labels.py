"""Stage 2a, rankings: sample K answers per prompt from the SFT model and let the labeller rank them (A > C = D > B); every ranking becomes all its (chosen, rejected) pairs.

Runs the stages before it first if their folders are not complete (they are skipped when they are), so it can be
called on its own. CPU, embedded tiny model:

    python recipes/labels.py --config recipes/configs/tiny.yaml

GPU, a hub model with 4-bit + LoRA (not run here; see README):

    python recipes/labels.py --config recipes/configs/qwen2.5-0.5b-qlora.yaml
"""

import sys

from trl_ext.cli import main

if __name__ == "__main__":
    sys.exit(main(["pipeline", *sys.argv[1:], "--until", "labels"]))
