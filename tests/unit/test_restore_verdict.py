"""The restore test's verdict: a check that could not run is never a pass."""

from __future__ import annotations

import pytest

from pgops.errors import TransientError
from pgops.restore.verification import (
    CORE_CHECKS, FAILED, NOT_APPLICABLE, PASSED, Check, _timed, verdict_of,
)


def all_core_passed() -> list[Check]:
    return [Check(name, PASSED, "ok", core=True) for name in CORE_CHECKS]


def test_green_needs_every_core_check_passed():
    assert verdict_of(all_core_passed(), None) == PASSED
    assert verdict_of(all_core_passed() + [Check("row_counts", NOT_APPLICABLE, "why")], None) == PASSED
    assert verdict_of(all_core_passed() + [Check("row_counts", FAILED, "3 != 4")], None) == FAILED
    assert verdict_of(all_core_passed(), "TransientError: storage") == FAILED
    for missing in CORE_CHECKS:
        checks = [c for c in all_core_passed() if c.name != missing]
        assert verdict_of(checks, None) == FAILED, f"{missing} did not run"
    assert verdict_of([], None) == FAILED


@pytest.mark.parametrize("name", CORE_CHECKS)
def test_a_core_check_that_cannot_be_applied_has_failed(name):
    checks: list[Check] = []
    check = _timed(checks, name, lambda: (NOT_APPLICABLE, "no sentinel was recorded"))
    assert check.verdict == FAILED and check.core
    assert "could not be applied: no sentinel was recorded" in check.detail


def test_a_check_that_raises_has_failed_with_the_reason():
    def boom():
        raise TransientError("socket gone")

    checks: list[Check] = []
    assert _timed(checks, "row_counts", boom).verdict == FAILED
    assert "socket gone" in checks[0].detail
    assert _timed(checks, "row_counts", lambda: ("skipped", "old verdict")).verdict == FAILED
    assert _timed(checks, "row_counts", lambda: (NOT_APPLICABLE, "no tables")).verdict == NOT_APPLICABLE
