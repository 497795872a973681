from __future__ import annotations

import re

import pytest

from pgops.errors import ConfigError
from pgops.postgres import sqlfiles


def test_generator_steps_are_in_dependency_order():
    names = [name for name, _ in sqlfiles.steps("fixia/generate.sql")]
    assert names[0] == "helpers"
    for parent, child in [("users", "services"), ("projects", "jobs"), ("jobs", "payments"), ("jobs", "reviews")]:
        assert names.index(parent) < names.index(child)
    assert names[-1] == "sequences"


def test_generator_binds_only_scale_and_anchor():
    """psycopg reads every % as a placeholder: the only ones allowed are the two
    parameters, and a literal percent must be doubled."""
    for _, statement in sqlfiles.steps("fixia/generate.sql"):
        placeholders = set(re.findall(r"%\((\w+)\)s", statement))
        assert placeholders <= {"scale", "anchor"}
        stray = re.sub(r"%\(\w+\)s|%%", "", statement)
        assert "%" not in stray


def test_a_file_without_steps_is_refused():
    with pytest.raises(ConfigError, match="no '-- step:' markers"):
        sqlfiles.steps("fixia/schema.sql")


def test_a_missing_file_is_a_config_error():
    with pytest.raises(ConfigError, match="cannot be read"):
        sqlfiles.load("does/not/exist.sql")
