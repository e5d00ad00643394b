"""The `pmx` and `python ml/trainer_full.py` entry points, run as a user runs them."""

import json
import os
import subprocess
import sys
from pathlib import Path

import click
import pytest

from pmx.cli import cli
from prioritymax.settings import REPO_ROOT

PMX = Path(sys.executable).with_name("pmx")


def run(args, home, env_extra=None, **kw):
    env = {**os.environ, "PRIORITYMAX_HOME": str(home), **(env_extra or {})}
    return subprocess.run(args, capture_output=True, text=True, cwd=REPO_ROOT, env=env,
                          timeout=600, **kw)


def walk(group: click.Group, prefix=()):
    for name, command in group.commands.items():
        yield (*prefix, name)
        if isinstance(command, click.Group):
            yield from walk(command, (*prefix, name))


@pytest.mark.integration
@pytest.mark.parametrize("path", [(), *walk(cli)], ids=lambda p: " ".join(p) or "pmx")
def test_help_on_every_command(path, data_home):
    result = run([str(PMX), *path, "--help"], data_home)
    assert result.returncode == 0, result.stderr
    assert "Usage:" in result.stdout


@pytest.mark.integration
def test_trainer_script_help(data_home):
    result = run([sys.executable, "ml/trainer_full.py", "--help"], data_home)
    assert result.returncode == 0, result.stderr
    assert "PriorityMax Unified Trainer" in result.stdout


DEMO = ("demo", "--synthetic-days", "2", "--episodes", "3", "--episode-steps", "240")


@pytest.mark.integration
def test_demo_prints_one_json_summary(small_trace, data_home):
    result = run([str(PMX), *DEMO, "--trace", str(small_trace), "--json"], data_home)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert set(summary["sources"]) == {"small", "synthetic"}
    for source in summary["sources"].values():
        assert Path(source["dataset"]["path"]).is_file()
        assert Path(source["dataset"]["path"]).is_relative_to(data_home / "data")
        policies = source["holdout_evaluation"]["policies"]
        assert set(policies) == {"hpa", "static", "queue_threshold", "erlang_c"}
        assert source["best_policy"] in policies
        for result_ in policies.values():
            assert result_["episodes"] == 3
            assert result_["reward"]["ci95"][0] <= result_["reward"]["mean"]


@pytest.mark.integration
def test_demo_prints_a_table_per_source_within_the_terminal(small_trace, data_home):
    result = run([str(PMX), *DEMO, "--trace", str(small_trace)], data_home, env_extra={"COLUMNS": "80"})
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert 10 < len(lines) < 40 and max(map(len, lines)) <= 80, result.stdout
    for source in ("small", "synthetic"):
        header = lines.index(next(line for line in lines if line.startswith(f"{source}: ")))
        table = lines[header:][lines[header:].index(next(line for line in lines[header:]
                                                         if line.split()[:2] == ["policy", "reward"])):]
        rows = [line.split() for line in table[1:5]]
        assert {row[0] for row in rows} == {"hpa", "static", "queue_threshold", "erlang_c"}
        rewards = [float(row[2] if row[1] == "*" else row[1]) for row in rows]
        assert rewards == sorted(rewards, reverse=True)  # best first, and marked
        assert rows[0][1] == "*" and all("*" not in row for row in rows[1:])
        assert table[5].startswith(f"  dataset: data/{source}/queue_metrics.csv")
    progress = result.stderr.splitlines()
    assert sum("over 3 holdout episodes, reward" in line for line in progress) == 8
    assert not any(line.startswith("20") for line in progress)  # progress lines, not log records


@pytest.mark.integration
def test_bad_trace_is_a_message_and_a_non_zero_exit(tmp_path, data_home):
    bad = tmp_path / "bad.csv"
    bad.write_text("timestamp,requests\n2024-01-01 00:00:00,1\n2024-01-01 00:01:00,oops\n")
    result = run([str(PMX), "sim", "describe", "--traffic", str(bad)], data_home)
    assert result.returncode == 1
    assert "value 'oops' is not a number" in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


def test_sim_commands_in_process(small_trace, data_home):
    from click.testing import CliRunner

    runner = CliRunner()
    described = runner.invoke(cli, ["sim", "describe", "--traffic", str(small_trace)])
    assert described.exit_code == 0 and json.loads(described.output)["segments"] == 2
    out = data_home / "qm.csv"
    built = runner.invoke(cli, ["sim", "dataset", "--traffic", "synthetic", "--out", str(out)])
    assert built.exit_code == 0, built.output
    assert json.loads(built.output)["rows"] > 0 and out.is_file()
    evaluated = runner.invoke(cli, ["sim", "evaluate", "--traffic", str(small_trace), "--policy",
                                    "hpa", "--policy", "static", "--episodes", "2", "--split",
                                    "all"])
    assert evaluated.exit_code == 0, evaluated.output
    assert set(json.loads(evaluated.output)) == {"hpa", "static"}
    unknown = runner.invoke(cli, ["sim", "evaluate", "--policy", "nope"])
    assert unknown.exit_code != 0 and "unknown policy 'nope'" in str(unknown.exception)


def test_settings_command_masks_secrets(monkeypatch, data_home):
    from click.testing import CliRunner

    monkeypatch.setenv("FERNET_KEY", "x" * 44)
    result = CliRunner().invoke(cli, ["settings"])
    shown = json.loads(result.output)
    assert shown["PRIORITYMAX_HOME"] == str(data_home)
    assert shown["FERNET_KEY"] == "**********"


def test_api_refuses_a_taken_port_before_it_serves(data_home):
    import socket

    from click.testing import CliRunner

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = CliRunner().invoke(cli, ["api", "--port", str(port)])
    assert result.exit_code == 1
    assert f"127.0.0.1:{port} is already taken; pass --port" in result.output
