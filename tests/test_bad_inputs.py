"""Every bad input of the catalogue (tests/bad_inputs.py) gives an error that names what is wrong and the fix.

The fragments each error must contain are written by hand in the catalogue; the page docs/bad-inputs.md is generated
from it, and only ``test_the_page_is_what_the_catalogue_generates`` compares the two."""

import pytest

from bad_inputs import ALL_CASES, CASES, CONVERT_CASES, DOC, TRAINER_CASES, page_text, run_case

BY_ID = {c.id: c for c in ALL_CASES}


def test_the_catalogue_names_each_case_once_and_each_says_what_to_look_for():
    assert len(BY_ID) == len(ALL_CASES)
    assert len(CASES) >= 15 and len(TRAINER_CASES) >= 15 and len(CONVERT_CASES) >= 5
    assert all(c.names and c.fix and all(c.names + c.fix) for c in ALL_CASES)


@pytest.mark.parametrize("case_id", list(BY_ID))
def test_the_error_names_what_is_wrong_and_the_fix(case_id, tmp_path, ckpt):
    case = BY_ID[case_id]
    message = run_case(case_id, tmp_path, ckpt)
    assert "\n" not in message.strip() and "Traceback" not in message  # one line, no traceback
    missing_names = [s for s in case.names if s not in message]
    missing_fix = [s for s in case.fix if s not in message]
    assert not missing_names, f"{case_id}: the error does not name {missing_names}:\n{message}"
    assert not missing_fix, f"{case_id}: the error does not give the fix {missing_fix}:\n{message}"


def test_the_page_is_what_the_catalogue_generates(tmp_path, ckpt):
    """docs/bad-inputs.md is current: after changing a message or a case, regenerate it with
    ``python tests/bad_inputs.py``."""
    assert DOC.read_text() == page_text(tmp_path, ckpt), f"{DOC.name} is stale: run `python tests/bad_inputs.py`"
