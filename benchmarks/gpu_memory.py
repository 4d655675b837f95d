"""The single-GPU claims, measured: peak VRAM, generation speed and step time of every trainer on real architectures.

    python benchmarks/gpu_memory.py                                    # on a CUDA machine, ~7 min (--budget_s)
    OMP_NUM_THREADS=1 PYTHONPATH=$PWD python benchmarks/gpu_memory.py --smoke --results_dir /tmp/kit   # CPU check
    python benchmarks/gpu_memory.py --dry_run --not_measured "no GPU lent to this task"   # the table, unmeasured

On a lent GPU machine (no trl/bitsandbytes/datasets there, no network) run ``benchmarks/gpu_kit.sh``: its header
says how to carry the wheels and which device call to make.

What runs. Each architecture of ``benchmarks/configs/arch/`` (Qwen2.5-0.5B/1.5B/3B, Llama-3.2-1B shapes, random
weights; see gpu_shapes.py) is trained for ``--steps`` optimizer steps by each trainer, in bf16 + LoRA and in nf4
4-bit + LoRA (``trl_ext.models.load_causal_lm`` with TRL's ModelConfig, as the pipeline loads), at the recipes'
settings (the ``rl:``/``rm:`` maps of recipes/configs/qwen2.5-*.yaml over the pipeline's defaults, through the
pipeline's own ``stage_args``):

* ``grpo``: TRL's GRPOTrainer. ``dapo``: trl_ext's DAPOTrainer, dynamic sampling on. ``rloo``: trl_ext's RLOOTrainer.
  All three score with the reward model as a LoRA adapter on the policy's base (``trl_ext.RewardAdapter.shared_base``,
  as benchmarks/ppo_memory.py's GRPO baseline), so they pay for the same reward model as ``ppo_shared``.
* ``ppo_shared``: PPOTrainer(shared_base=True): policy, critic and reward model as adapters on one base, reference =
  adapters off. ``ppo_separate``: LoRA policy (reference = adapters off), a separate reward model at the setting's
  precision scored by RewardAdapter, and a separate full-parameter critic loaded from the base (bf16), as the
  pipeline sets PPO up.
* ``rm``: TRL's RewardTrainer with a LoRA (SEQ_CLS) on the base, preference pairs of the recipe's max_length.
* ``dapo_off``: DAPOTrainer with dynamic sampling and overlong shaping off and TRL's symmetric clip, i.e. GRPO's
  math through DAPOTrainer: run alone on the device beside ``grpo`` for the step-time ratio.
* ``score``: one reward-model scoring call of N completions, ``RewardAdapter`` micro-batches (16) vs TRL's one
  forward (benchmarks/reward_adapter.py's ``scorer`` and ``PeakRSS``), N = ``--score_sizes``.

How it is measured. Every run is its own child process (fork on CPU, spawn on CUDA), so a peak is one run's and an
OOM or a crash ends only that run. CUDA: ``torch.cuda.max_memory_allocated`` and ``max_memory_reserved`` from the
child's start (weights, LoRA, optimizer states, activations, KV cache), each child limited to ``--cap_gib`` with
``torch.cuda.set_per_process_memory_fraction`` so that ``--jobs`` runs can share one large card; a run that needs
more ends in OOM and is reported as "> cap". A card fits a run when reserved + the CUDA context (measured once) is at
most its size. CPU (``--smoke``): peak resident set size minus the size just after the fork, i.e. process RSS.
Generation: tokens produced by ``generate`` per second of ``generate`` (synchronised). Step time: wall time from
``on_step_begin`` to ``on_step_end`` of a TrainerCallback (generation, scoring, forward, backward and optimizer step).
Timings of runs that shared the GPU with other runs are slower than alone; only the ratio runs (``solo``) ran alone.
``--budget_s`` bounds the whole run: runs not started by then are listed as skipped, runs still going after it
(plus 30 s) are stopped.
"""

from __future__ import annotations

import argparse
import gc
import os
import shlex
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import gpu_report  # noqa: E402
import gpu_shapes  # noqa: E402

TRAINERS = ("dapo", "grpo", "rloo", "ppo_shared", "ppo_separate", "rm")  # the fit table's rows, in run order
SCORE_METHODS = ("trl_one_shot", "adapter_bs16")  # from benchmarks/reward_adapter.py
GRACE_S = 30


# ---- the plan --------------------------------------------------------------------------------------------------------
def plan(args) -> list[dict]:
    """Runs in priority order: the solo ratio pair, then the 1.5B shape (the absolute goal), scoring, other shapes."""
    runs = []
    for pair in range(args.ratio_pairs):
        for trainer in ("grpo", "dapo_off") if pair % 2 == 0 else ("dapo_off", "grpo"):
            runs.append(dict(kind="train", arch=gpu_shapes.RATIO_ARCH, setting="nf4_lora", trainer=trainer,
                             steps=args.ratio_steps, solo=True, role="ratio", pair=pair))
    covered = {(r["arch"], r["setting"], r["trainer"]) for r in runs}
    for arch in args.archs:
        for setting in gpu_shapes.SETTINGS:
            runs += [dict(kind="train", arch=arch, setting=setting, trainer=t, steps=args.steps, solo=False, role="fit")
                     for t in args.trainers if (arch, setting, t) not in covered]
        if arch == gpu_shapes.SCORE_ARCH:
            runs += [dict(kind="score", arch=arch, setting="bf16", trainer="score", method=m, n=n, solo=False,
                          role="score") for n in args.score_sizes for m in SCORE_METHODS]
    for r in runs:
        r["id"] = run_id(r)
    return runs


def run_id(r: dict) -> str:
    if r["kind"] == "score":
        return f"{r['arch']}/score/{r['method']}/n{r['n']}"
    suffix = f"/pair{r['pair']}" if r.get("role") == "ratio" else ""
    return f"{r['arch']}/{r['setting']}/{r['trainer']}{suffix}"


# ---- measuring inside a child ----------------------------------------------------------------------------------------
class Meter:
    """Memory since the child started, step times (a TrainerCallback) and generation throughput."""

    def __init__(self, cuda: bool):
        import torch

        from ppo_memory import _rss_mb

        self.torch, self.cuda = torch, cuda
        self.rss_start = _rss_mb()
        self.steps, self.step_gen_s, self.gen_s, self.gen_tokens, self._t0, self._g0 = [], [], 0.0, 0, 0.0, 0.0
        if cuda:
            torch.cuda.reset_peak_memory_stats()

    def sync(self):
        if self.cuda:
            self.torch.cuda.synchronize()

    def memory(self) -> dict:
        from ppo_memory import _peak_rss_mb, _rss_mb

        if self.cuda:
            self.sync()
            return {"peak_alloc_mib": self.torch.cuda.max_memory_allocated() / 2**20,
                    "peak_reserved_mib": self.torch.cuda.max_memory_reserved() / 2**20,
                    "now_alloc_mib": self.torch.cuda.memory_allocated() / 2**20}
        return {"peak_rss_mib": _peak_rss_mb() - self.rss_start, "now_rss_mib": _rss_mb() - self.rss_start}

    def callback(self):
        from transformers import TrainerCallback

        meter = self

        class StepTimer(TrainerCallback):
            def on_step_begin(self, args, state, control, **kwargs):
                meter.sync()
                meter._t0, meter._g0 = time.perf_counter(), meter.gen_s

            def on_step_end(self, args, state, control, **kwargs):
                meter.sync()
                meter.steps.append(time.perf_counter() - meter._t0)
                meter.step_gen_s.append(meter.gen_s - meter._g0)

        return StepTimer()

    def time_generate(self, model) -> None:
        """Count what ``model.generate`` produces (GRPO calls it on the unwrapped policy) and how long it takes."""
        generate = model.generate

        def timed(*args, **kwargs):
            prompt_length = kwargs["input_ids"].shape[1] if "input_ids" in kwargs else args[0].shape[1]
            self.sync()
            start = time.perf_counter()
            out = generate(*args, **kwargs)
            self.sync()
            self.gen_s += time.perf_counter() - start
            self.gen_tokens += out.shape[0] * (out.shape[1] - prompt_length)  # (B, P + C): C new tokens per row
            return out

        model.generate = timed


def _rl_trainer(spec, ctx, settings, model_args, tokenizer, out_dir):
    """One RL trainer at the recipe's settings; returns it (the reward adapter, if any, already attached)."""
    from trl import GRPOConfig, GRPOTrainer, ModelConfig, get_peft_config

    from trl_ext import DAPOConfig, DAPOTrainer, PPOConfig, PPOTrainer, RewardAdapter, RLOOConfig, RLOOTrainer
    from trl_ext.models import load_causal_lm, load_sequence_classifier
    from trl_ext.pipeline import RL_DEFAULTS, PipelineConfig, stage_args

    ckpt, trainer_name = ctx["checkpoints"][spec["arch"]], spec["trainer"]
    rl = settings["rl"]
    overrides = {**rl, **_bench_args(spec), "generation_kwargs": {"min_new_tokens": rl["max_completion_length"]}}
    configs = {"grpo": (GRPOConfig, {}), "dapo": (DAPOConfig, {}), "rloo": (RLOOConfig, {}),
               "dapo_off": (DAPOConfig, dict(dynamic_sampling=False, overlong_buffer_length=0, epsilon_high=None)),
               "ppo_shared": (PPOConfig, dict(shared_base=True)), "ppo_separate": (PPOConfig, {})}
    config_cls, extra = configs[trainer_name]
    args = stage_args(config_cls, RL_DEFAULTS, {**overrides, **extra}, out_dir, 0, "rl")
    n_prompts = max(64, args.generation_batch_size * (spec["steps"] + 2))
    data = gpu_shapes.prompt_dataset(tokenizer, n_prompts, settings["prompt_tokens"])
    policy, lora = load_causal_lm(model_args), get_peft_config(model_args)
    common = dict(args=args, train_dataset=data, processing_class=tokenizer, peft_config=lora)

    if trainer_name == "ppo_shared":
        return PPOTrainer(policy, ckpt["rm_adapter"], **common)
    if trainer_name == "ppo_separate":  # as trl_ext.pipeline.run_rl: RM through RewardAdapter, critic from a checkpoint
        rm = load_sequence_classifier(model_args, ckpt["base"], num_labels=1)
        if not getattr(rm, "is_loaded_in_4bit", False):
            rm.to(ctx["device"])  # RewardAdapter does not move the model; a 4-bit one is placed by its device_map
        batch = PipelineConfig.__dataclass_fields__["reward_batch_size"].default
        reward = RewardAdapter.from_model(rm, tokenizer, batch_size=batch, name="rm")
        # The critic: a full-parameter sequence classifier of the base in bf16 (trainable, so never 4-bit). Passed
        # loaded: from a path, PPOTrainer would compare tokenizers loaded from the base folder, which has none.
        critic = load_sequence_classifier(ModelConfig(dtype="bfloat16"), ckpt["base"], num_labels=1)
        return PPOTrainer(policy, [reward], value_model=critic, **common)
    def reward_adapter(prompts, completions, **kwargs):  # GRPO reads reward_funcs before it builds the PeftModel
        raise RuntimeError("replaced by RewardAdapter.shared_base once the trainer has built the PeftModel")

    trainer_cls = {"grpo": GRPOTrainer, "dapo": DAPOTrainer, "dapo_off": DAPOTrainer, "rloo": RLOOTrainer}[trainer_name]
    trainer = trainer_cls(policy, [reward_adapter], **common)
    # GRPO has no shared-RM option; trl_ext's shared-base reward (the one PPO uses) fills in, as in ppo_memory.py
    trainer.reward_funcs[0] = RewardAdapter.shared_base(trainer.model, ckpt["rm_adapter"], tokenizer,
                                                        name="reward_adapter")
    return trainer


def _rm_trainer(spec, ctx, settings, model_args, tokenizer, out_dir):
    """TRL's RewardTrainer with a LoRA (SEQ_CLS) on the base, as trl_ext.pipeline.run_rm builds it."""
    from trl import RewardConfig, RewardTrainer, get_peft_config

    from trl_ext.models import load_sequence_classifier
    from trl_ext.pipeline import RM_DEFAULTS, stage_args

    overrides = {**settings["rm"], **_bench_args(spec), "num_train_epochs": 1}
    args = stage_args(RewardConfig, RM_DEFAULTS, overrides, out_dir, 0, "rm")
    pairs = args.per_device_train_batch_size * args.gradient_accumulation_steps * (spec["steps"] + 1)
    data = gpu_shapes.preference_dataset(tokenizer, pairs, args.max_length)
    lora = get_peft_config(model_args)
    lora.task_type = "SEQ_CLS"  # keeps the score head trainable (modules_to_save)
    model = load_sequence_classifier(model_args, ctx["checkpoints"][spec["arch"]]["base"], num_labels=1)
    trainer = RewardTrainer(model=model, args=args, train_dataset=data, processing_class=tokenizer, peft_config=lora)
    if len(trainer.train_dataset) != pairs:
        raise RuntimeError(f"RewardTrainer kept {len(trainer.train_dataset)} of {pairs} pairs of {args.max_length} "
                           "tokens: the pairs must not exceed max_length.")
    return trainer


def _bench_args(spec) -> dict:
    return dict(max_steps=spec["steps"], logging_steps=1, save_strategy="no", report_to=[], disable_tqdm=True)


def train_run(spec: dict, ctx: dict) -> dict:
    """Build one trainer in this fresh process, train ``steps`` steps, report memory and timings."""
    from transformers import AutoTokenizer
    from trl import ModelConfig

    from ppo_memory import _modules
    from trl_ext.models import disable_bnb_cpu_repack, match_trainable_dtype_to_compute

    meter = Meter(ctx["device"] == "cuda")
    settings = gpu_shapes.recipe_settings(spec["arch"], spec["trainer"], ctx["smoke"])
    ckpt = ctx["checkpoints"][spec["arch"]]
    model_args = ModelConfig(model_name_or_path=ckpt["base"], dtype="bfloat16", use_peft=True,
                             load_in_4bit=spec["setting"] == "nf4_lora", **settings["lora"])
    tokenizer = AutoTokenizer.from_pretrained(ckpt["tokenizer"])
    out_dir = Path(ctx["work_dir"]) / "runs" / spec["id"].replace("/", "_")
    build = _rm_trainer if spec["trainer"] == "rm" else _rl_trainer
    trainer = build(spec, ctx, settings, model_args, tokenizer, out_dir)
    disable_bnb_cpu_repack(trainer.model)  # as the pipeline does: a repacked CPU 4-bit layer trains without gradients
    match_trainable_dtype_to_compute(trainer.model, trainer.args.bf16)
    trainer.add_callback(meter.callback())
    meter.time_generate(trainer.accelerator.unwrap_model(trainer.model))
    loaded = meter.memory()
    start = time.perf_counter()
    trainer.train()
    wall = time.perf_counter() - start
    params = {id(p): p for m in _modules(trainer) for p in m.parameters()}  # policy, critic, reference, RM adapters
    result = {
        "status": "ok", **meter.memory(), "loaded": loaded, "step_s": meter.steps, "step_gen_s": meter.step_gen_s,
        "gen_tokens": meter.gen_tokens, "gen_s": meter.gen_s,
        "gen_tokens_per_s": meter.gen_tokens / meter.gen_s if meter.gen_s > 0 else None,
        "train_s": wall, "recipe": settings["recipe"], "prompt_tokens": settings["prompt_tokens"],
        "trainable_params_m": sum(p.numel() for p in params.values() if p.requires_grad) / 1e6,
        "bf16": bool(trainer.args.bf16), "loss": [h["loss"] for h in trainer.state.log_history if "loss" in h],
    }
    if hasattr(trainer, "dynamic_sampling_totals") and trainer.args.dynamic_sampling:
        result["dynamic_sampling"] = dict(trainer.dynamic_sampling_totals)
    return result


def score_run(spec: dict, ctx: dict) -> dict:
    """One reward-model scoring call of ``n`` full-length completions: RewardAdapter (micro-batches) or TRL's path."""
    from transformers import AutoTokenizer
    from trl import ModelConfig

    import reward_adapter
    from trl_ext.models import load_sequence_classifier

    ckpt = ctx["checkpoints"][spec["arch"]]
    settings = gpu_shapes.recipe_settings(spec["arch"], "grpo", ctx["smoke"])
    tokenizer = AutoTokenizer.from_pretrained(ckpt["tokenizer"])
    model = load_sequence_classifier(ModelConfig(dtype="bfloat16"), ckpt["base"], num_labels=1).to(ctx["device"])
    model.eval()
    length = settings["rl"]["max_completion_length"]
    prompts, completions = gpu_shapes.scoring_pairs(tokenizer, spec["n"], settings["prompt_tokens"], length)
    score = reward_adapter.scorer(spec["method"], model, tokenizer, spec["n"])
    score(*gpu_shapes.scoring_pairs(tokenizer, 4, settings["prompt_tokens"], length, seed=1))  # warm-up
    with reward_adapter.PeakRSS(ctx["device"]) as memory:
        start = time.perf_counter()
        scores = score(prompts, completions)
        seconds = time.perf_counter() - start
    if len(scores) != spec["n"]:
        raise RuntimeError(f"{spec['method']} returned {len(scores)} scores for {spec['n']} completions")
    return {"status": "ok", "peak_mib": memory.delta_mib, "time_s": seconds, "recipe": settings["recipe"],
            "tokens_per_completion": settings["prompt_tokens"] + length}


def build_run(spec: dict, ctx: dict) -> dict:
    settings = gpu_shapes.recipe_settings(spec["arch"], "grpo", ctx["smoke"])
    folder = Path(ctx["work_dir"]) / "checkpoints" / (("smoke-" if ctx["smoke"] else "") + spec["arch"])
    lora = settings["lora"]
    return {"status": "ok", **gpu_shapes.build_checkpoint(spec["arch"], folder, ctx["smoke"], lora.get("lora_r", 16),
                                                         lora.get("lora_alpha", 32))}


def child(spec: dict, ctx: dict, conn) -> None:
    """Entry point of every child process: one run, its result (or its error) sent back through ``conn``."""
    import torch

    os.environ.setdefault("TQDM_DISABLE", "1")
    torch.set_num_threads(ctx["threads"])
    if ctx["device"] == "cuda" and spec["kind"] != "build":
        total = torch.cuda.get_device_properties(0).total_memory
        torch.cuda.set_per_process_memory_fraction(ctx["cap_gib"] * 2**30 / total)
    try:
        result = {"train": train_run, "score": score_run, "build": build_run}[spec["kind"]](spec, ctx)
    except BaseException as e:  # noqa: BLE001  every failure is a result; the kit goes on with the next run
        oom = isinstance(e, torch.OutOfMemoryError) or "out of memory" in str(e).lower()
        result = {"status": "oom" if oom else "error", "error": f"{type(e).__name__}: {str(e)[:600]}",
                  "traceback": traceback.format_exc()[-4000:]}
        if ctx["device"] == "cuda":
            result["peak_alloc_mib"] = torch.cuda.max_memory_allocated() / 2**20
            result["peak_reserved_mib"] = torch.cuda.max_memory_reserved() / 2**20
    conn.send(result)
    conn.close()


# ---- the parent: schedule children within the budget -----------------------------------------------------------------
def execute(runs: list[dict], ctx: dict, args, t_start: float) -> list[dict]:
    """Run every spec in its own process, at most ``ctx['jobs']`` at once (``solo`` ones alone), within the budget."""
    import multiprocessing

    mp = multiprocessing.get_context(ctx["start_method"])
    pending, running, done = list(runs), {}, []
    budget_end = t_start + args.budget_s if args.budget_s else float("inf")

    def finish(spec, result, started):
        result = {**spec, **result, "wall_s": time.monotonic() - started}
        done.append(result)
        print(gpu_report.progress_line(result), flush=True)

    while pending or running:
        for rid, (proc, conn, started, spec) in list(running.items()):
            deadline = min(started + args.run_timeout_s, budget_end + GRACE_S)
            if conn.poll():
                try:
                    result = conn.recv()
                except EOFError:
                    result = {"status": "error", "error": "the child closed its pipe without a result"}
                proc.join(10)
            elif not proc.is_alive():
                proc.join()
                result = {"status": "crashed", "error": f"child exited with code {proc.exitcode} and no result "
                          "(killed by a signal when negative: -9 is the kernel's OOM killer or a kill)"}
            elif time.monotonic() > deadline:
                proc.kill()
                proc.join()
                result = {"status": "timeout", "error": f"stopped after {time.monotonic() - started:.0f} s"}
            else:
                continue
            del running[rid]
            finish(spec, result, started)
        while pending:
            spec = pending[0]
            if time.monotonic() > budget_end:
                for s in pending:
                    done.append({**s, "status": "skipped", "error": f"time budget ({args.budget_s:.0f} s) spent"})
                pending.clear()
                break
            busy_solo = any(s["solo"] for *_, s in running.values())
            if len(running) >= ctx["jobs"] or busy_solo or (spec.get("solo") and running):
                break
            pending.pop(0)
            parent_conn, child_conn = mp.Pipe(duplex=False)
            proc = mp.Process(target=child, args=(spec, ctx, child_conn), daemon=True)
            proc.start()
            child_conn.close()
            running[spec["id"]] = (proc, parent_conn, time.monotonic(), spec)
        time.sleep(0.05)
    return done


def environment(cuda: bool) -> dict:
    """Card, driver and library versions, read without initialising anything the children need."""
    import importlib.metadata as md
    import platform

    import torch

    env = {"python": platform.python_version(), "platform": platform.platform()}
    for name in ("torch", "transformers", "trl", "peft", "accelerate", "bitsandbytes", "datasets", "tokenizers"):
        try:
            env[name] = md.version(name)
        except md.PackageNotFoundError:
            env[name] = None
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=HERE)
        env["commit"] = commit.stdout.strip() or os.environ.get("GPU_KIT_COMMIT")
    except OSError:
        env["commit"] = os.environ.get("GPU_KIT_COMMIT")
    if cuda:
        props = torch.cuda.get_device_properties(0)
        free, total = torch.cuda.mem_get_info()  # this process's context is the only user of a fresh card
        env.update(card=props.name, total_mib=total / 2**20, cuda=torch.version.cuda,
                   context_mib=(total - free) / 2**20, capability=f"{props.major}.{props.minor}")
        try:
            smi = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=20)
            env["driver"] = smi.stdout.strip().splitlines()[0] if smi.returncode == 0 else None
        except (OSError, subprocess.TimeoutExpired, IndexError):
            env["driver"] = None
    else:
        env.update(card=None, cpu=platform.processor() or platform.machine())
    return env


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="CPU, tiny shapes of the same architectures")
    parser.add_argument("--dry_run", action="store_true", help="write the table of what would run, unmeasured")
    parser.add_argument("--not_measured", default="not run", help="with --dry_run: why nothing was measured")
    parser.add_argument("--results_dir", type=Path, default=HERE / "results")
    parser.add_argument("--stem", default="gpu_memory", help="file names: STEM.md, STEM.json, STEM.png")
    parser.add_argument("--archs", nargs="+", default=list(gpu_shapes.ARCHS), choices=gpu_shapes.ARCHS)
    parser.add_argument("--trainers", nargs="+", default=list(TRAINERS), choices=TRAINERS)
    parser.add_argument("--steps", type=int, default=None, help="optimizer steps per fit run (GPU 2, smoke 1)")
    parser.add_argument("--ratio_steps", type=int, default=None, help="steps per step-time ratio run (GPU 10, smoke 2)")
    parser.add_argument("--ratio_pairs", type=int, default=1, help="grpo/dapo_off pairs, run alone, order alternating")
    parser.add_argument("--score_sizes", type=int, nargs="+", default=None, help="completions scored (GPU 64 256 1024)")
    parser.add_argument("--jobs", type=int, default=None, help="runs at once (GPU 5, CPU 1)")
    parser.add_argument("--cap_gib", type=float, default=None, help="GiB per run (default: 90%% of the card / jobs)")
    parser.add_argument("--budget_s", type=float, default=None, help="whole run (GPU 400; smoke: no limit)")
    parser.add_argument("--run_timeout_s", type=float, default=240)
    parser.add_argument("--work_dir", type=Path, default=None, help="checkpoints and run folders (default: temp)")
    parser.add_argument("--start_method", choices=("fork", "spawn"), default=None,
                        help="how children start (default: spawn on CUDA, which cannot be forked; fork on CPU)")
    args = parser.parse_args(argv)
    gpu = not args.smoke
    args.steps = args.steps or (2 if gpu else 1)
    args.ratio_steps = args.ratio_steps or (10 if gpu else 2)
    args.score_sizes = args.score_sizes or ([64, 256, 1024] if gpu else [8, 32])
    args.budget_s = args.budget_s if args.budget_s is not None else (400 if gpu else 0)
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    command = shlex.join(["python", "benchmarks/gpu_memory.py", *(argv if argv is not None else sys.argv[1:])])
    runs = plan(args)
    if args.dry_run:
        results = [{**r, "status": "not measured", "error": args.not_measured} for r in runs]
        meta = {"mode": "not measured", "reason": args.not_measured, "command": command, "args": _jsonable(args)}
        gpu_report.write(results, meta, args.results_dir, args.stem, write_data=False)
        return

    import torch

    cuda = torch.cuda.is_available()
    if not cuda and not args.smoke:
        sys.exit("no CUDA device: run with --smoke for the CPU check of the kit, or --dry_run for the empty table.")
    device = "cuda" if cuda else "cpu"
    t_start = time.monotonic()
    env = environment(cuda)
    jobs = args.jobs or (5 if cuda else 1)
    cap = args.cap_gib or (0.9 * env["total_mib"] / 1024 / jobs if cuda else None)
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="gpu_kit_"))
    threads = max(1, (os.cpu_count() or 1) // jobs) if cuda else torch.get_num_threads()
    start_method = args.start_method or ("spawn" if cuda else "fork")
    ctx = {"device": device, "smoke": args.smoke, "work_dir": str(work), "jobs": jobs, "cap_gib": cap,
           "threads": threads, "start_method": start_method, "checkpoints": {}}
    if start_method == "fork":  # load the libraries once: every child starts with them
        import peft  # noqa: F401
        import trl  # noqa: F401

        import reward_adapter  # noqa: F401
        import trl_ext.pipeline  # noqa: F401

        gc.freeze()  # children's collections skip what they inherit: no copy-on-write of the parent's heap into RSS

    archs = dict.fromkeys(r["arch"] for r in runs)  # the ratio pair's shape too, when --archs leaves it out
    builds = [dict(kind="build", arch=a, id=f"{a}/build", solo=False, role="build") for a in archs]
    built = execute(builds, ctx, args, t_start)
    for b in built:
        if b["status"] == "ok":
            ctx["checkpoints"][b["arch"]] = {k: b[k] for k in ("base", "tokenizer", "rm_adapter", "params_m")}
    unbuilt = [{**r, "status": "skipped", "error": f"building the {r['arch']} checkpoint failed"}
               for r in runs if r["arch"] not in ctx["checkpoints"]]
    results = execute([r for r in runs if r["arch"] in ctx["checkpoints"]], ctx, args, t_start)
    results += unbuilt
    results += [b for b in built if b["status"] != "ok"]  # listed among the runs without a measurement
    memory = ("torch.cuda.max_memory_allocated / max_memory_reserved per child process" if cuda else
              "process RSS: peak resident set size of the child minus its size at the start (not VRAM)")
    meta = {"mode": "smoke" if args.smoke else "gpu", "memory": memory, "command": command, "env": env, "jobs": jobs,
            "cap_gib": cap, "threads_per_run": threads, "budget_s": args.budget_s,
            "elapsed_s": time.monotonic() - t_start, "checkpoints": ctx["checkpoints"], "args": _jsonable(args)}
    gpu_report.write(results, meta, args.results_dir, args.stem)
    print(f"wrote {args.results_dir / args.stem}.md/.json/.png in {meta['elapsed_s']:.0f} s", flush=True)


def _jsonable(args) -> dict:
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}


if __name__ == "__main__":
    main()
