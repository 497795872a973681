from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pgops.config import PgopsConfig, load_config, parse_config
from pgops.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def test_defaults_are_the_documented_policy():
    config = PgopsConfig()
    assert config.retention.full_days == 30
    assert config.retention.pitr_days == 7
    assert config.retention.min_full_backups == 2
    assert config.repository.scheme == "local"
    assert config.repository.local_path() == ROOT / "var" / "repository"


@pytest.mark.parametrize(
    ("data", "key", "fragment"),
    [
        ({"retention": {"full_days": -1}}, "retention.full_days", "greater than or equal to 1"),
        ({"retention": {"pitr_days": 31}}, "retention", "pitr_days (31) cannot exceed full_days (30)"),
        ({"repository": {"url": "gs://bucket/x"}}, "repository.url", "unknown repository scheme 'gs'"),
        ({"repository": {"url": "s3:///nobucket"}}, "repository.url", "need a bucket"),
        ({"repository": {"url": "file://relative"}}, "repository.url", "absolute path"),
        ({"repository": {"part_size_mib": 1}}, "repository.part_size_mib", "greater than or equal to 5"),
        ({"repository": {"sse": "aws:kms"}}, "repository", "needs sse_kms_key_id"),
        ({"backup": {"compression_level": 30}}, "backup.compression_level", "less than or equal to 22"),
        ({"backup": {"max_rate": "fast"}}, "backup.max_rate", "number of kB/s"),
        ({"backup": {"max_rate": "2048M"}}, "backup.max_rate", "32 kB/s to 1024 MB/s"),
        ({"backup": {"full_schedule": "daily"}}, "backup.full_schedule", "cron"),
        ({"backup": {"slot_name": "Bad-Slot"}}, "backup.slot_name", "lower-case"),
        ({"restore_verification": {"count_tables": ["users"]}}, "restore_verification.count_tables", "schema-qualified"),
        ({"partitions": {"tables": [{"table": "fixia.x", "premake": 0}]}}, "partitions.tables.0.premake", ">= 1"),
        ({"monitoring": {"cache_hit_ratio_min": 1.5}}, "monitoring.cache_hit_ratio_min", "less than or equal to 1"),
        ({"retention": {"full_dayz": 3}}, "retention.full_dayz", "unknown key"),
        ({"bogus": {}}, "bogus", "unknown key"),
    ],
)
def test_invalid_values_name_key_value_and_rule(data, key, fragment):
    with pytest.raises(ConfigError) as info:
        parse_config(data, "test.yaml")
    message = str(info.value)
    assert "test.yaml" in message
    line = next(l for l in message.splitlines() if l.strip().startswith(key + ":"))
    assert fragment.replace(">= 1", "greater than or equal to 1") in line


@pytest.mark.parametrize("schedule", ["x y z w v", "61 * * * *", "0 25 * * *", "* * * * * *", "@once", "@fortnightly"])
def test_a_schedule_airflow_cannot_parse_is_refused(schedule):
    """Checked by Airflow's own cron timetable, not by counting fields: five words are
    not a schedule, and a sixth field would be seconds."""
    with pytest.raises(ConfigError, match="backup.full_schedule: .*five-field cron expression"):
        parse_config({"backup": {"full_schedule": schedule}}, "test.yaml")


@pytest.mark.parametrize("schedule", ["*/15 * * * *", "0 1 * * 1-5", "@daily", "@hourly", "@quarterly"])
def test_cron_expressions_and_airflow_presets_are_accepted(schedule):
    config = parse_config({"backup": {"wal_schedule": schedule}, "monitoring": {"schedule": schedule}}, "test.yaml")
    assert config.backup.wal_schedule == schedule and config.monitoring.schedule == schedule


def test_our_cron_presets_are_airflows():
    from airflow.sdk.definitions.timetables._cron import CRON_PRESETS

    from pgops.config import CRON_PRESETS as ours

    assert ours == CRON_PRESETS


def test_validating_a_configuration_does_not_import_airflow():
    """The on-call `pgops restore` validates the configuration with Airflow down: loading
    Airflow for a cron check cost a second and slowed the restore's extraction."""
    code = ("import sys, pgops.config as c; c.parse_config({'backup': {'full_schedule': '@daily'}}); "
            "sys.exit('airflow.sdk' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT).returncode == 0


def test_importing_the_config_does_not_import_airflow():
    code = "import sys, pgops.config; sys.exit('airflow' in sys.modules or 'croniter' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT).returncode == 0


def test_top_level_must_be_a_mapping():
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        parse_config(["a"], "x.yaml")


def test_a_missing_default_file_is_an_error_naming_where_pgops_looked(tmp_path, monkeypatch):
    """Before: a worker without the file silently took the defaults (a repository on its own disk)."""
    monkeypatch.setenv("PGOPS_HOME", str(tmp_path))
    with pytest.raises(ConfigError, match=rf"{tmp_path}/config/pgops.yaml does not exist .*PGOPS_USE_DEFAULTS=1"):
        load_config()


@pytest.mark.parametrize("flag", ["1", "true"])
def test_defaults_only_when_asked_for(tmp_path, monkeypatch, flag):
    monkeypatch.setenv("PGOPS_HOME", str(tmp_path))
    monkeypatch.setenv("PGOPS_USE_DEFAULTS", flag)
    assert load_config() == PgopsConfig()
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "pgops.yaml").write_text("backup:\n  compression_level: 7\n")
    assert load_config().backup.compression_level == 7, "a file that exists is always read"
    with pytest.raises(ConfigError, match=r"nope.yaml \(named by \$PGOPS_CONFIG\) does not exist"):
        monkeypatch.setenv("PGOPS_CONFIG", str(tmp_path / "nope.yaml"))
        load_config()
    monkeypatch.setenv("PGOPS_USE_DEFAULTS", "please")
    with pytest.raises(ConfigError, match="PGOPS_USE_DEFAULTS='please'"):
        load_config(tmp_path / "config" / "pgops.yaml")


def test_explicit_missing_file_is_an_error(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    monkeypatch.setenv("PGOPS_CONFIG", str(tmp_path / "nope.yaml"))
    with pytest.raises(ConfigError, match="does not exist"):
        load_config()


def test_unparsable_yaml_is_an_error(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("retention: [unclosed\n")
    with pytest.raises(ConfigError, match="cannot read pgops configuration"):
        load_config(bad)


def test_the_shipped_config_file_is_valid_and_round_trips(tmp_path):
    shipped = load_config(ROOT / "config" / "pgops.yaml")
    copy = tmp_path / "copy.yaml"
    copy.write_text(yaml.safe_dump(shipped.model_dump(mode="json")))
    assert load_config(copy) == shipped


def test_configuration_docs_match_the_schema():
    """docs/configuration.md is generated from the schema; a stale copy fails here."""
    generated = subprocess.run(
        [sys.executable, "-m", "pgops", "config", "docs"], capture_output=True, text=True, check=True,
        cwd=ROOT,
    ).stdout
    assert (ROOT / "docs" / "configuration.md").read_text() == generated, (
        "docs/configuration.md is stale: run `.venv/bin/pgops config docs > docs/configuration.md`"
    )
