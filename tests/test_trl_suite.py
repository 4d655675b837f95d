"""benchmarks/trl_suite.py's pure parts: reading pytest's junit xml and summary line, and the stock/swapped comparison;
trl_suite_standins.py's zen rows (shapes the tests rely on)."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import trl_suite as suite  # noqa: E402
import trl_suite_standins as standins  # noqa: E402

# what pytest 9 writes with -o junit_family=xunit1: a pass, a failure, an error, a skip, an xfail
JUNIT = """<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest" errors="1" failures="1"
skipped="2" tests="5" time="691.963" timestamp="2026-12-06T02:55:23.570177+00:00" hostname="vm">
<testcase classname="tests.test_grpo_trainer.TestGRPOTrainer" name="test_init_minimal" time="1.0" />
<testcase classname="tests.test_grpo_trainer.TestGRPOTrainer" name="test_train[tiny-Qwen2]" time="2.0">
  <failure message="AssertionError: Parameter model.norm.weight has not changed.&#10;assert not True">trace</failure>
</testcase>
<testcase classname="tests.test_grpo_trainer.TestGRPOTrainer" name="test_setup" time="0.1">
  <error message="failed on setup with &quot;ValueError: bad&quot;">trace</error></testcase>
<testcase classname="tests.test_grpo_trainer.TestGRPOTrainer" name="test_vllm" time="0.0">
  <skipped type="pytest.skip" message="test requires vllm">skip</skipped></testcase>
<testcase classname="tests.test_grpo_trainer.TestGRPOTrainer" name="test_tools" time="0.0">
  <skipped type="pytest.xfail" message="Tool parsing">xfail</skipped></testcase>
</testsuite></testsuites>"""


def test_parse_junit_outcomes_and_first_lines():
    results = suite.parse_junit(JUNIT)
    assert {t: r["outcome"] for t, r in results.items()} == {
        "TestGRPOTrainer::test_init_minimal": "passed", "TestGRPOTrainer::test_train[tiny-Qwen2]": "failed",
        "TestGRPOTrainer::test_setup": "failed", "TestGRPOTrainer::test_vllm": "skipped",
        "TestGRPOTrainer::test_tools": "xfailed"}
    assert results["TestGRPOTrainer::test_train[tiny-Qwen2]"]["message"] == (
        "AssertionError: Parameter model.norm.weight has not changed.")
    assert suite.junit_run(JUNIT) == {"timestamp": "2026-12-06T02:55:23.570177+00:00", "seconds": 691.963,
                                      "host": "vm"}
    assert suite.counts(results, deselected=7) == {"passed": 1, "failed": 2, "skipped": 1, "xfailed": 1,
                                                   "deselected": 7}


@pytest.mark.parametrize("stdout, expected", [
    ("PASSED a\n=== 150 passed, 3 failed, 20 skipped, 12 deselected, 40 warnings in 900.1s ===\n", 12),
    ("4 passed, 171 deselected, 24 warnings in 31.17s\n", 171),
    ("=== 3 passed in 1.0s ===\n", 0),
    ("", 0),
])
def test_count_deselected_reads_the_last_summary_line(stdout, expected):
    assert suite.count_deselected(stdout) == expected


def test_compare_leaves_out_stock_failures_and_lists_swapped_regressions():
    rec = lambda outcome, message="": {"outcome": outcome, "message": message}  # noqa: E731
    stock = {"a": rec("passed"), "b": rec("passed"), "c": rec("failed", "old API"), "d": rec("failed", "x"),
             "e": rec("skipped")}
    swapped = {"a": rec("passed"), "b": rec("failed", "KeyError: 'x'"), "c": rec("failed", "old API"),
               "d": rec("passed"), "e": rec("skipped")}
    out = suite.compare(stock, swapped)
    assert out["swapped_failures"] == {"b": "KeyError: 'x'"}
    assert out["fails_on_stock"] == {"c": "old API", "d": "x"}
    assert out["fail_stock_pass_swapped"] == ["d"]


def test_zen_stand_in_has_the_hub_shapes():
    standard, conversational = (standins.zen_rows(c) for c in standins.ZEN_CONFIGS)
    assert [len(standard[s]) for s in ("train", "test")] == [17, 2]  # the hub's zen: 17 train rows, 2 test rows
    assert standard["train"][0] == {"prompt": "Beautiful is better"}
    assert conversational["test"][0]["prompt"][0]["role"] == "user"
    with pytest.raises(ValueError, match="standard_preference"):
        standins.zen_rows("standard_preference")
