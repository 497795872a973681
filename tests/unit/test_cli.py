from __future__ import annotations

import subprocess
import sys

from pgops.cli import main


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pgops", *args], capture_output=True, text=True)


def test_help_lists_the_commands():
    proc = run("--help")
    assert proc.returncode == 0
    assert "preflight" in proc.stdout and "config" in proc.stdout


def test_invalid_config_exits_2_and_names_the_key(tmp_path, capsys):
    bad = tmp_path / "pgops.yaml"
    bad.write_text("retention:\n  full_days: -3\n")
    assert main(["--config", str(bad), "config", "check"]) == 2
    err = capsys.readouterr().err
    assert "retention.full_days" in err and "-3" in err


def test_valid_config_exits_0(tmp_path, capsys):
    good = tmp_path / "pgops.yaml"
    good.write_text("retention:\n  full_days: 40\n")
    assert main(["--config", str(good), "config", "check", "--show"]) == 0
    assert '"full_days": 40' in capsys.readouterr().out


def test_missing_connection_is_a_config_error(capsys, monkeypatch):
    monkeypatch.delenv("AIRFLOW_CONN_PGOPS_MONITOR", raising=False)
    assert main(["preflight"]) == 2
    assert "AIRFLOW_CONN_PGOPS_BACKUP" in capsys.readouterr().err
