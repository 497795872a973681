from __future__ import annotations

import pytest

from pgops.errors import ConfigError, IntegrityError, PgopsError, TransientError, UnsafeOperation
from pgops.orchestration import default_args, retry_policy


@pytest.mark.parametrize(
    ("exc", "action"),
    [
        (ConfigError("bad key"), "fail"),
        (UnsafeOperation("would delete the newest backup"), "fail"),
        (IntegrityError("checksum mismatch"), "fail"),
        (TransientError("connection reset"), "retry"),
        (RuntimeError("unexpected"), "default"),
    ],
)
def test_retry_policy_follows_the_hierarchy(exc, action):
    decision = retry_policy().evaluate(exc, try_number=1, max_tries=3)
    assert decision.action.value == action


def test_exit_codes_are_distinct_per_class():
    codes = [cls.exit_code for cls in (PgopsError, ConfigError, UnsafeOperation, IntegrityError, TransientError)]
    assert len(set(codes)) == len(codes)


def test_default_args_bound_every_task():
    args = default_args()
    assert args["owner"] == "pgops"
    assert args["execution_timeout"].total_seconds() > 0
    assert args["retries"] >= 1
    assert args["retry_policy"] is not None
