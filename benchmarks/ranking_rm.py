"""Reward model from rankings: TRL's pairwise expansion vs RankingRewardTrainer (K-wise), K = 4 and K = 8.

    OMP_NUM_THREADS=1 PYTHONPATH=$PWD python benchmarks/ranking_rm.py --init runs/tiny/sft/model   # the reported run
    OMP_NUM_THREADS=1 PYTHONPATH=$PWD python benchmarks/ranking_rm.py --smoke --out_dir /tmp/r   # tiny, checks it runs

The same labelled rankings feed both routes (InstructGPT, arXiv 2203.02155, Section 3.5):

* ``pairwise``: every pair a ranking implies (``trl_ext.toy.pairs_from_ranking``, as the pipeline's ``labels/train.jsonl``)
  becomes its own shuffled row of TRL's ``RewardTrainer``: 2 sequences per pair.
* ``kwise``: ``RankingRewardTrainer`` on the rankings themselves: K sequences per ranking, all its pairs in one row.

Data: prompts of the embedded addition task; K answers per prompt from the toy demonstrators with every slip kind
(chatter, swapped digits, forgotten carry, a digit off by one; error rate 0.6), ranked by ``toy.Labeller`` (noise 0.1,
ties kept). Held out: rankings of K = 4 answers to the task's evaluation prompts, ranked by the noise-free labeller (the
truth); accuracy is the share of their implied pairs the RM orders right, log loss the mean -log sigmoid(r_w - r_l)
over them. The RM starts from ``--init``: the pipeline's SFT model, as in the pipeline's RM stage (the reported run), or
by default the embedded tiny base, randomly initialised, which learns little more than the answers' form.

    trl-ext pipeline --config recipes/configs/tiny.yaml --until sft --output_dir runs/tiny   # the SFT model, seed 0
    OMP_NUM_THREADS=1 PYTHONPATH=$PWD python benchmarks/ranking_rm.py --init runs/tiny/sft/model

Both routes run the same epochs, learning rate and schedule, with the same number of sequences per optimizer step
(``--sequences_per_step``: pairwise batches of that / 2 pairs, K-wise batches of that / K rankings). Sequences through
the model are counted by a forward hook during training. Each run is a fresh process (forked from the driver after
the imports) so peak memory (the peak resident size, VmHWM, of that process on CPU, ``torch.cuda.max_memory_allocated`` on a GPU) is its own; wall time is
``trainer.train()`` alone. The machine may be shared: compare the two routes within one run of this script.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from provenance import git_state, machine_info, read_peak_rss_mib, versions  # noqa: E402
from stats import mean_sd  # noqa: E402

RESULTS = Path(__file__).parent / "results"
ROUTES = ("pairwise", "kwise")


def make_rankings(task, pairs, k: int, noise: float, seed: int) -> list[dict]:
    """One ranked row per (a, b): K demonstrator answers and the labeller's tiers; all-tied rows are dropped."""
    from trl_ext.toy import Labeller

    rng, labeller = random.Random(seed), Labeller(noise)
    rows = []
    for a, b in pairs:
        prompt = [{"role": "user", "content": task.question(a, b)}]
        answers = [task.demonstrate(a, b, rng) for _ in range(k)]
        tiers = labeller.rank(prompt, answers, rng)
        if len(tiers) > 1:
            rows.append({"prompt": prompt, "answers": answers, "ranking": tiers})
    return rows


def as_kwise(rows):
    return [
        {"prompt": r["prompt"], "completions": [[{"role": "assistant", "content": a}] for a in r["answers"]],
         "ranking": r["ranking"]}
        for r in rows
    ]


def as_pairs(rows):
    from trl_ext.toy import pairs_from_ranking

    return [
        {"prompt": r["prompt"], "chosen": [{"role": "assistant", "content": r["answers"][w]}],
         "rejected": [{"role": "assistant", "content": r["answers"][l]}]}
        for r in rows for w, l in pairs_from_ranking(r["ranking"], r["answers"])
    ]


def held_out_scores(model, tokenizer, rows, batch_size=64) -> dict:
    """Accuracy and log loss over every pair the held-out rankings imply (uniform over pairs)."""
    import torch
    import torch.nn.functional as F

    from trl_ext.ranking import DataCollatorForRanking, _tokenize_row, implied_pairs

    collate = DataCollatorForRanking(pad_token_id=tokenizer.pad_token_id)
    model.eval()
    correct, nll, n = 0, 0.0, 0
    with torch.no_grad():
        for start in range(0, len(rows), batch_size):
            chunk = [{**_tokenize_row(r, i, tokenizer), "ranking": r["ranking"]} for i, r in enumerate(rows[start:start + batch_size])]
            batch = {k: v.to(model.device) for k, v in collate(chunk).items()}
            rewards = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.squeeze(-1)
            winner, loser, _ = implied_pairs(batch["group"], batch["tier"])
            margin = (rewards[winner] - rewards[loser]).float()
            correct += int((margin > 0).sum())
            nll += float(-F.logsigmoid(margin).sum())
            n += margin.numel()
    return {"test_accuracy": correct / n, "test_log_loss": nll / n, "test_pairs": n}


def train_one(spec: dict) -> dict:
    """One training run (in its own process unless ``spec['in_process']``); returns its measurements."""
    import psutil
    import torch
    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from trl import RewardConfig, RewardTrainer

    from trl_ext import RankingRewardTrainer
    from trl_ext.toy import ensure_tiny_checkpoint

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    ckpt = spec["init"] or ensure_tiny_checkpoint()
    tokenizer = AutoTokenizer.from_pretrained(ckpt)
    model = AutoModelForSequenceClassification.from_pretrained(ckpt, num_labels=1)
    cuda = torch.cuda.is_available()
    route, k = spec["route"], spec["k"]
    per_step = spec["sequences_per_step"] // (2 if route == "pairwise" else k)
    args = RewardConfig(
        output_dir=spec["tmp_dir"], per_device_train_batch_size=per_step, num_train_epochs=spec["epochs"],
        learning_rate=spec["learning_rate"], lr_scheduler_type="cosine", warmup_steps=0.05, max_length=32,
        seed=spec["seed"], report_to=[], save_strategy="no", logging_steps=10_000, gradient_checkpointing=False,
        use_cpu=not cuda, bf16=False, disable_tqdm=True,
    )
    rows = spec["train"]
    if route == "pairwise":
        trainer = RewardTrainer(model, args, train_dataset=Dataset.from_list(as_pairs(rows)), processing_class=tokenizer)
    else:
        trainer = RankingRewardTrainer(model, args, train_dataset=Dataset.from_list(as_kwise(rows)), processing_class=tokenizer)
    sequences = []
    trainer.model.register_forward_pre_hook(lambda m, a, kw: sequences.append(kw["input_ids"].shape[0]), with_kwargs=True)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    rss_before = psutil.Process().memory_info().rss / 2**20
    start = time.perf_counter()
    trainer.train()
    wall = time.perf_counter() - start
    train_forwards = len(sequences)
    out = {
        "route": route, "k": k, "seed": spec["seed"], "train_rows": len(trainer.train_dataset),
        "optimizer_steps": trainer.state.global_step, "forward_calls": train_forwards, "sequences": sum(sequences),
        "train_wall_s": wall,
        "peak_mib": torch.cuda.max_memory_allocated() / 2**20 if cuda else read_peak_rss_mib(),
        "peak_kind": "cuda_max_memory_allocated" if cuda else "process_max_rss",
        "rss_before_train_mib": rss_before,
    }
    # CPU: how far the process's peak rose above its resident size just before train() (0 if the peak came earlier)
    out["peak_rise_mib"] = out["peak_mib"] if cuda else max(0.0, out["peak_mib"] - rss_before)
    out.update(held_out_scores(trainer.model, tokenizer, as_kwise(spec["test"])))
    return out


def run_all(a) -> list[dict]:
    from trl_ext.toy import AdditionTask

    task = AdditionTask(low=10, high=49, demo_error_rate=0.6, demo_error_kinds=("chatter", "swap", "carry", "slip"))
    train_pairs = random.Random(0).sample(task.train_pairs(), a.train_prompts)
    test = make_rankings(task, task.eval_pairs()[: a.test_prompts], 4, noise=0.0, seed=1)
    specs = []
    for k in a.ks:
        train = make_rankings(task, train_pairs, k, noise=0.1, seed=0)
        for seed in range(a.seeds):
            for route in ROUTES:
                specs.append({
                    "route": route, "k": k, "seed": seed, "train": train, "test": test, "epochs": a.epochs,
                    "learning_rate": a.learning_rate, "sequences_per_step": a.sequences_per_step,
                    "init": a.init, "tmp_dir": str(Path(a.out_dir) / "tmp"),
                })
    results = []
    # fork (not spawn): each run gets a fresh process, with its own peak RSS, without paying the imports again
    import trl_ext  # noqa: F401  (imported before forking, so children inherit it)

    ctx = mp.get_context("fork")
    for spec in specs:
        if a.in_process:
            result = train_one(spec)
        else:
            with ctx.Pool(1) as pool:
                result = pool.apply(train_one, (spec,))
        print(json.dumps(result), flush=True)
        results.append(result)
    return results


def summarise(results: list[dict], ks) -> dict:
    summary = {}
    for k in ks:
        by = {r: [x for x in results if x["k"] == k and x["route"] == r] for r in ROUTES}
        row = {}
        for route, runs in by.items():
            row[route] = {key: mean_sd([x[key] for x in runs]) for key in (
                "sequences", "train_wall_s", "peak_mib", "peak_rise_mib", "test_accuracy", "test_log_loss", "optimizer_steps")}
        pw, kw = by["pairwise"], by["kwise"]
        row["sequence_ratio"] = statistics.mean(p["sequences"] for p in pw) / statistics.mean(x["sequences"] for x in kw)
        row["wall_ratio"] = statistics.mean(p["train_wall_s"] for p in pw) / statistics.mean(x["train_wall_s"] for x in kw)
        acc_pw, sd_pw = row["pairwise"]["test_accuracy"]
        acc_kw, sd_kw = row["kwise"]["test_accuracy"]
        # within the seeds' spread; one seed has none, so then K-wise must simply not be lower
        row["accuracy_not_lower"] = acc_kw >= acc_pw - max(sd_pw or 0.0, sd_kw or 0.0)
        summary[str(k)] = row
    return summary


def provenance(argv) -> dict:
    """The command, git state, machine, GPU and versions (benchmarks/provenance.py), and the load when it starts."""
    import torch

    return {
        "command": "OMP_NUM_THREADS=" + os.environ.get("OMP_NUM_THREADS", "unset") + " python benchmarks/ranking_rm.py "
                   + " ".join(argv),
        "git": git_state(), "machine": machine_info(),
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "load_average_start": os.getloadavg()[0], "versions": versions(),
    }


def write(out_dir: Path, meta: dict, results: list[dict], summary: dict, a) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "ranking_rm.json").write_text(json.dumps({**meta, "settings": vars(a), "summary": summary, "runs": results}, indent=1))
    git, machine = meta["git"], meta["machine"]
    f = lambda ms, d=0: f"{ms[0]:.{d}f} ± " + ("n/a" if ms[1] is None else f"{ms[1]:.{d}f}")  # noqa: E731
    lines = [
        "# Reward model from rankings: pairwise expansion vs K-wise (RankingRewardTrainer)", "",
        f"Command: `{meta['command']}`  ",
        f"Commit: `{git['commit'][:10]}`{' (uncommitted changes)' if git['dirty'] else ''}  ",
        f"Machine: {machine['cpu']}, {machine['cores']} cores visible, {meta['gpu'] or 'no GPU'}; 1-minute load average {meta['load_average_start']:.2f} at the start, "
        f"{meta['load_average_end']:.2f} at the end; total {meta['total_wall_s']:.0f} s  ",
        f"Versions: python {machine['python']}, " + ", ".join(f"{k} {v}" for k, v in meta["versions"].items()), "",
        f"RM initialised from `{a.init or 'the embedded tiny base (random weights)'}`. "
        f"{a.train_prompts} training prompts ranked by the noisy labeller, {a.epochs} epochs, learning rate "
        f"{a.learning_rate}, {a.sequences_per_step} sequences per optimizer step for both routes, seeds 0..{a.seeds - 1}; "
        f"held-out: {results[0]['test_pairs']} pairs implied by noise-free rankings of K = 4 answers to the task's "
        "evaluation prompts. Mean ± sd over seeds. The machine is shared with other work, so absolute wall times move "
        "between runs; the ratios compare runs of this one invocation. Peak memory: "
        f"{results[0]['peak_kind']} of each run's own process (MiB; on CPU most of it is the libraries and the model), "
        "and how far it rose above the process's RSS just before `train()`.", "",
        "| K | route | train rows | optimizer steps | sequences through the model | train wall s | peak MiB | peak rise in train() MiB | held-out accuracy | held-out log loss |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for k, row in summary.items():
        for route in ROUTES:
            s = row[route]
            rows_n = next(x["train_rows"] for x in results if str(x["k"]) == k and x["route"] == route)
            lines.append(
                f"| {k} | {route} | {rows_n} | {f(s['optimizer_steps'])} | {f(s['sequences'])} | {f(s['train_wall_s'], 1)} | "
                f"{f(s['peak_mib'])} | {f(s['peak_rise_mib'])} | {f(s['test_accuracy'], 3)} | {f(s['test_log_loss'], 3)} |"
            )
    lines += ["", "| K | sequences pairwise / K-wise | wall time pairwise / K-wise | K-wise accuracy not lower (within 1 sd) |",
              "|---:|---:|---:|---|"]
    lines += [f"| {k} | {r['sequence_ratio']:.2f}x | {r['wall_ratio']:.2f}x | {'yes' if r['accuracy_not_lower'] else 'no'} |"
              for k, r in summary.items()]
    if "4" in summary:
        r = summary["4"]
        met = r["sequence_ratio"] >= 2.5 and r["wall_ratio"] >= 2.0 and r["accuracy_not_lower"]
        lines += ["", f"Goal at K = 4 (>= 2.5x fewer sequences, >= 2x less wall time, accuracy no lower within the seeds' "
                      f"spread): **{'met' if met else 'not met'}** ({r['sequence_ratio']:.2f}x, {r['wall_ratio']:.2f}x, "
                      f"accuracy {'not lower' if r['accuracy_not_lower'] else 'lower'})."]
    (out_dir / "ranking_rm.md").write_text("\n".join(lines) + "\n")
    plot(out_dir / "ranking_rm.png", summary)


def plot(path: Path, summary: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [("sequences", "sequences through the model"), ("train_wall_s", "train wall time (s)"),
            ("test_accuracy", "held-out pairwise accuracy"), ("test_log_loss", "held-out log loss")]
    fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3.4))
    ks = list(summary)
    for ax, (key, title) in zip(axes, keys, strict=True):
        for j, route in enumerate(ROUTES):
            means = [summary[k][route][key][0] for k in ks]
            sds = [summary[k][route][key][1] or 0.0 for k in ks]  # one seed: no error bar
            ax.bar([i + (j - 0.5) * 0.38 for i in range(len(ks))], means, 0.38, yerr=sds, label=route, capsize=3)
        ax.set_xticks(range(len(ks)), [f"K = {k}" for k in ks])
        ax.set_title(title, fontsize=10)
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--ks", type=int, nargs="+", default=[4, 8])
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--train_prompts", type=int, default=150)
    p.add_argument("--test_prompts", type=int, default=150)
    p.add_argument("--epochs", type=float, default=2)
    p.add_argument("--learning_rate", type=float, default=5e-4)
    p.add_argument("--sequences_per_step", type=int, default=64, help="Divisible by 2 and by every K.")
    p.add_argument("--init", default=None, help="Checkpoint the RM starts from (e.g. the pipeline's sft/model); "
                   "default: the embedded tiny base, randomly initialised.")
    p.add_argument("--out_dir", default=str(RESULTS))
    p.add_argument("--in_process", action="store_true", help="Train in this process (peak memory is then not per run).")
    p.add_argument("--smoke", action="store_true", help="Tiny sizes, one seed, in process: checks the script runs.")
    a = p.parse_args(argv)
    if a.smoke:
        a.seeds, a.train_prompts, a.test_prompts, a.epochs, a.in_process = 1, 16, 8, 1, True
    bad = [k for k in a.ks if k < 2 or a.sequences_per_step % k or a.sequences_per_step % 2]
    if bad:
        p.error(f"--sequences_per_step {a.sequences_per_step} must be divisible by 2 and by every K >= 2 (bad: {bad}).")
    meta = provenance(argv)
    start = time.perf_counter()
    results = run_all(a)
    meta["total_wall_s"] = time.perf_counter() - start
    meta["load_average_end"] = os.getloadavg()[0]
    summary = summarise(results, a.ks)
    write(Path(a.out_dir), meta, results, summary, a)
    print((Path(a.out_dir) / "ranking_rm.md").read_text())
    return summary


if __name__ == "__main__":
    main()
