"""Runs a benchmark script and reads the JSON object its last line prints."""

import json
import subprocess
import sys

from prioritymax.settings import REPO_ROOT


def last_json_line(args):
    result = subprocess.run([sys.executable, *args], capture_output=True, text=True,
                            cwd=REPO_ROOT, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])
