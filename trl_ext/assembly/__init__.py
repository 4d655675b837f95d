"""The layer both front-ends stand on: ``trl_ext.commands`` (``trl-ext sft|rm|dpo|grpo|dapo|rloo|ppo``) and
``trl_ext.pipeline`` (``trl-ext pipeline``) call it; it imports neither (tests/test_imports.py checks the graph).

    registry.py   the RL algorithms by name: config and trainer class
    data.py       a named dataset (folder, file, hub id) loaded, its columns checked row by row; TRL scripts' splits
    rewards.py    reward functions imported from their names, reward-model paths checked, the trainer's reward list
    trainers.py   building a trainer: construct it, then the fix no trainer makes itself (fp32 trainables, 4-bit)
    frontend.py   the parser (TrlParser, flags grouped by dataclass), one-line errors and exit codes

Import from the module (``from trl_ext.assembly.data import validate_columns``): the package imports none of them, so
``trl-ext --help`` and ``trl-ext convert-gguf`` do not load the trainers the registry names.
"""
