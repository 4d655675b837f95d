"""The pipeline end to end on a CPU-sized config, its resume logic, and its errors on bad input."""

import json
import os
import shutil

import pytest
from datasets import Dataset
from transformers import AutoModelForCausalLM, TrainerCallback
from trl import ModelConfig

from trl_ext.assembly.data import validate_columns
from trl_ext.pipeline import PipelineConfig, StageMismatchError, run_pipeline

# A few seconds per stage: enough to exercise every stage, not to learn anything.
SMALL = dict(
    num_sft_examples=256, num_label_prompts=64, num_ranked=8, rm_test_fraction=0.25, num_rl_prompts=32,
    embedded={"eval_size": 16}, eval_samples=2,
    # the RM logs every step: its few ranking steps (fewer than the default logging_steps) still draw a training curve
    sft={"num_train_epochs": 1, "save_steps": 2, "learning_rate": 1e-2}, rm={"num_train_epochs": 1, "save_steps": 2, "logging_steps": 1},
    rl={"max_steps": 4, "save_steps": 2, "per_device_train_batch_size": 8, "num_generations": 4},
)


def small(tmp_path, **overrides):
    return PipelineConfig(**{"output_dir": str(tmp_path / "run"), **SMALL, **overrides})


class StopAt(TrainerCallback):
    """Raises inside training once ``step`` is reached, after the checkpoint of that step was written."""

    def __init__(self, step):
        self.step = step

    def on_save(self, args, state, control, **kwargs):
        if state.global_step >= self.step:
            raise KeyboardInterrupt(f"cut off at step {state.global_step}")


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    cfg = small(tmp_path_factory.mktemp("pipeline"))
    return cfg, run_pipeline(cfg)


@pytest.mark.slow
def test_every_stage_writes_its_folder_and_the_report(finished_run):
    cfg, report = finished_run
    run = cfg.output_dir
    for stage in ("sft", "labels", "rm", "rl", "eval"):
        info = json.load(open(f"{run}/{stage}/stage.json"))
        assert info["stage"] == stage and info["wall_time_s"] >= 0
    for stage in ("sft", "rm", "rl"):
        assert os.path.exists(f"{run}/{stage}/model/model.safetensors")
    AutoModelForCausalLM.from_pretrained(f"{run}/rl/model")
    assert set(report["models"]) == {"base", "sft", "rl"}
    for row in report["models"].values():
        assert 0.0 <= row["oracle_accuracy_greedy"] <= 1.0 and "rm_score_sampled" in row
    assert 0.0 <= report["rm_test_pairwise_accuracy"] <= 1.0
    assert set(report["wall_time_s"]) == {"sft", "labels", "rm", "rl", "eval"}
    assert json.load(open(f"{run}/report.json")) == report
    assert "| rl |" in open(f"{run}/report.md").read()


@pytest.mark.slow
def test_labels_are_all_pairs_of_each_ranking(finished_run):
    cfg, _ = finished_run
    rankings = [json.loads(line) for line in open(f"{cfg.output_dir}/labels/rankings.jsonl")]
    assert len(rankings) == cfg.num_label_prompts
    expected = 0
    for r in rankings:
        assert len(r["answers"]) == cfg.num_ranked
        assert sorted(i for tier in r["ranking"] for i in tier) == list(range(cfg.num_ranked))
        tiers, answers = r["ranking"], r["answers"]
        expected += sum(
            answers[c] != answers[x] for hi, t in enumerate(tiers) for lower in tiers[hi + 1 :] for c in t for x in lower
        )
    n_pairs = sum(1 for _ in open(f"{cfg.output_dir}/labels/train.jsonl")) + sum(
        1 for _ in open(f"{cfg.output_dir}/labels/test.jsonl")
    )
    assert n_pairs == expected


@pytest.mark.slow
def test_rerun_skips_complete_stages(finished_run):
    cfg, report = finished_run
    before = {s: open(f"{cfg.output_dir}/{s}/stage.json").read() for s in ("sft", "labels", "rm", "rl", "eval")}
    again = run_pipeline(cfg)
    assert again == report
    after = {s: open(f"{cfg.output_dir}/{s}/stage.json").read() for s in before}
    assert after == before


@pytest.mark.slow
def test_changed_settings_are_refused_not_reused(finished_run):
    cfg, _ = finished_run
    changed = PipelineConfig(**{**cfg.__dict__, "rl": {**cfg.rl, "learning_rate": 1e-3}})
    with pytest.raises(StageMismatchError, match="stage 'rl'.*changed: \\['rl'\\]"):
        run_pipeline(changed)


@pytest.mark.slow
def test_a_cut_off_stage_resumes_and_earlier_stages_stay_intact(tmp_path):
    cfg = small(tmp_path, until="rl")
    with pytest.raises(KeyboardInterrupt):
        run_pipeline(cfg, callbacks=[StopAt(2)])  # dies in SFT right after checkpoint-2
    assert not (tmp_path / "run/sft/stage.json").exists()
    assert (tmp_path / "run/sft/checkpoints/checkpoint-2").is_dir()
    cfg_rm = small(tmp_path, until="rm")
    run_pipeline(cfg_rm)
    sft = json.load(open(tmp_path / "run/sft/stage.json"))
    assert sft["metrics"]["resumed_from"].endswith("checkpoint-2")
    assert sft["metrics"]["global_step"] == 4  # 256 rows / 64 per step, one epoch: the same as an uncut run
    earlier = {s: open(tmp_path / f"run/{s}/stage.json").read() for s in ("sft", "labels", "rm")}
    with pytest.raises(KeyboardInterrupt):  # RL cut off: the finished stages are untouched
        run_pipeline(cfg, callbacks=[StopAt(2)])
    assert {s: open(tmp_path / f"run/{s}/stage.json").read() for s in earlier} == earlier
    assert not (tmp_path / "run/rl/stage.json").exists()
    run_pipeline(cfg)
    rl = json.load(open(tmp_path / "run/rl/stage.json"))
    assert rl["metrics"]["resumed_from"].endswith("checkpoint-2") and rl["metrics"]["global_step"] == 4


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"algorithm": "ppo2"}, "algorithm='ppo2' is unknown"),
        ({"num_ranked": 1}, "num_ranked=1: a ranking needs K >= 2"),
        ({"until": "deploy"}, "until='deploy' is not a stage"),
        ({"rl": "{not json"}, "--rl must be a JSON object"),
        ({"embedded": {"demo_error_rate": 2.0}}, "demo_error_rate must be in"),
    ],
)
def test_bad_settings_fail_before_any_work(tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        small(tmp_path, **overrides)


def test_command_line_json_merges_over_the_yaml_map_it_names(tmp_path):
    """`--rl '{"max_steps": 2}'` on a recipe keeps the recipe's other rl: fields (TrlParser alone replaced the map,
    so max_completion_length fell back to TRL's 512); a second flag merges again; without a YAML map it is the JSON."""
    from trl_ext.cli import pipeline_parser

    config = tmp_path / "recipe.yaml"
    config.write_text("rl:\n  max_steps: 80\n  max_completion_length: 16\n  learning_rate: 2.0e-5\n"
                      "sft:\n  num_train_epochs: 3\n")
    def parse(argv):  # a fresh parser each time: a --config leaves its defaults on the parser
        return pipeline_parser().parse_args_and_config(argv)

    cfg, _ = parse(["--config", str(config), "--rl", '{"max_steps": 2, "save_steps": 2}'])
    assert cfg.rl == {"max_steps": 2, "max_completion_length": 16, "learning_rate": 2e-5, "save_steps": 2}
    assert cfg.sft == {"num_train_epochs": 3} and cfg.rm == {}
    cfg, _ = parse(["--config", str(config), "--rl", '{"max_steps": 2}', "--rl", '{"learning_rate": 1e-3}'])
    assert cfg.rl == {"max_steps": 2, "max_completion_length": 16, "learning_rate": 1e-3}
    cfg, _ = parse(["--config", str(config)])
    assert cfg.rl == {"max_steps": 80, "max_completion_length": 16, "learning_rate": 2e-5}
    cfg, _ = parse(["--rl", '{"max_steps": 2}'])
    assert cfg.rl == {"max_steps": 2}
    with pytest.raises(ValueError, match="--rl must be a JSON object"):
        parse(["--config", str(config), "--rl", "{max_steps: 2}"])


def test_unknown_stage_field_names_the_config(tmp_path):
    cfg = small(tmp_path, sft={"learning_rat": 1e-3})
    with pytest.raises(ValueError, match=r"`sft:` has fields that SFTConfig does not know: \['learning_rat'\]"):
        run_pipeline(cfg)


def test_missing_model_path_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"model_name_or_path='\./no/such/model' does not exist"):
        run_pipeline(small(tmp_path), ModelConfig(model_name_or_path="./no/such/model"))


def test_prompt_dataset_errors_name_the_column_and_the_row(tmp_path):
    with pytest.raises(ValueError, match=r"column\(s\) \['prompt'\] missing; the dataset has \['question'\]"):
        validate_columns(Dataset.from_dict({"question": ["1+1"]}), ["prompt"], "prompts")
    rows = Dataset.from_dict({"prompt": [[{"role": "user", "content": "1+1"}], [{"role": "user", "content": " "}]]})
    with pytest.raises(ValueError, match="row 1 has an empty 'prompt'"):
        validate_columns(rows, ["prompt"], "prompts")
    path = tmp_path / "prompts.jsonl"
    Dataset.from_dict({"question": ["1+1"]}).to_json(path)
    cfg = small(tmp_path, prompt_dataset_name=str(path))
    with pytest.raises(ValueError, match=f"prompt_dataset_name='{path}': column"):
        from trl_ext.pipeline import rl_prompts

        rl_prompts(cfg)


@pytest.mark.slow
def test_lora_and_4bit_in_every_stage_with_the_rm_on_the_policys_base(tmp_path, finished_run):
    # start from the fully fine-tuned SFT model of the other run: a few LoRA steps on a random model answer nothing
    # the labeller can tell apart, and the labels stage would (rightly) refuse
    cfg = small(tmp_path, shared_base_reward=True)
    model_args = ModelConfig(
        model_name_or_path=f"{finished_run[0].output_dir}/sft/model", use_peft=True, load_in_4bit=True, lora_r=8,
        lora_target_modules="all-linear",
    )
    report = run_pipeline(cfg, model_args)
    run = tmp_path / "run"
    for stage in ("sft", "rm", "rl"):  # each stage trained an adapter and merged it into a full checkpoint
        assert (run / stage / "adapter" / "adapter_config.json").exists()
        assert (run / stage / "model" / "model.safetensors").exists()
    assert not (run / "rl" / "adapter" / "reward").exists()  # the RM adapter is not saved with the policy
    assert set(report["models"]) == {"base", "sft", "rl"}
    assert not (run / "base").exists()  # a given model is used as it is, nothing is built
    assert all(0.0 <= row["oracle_accuracy_sampled"] <= 1.0 for row in report["models"].values())
    rl = json.load(open(run / "rl" / "stage.json"))["metrics"]
    assert rl["global_step"] == 4 and rl["reward_first"] is not None

    # PPO with policy, reference, RM and critic as adapters on one 4-bit base, the RM being the RM stage's adapter
    ppo_run = tmp_path / "ppo"
    for stage in ("sft", "labels", "rm"):
        shutil.copytree(run / stage, ppo_run / stage)
    ppo_cfg = small(
        tmp_path, output_dir=str(ppo_run), algorithm="ppo", until="rl",
        rl={"shared_base": True, "max_steps": 2, "per_device_train_batch_size": 8, "num_generations": 4},
    )
    run_pipeline(ppo_cfg, model_args)
    ppo = json.load(open(ppo_run / "rl" / "stage.json"))
    assert ppo["settings"]["algorithm"] == "ppo" and ppo["metrics"]["global_step"] == 2


def test_shared_base_reward_needs_lora(tmp_path):
    with pytest.raises(ValueError, match="shared_base_reward=True .* add --use_peft"):
        run_pipeline(small(tmp_path, shared_base_reward=True))


@pytest.mark.slow
def test_ctrl_c_saves_a_checkpoint_and_the_rerun_resumes(tmp_path):
    import os
    import signal

    from trl_ext.pipeline import StageInterrupted

    class CtrlCAt(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 1:
                os.kill(os.getpid(), signal.SIGINT)

    cfg = small(tmp_path, until="sft", sft={**SMALL["sft"], "save_steps": 100})
    before = signal.getsignal(signal.SIGINT)  # default_int_handler, or SIG_IGN when pytest runs in the background
    with pytest.raises(StageInterrupted, match=r"stage 'sft' interrupted; checkpoint saved at .*checkpoint-1\b"):
        run_pipeline(cfg, callbacks=[CtrlCAt()])
    assert signal.getsignal(signal.SIGINT) is before  # the handler was put back
    run_pipeline(cfg)
    sft = json.load(open(tmp_path / "run/sft/stage.json"))["metrics"]
    assert sft["resumed_from"].endswith("checkpoint-1") and sft["global_step"] == 4


@pytest.mark.slow
def test_dpo_route_trains_the_policy_on_the_labellers_pairs(tmp_path, finished_run):
    src = finished_run[0].output_dir
    cfg = small(tmp_path, algorithm="dpo", rl={"max_steps": 2, "per_device_train_batch_size": 4})
    for stage in ("sft", "labels", "rm"):  # reuse the finished stages: same settings, so they are skipped
        shutil.copytree(f"{src}/{stage}", tmp_path / "run" / stage)
    shutil.copytree(f"{src}/base", tmp_path / "run" / "base")
    report = run_pipeline(cfg)
    rl = json.load(open(tmp_path / "run/rl/stage.json"))
    assert rl["settings"]["algorithm"] == "dpo" and rl["metrics"]["global_step"] == 2
    assert report["algorithm"] == "dpo" and "rl" in report["models"]


@pytest.mark.slow
@pytest.mark.parametrize("algorithm", ["dapo", "rloo", "rloo_trl", "ppo"])
def test_every_rl_algorithm_runs_in_the_pipeline(tmp_path, finished_run, algorithm):
    src = finished_run[0].output_dir
    rl = {"max_steps": 2, "per_device_train_batch_size": 8, "num_generations": 4}
    if algorithm == "dapo":
        rl["dynamic_sampling_on_cap"] = "train_on_kept"  # an untrained policy has few informative groups
    cfg = small(tmp_path, algorithm=algorithm, until="rl", rl=rl)
    for stage in ("base", "sft", "labels", "rm"):
        shutil.copytree(f"{src}/{stage}", tmp_path / "run" / stage)
    run_pipeline(cfg)
    info = json.load(open(tmp_path / "run/rl/stage.json"))
    assert info["settings"]["algorithm"] == algorithm and info["metrics"]["global_step"] == 2
    assert (tmp_path / "run/rl/model/model.safetensors").exists()


@pytest.mark.slow
def test_reward_funcs_from_the_config_join_the_reward_model(tmp_path, finished_run):
    """A reward function named by dotted path in the config is imported and weighted beside the RM."""
    src = finished_run[0].output_dir
    rl = {"max_steps": 2, "per_device_train_batch_size": 8, "num_generations": 4, "reward_weights": [0.0, 1.0],
          "logging_steps": 1}
    cfg = small(tmp_path, until="rl", rl=rl, reward_funcs=["trl_ext.toy.task.oracle_correct"], reward="both")
    for stage in ("base", "sft", "labels", "rm"):
        shutil.copytree(f"{src}/{stage}", tmp_path / "run" / stage)
    run_pipeline(cfg)
    info = json.load(open(tmp_path / "run/rl/stage.json"))
    assert info["settings"]["reward_funcs"] == ["trl_ext.toy.task.oracle_correct"]
    state = json.load(open(tmp_path / "run/rl/checkpoints/checkpoint-2/trainer_state.json"))
    logs = [h for h in state["log_history"] if "rewards/oracle_correct/mean" in h]
    assert len(logs) == 2
    for h in logs:  # weights [0, 1]: the trained-on reward is the oracle's alone, a share of correct answers
        assert h["reward"] == pytest.approx(h["rewards/oracle_correct/mean"], abs=1e-6)
        assert 0.0 <= h["reward"] <= 1.0


# ---- the RL stage with PPO's shared base ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def rm_stage(tmp_path_factory):
    """What the RM stage leaves for run_rl when trained with LoRA: ``adapter/`` (SEQ_CLS LoRA) and the merged ``model/``."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from trl_ext.toy import ensure_tiny_checkpoint

    root = tmp_path_factory.mktemp("rm_stage")
    base = str(ensure_tiny_checkpoint(root / "base"))
    tokenizer = AutoTokenizer.from_pretrained(base)
    torch.manual_seed(0)
    rm = get_peft_model(AutoModelForSequenceClassification.from_pretrained(base, num_labels=1),
                        LoraConfig(task_type="SEQ_CLS", r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    rm.save_pretrained(root / "rm" / "adapter")
    tokenizer.save_pretrained(root / "rm" / "adapter")
    rm.merge_and_unload().save_pretrained(root / "rm" / "model")
    tokenizer.save_pretrained(root / "rm" / "model")
    return base, root / "rm"


def _sequence_classifiers() -> set[int]:
    import gc

    from transformers import PreTrainedModel

    gc.collect()
    return {id(o) for o in gc.get_objects()
            if isinstance(o, PreTrainedModel) and type(o).__name__.endswith("ForSequenceClassification")}


class RolesAtTrainBegin(TrainerCallback):
    """Records the policy's adapters, and the sequence classifiers alive when training starts that were not before."""

    def __init__(self):
        self.before = _sequence_classifiers()

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.adapters = sorted(model.peft_config)
        self.new_classifiers = _sequence_classifiers() - self.before


@pytest.mark.parametrize("shared_base_reward", [False, True], ids=["rm_merged", "shared_base_reward"])
def test_ppo_shared_base_loads_the_reward_adapter_once_and_no_full_rm(tmp_path, rm_stage, shared_base_reward):
    from trl_ext.pipeline import run_rl

    base, rm_folder = rm_stage
    cfg = small(tmp_path, algorithm="ppo", shared_base_reward=shared_base_reward,
                rl={"shared_base": True, "max_steps": 1, "per_device_train_batch_size": 4, "num_generations": 4})
    model_args = ModelConfig(model_name_or_path=base, use_peft=True, lora_r=4, lora_target_modules=["q_proj", "v_proj"])
    seen = RolesAtTrainBegin()
    metrics = run_rl(cfg, model_args, base, rm_folder, tmp_path / "rl", callbacks=[seen])
    assert metrics["global_step"] == 1
    assert seen.adapters == ["critic", "default", "reward"]  # the reward adapter once, on the policy's base
    assert not seen.new_classifiers  # PPO scores with the adapter: the merged RM is never loaded beside it


@pytest.mark.slow
def test_rm_trains_on_whole_rankings_and_the_pairwise_route_stays(tmp_path, finished_run):
    """Default ``rm_loss: ranking``; its held-out accuracy is TRL's RewardTrainer's on test.jsonl, as the pairwise route's."""
    from datasets import load_dataset
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from trl import RewardConfig, RewardTrainer

    src = finished_run[0].output_dir
    rm = json.load(open(f"{src}/rm/stage.json"))
    assert rm["settings"]["rm_loss"] == "ranking" and rm["metrics"]["rm_loss"] == "ranking"
    test = load_dataset("json", data_files=f"{src}/labels/test.jsonl", split="train")
    assert rm["metrics"]["test_pairs"] == len(test)
    model = AutoModelForSequenceClassification.from_pretrained(f"{src}/rm/model", num_labels=1)
    args = RewardConfig(output_dir=str(tmp_path / "eval"), per_device_eval_batch_size=256, report_to=[], use_cpu=True,
                        bf16=False, max_length=32)
    trl_eval = RewardTrainer(model, args, train_dataset=test, processing_class=AutoTokenizer.from_pretrained(f"{src}/rm/model"))
    assert rm["metrics"]["test_pairwise_accuracy"] == pytest.approx(trl_eval.evaluate(test)["eval_accuracy"], abs=1e-6)

    cfg = small(tmp_path, until="rm", rm_loss="pairwise")
    for stage in ("base", "sft", "labels"):
        shutil.copytree(f"{src}/{stage}", tmp_path / "run" / stage)
    report = run_pipeline(cfg)
    pairwise = json.load(open(tmp_path / "run/rm/stage.json"))
    assert pairwise["settings"]["rm_loss"] == "pairwise" and pairwise["metrics"]["test_pairs"] == len(test)
    assert 0.0 <= report["rm_test_pairwise_accuracy"] <= 1.0


def test_rm_loss_is_checked():
    with pytest.raises(ValueError, match="rm_loss='listwise' is unknown"):
        PipelineConfig(rm_loss="listwise")
    with pytest.raises(ValueError, match="rm_loss='ranking' needs the labeller's rankings"):
        PipelineConfig(rm_loss="ranking", preference_dataset_name="pairs.jsonl")
    assert PipelineConfig(preference_dataset_name="pairs.jsonl").rm_loss == "pairwise"
    assert PipelineConfig().rm_loss == "ranking"


@pytest.mark.slow
def test_report_embeds_the_gold_and_training_curves(finished_run):
    """The RL stage ran GoldRewardCallback with the oracle as gold; report.md shows its curves and each stage's."""
    cfg, _ = finished_run
    run = cfg.output_dir
    history = json.load(open(f"{run}/rl/log_history.json"))
    gold = [h for h in history if "gold/oracle_correct" in h]
    assert [h["step"] for h in gold] == [0, 4]  # at the start and the last step (gold_eval_steps=10 > max_steps)
    for h in gold:  # accuracy of eval_size * gold_eval_samples = 32 sampled answers; the reference is the SFT model
        assert 0.0 <= h["gold/reward"] <= 1.0 and h["gold/reward"] * 32 == pytest.approx(round(h["gold/reward"] * 32))
        assert "proxy/rm" in h
    assert gold[0]["gold/kl"] == 0.0
    text = open(f"{run}/report.md").read()
    figures = ["rl_gold.png"] + [  # a training figure for every stage that logged a training step (SMALL is short)
        f"{stage}_training.png" for stage in ("sft", "rm", "rl")
        if any("loss" in h for h in json.load(open(f"{run}/{stage}/log_history.json")))
    ]
    assert len(figures) >= 2
    for figure in figures:
        assert f"(figures/{figure})" in text
        assert open(f"{run}/figures/{figure}", "rb").read(8) == b"\x89PNG\r\n\x1a\n"
