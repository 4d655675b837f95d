"""The whole run: every stage of the plan in order, each skipped when complete with the same settings (see
:mod:`trl_ext.pipeline.bookkeeping`), then the report."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from trl import ModelConfig

from .bookkeeping import fingerprint, run_stage, write_json_atomic
from .config import PipelineConfig, label_max_new_tokens, uses_embedded_model
from .dpo import run_dpo
from .eval import run_eval
from .labels import run_labels
from .plan import preflight
from .report import build_report, format_figures, format_report
from .rl import run_rl
from .rm import run_rm
from .sft import resolve_base, run_sft


def model_settings(model_args: ModelConfig) -> dict:
    return asdict(model_args)


# ---- each stage's recorded settings: what its fingerprint covers (changing what goes in re-runs old folders) --------
def base_settings(cfg: PipelineConfig, model_args: ModelConfig) -> dict:
    """The model and task settings SFT is fingerprinted with (and, without SFT, the SFT model's stand-in)."""
    # the embedded base is named by what it is, not where it lies, so a run folder can be moved or copied
    common = {"seed": cfg.seed, "model": model_settings(model_args), "base": model_args.model_name_or_path or "embedded"}
    return {**common, **cfg.embedded.settings()}


def label_settings(cfg: PipelineConfig, upstream: str, embedded: bool = True) -> dict:
    settings = {
        "sft": upstream, "data": cfg.preference_dataset_name,
        **{k: getattr(cfg, k) for k in ("num_label_prompts", "num_ranked", "label_temperature", "rm_test_fraction")},
        "labeller_noise": cfg.embedded.labeller_noise,
    }
    length = label_max_new_tokens(cfg, embedded)
    if length != 8:  # recorded only when it is not the embedded model's 8, which existing run folders were made with
        settings["label_max_new_tokens"] = length
    return settings


def rl_settings(cfg: PipelineConfig, model_args: ModelConfig, upstream: dict) -> dict:
    """``upstream``: ``{"rm": fingerprint}`` against the learned RM, ``{"sft": fingerprint}`` on rule rewards alone."""
    return {
        **upstream, "algorithm": cfg.algorithm, "rl": cfg.rl, "n": cfg.num_rl_prompts,
        "data": cfg.prompt_dataset_name, "model": model_settings(model_args),
        "shared_base_reward": cfg.shared_base_reward, "reward_funcs": cfg.reward_funcs,
    }


def _check_model_args(cfg: PipelineConfig, model_args: ModelConfig) -> None:
    if model_args.model_name_or_path is None and not cfg.uses_embedded_task:
        raise ValueError(
            "model_name_or_path is required when the data come from named datasets (sft_dataset_name / "
            "prompt_dataset_name): the embedded tiny model only knows the embedded task. Pass --model_name_or_path "
            "with a local checkpoint or a hub id."
        )
    if cfg.shared_base_reward and not model_args.use_peft:
        raise ValueError("shared_base_reward=True trains the RM as a LoRA adapter on the policy's base: add --use_peft.")


# ---- the whole run ----------------------------------------------------------------------------------------------------
def run_pipeline(cfg: PipelineConfig, model_args: ModelConfig | None = None, callbacks=None) -> dict:
    """Run (or resume) every stage up to ``cfg.until``; return the report and write report.json / report.md.

    ``callbacks`` (transformers ``TrainerCallback`` objects) are added to every trainer the run creates.
    """
    model_args = model_args or ModelConfig()
    _check_model_args(cfg, model_args)
    run_dir = Path(cfg.output_dir)
    # a misspelt rl field, reward function or dataset column, or a route that cannot work, fails now, not after SFT
    plan = preflight(cfg, run_dir, model_args)
    run_dir.mkdir(parents=True, exist_ok=True)
    base = resolve_base(cfg, model_args, run_dir)
    embedded = uses_embedded_model(model_args)
    infos: dict[str, dict] = {}
    if "sft" in plan:
        sft_settings = {**base_settings(cfg, model_args), "n": cfg.num_sft_examples, "data": cfg.sft_dataset_name,
                        "sft": cfg.sft}
        infos["sft"] = run_stage(run_dir, "sft", sft_settings, lambda f: run_sft(cfg, model_args, base, f, callbacks))
        sft_model, upstream = str(run_dir / "sft" / "model"), infos["sft"]["fingerprint"]
    else:  # model_name_or_path is the SFT model
        sft_model, upstream = base, fingerprint(base_settings(cfg, model_args))
    labels = run_dir / "labels"
    if "labels" in plan:
        infos["labels"] = run_stage(
            run_dir, "labels", label_settings(cfg, upstream, embedded), lambda f: run_labels(cfg, model_args, sft_model, f)
        )
    if "rm" in plan:
        rm_settings = {"labels": infos["labels"]["fingerprint"], "model": model_settings(model_args), "rm": cfg.rm,
                       "rm_loss": cfg.rm_loss}
        infos["rm"] = run_stage(run_dir, "rm", rm_settings, lambda f: run_rm(cfg, model_args, sft_model, labels, f, callbacks))
    rm_folder = run_dir / "rm" if "rm" in plan else None  # None: the verifiable-reward route, rule rewards only
    if "rl" in plan:
        settings = rl_settings(cfg, model_args, {"rm": infos["rm"]["fingerprint"]} if rm_folder else {"sft": upstream})
        if cfg.algorithm == "dpo":  # no RL: the labels' pairs train the policy
            train = lambda f: run_dpo(cfg, model_args, sft_model, labels, f, callbacks)  # noqa: E731
        else:
            train = lambda f: run_rl(cfg, model_args, sft_model, rm_folder, f, callbacks)  # noqa: E731
        infos["rl"] = run_stage(run_dir, "rl", settings, train)
    if "eval" in plan:
        if "sft" in plan:
            models = {"base": base, "sft": sft_model, "rl": str(run_dir / "rl" / "model")}
        else:  # no SFT ran: the given model is what RL (or the RM) started from, named as such
            models = {"given": sft_model, "rl": str(run_dir / "rl" / "model")}
        eval_settings = {"rl": infos["rl"]["fingerprint"], "n": cfg.eval_samples, "t": cfg.eval_temperature}
        rm_model = str(rm_folder / "model") if rm_folder else None
        infos["eval"] = run_stage(run_dir, "eval", eval_settings, lambda f: run_eval(cfg, models, rm_model, f, embedded))
    report = build_report(cfg, infos)
    write_json_atomic(run_dir / "report.json", report)
    (run_dir / "report.md").write_text(format_report(report) + format_figures(run_dir, list(infos)))
    return report
