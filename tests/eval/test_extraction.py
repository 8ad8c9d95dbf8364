"""GSM8K answer extraction: strict (`#### N`) vs flexible (last number), on handcrafted outputs,
and the same answers through the lm-eval filters the task config uses."""

import pytest
from lm_eval.filters.extraction import RegexFilter

from repro.eval.lm_eval_tasks import (
    FLEXIBLE_PATTERN,
    STRICT_PATTERN,
    extract_flexible,
    extract_strict,
    normalize_answer,
)

CASES = [
    # (model output, strict, flexible)
    ("3 + 4 = 7 . #### 7", "7", "7"),
    ("#### 5 then I changed my mind: 6", "5", "6"),
    ("The answer is 1,234.", None, "1,234."),
    ("She pays $12 in total", None, "$12"),
    ("#### -3", "-3", "-3"),
    ("no idea", None, None),
]


@pytest.mark.parametrize("text,strict,flexible", CASES)
def test_strict_and_flexible(text, strict, flexible):
    assert extract_strict(text) == strict
    assert extract_flexible(text) == flexible


@pytest.mark.parametrize("text,strict,flexible", CASES)
def test_lm_eval_filters_agree(text, strict, flexible):
    strict_f = RegexFilter(regex_pattern=STRICT_PATTERN)
    flexible_f = RegexFilter(regex_pattern=FLEXIBLE_PATTERN, group_select=-1)
    assert list(strict_f.apply([[text]], [{}]))[0][0] == (strict or "[invalid]")
    assert list(flexible_f.apply([[text]], [{}]))[0][0] == (flexible or "[invalid]")


def test_normalize_matches_reference_answer():
    reference = "Natalia sold 48/2 = 24 clips in May.\n#### 1,234"
    assert normalize_answer(reference) == "1234"
    assert normalize_answer(extract_flexible("so 1,234.")) == "1234"
    assert normalize_answer("$12") == "12"
