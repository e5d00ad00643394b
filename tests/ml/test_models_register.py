"""``pmx models register``: checkpoint files trained elsewhere become a registry version."""

import json

import pytest

from tests.ml.predictor.test_registry import pmx

pytestmark = pytest.mark.integration


def test_files_become_the_next_challenger_version(tmp_path):
    home = tmp_path / "home"
    checkpoint = tmp_path / "rl_agent.pt"
    checkpoint.write_bytes(b"weights from elsewhere")
    for expected in ("1", "2"):
        done = pmx(home, "models", "register", "rl_agent", checkpoint)
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout) == {"model": "rl_agent", "version": expected}
    listed = json.loads(pmx(home, "models", "list", "--name", "rl_agent", "--json").stdout)
    assert [(row["version"], row["aliases"]) for row in listed] == [(1, ""), (2, "challenger")]
    from ml import registry

    downloaded = registry.version_checkpoint("rl_agent", 2, "*.pt", tmp_path / "out")
    assert downloaded.read_bytes() == b"weights from elsewhere"


def test_a_missing_file_is_refused(tmp_path):
    missing = pmx(tmp_path / "home", "models", "register", "rl_agent", tmp_path / "nope.pt")
    assert missing.returncode == 2 and "does not exist" in missing.stderr
