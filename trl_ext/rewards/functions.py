"""What a reward function is to TRL, the text it reads, and importing one that a config names.

A reward function is ``f(prompts, completions, completion_ids, **dataset_columns) -> list[float | None]``: one value
per completion, ``None`` for "no reward for this row". Configs and command lines name them as strings (TRL's
``grpo.py --reward_funcs``); :func:`import_reward_function` turns such a string into the callable.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable

RewardFunc = Callable[..., list]


def completion_text(completion) -> str:
    """What the model wrote: a string completion as is, or the content of the assistant messages of TRL's
    conversational form, joined (other roles, e.g. tool results, are not the model's words)."""
    if isinstance(completion, str):
        return completion
    return "".join(str(m.get("content") or "") for m in completion if m.get("role", "assistant") == "assistant")


def _trl_registry() -> dict[str, Callable]:
    """TRL's built-in reward functions, under the names TRL's own scripts accept in ``--reward_funcs``."""
    from trl.rewards import accuracy_reward, reasoning_accuracy_reward, think_format_reward

    return {f.__name__: f for f in (accuracy_reward, reasoning_accuracy_reward, think_format_reward)}


def import_reward_function(spec: str, field: str = "reward_funcs") -> RewardFunc:
    """The reward function a config names: a TRL built-in (``think_format_reward``) or a dotted import path.

    ``spec`` is ``package.module.function`` (as in TRL's ``grpo.py --reward_funcs``) or ``package.module:function``;
    the current directory is importable, so ``my_rewards.exact`` finds ``./my_rewards.py``. Importing runs that module's
    code, which is why the pipeline only imports what its config names explicitly (never a name read from a dataset, a
    checkpoint or a ``stage.json``). Every failure names ``field``, the spec and the fix.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"{field}: {spec!r} is not a reward function name; write 'package.module.function'.")
    spec = spec.strip()
    registry = _trl_registry()
    if spec in registry:
        return registry[spec]
    if ":" in spec:
        module_name, _, attr = spec.partition(":")
    elif "." in spec:
        module_name, _, attr = spec.rpartition(".")
    else:
        raise ValueError(
            f"{field}: {spec!r} is neither one of TRL's reward functions {sorted(registry)} nor an import path. "
            "Write 'package.module.function' (a module in the current directory works too)."
        )
    cwd = os.getcwd()
    added = cwd not in sys.path
    if added:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        raise ValueError(
            f"{field}: cannot import module {module_name!r} of {spec!r} ({e}). Install the package, or run from the "
            "folder that holds the module, or add that folder to PYTHONPATH."
        ) from None
    finally:
        if added:
            sys.path.remove(cwd)
    fn = getattr(module, attr, None)
    if fn is None:
        found = sorted(
            n for n, v in vars(module).items()
            if callable(v) and not n.startswith("_") and getattr(v, "__module__", None) == module.__name__
        )
        raise ValueError(f"{field}: module {module_name!r} has no {attr!r}; callables defined there: {found[:10]}.")
    if not callable(fn):
        raise ValueError(f"{field}: {spec!r} is a {type(fn).__name__}, not a function; name a callable.")
    return fn
