"""TRL's own GRPO and RLOO test files, run on stock TRL and with trl_ext's classes swapped in: the drop-in check.

    PYTHONPATH=$PWD OMP_NUM_THREADS=1 python benchmarks/trl_suite.py            # extract, build stand-ins, run, report
    PYTHONPATH=$PWD python benchmarks/trl_suite.py --report-only                 # re-read the junit files only
    PYTHONPATH=$PWD OMP_NUM_THREADS=1 python benchmarks/trl_suite.py --files grpo --variants swapped -k test_train_beta

TRL's test files are read from a TRL git snapshot (``--snapshot``, default the mirror) into a scratch folder outside
the repository (``--scratch``): they are TRL's code and never enter this project. The swapped copy differs from the
stock one in the import line only (``from trl_ext import DAPOConfig as GRPOConfig, DAPOTrainer as GRPOTrainer``;
``from trl_ext import RLOOConfig, RLOOTrainer``). Hub models and datasets are replaced by the offline stand-ins of
trl_suite_standins.py. A test that fails on stock is listed as "fails on stock" and left out of the comparison; each
test that passes stock and fails swapped is listed with its error's first line.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from provenance import git_state, machine_info, versions  # noqa: E402

SNAPSHOT = Path("/work/.mirror/huggingface+trl/repo")
HELPERS = ("tests/__init__.py", "tests/conftest.py", "tests/testing_utils.py")
FILES = {"grpo": "tests/test_grpo_trainer.py", "rloo": "tests/test_rloo_trainer.py"}
SWAPS = {  # stock import line -> trl_ext's; the test bodies keep TRL's names
    "grpo": ("from trl import GRPOConfig, GRPOTrainer",
             "from trl_ext import DAPOConfig as GRPOConfig, DAPOTrainer as GRPOTrainer"),
    "rloo": ("from trl import RLOOConfig, RLOOTrainer", "from trl_ext import RLOOConfig, RLOOTrainer"),
}
# tests that cannot run here and that TRL's own markers do not skip on this machine (Pillow is installed, so
# require_vision lets the vision-language classes through)
DESELECT = {
    "grpo": {"tests/test_grpo_trainer.py::TestGRPOTrainerVLM": "vision-language models (no offline stand-in)",
             "tests/test_grpo_trainer.py::TestGRPOTrainer::test_trust_remote_code":
                 "loads custom model code from the hub (tiny-RemoteForCausalLM)"},
    "rloo": {"tests/test_rloo_trainer.py::TestRLOOTrainerVLM": "vision-language models (no offline stand-in)",
             "tests/test_rloo_trainer.py::TestRLOOTrainer::test_trust_remote_code":
                 "loads custom model code from the hub (tiny-RemoteForCausalLM)"},
}
VARIANTS = ("stock", "swapped")
RESULTS = HERE / "results"


def extract(snapshot: Path, scratch: Path, name: str, variant: str) -> Path:
    """scratch/<variant>/tests/: the helpers and one test file from the snapshot, the import swapped if asked."""
    root = scratch / variant
    for rel in (*HELPERS, FILES[name]):
        text = subprocess.run(["git", "-C", str(snapshot), "show", f"HEAD:{rel}"], check=True, capture_output=True,
                              text=True).stdout
        if rel == FILES[name] and variant == "swapped":
            stock, swapped = SWAPS[name]
            if text.count(stock + "\n") != 1:
                raise SystemExit(f"{rel}: expected the import line {stock!r} once; the snapshot changed, update SWAPS")
            text = text.replace(stock + "\n", swapped + "\n")
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    shutil.copy(HERE / "trl_suite_standins.py", root / "trl_suite_standins.py")
    return root


def snapshot_commit(snapshot: Path) -> str:
    return subprocess.run(["git", "-C", str(snapshot), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()


def run_pytest(root: Path, name: str, env: dict, junit: Path, k: str | None) -> tuple[list[str], str]:
    cmd = [sys.executable, "-m", "pytest", FILES[name], "-p", "trl_suite_standins", "-p", "no:cacheprovider",
           "-q", "-rA", "--tb=line", f"--junitxml={junit}", "-o", "junit_family=xunit1"]
    cmd += [arg for nodeid in DESELECT[name] for arg in ("--deselect", nodeid)]
    if k:
        cmd += ["-k", k]
    pythonpath = os.pathsep.join([str(root), str(HERE.parent), env.get("PYTHONPATH", "")])
    proc = subprocess.run(cmd, cwd=root, env={**env, "PYTHONPATH": pythonpath, "OMP_NUM_THREADS": "1"},
                          capture_output=True, text=True)
    (junit.with_suffix(".log")).write_text(proc.stdout + proc.stderr)
    return cmd, proc.stdout


# ---- parsing (pure) ----

def junit_run(xml_text: str) -> dict:
    """When and how long the run took, from the junit testsuite's attributes."""
    suite = next(ET.fromstring(xml_text).iter("testsuite"))
    return {"timestamp": suite.get("timestamp"), "seconds": float(suite.get("time") or 0), "host": suite.get("hostname")}


def parse_junit(xml_text: str) -> dict[str, dict]:
    """{test id: {"outcome": passed|failed|skipped|xfailed, "message": first line}} from pytest's junit xml."""
    out = {}
    for case in ET.fromstring(xml_text).iter("testcase"):
        test_id = f"{case.get('classname', '').rsplit('.', 1)[-1]}::{case.get('name')}"
        outcome, message = "passed", ""
        for child in case:
            if child.tag in ("failure", "error"):
                outcome, message = "failed", child.get("message") or (child.text or "")
            elif child.tag == "skipped":
                xfail = child.get("type") == "pytest.xfail"
                outcome, message = ("xfailed" if xfail else "skipped"), child.get("message") or ""
        out[test_id] = {"outcome": outcome, "message": first_line(message)}
    return out


def first_line(message: str) -> str:
    lines = [line.strip() for line in message.strip().splitlines() if line.strip()]
    return lines[0][:300] if lines else ""


def count_deselected(pytest_stdout: str) -> int:
    """The 'N deselected' of pytest's last summary line (0 when absent)."""
    summary = [line for line in pytest_stdout.splitlines() if re.search(r"\d+ (passed|failed|skipped|deselected)", line)]
    match = re.search(r"(\d+) deselected", summary[-1]) if summary else None
    return int(match.group(1)) if match else 0


def compare(stock: dict[str, dict], swapped: dict[str, dict]) -> dict:
    """Stock failures (left out), swapped regressions (pass stock, fail swapped) and the reverse."""
    fails_on_stock = sorted(t for t, r in stock.items() if r["outcome"] == "failed")
    regressions = {t: swapped[t]["message"] for t, r in sorted(stock.items())
                   if r["outcome"] == "passed" and swapped.get(t, {}).get("outcome") == "failed"}
    only_swapped_passes = sorted(t for t in fails_on_stock if swapped.get(t, {}).get("outcome") == "passed")
    return {"fails_on_stock": {t: stock[t]["message"] for t in fails_on_stock}, "swapped_failures": regressions,
            "fail_stock_pass_swapped": only_swapped_passes}


def counts(results: dict[str, dict], deselected: int) -> dict:
    out = {k: 0 for k in ("passed", "failed", "skipped", "xfailed")}
    for record in results.values():
        out[record["outcome"]] += 1
    return {**out, "deselected": deselected}


# ---- report ----

def report(scratch: Path, names, command: str, snapshot: Path, diagnoses: dict) -> dict:
    runs_file = scratch / "runs.json"  # the command and commit the junit files were made with (written by a run)
    data = {"command": command, "runs": json.loads(runs_file.read_text()) if runs_file.exists() else None,
            "snapshot": str(snapshot), "snapshot_commit": snapshot_commit(snapshot), "git": git_state(), "machine": machine_info(), "versions": versions(),
            "deselected_reasons": {n: DESELECT[n] for n in names}, "files": {}}
    for name in names:
        per = {}
        for variant in VARIANTS:
            junit = scratch / f"{name}-{variant}.xml"
            if junit.exists():
                log = junit.with_suffix(".log").read_text() if junit.with_suffix(".log").exists() else ""
                per[variant] = {"results": parse_junit(junit.read_text()), "deselected": count_deselected(log),
                                "run": junit_run(junit.read_text())}
        if not per:
            continue
        entry = {v: {**counts(per[v]["results"], per[v]["deselected"]), **per[v]["run"]} for v in per}
        if set(per) == set(VARIANTS):
            entry["comparison"] = compare(per["stock"]["results"], per["swapped"]["results"])
        entry["outcomes"] = {v: {t: r["outcome"] for t, r in per[v]["results"].items()} for v in per}
        entry["failures"] = {v: {t: r["message"] for t, r in per[v]["results"].items() if r["outcome"] == "failed"}
                             for v in per}
        data["files"][name] = entry
    data["diagnoses"] = diagnoses
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "trl_suite.json").write_text(json.dumps(data, indent=1) + "\n")
    (RESULTS / "trl_suite.md").write_text(markdown(data))
    return data


def markdown(data: dict) -> str:
    lines = ["# TRL's GRPO and RLOO tests with trl_ext's classes swapped in", "",
             f"Command: `{data['command']}`  ", f"Commit: {data['git']['commit']} (dirty: {data['git']['dirty']}); "
             f"TRL tests from {data['snapshot']} at {data['snapshot_commit']}  ",
             *([f"Tests run with `{data['runs']['command']}` at commit {data['runs']['commit']}  "] if data["runs"] else []),
             f"Machine: {data['machine']['cpu']}, {data['machine']['cores']} cores; "
             + ", ".join(f"{k} {v}" for k, v in data["versions"].items()), "",
             "Stock = TRL's classes; swapped = `from trl_ext import DAPOConfig as GRPOConfig, DAPOTrainer as "
             "GRPOTrainer` (GRPO file) and `from trl_ext import RLOOConfig, RLOOTrainer` (RLOO file). Models and "
             "datasets are offline stand-ins (benchmarks/trl_suite_standins.py). xfailed = TRL's own xfail marks.", "",
             "| file | run | passed | failed | skipped | xfailed | deselected | started (UTC) | seconds |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, entry in data["files"].items():
        for variant in VARIANTS:
            if variant in entry:
                c = entry[variant]
                lines.append(f"| {name} | {variant} | {c['passed']} | {c['failed']} | {c['skipped']} | "
                             f"{c['xfailed']} | {c['deselected']} | {c['timestamp']} | {c['seconds']:.0f} |")
    for name in data["deselected_reasons"]:
        if name not in data["files"]:
            lines += ["", f"## {name}", "", f"Not run: no junit file for {name} in the scratch folder (rerun with "
                      f"`--files {name}`)."]
    for name, entry in data["files"].items():
        lines += ["", f"## {name}", "", "Deselected: " + "; ".join(f"`{k}` ({v})"
                                                                  for k, v in data["deselected_reasons"][name].items())]
        comp = entry.get("comparison")
        if not comp:
            for variant, failures in entry["failures"].items():  # one variant only: its failures, to compare later
                lines += ["", f"Only the {variant} run exists. Its failures ({len(failures)}):", ""]
                for test, message in failures.items():
                    diagnosis = data["diagnoses"].get(name, {}).get(test, "")
                    lines.append(f"- `{test}`: {message}" + (f"  \n  Cause: {diagnosis}" if diagnosis else ""))
            continue
        lines += ["", f"### Passes stock, fails swapped ({len(comp['swapped_failures'])})", ""]
        for test, message in comp["swapped_failures"].items():
            diagnosis = data["diagnoses"].get(name, {}).get(test, "")
            lines.append(f"- `{test}`: {message}" + (f"  \n  Cause: {diagnosis}" if diagnosis else ""))
        lines += ["", f"### Fails on stock TRL 1.16, left out of the comparison ({len(comp['fails_on_stock'])})", ""]
        for test, message in comp["fails_on_stock"].items():
            diagnosis = data["diagnoses"].get(name, {}).get(test, "")
            lines.append(f"- `{test}`: {message}" + (f"  \n  Cause: {diagnosis}" if diagnosis else ""))
        if comp["fail_stock_pass_swapped"]:
            lines += ["", "Of these, passing swapped: " + ", ".join(f"`{t}`" for t in comp["fail_stock_pass_swapped"])]
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--snapshot", type=Path, default=SNAPSHOT)
    parser.add_argument("--scratch", type=Path, default=Path("/tmp/trlsuite"))
    parser.add_argument("--files", nargs="+", choices=list(FILES), default=list(FILES))
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    parser.add_argument("-k", help="pytest -k expression (development runs; results are not written)")
    parser.add_argument("--report-only", action="store_true", help="re-read the junit files in --scratch")
    parser.add_argument("--diagnoses", type=Path, default=RESULTS / "trl_suite_diagnoses.json",
                        help="{file: {test id: one-sentence cause}} shown beside each failure (hand-written)")
    args = parser.parse_args(argv)
    command = "python benchmarks/trl_suite.py " + " ".join(argv if argv is not None else sys.argv[1:])
    if not args.report_only:
        from trl_suite_standins import build_all

        env = {**os.environ, **build_all(args.scratch)}
        if not args.k:
            (args.scratch / "runs.json").write_text(json.dumps({"command": command, "commit": git_state()["commit"]}))
        for name in args.files:
            for variant in args.variants:
                root = extract(args.snapshot, args.scratch, name, variant)
                junit = args.scratch / (f"{name}-{variant}" + ("-k.xml" if args.k else ".xml"))
                start = time.time()
                _, stdout = run_pytest(root, name, env, junit, args.k)
                tail = stdout.strip().splitlines()[-1] if stdout.strip() else "(no output)"
                print(f"{name} {variant}: {tail} ({time.time() - start:.0f}s)", flush=True)
        if args.k:
            return
    diagnoses = json.loads(args.diagnoses.read_text()) if args.diagnoses.exists() else {}
    data = report(args.scratch, args.files, command, args.snapshot, diagnoses)
    for name, entry in data["files"].items():
        print(name, {v: entry[v] for v in VARIANTS if v in entry})


if __name__ == "__main__":
    main()
