"""What trl_ext relies on in the installed TRL: a TRL upgrade that changes it fails here, with the reason, not later.

Everything trl_ext touches of GRPOTrainer's private parts is declared in ``trl_ext.seam`` (the hooks it overrides and
calls, the attributes it reads, the output keys each loss consumes); these tests check those declarations against the
installed TRL, and that no other module reaches past the seam. They also check that trl_ext's configs are TRL's
configs plus documented differences. Each test names what changed and where to look.
"""

import ast
import dataclasses
import inspect
import re
import sys
import types
from pathlib import Path

import pytest
import torch
import trl
from transformers import AutoModelForCausalLM
from trl import GRPOConfig, GRPOTrainer

from trl_ext import DAPOConfig, DAPOTrainer, PPOConfig, PPOTrainer, RLOOConfig, RLOOTrainer, seam
from trl_ext.advantages import group_relative_advantages
from trl_ext.resume import ResumableGRPOTrainer
from trl_ext.groups import PAD_RULES, RECOMPUTED_KEYS
from trl_ext.toy import AdditionTask

DROP_IN = Path(__file__).resolve().parent.parent / "docs" / "drop-in.md"  # the user-facing list of differences
TRAINERS = [DAPOTrainer, RLOOTrainer, PPOTrainer, ResumableGRPOTrainer]


# ---- overridden hooks --------------------------------------------------------------------------------------------
def overrides(cls):
    """(defining class, name) for every method a trl_ext class in ``cls``'s MRO defines that TRL's bases also have."""
    found = []
    for klass in cls.__mro__:
        if not klass.__module__.startswith("trl_ext"):
            continue
        for name, member in vars(klass).items():
            if callable(member) and not name.startswith("__") and hasattr(GRPOTrainer, name):
                found.append((klass, name))
    return found


def _shape(fn):
    """Parameter names and kinds: what a caller depends on (annotations and defaults may change freely)."""
    return [(p.name, p.kind) for p in inspect.signature(fn).parameters.values()]


HOOKS = sorted({(k, n) for cls in TRAINERS for k, n in overrides(cls)}, key=lambda kn: (kn[0].__name__, kn[1]))


def test_the_overridden_hooks_are_the_ones_the_seam_declares():
    names = {n for _, n in HOOKS}
    assert names == set(seam.OVERRIDDEN_HOOKS), (
        f"trl_ext overrides GRPOTrainer methods the seam does not declare ({sorted(names - set(seam.OVERRIDDEN_HOOKS))}) "
        f"or declares hooks nothing overrides ({sorted(set(seam.OVERRIDDEN_HOOKS) - names)}): a new override is a new "
        "dependency on TRL's internals; list it in trl_ext.seam.OVERRIDDEN_HOOKS (or rename the method)."
    )


@pytest.mark.parametrize("klass, name", HOOKS, ids=[f"{k.__name__}.{n}" for k, n in HOOKS])
def test_overridden_hook_keeps_its_signature(klass, name):
    parent = next(b for b in GRPOTrainer.__mro__ if name in vars(b))
    ours, theirs = _shape(getattr(klass, name)), _shape(getattr(parent, name))
    assert ours == theirs, (
        f"TRL changed {parent.__module__}.{parent.__name__}.{name}{inspect.signature(getattr(parent, name))}; "
        f"trl_ext's override {klass.__name__}.{name}{inspect.signature(getattr(klass, name))} was written for "
        f"trl {trl.__version__.split('.dev')[0]}'s form. Read the new hook and adapt the override before upgrading."
    )


@pytest.mark.parametrize("klass, name", HOOKS, ids=[f"{k.__name__}.{n}" for k, n in HOOKS])
def test_overridden_hook_is_still_called_by_trl_or_transformers(klass, name):
    sources = {inspect.getsourcefile(b): None for b in GRPOTrainer.__mro__ if b.__module__.split(".")[0] in
               ("trl", "transformers")}
    called = re.compile(rf"\.{name}\(")
    assert any(called.search(Path(f).read_text()) for f in sources), (
        f"nothing in TRL/transformers calls {name} any more: trl_ext's {klass.__name__}.{name} would be skipped "
        "silently. Find the new hook that does its job."
    )


@pytest.mark.parametrize("name", sorted(seam.CALLED_HOOKS))
def test_hooks_the_seam_calls_keep_the_arguments_it_passes(name):
    params = list(inspect.signature(getattr(GRPOTrainer, name)).parameters)[1:]  # without self
    passed = list(seam.CALLED_HOOKS[name])
    assert params[: len(passed)] == passed, (
        f"GRPOTrainer.{name}{inspect.signature(getattr(GRPOTrainer, name))} no longer starts with {passed}, which "
        "trl_ext.seam passes (positionally, then by name): adapt the seam's call."
    )


# ---- nothing but the seam touches GRPOTrainer's private parts ------------------------------------------------------
SEAM_USERS = ["dapo/trainer.py", "dapo/step.py", "dapo/refill.py", "dapo/reward_columns.py", "dapo/config.py",
              "rloo.py", "ppo/trainer.py", "ppo/critic.py", "ppo/roles.py", "ppo/losses.py", "ppo/metrics.py",
              "ppo/config.py", "callbacks.py", "resume.py"]


def _grpo_private_names(tmp_path, ckpt, tokenizer):
    t, _ = _generation_output(tmp_path, ckpt, tokenizer)
    names = {n for n in dir(GRPOTrainer) if n.startswith("_") and not n.startswith("__")}
    names |= {n for n in vars(t) if n.startswith("_") and not n.startswith("__")}
    return names - {"_tag_names", "_name", "_paper", "_template_file"}  # TRL's model-card class attributes


def test_only_the_seam_touches_grpo_trainers_private_parts(tmp_path, ckpt, tokenizer):
    private = _grpo_private_names(tmp_path, ckpt, tokenizer)
    package = Path(seam.__file__).parent
    found = []
    for relative in SEAM_USERS:
        tree = ast.parse((package / relative).read_text())
        for func in [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]:
            for node in ast.walk(func):
                if not (isinstance(node, ast.Attribute) and node.attr in private):
                    continue
                via_super = isinstance(node.value, ast.Call) and getattr(node.value.func, "id", None) == "super"
                # an override calling the parent's own hook, or handing the parent hook to the seam (scored_round)
                if via_super and (node.attr == func.name or node.attr in seam.CALLED_HOOKS):
                    continue
                found.append(f"{relative}:{node.lineno} .{node.attr}")
    assert not found, (
        f"trl_ext reaches GRPOTrainer's private parts outside trl_ext/seam.py: {sorted(set(found))}. Go through the "
        "seam (add a function there, declared in its docstring) so a TRL upgrade stays an audit of one file."
    )


def test_grpo_loss_reads_the_keys_the_seam_knows(tmp_path):
    tree = ast.parse(Path(inspect.getsourcefile(GRPOTrainer)).read_text())
    method = next(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == "_compute_loss")
    keys = set()
    for node in ast.walk(method):
        if isinstance(node, ast.Subscript) and getattr(node.value, "id", None) == "inputs" \
                and isinstance(node.slice, ast.Constant):
            keys.add(node.slice.value)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get" \
                and getattr(node.func.value, "id", None) == "inputs" and isinstance(node.args[0], ast.Constant):
            keys.add(node.args[0].value)
    assert "advantages" in keys, "could not read GRPO's loss inputs from its source: the method changed shape"
    assert keys == set(seam.GRPO_LOSS_KEYS), (
        f"GRPOTrainer._compute_loss now reads {sorted(keys - set(seam.GRPO_LOSS_KEYS))} / no longer reads "
        f"{sorted(set(seam.GRPO_LOSS_KEYS) - keys)}: decide what PPO's loss (which replaces GRPO's) must do with it "
        "and update trl_ext.seam.GRPO_LOSS_KEYS (e.g. importance_sampling_ratio: PPO applies it)."
    )


def test_the_installed_compute_loss_routes_to_a_replaced_loss_with_liger_on(tmp_path):
    # TRL 1.16 applies only Liger's layer kernels and still calls _compute_loss: PPO with Liger is allowed
    seam.check_loss_routing(PPOTrainer, PPOConfig(output_dir=str(tmp_path), use_liger_kernel=True, use_cpu=True,
                                                  bf16=False, report_to=[], per_device_train_batch_size=2))


# ---- one real generation step ------------------------------------------------------------------------------------
def _generation_output(tmp_path, ckpt, tokenizer, **overrides):
    args = GRPOConfig(output_dir=str(tmp_path), per_device_train_batch_size=8, num_generations=4,
                      max_completion_length=4, report_to="none", use_cpu=True, bf16=False, **overrides)
    data = AdditionTask().prompt_dataset(8, seed=0)

    def reward(prompts, **kwargs):
        return [float(i % 2) for i in range(len(prompts))]

    t = GRPOTrainer(AutoModelForCausalLM.from_pretrained(ckpt), reward, args=args, train_dataset=data,
                    processing_class=tokenizer)
    t.model.train()
    rows = [data[i] for i in (0, 0, 0, 0, 1, 1, 1, 1)]  # two prompts x G, as TRL's RepeatSampler lays them out
    return t, t._generate_and_score_completions(rows)


@pytest.mark.parametrize(
    "overrides, optional",
    [
        ({}, set()),
        ({"beta": 0.04}, {"ref_per_token_logps"}),
        ({"steps_per_generation": 2}, {"old_per_token_logps"}),  # off-policy within the block: GRPO computes it
    ],
)
def test_generation_output_keys_are_the_ones_dynamic_sampling_pools(tmp_path, ckpt, tokenizer, overrides, optional):
    t, output = _generation_output(tmp_path, ckpt, tokenizer, **overrides)
    required = {"prompt_ids", "prompt_mask", "completion_ids", "completion_mask", "advantages", "num_items_in_batch"}
    assert required | optional <= set(output), f"GRPO's generation output lost {(required | optional) - set(output)}"
    unknown = set(output) - set(PAD_RULES) - set(RECOMPUTED_KEYS)
    assert not unknown, (
        f"GRPO's generation output now has {sorted(unknown)}: dynamic sampling does not know how to pad and pool "
        "them. Add a rule to trl_ext.groups.PAD_RULES (or RECOMPUTED_KEYS)."
    )
    assert output["advantages"].shape == (8,), "trl_ext's keep mask and RLOO expect one advantage per completion"
    for name in (*seam.PRIVATE_ATTRIBUTES, "reward_weights", "reward_func_names", "reward_processing_classes",
                 "num_generations_eval", "eos_token_ids", "epsilon_low", "epsilon_high", "ref_model", "beta"):
        assert hasattr(t, name), f"GRPOTrainer no longer has {name!r}, which trl_ext reads"
    assert {"advantages", "rewards", "prompt", "completion"} <= set(t._logs)


@pytest.mark.parametrize(
    "overrides",
    [{}, {"scale_rewards": "batch"}, {"scale_rewards": "none"}, {"multi_objective_aggregation": "normalize_then_sum"}],
    ids=["group", "batch", "none", "normalize_then_sum"],
)
def test_grpo_advantages_are_the_formula_trl_ext_applies_to_shaped_rewards(tmp_path, ckpt, tokenizer, overrides):
    # DAPO forms GRPO's advantages itself when overlong shaping moves the reward (GRPOTrainer forms them inline):
    # on the user's rewards alone that formula must give exactly what GRPOTrainer gave
    def graded(prompts, **kwargs):
        return [0.5 * (i % 3) for i in range(len(prompts))]

    def sometimes_none(prompts, **kwargs):
        return [None if i % 4 == 1 else float(i % 2) for i in range(len(prompts))]

    args = GRPOConfig(output_dir=str(tmp_path), per_device_train_batch_size=8, num_generations=4,
                      max_completion_length=4, report_to="none", use_cpu=True, bf16=False, reward_weights=[0.7, 0.3],
                      **overrides)
    data = AdditionTask().prompt_dataset(8, seed=0)
    t = GRPOTrainer(AutoModelForCausalLM.from_pretrained(ckpt), [graded, sometimes_none], args=args,
                    train_dataset=data, processing_class=tokenizer)
    scored, calculate = [], t._calculate_rewards
    t._calculate_rewards = lambda *a: scored.append(calculate(*a)) or scored[-1]
    t.model.train()
    output = t._generate_and_score_completions([data[i] for i in (0, 0, 0, 0, 1, 1, 1, 1)])
    ours = group_relative_advantages(scored[0], t.reward_weights, 4, t.scale_rewards, t.multi_objective_aggregation)
    assert torch.equal(ours, output["advantages"]), (
        f"GRPOTrainer's advantages ({output['advantages'].tolist()}) are no longer "
        f"trl_ext.advantages.group_relative_advantages ({ours.tolist()}): read the new formula in "
        "_generate_and_score_completions and update that function (DAPO's shaped advantages use it)."
    )


# keys GRPO adds only for images / multimodal models: dynamic sampling refuses them with a message (text only)
MULTIMODAL_KEYS = {"pixel_values", "image_grid_thw", "pixel_attention_mask", "spatial_shapes", "image_sizes",
                   "token_type_ids", "mm_token_type_ids", "image_position_ids", "num_images", "num_tiles"}


def test_every_key_grpo_can_output_has_a_rule():
    tree = ast.parse(Path(inspect.getsourcefile(GRPOTrainer)).read_text())
    method = next(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)
                  and n.name == "_generate_and_score_completions")
    keys = set()
    for node in ast.walk(method):
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "output" for t in node.targets) \
                and isinstance(node.value, ast.Dict):
            keys |= {k.value for k in node.value.keys if isinstance(k, ast.Constant)}
        if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name) and node.value.id == "output" \
                and isinstance(node.ctx, ast.Store) and isinstance(node.slice, ast.Constant):
            keys.add(node.slice.value)
    assert "advantages" in keys, "could not read GRPO's output keys from its source: the method changed shape"
    unknown = keys - set(PAD_RULES) - set(RECOMPUTED_KEYS) - MULTIMODAL_KEYS
    assert not unknown, f"GRPO's _generate_and_score_completions can now output {sorted(unknown)}: add PAD_RULES"
    stale = set(PAD_RULES) - keys
    assert not stale, f"PAD_RULES has rules for keys GRPO no longer outputs: {sorted(stale)}"


@pytest.mark.parametrize("cls", [DAPOTrainer, RLOOTrainer, PPOTrainer])
def test_a_round_not_scored_exactly_once_through_the_hook_is_an_error(tmp_path, ckpt, tokenizer, cls):
    # trl_ext reads a round's rewards from its _calculate_rewards override: if TRL scored a round without that hook
    # (or twice), the previous round's rewards would be used silently; the seam refuses instead
    config = {DAPOTrainer: DAPOConfig, RLOOTrainer: RLOOConfig, PPOTrainer: PPOConfig}[cls]
    args = config(output_dir=str(tmp_path), per_device_train_batch_size=4, num_generations=2, max_completion_length=4,
                  report_to="none", use_cpu=True, bf16=False)
    data = AdditionTask().prompt_dataset(8, seed=0)

    def alternating(prompts, **kwargs):
        return [float(i % 2) for i in range(len(prompts))]

    t = cls(AutoModelForCausalLM.from_pretrained(ckpt), alternating, args=args, train_dataset=data,
            processing_class=tokenizer)
    t.model.train()
    rows = [data[i] for i in (0, 0, 1, 1)]
    t._generate_and_score_completions(rows)  # a normal round: its record exists from here on
    override = t._calculate_rewards
    t._calculate_rewards = types.MethodType(GRPOTrainer._calculate_rewards, t)  # TRL scoring past the override
    with pytest.raises(RuntimeError, match="_calculate_rewards 0 times for one generation round"):
        t._generate_and_score_completions(rows)
    t._calculate_rewards = lambda *a: (override(*a), override(*a))[1]  # TRL scoring a round twice
    with pytest.raises(RuntimeError, match="_calculate_rewards 2 times"):
        t._generate_and_score_completions(rows)


def test_the_advantages_rewrite_refuses_a_table_whose_tail_is_not_the_round(tmp_path, ckpt, tokenizer):
    t, output = _generation_output(tmp_path, ckpt, tokenizer)
    logged = list(t._logs["advantages"])
    assert logged == output["advantages"].tolist()  # GRPO logged this round's advantages last, all ranks' rows
    ours = torch.arange(8, dtype=torch.float32)
    seam.replace_advantages(t, dict(output), ours, slice(0, 8))
    assert list(t._logs["advantages"]) == ours.tolist()
    with pytest.raises(RuntimeError, match="not the ones GRPOTrainer just returned"):  # the table holds ours now
        seam.replace_advantages(t, dict(output), ours + 1, slice(0, 8))


def test_reward_function_returning_the_wrong_number_of_values_is_refused(tmp_path, ckpt, tokenizer):
    def one_value(prompts, **kwargs):
        return [1.0]

    args = DAPOConfig(output_dir=str(tmp_path), per_device_train_batch_size=4, num_generations=2,
                      max_completion_length=4, report_to="none", use_cpu=True, bf16=False)
    data = AdditionTask().prompt_dataset(4, seed=0)
    t = DAPOTrainer(AutoModelForCausalLM.from_pretrained(ckpt), one_value, args=args, train_dataset=data,
                    processing_class=tokenizer)
    rows = [data[i] for i in range(4)]
    prompts = [r["prompt"] for r in rows]
    completions = [[{"role": "assistant", "content": "2"}]] * 4
    # trl_ext's override passes straight through to TRL's check (dynamic sampling reshapes rewards to (groups, G))
    with pytest.raises(ValueError, match="returned 1 rewards, but 4"):
        t._calculate_rewards(rows, prompts, completions, [[5]] * 4)


# ---- configs: TRL's fields and defaults, and the listed differences ------------------------------------------------
def _defaults(cls):
    out = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            out[f.name] = f.default_factory()
    return out


GRPO_LOSS = "GRPOConfig field read by GRPO's loss or generation, which trl_ext's RLOO uses (trl.RLOOTrainer has its own)"
RLOO_EXTRA = {
    **dict.fromkeys(
        ["loss_type", "delta", "importance_sampling_level", "sapo_temperature_neg", "sapo_temperature_pos",
         "vespo_k_neg", "vespo_k_pos", "vespo_lambda_neg", "vespo_lambda_pos", "entropy_coef", "entropy_coef_delta",
         "entropy_coef_max", "entropy_coef_min", "entropy_target", "use_adaptive_entropy", "top_entropy_quantile",
         "off_policy_mask_threshold", "use_bias_correction_kl", "vllm_importance_sampling_cap",
         "vllm_importance_sampling_clip_max", "vllm_importance_sampling_clip_min",
         "vllm_importance_sampling_correction", "vllm_importance_sampling_mode", "cast_lm_head_to_fp32",
         "max_tool_calling_iterations", "log_completions_hub_repo"], GRPO_LOSS),
    "scale_rewards": "GRPO's advantage scaling, replaced by leave-one-out: only 'none' accepted",
    "multi_objective_aggregation": "GRPO's advantage option, replaced by leave-one-out: only the default accepted",
    "kl_in": "trl_ext: KL in the reward (trl.RLOOTrainer's form, default) or in the loss",
    **dict.fromkeys(
        ["dynamic_sampling", "dynamic_sampling_signal", "dynamic_sampling_tolerance",
         "dynamic_sampling_max_refill_rounds", "dynamic_sampling_on_cap", "dynamic_sampling_max_staleness",
         "overlong_buffer_length", "overlong_penalty_factor", "max_generated_completions",
         "dynamic_sampling_skip_probability", "dynamic_sampling_max_skip_probability",
         "dynamic_sampling_sized_refill", "dynamic_sampling_refill_rate_floor"],
        "DAPO option, off by default"),
}
RLOO_DEFAULTS_DIFFER: dict[str, str] = {}  # none: every shared field has trl.RLOOConfig's default
DAPO_EXTRA = {name: "DAPO (dynamic sampling, overlong shaping)" for name in RLOO_EXTRA
              if name.startswith(("dynamic_sampling", "overlong_", "max_generated_completions"))}
DAPO_DEFAULTS_DIFFER = {"epsilon_high": "clip-higher, the paper's 0.28 (GRPO: None = epsilon)"}


@pytest.mark.parametrize(
    "ours, theirs, extra, differ",
    [
        (RLOOConfig, trl.RLOOConfig, RLOO_EXTRA, RLOO_DEFAULTS_DIFFER),
        (DAPOConfig, GRPOConfig, DAPO_EXTRA, DAPO_DEFAULTS_DIFFER),
    ],
    ids=["RLOOConfig", "DAPOConfig"],
)
def test_config_is_trls_plus_the_listed_differences(ours, theirs, extra, differ):
    mine, trls = _defaults(ours), _defaults(theirs)
    missing = sorted(set(trls) - set(mine))
    assert not missing, f"trl.{theirs.__name__} fields that trl_ext.{ours.__name__} does not accept: {missing}"
    assert set(mine) - set(trls) == set(extra), (
        f"unlisted extra fields {sorted(set(mine) - set(trls) - set(extra))} / listed but gone "
        f"{sorted(set(extra) - (set(mine) - set(trls)))}: update the list here and in docs/drop-in.md"
    )
    changed = {name for name in trls if mine[name] != trls[name]}
    assert changed == set(differ), (
        f"defaults differing from trl.{theirs.__name__}: "
        f"{ {n: (mine[n], trls[n]) for n in changed} }; listed: {sorted(differ)}"
    )
    page = DROP_IN.read_text()
    unlisted = [name for name in {**extra, **differ} if f"`{name}`" not in page]
    assert not unlisted, f"docs/drop-in.md does not list these differences of {ours.__name__}: {unlisted}"
