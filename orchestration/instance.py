"""The Dagster instance's home: ``<data home>/dagster`` (DAGSTER_HOME) and its ``dagster.yaml``.

:func:`ensure_dagster_home` writes the workbench's ``dagster.yaml`` once, when there is none; a file
that is already there is the user's and is never rewritten (the one exception: the telemetry-only
file that earlier versions wrote, which is our own default, not a choice, and is upgraded).

What the file sets:

- **telemetry off**: Dagster's telemetry appends to ``~/.dagster/logs`` on every step (measured: 15%
  of a run of no-op nodes) and has nowhere to send it here.
- **the run queue**: ``QueuedRunCoordinator`` (``dagster job launch``, the UI, schedules and sensors
  enqueue; ``dagster-daemon run`` dequeues), at most :data:`MAX_CONCURRENT_RUNS` runs at once, and at
  most one run carrying the :data:`TRAINING_TAG` tag (whatever its value): the training jobs carry it
  (``orchestration/jobs.py``), so two trainings never share the cores.
- **run monitoring**: the daemon fails a run whose worker never started or never acknowledged a
  cancel within :data:`MONITOR_TIMEOUT_SECONDS`.
- **nothing under ``python_logs``**: with handlers there, Dagster calls ``logging.config.dictConfig``
  at the start of every run, and concurrent in-process workflow runs deadlock on logging's locks
  (see ``orchestration.workflows.runner.dagster_instance``).
"""

from __future__ import annotations

from pathlib import Path

from prioritymax.files import atomic_path

#: Runs in progress at once; the rest wait QUEUED. Room for the one training run (the
#: :data:`TRAINING_TAG` limit) beside the light ones: gating, promotion, workflow jobs.
MAX_CONCURRENT_RUNS = 4
#: Runs carrying this tag, whatever its value, run one at a time: the training jobs' tag.
TRAINING_TAG = "prioritymax/training"
#: The tags of a training job.
TRAINING_TAGS = {TRAINING_TAG: "true"}
MONITOR_TIMEOUT_SECONDS = 180

DAGSTER_YAML = f"""\
# Written by PriorityMax Workbench (orchestration/instance.py) when no dagster.yaml existed; it is yours
# to edit and is never rewritten. Keep `python_logs` out: handlers there make Dagster call
# logging.config.dictConfig per run, which deadlocks concurrent in-process workflow runs.
telemetry:
  enabled: false

# `dagster job launch`, the UI, schedules and sensors enqueue runs; `dagster-daemon run` starts them.
run_coordinator:
  module: dagster.core.run_coordinator
  class: QueuedRunCoordinator

concurrency:
  runs:
    max_concurrent_runs: {MAX_CONCURRENT_RUNS}
    tag_concurrency_limits:
      # At most one training run at a time (any run carrying the tag, whatever its value).
      - key: {TRAINING_TAG}
        limit: 1

run_monitoring:
  enabled: true
  start_timeout_seconds: {MONITOR_TIMEOUT_SECONDS}
  cancel_timeout_seconds: {MONITOR_TIMEOUT_SECONDS}
"""

#: What ``dagster_instance()`` wrote before this module existed: our default, safe to upgrade.
LEGACY_DAGSTER_YAML = "telemetry:\n  enabled: false\n"


def ensure_dagster_home(settings) -> Path:
    """Create DAGSTER_HOME (the data home's ``dagster/``, or ``DAGSTER_HOME``) and write its
    ``dagster.yaml`` when missing. Returns the directory."""
    home = settings.dagster_home
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    try:
        current = config.read_text()
    except FileNotFoundError:
        current = None
    if current is None or current == LEGACY_DAGSTER_YAML:
        with atomic_path(config) as temporary:
            temporary.write_text(DAGSTER_YAML)
            temporary.chmod(0o644)
    return home


def initialize_dagster_home(settings) -> Path:
    """:func:`ensure_dagster_home`, then open the instance once, so that its SQLite storages are
    created and stamped by this process alone. Dagster processes started together on a fresh home
    race to create them (seen here: the webserver died with "Version table 'alembic_version' has more
    than one head present" when it started beside the daemon)."""
    import dagster as dg

    home = ensure_dagster_home(settings)
    dg.DagsterInstance.from_config(str(home)).dispose()
    return home

