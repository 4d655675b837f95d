"""Every row of docs/bad-inputs.md: the mistake gives exactly the documented error (see tests/bad_inputs.py)."""

import pytest

from bad_inputs import ALL_CASES, CASES, DOC, TRAINER_CASES, documented_errors, run_case


@pytest.fixture(scope="module")
def documented():
    return documented_errors()


def test_the_page_lists_every_case_once_and_nothing_else(documented):
    assert list(documented) == [c[0] for c in ALL_CASES]
    assert len(CASES) >= 15 and len(TRAINER_CASES) >= 15


@pytest.mark.parametrize("case_id", [c[0] for c in ALL_CASES])
def test_bad_input_gives_the_documented_error(case_id, documented, tmp_path, ckpt):
    message = run_case(case_id, tmp_path, ckpt)
    assert message == documented[case_id], (
        f"{case_id}: the error changed; if the new text is right, regenerate {DOC.name} with "
        f"`python tests/bad_inputs.py`.\nnow: {message}\ndoc: {documented[case_id]}"
    )
