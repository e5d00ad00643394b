"""Chaos, in the spirit of etcd's robustness tests: the API killed with SIGKILL while writers are
busy, cycle after cycle, on one SQLite home. Afterwards, nothing acknowledged is lost, versions
and revisions have no gaps, and every committed change has exactly one audit line (a process
killed between a commit and its line has the line rebuilt from the store: api/config/audit.py), and
a WebSocket subscriber that resumes with ``?since=`` after each restart sees every revision once,
in order.

Each cycle kills once the writers have had enough writes acknowledged in it (waited for, not
slept for), so every cycle kills a server in the middle of writing."""

from __future__ import annotations

import json
import logging
import os
import signal
import sqlite3
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tests.api.conftest import ADMIN_TOKEN, start_server, stop_server

pytestmark = pytest.mark.integration

CYCLES = 20
WRITERS = 4
#: Writes acknowledged in a cycle before its kill.
ACKNOWLEDGED_BEFORE_KILL = 25


class Writers:
    """``WRITERS`` threads writing ``chaos.<n>`` (single writes and batches of two), each
    remembering what was acknowledged, until the server stops answering."""

    def __init__(self, url: str, cycle: int) -> None:
        self.url, self.cycle = url, cycle
        self.acknowledged: list[tuple[str, int, object]] = []  # key, version, value
        self._lock = threading.Lock()
        self._enough = threading.Event()
        self._threads = [threading.Thread(target=self._write, args=(n,), daemon=True) for n in range(WRITERS)]

    def __enter__(self) -> Writers:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        for thread in self._threads:
            thread.join(timeout=60)

    def wait_for_enough(self, timeout: float = 60) -> bool:
        return self._enough.wait(timeout)

    def _write(self, n: int) -> None:
        headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        with httpx.Client(base_url=self.url, headers=headers, timeout=10) as client:
            step = 0
            while True:
                step += 1
                value = {"cycle": self.cycle, "writer": n, "step": step}
                try:
                    if step % 3:
                        answer = client.post("/config", json={"key": f"chaos.{n}", "value": value})
                        written = [answer.json()] if answer.status_code == 200 else []
                    else:
                        items = [{"key": f"chaos.{n}", "value": value},
                                 {"key": f"chaos.{n}.batch", "value": value}]
                        answer = client.post("/config/batch", json={"items": items})
                        written = answer.json()["written"] if answer.status_code == 200 else []
                except httpx.HTTPError:
                    return  # killed: what was not acknowledged may or may not have committed
                assert answer.status_code == 200, answer.text
                with self._lock:
                    self.acknowledged += [(w["key"], w["version"], w["value"]) for w in written]
                    if len(self.acknowledged) >= ACKNOWLEDGED_BEFORE_KILL:
                        self._enough.set()


class Subscriber:
    """A WebSocket subscriber that, across restarts, resumes with ``?since=`` the last revision it
    saw: it keeps every change revision it received, in the order received."""

    def __init__(self) -> None:
        self.revisions: list[int] = []
        self._thread: threading.Thread | None = None

    def follow(self, server) -> None:
        """Subscribe to ``server`` (in a thread) until it goes away; returns once subscribed."""
        since = self.revisions[-1] if self.revisions else 0
        subscribed = threading.Event()
        url = f"{server.ws_url}?token={ADMIN_TOKEN}&since={since}"
        self._thread = threading.Thread(target=self._read, args=(url, subscribed), daemon=True)
        self._thread.start()
        assert subscribed.wait(timeout=30), "the WebSocket did not say hello"

    def _read(self, url: str, subscribed: threading.Event) -> None:
        try:
            with connect(url) as socket:
                if '"hello"' in socket.recv(timeout=10):
                    subscribed.set()
                while True:
                    message = json.loads(socket.recv())
                    if "revision" in message and message.get("type") != "hello":
                        self.revisions.append(message["revision"])
        except (ConnectionClosed, OSError, TimeoutError):
            return

    def wait_until(self, revision: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while (not self.revisions or self.revisions[-1] < revision) and time.monotonic() < deadline:
            time.sleep(0.05)

    def stop(self) -> None:
        if self._thread is not None:
            self._thread.join(timeout=30)


def audit_counts(path: Path) -> Counter:
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return Counter(line["revision"] for line in lines if "revision" in line)


def wait_for_one_audit_line_each(home: Path, timeout: float = 60) -> tuple[list[int], Counter]:
    """The event revisions and the audit file's count per revision, once every revision has its
    line (the running server's repair loop adds the missing ones) or the time is up."""
    deadline = time.monotonic() + timeout
    while True:
        with sqlite3.connect(home / "prioritymax.db") as db:
            revisions = [r for (r,) in db.execute("SELECT revision FROM config_events ORDER BY revision")]
        counts = audit_counts(home / "logs" / "config_audit.jsonl")
        if all(counts[r] >= 1 for r in revisions) or time.monotonic() > deadline:
            return revisions, counts
        time.sleep(0.2)


def test_kill_9_during_concurrent_writes_loses_nothing_and_misses_no_audit_line(tmp_path):
    home = tmp_path / "home"
    acknowledged: list[tuple[str, int, object]] = []
    subscriber = Subscriber()
    for cycle in range(CYCLES):
        server = start_server(home, roles=())
        subscriber.follow(server)
        with Writers(server.url, cycle) as writers:
            assert writers.wait_for_enough(), f"cycle {cycle}: the writers got too few answers"
            os.kill(server.process.pid, signal.SIGKILL)
            server.process.wait(timeout=30)
        subscriber.stop()
        acknowledged += writers.acknowledged

    server = start_server(home, roles=())
    try:
        revisions, counts = wait_for_one_audit_line_each(home)
        subscriber.follow(server)
        subscriber.wait_until(revisions[-1])
        with server.client("admin") as admin:
            histories = {key: admin.get(f"/config/{key}/versions").json()
                         for key in {key for key, _, _ in acknowledged}}
    finally:
        stop_server(server)
        subscriber.stop()

    assert len(acknowledged) >= CYCLES * ACKNOWLEDGED_BEFORE_KILL
    for key, history in histories.items():
        versions = sorted(v["version"] for v in history)
        assert versions == list(range(1, len(versions) + 1)), f"{key}: versions with gaps"
    stored = {(key, v["version"]): v["value"] for key, history in histories.items() for v in history}
    lost = [(key, version) for key, version, value in acknowledged if stored.get((key, version)) != value]
    assert not lost, f"acknowledged writes lost: {lost[:10]}"
    assert revisions == list(range(1, len(revisions) + 1)), "revisions with gaps"
    # Resumed with ?since= after every kill: each revision reached the subscriber once, in order.
    assert subscriber.revisions == revisions, "the WebSocket missed, repeated or reordered revisions"
    wrong = [(r, counts[r]) for r in revisions if counts[r] != 1]
    assert not wrong, f"revisions without exactly one audit line (revision, lines): {wrong[:10]}"
    assert not set(counts) - set(revisions), "audit lines for changes that never committed"
    repaired = sum('"repaired": true' in line for line in
                   (home / "logs" / "config_audit.jsonl").read_text().splitlines())
    logging.getLogger(__name__).info(
        "chaos: %d kill -9 cycles, %d acknowledged writes, 0 lost, %d revisions, 0 gaps, %d audit lines "
        "repaired, 0 missing", CYCLES, len(acknowledged), len(revisions), repaired)


def test_a_change_whose_audit_line_was_lost_gets_it_back(tmp_path):
    """A process killed between the commit and the line, made exact: the line is cut off the file."""
    home = tmp_path / "home"
    server = start_server(home, roles=())
    try:
        with server.client("admin") as admin:
            for n in range(3):
                written = admin.post("/config", json={"key": "lost.line", "value": n, "comment": f"n={n}"})
                assert written.is_success, written.text
        audit = home / "logs" / "config_audit.jsonl"
        lines = audit.read_text().splitlines(keepends=True)
        cut = json.loads(lines[-1])
        audit.write_text("".join(lines[:-1]))  # the same file (inode): the server keeps appending to it
        revisions, counts = wait_for_one_audit_line_each(home)
    finally:
        stop_server(server)
    assert counts[cut["revision"]] == 1 and revisions[-1] == cut["revision"]
    repaired = [json.loads(line) for line in audit.read_text().splitlines()][-1]
    assert repaired.pop("repaired") is True
    assert {k: repaired[k] for k in cut if k != "at"} == {k: v for k, v in cut.items() if k != "at"}
