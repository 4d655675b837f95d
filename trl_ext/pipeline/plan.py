"""Which stages a run executes (:func:`stage_plan`) and the checks made before the first one starts
(:func:`preflight`)."""

from __future__ import annotations

from pathlib import Path

from trl import DPOConfig, ModelConfig, SFTConfig

from ..assembly.registry import RL_ALGORITHMS
from ..assembly.rewards import import_reward_functions
from .config import STAGES, PipelineConfig, stage_args, stage_defaults, uses_embedded_model
from .data import preference_dataset, rl_prompts, sft_dataset
from .rm import rm_classes


def stage_plan(cfg: PipelineConfig, model_args: ModelConfig) -> list[str]:
    """The stages this run executes, in order, from ``start_at`` (or its default) to ``until``.

    The rule: SFT runs when it has data (the embedded task's demonstrations, or ``sft_dataset_name``); otherwise, or
    with ``start_at: labels`` / ``start_at: rl``, ``model_name_or_path`` is the SFT model. The labels and RM stages run
    when the reward includes the learned RM (``reward: model`` or ``both``); with ``reward: rules`` (the default when
    only ``reward_funcs`` name a reward) RL optimises the rule rewards alone: the verifiable-reward route. Every
    combination that cannot work is refused here, before any stage starts, with the field to change.
    """
    route = cfg.reward_route
    has_sft_data = cfg.uses_embedded_task or cfg.sft_dataset_name is not None
    start = cfg.start_at or ("sft" if has_sft_data else "rl" if route == "rules" else "labels")
    stop = STAGES.index(cfg.until)
    if STAGES.index(start) > stop:
        raise ValueError(f"until={cfg.until!r} comes before start_at={start!r}: nothing would run. Set until later.")
    if start != "sft" and not model_args.model_name_or_path:
        raise ValueError(
            f"start_at={start!r} skips SFT and takes model_name_or_path as the SFT model: pass --model_name_or_path "
            "(e.g. the sft/model folder of an earlier run), or set start_at: sft."
        )
    if start == "sft" and not has_sft_data:
        raise ValueError(
            "start_at='sft' but there are no SFT data for your prompts: give sft_dataset_name, or leave start_at unset "
            "(or start_at: rl) to use model_name_or_path as the SFT model."
        )
    _check_route(cfg, route, start)
    plan = [s for s in STAGES[STAGES.index(start) : stop + 1] if route != "rules" or s not in ("labels", "rm")]
    _check_labels(cfg, plan)
    return plan


def _check_route(cfg: PipelineConfig, route: str, start: str) -> None:
    """The reward route (``reward``) against ``reward_funcs``, ``start_at`` and ``shared_base_reward``."""
    if route in ("rules", "both") and not cfg.reward_funcs:
        raise ValueError(
            f"reward={route!r} optimises rule rewards but reward_funcs is empty: name them (e.g. reward_funcs: "
            "[trl_ext.toy.sum_correct] for the embedded task, or TRL's accuracy_reward), or set reward: model."
        )
    if route == "model" and cfg.reward_funcs:
        raise ValueError(
            f"reward='model' optimises the learned RM alone, but reward_funcs={cfg.reward_funcs} is set: choose "
            "reward: both to add them to the RM, or reward: rules to use them without one."
        )
    if route == "rules":
        if start == "labels":
            raise ValueError(
                "start_at='labels' but reward='rules' trains no reward model, so there is no labels stage: set "
                "start_at: rl, or reward: both to train an RM as well."
            )
        if cfg.shared_base_reward:
            raise ValueError("shared_base_reward=True scores with the learned RM, but reward='rules' trains none: "
                             "drop shared_base_reward, or set reward: both.")
    elif start == "rl":
        raise ValueError(
            f"start_at='rl' skips the labels and RM stages, but reward={route!r} needs the learned RM: set start_at: "
            "labels to train one from model_name_or_path, or reward: rules with reward_funcs."
        )


def _check_labels(cfg: PipelineConfig, plan: list[str]) -> None:
    """A labels stage needs a labeller that knows the prompts, or preference pairs."""
    if "labels" in plan and not cfg.uses_embedded_task and not cfg.preference_dataset_name:
        # the labeller only knows the embedded task: ranking its toy prompts would train an RM on the wrong data
        raise ValueError(
            "the labels stage needs preference pairs for your data: give preference_dataset_name (columns prompt, "
            "chosen, rejected), or reward: rules with reward_funcs (no labels, no RM). The embedded labeller only "
            "ranks answers to the embedded task, used when no sft_dataset_name / prompt_dataset_name is given."
        )
    if "labels" in plan and cfg.uses_embedded_task and cfg.embedded.embedded_task == "graded":
        raise ValueError(
            f"embedded_task={cfg.embedded.embedded_task!r} has no labeller (its checker is the reward): set reward: rules with "
            "reward_funcs: [trl_ext.toy.sum_correct], or embedded_task: addition or arithmetic for the RM route."
        )


def preflight(cfg: PipelineConfig, run_dir: Path, model_args: ModelConfig | None = None) -> list[str]:
    """Check everything the stages up to ``cfg.until`` will need before the first one starts; return
    :func:`stage_plan`.

    Builds every stage's TRL config (TRL validates its configs when they are built), imports the named reward
    functions, and loads and checks the named datasets, so a bad value in the ``rl:`` map or an empty row in a dataset
    is an error in the first seconds rather than after SFT and the reward model have trained.
    """
    stop = STAGES.index(cfg.until)
    if cfg.sft_dataset_name:
        sft_dataset(cfg)
    if cfg.preference_dataset_name and stop >= STAGES.index("labels"):
        preference_dataset(cfg)
    if cfg.prompt_dataset_name and stop >= STAGES.index("rl"):
        rl_prompts(cfg)
    model_args = model_args or ModelConfig()
    plan = stage_plan(cfg, model_args)
    embedded = uses_embedded_model(model_args)
    rl_config = DPOConfig if cfg.algorithm == "dpo" else RL_ALGORITHMS[cfg.algorithm][0]
    stages = [("sft", SFTConfig), ("rm", rm_classes(cfg)[0]), ("rl", rl_config)]
    for name, config_cls in stages:
        if name not in plan:
            continue
        defaults = stage_defaults(name, cfg.algorithm, embedded)
        try:
            args = stage_args(config_cls, defaults, getattr(cfg, name), run_dir / name / "checkpoints", cfg.seed, name,
                              embedded=embedded)
        except (ValueError, TypeError) as e:
            if str(e).startswith(f"`{name}:`"):
                raise
            raise ValueError(f"`{name}:` settings are invalid for {config_cls.__name__}: {e}") from None
        if name == "rl" and cfg.algorithm != "dpo":
            funcs = import_reward_functions(cfg.reward_funcs)
            weights = getattr(args, "reward_weights", None)
            with_rm = cfg.reward_route != "rules"
            if weights is not None and len(weights) != with_rm + len(funcs):
                rewards = f"the reward model, then reward_funcs {cfg.reward_funcs}" if with_rm else (
                    f"reward_funcs {cfg.reward_funcs}; reward: rules, no reward model")
                raise ValueError(
                    f"`rl:` reward_weights has {len(weights)} weights for {with_rm + len(funcs)} rewards ({rewards}); "
                    "give one weight per reward."
                )
    return plan
