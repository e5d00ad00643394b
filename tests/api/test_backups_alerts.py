"""Backups to S3, Slack alerts, verification, the Fernet key and the audit log, for real: moto's S3
in server mode and a Slack webhook receiver, both on loopback, and the API in its own uvicorn
with S3_BUCKET, AWS_ENDPOINT_URL and SLACK_WEBHOOK_URL pointing at them."""

from __future__ import annotations

import json
import shutil
import sqlite3
import stat
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace

import boto3
import pytest
from cryptography.fernet import Fernet, MultiFernet

from tests.api.conftest import free_port, start_server, stop_server

pytestmark = pytest.mark.integration

BUCKET = "pmx-config-backups"
AWS_ENV = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
           "AWS_DEFAULT_REGION": "us-east-1"}
ADMIN_NAME = "admin (PRIORITYMAX_ADMIN_TOKEN)"


class SlackReceiver:
    """A stand-in for Slack's incoming webhook: keeps the JSON body of every POST to /hook."""

    def __init__(self) -> None:
        self.messages: list[dict] = []
        received = self.messages

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"null")
                if self.path == "/hook":
                    received.append(body)
                self.send_response(200 if self.path == "/hook" else 404)
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args) -> None:  # keep pytest's output clean
                pass

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.http.serve_forever, daemon=True)
        self.thread.start()

    def texts(self) -> list[str]:
        return [m.get("text", "") for m in self.messages]

    def wait_for(self, fragment: str, timeout: float = 10.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [t for t in self.texts() if fragment in t]
            if found:
                return found[-1]
            time.sleep(0.05)
        raise AssertionError(f"no Slack message with {fragment!r}; got {self.texts()}")

    def close(self) -> None:
        self.http.shutdown()
        self.http.server_close()


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """moto S3 + Slack receiver + an API server wired to both. The bucket is *not* created here:
    the first backup test sees the 502 of a missing bucket, then creates it with boto3."""
    from moto.server import ThreadedMotoServer

    slack = SlackReceiver()
    moto_port = free_port()
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=moto_port, verbose=False)
    moto.start()
    endpoint = f"http://127.0.0.1:{moto_port}"
    s3 = boto3.session.Session(aws_access_key_id="test", aws_secret_access_key="test",
                               region_name="us-east-1").client("s3", endpoint_url=endpoint)
    home = tmp_path_factory.mktemp("backup-home")
    api = start_server(home, extra_env={"S3_BUCKET": BUCKET, "S3_PREFIX": "config/",
                                        "AWS_ENDPOINT_URL": endpoint, **AWS_ENV,
                                        "SLACK_WEBHOOK_URL": slack.url})
    try:
        yield SimpleNamespace(api=api, s3=s3, slack=slack, endpoint=endpoint, home=home)
    finally:
        stop_server(api)
        moto.stop()
        slack.close()


@pytest.fixture(scope="module")
def env_key_server(tmp_path_factory):
    """A server whose Fernet key comes from FERNET_KEY (and without S3 or Slack)."""
    key = Fernet.generate_key().decode()
    running = start_server(tmp_path_factory.mktemp("env-key-home"), extra_env={"FERNET_KEY": key})
    running.fernet_key = key
    yield running
    stop_server(running)


def stored_value(home, key: str):
    """The stored value of a current item, straight from the SQLite file."""
    with sqlite3.connect(home / "prioritymax.db") as db:
        row = db.execute("SELECT value FROM config_items WHERE key = ?", (key,)).fetchone()
    return json.loads(row[0])


def key_file_fernet(home) -> MultiFernet:
    keys = (home / "secrets" / "fernet.key").read_text().split()
    return MultiFernet([Fernet(k) for k in keys])


def audit_lines(home) -> list[dict]:
    path = home / "logs" / "config_audit.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# ------------------------------------------------------------------------------------ backups
def test_backup_goes_to_s3_and_restores_into_a_fresh_server(stack, env_key_server, tmp_path):
    canary = "PLAINTEXT-backup-canary-5d2e"
    with stack.api.client("admin") as admin:
        missing = admin.post("/config/backup/upload")
        assert missing.status_code == 502, missing.text
        assert "NoSuchBucket" in missing.json()["detail"] and BUCKET in missing.json()["detail"]
        stack.s3.create_bucket(Bucket=BUCKET)

        assert admin.post("/config", json={"key": "backup.workers", "value": 12}).status_code == 200
        assert admin.post("/config", json={"key": "backup.workers", "value": 7,
                                           "tenant": "org:acme"}).status_code == 200
        assert admin.put("/config/features/backup_flag", json={"enabled": True}).status_code == 200
        assert admin.post("/config/secrets/backup_password",
                          json={"secret_value": canary}).status_code == 200
        expected = {(i["kind"], i["key"], i["tenant"]): i["value"]
                    for i in admin.get("/config/snapshot").json()["items"]}

        uploaded = admin.post("/config/backup/upload")
        assert uploaded.status_code == 200, uploaded.text
        result = uploaded.json()
        assert result["bucket"] == BUCKET and result["items"] == len(expected)
        assert result["key"].startswith("config/config-backup-") and result["key"].endswith(".json")
        # a second backup in the same second is a second object, not an overwrite
        second = admin.post("/config/backup/upload").json()
        assert second["key"] != result["key"]

    listed = stack.s3.list_objects_v2(Bucket=BUCKET, Prefix="config/")
    assert {o["Key"] for o in listed["Contents"]} == {result["key"], second["key"]}
    raw = stack.s3.get_object(Bucket=BUCKET, Key=result["key"])["Body"].read()
    assert canary.encode() not in raw
    document = json.loads(raw)
    secret = next(i for i in document["items"] if i["key"] == "backup_password")
    assert secret["is_secret"] and key_file_fernet(stack.home).decrypt(secret["value"].encode()) \
        == canary.encode()

    upload_audit = [line for line in audit_lines(stack.home) if line["operation"] == "backup.upload"]
    assert [line["key"] for line in upload_audit] == [result["key"], second["key"]]
    assert all(line["actor"] == ADMIN_NAME and "value" not in line for line in upload_audit)
    assert canary not in (stack.home / "logs" / "config_audit.jsonl").read_text()

    # A fresh server that holds the same key file restores it whole, secret included...
    fresh_home = tmp_path / "fresh-home"
    (fresh_home / "secrets").mkdir(parents=True)
    shutil.copy2(stack.home / "secrets" / "fernet.key", fresh_home / "secrets" / "fernet.key")
    fresh = start_server(fresh_home)
    try:
        with fresh.client("admin") as admin:
            restored = admin.post("/config/backup/restore", json=document)
            assert restored.status_code == 200, restored.text
            assert restored.json() == {"restored": len(expected)}
            after = {(i["kind"], i["key"], i["tenant"]): i["value"]
                     for i in admin.get("/config/snapshot").json()["items"]}
            assert after == expected
            assert admin.post("/config/verify").json()["ok"] is True
    finally:
        stop_server(fresh)
    assert key_file_fernet(fresh_home).decrypt(
        stored_value(fresh_home, "backup_password").encode()) == canary.encode()

    # ...and one with another key refuses it whole rather than store a secret it cannot open.
    with env_key_server.client("admin") as admin:
        before = admin.get("/config/snapshot").json()["revision"]
        refused = admin.post("/config/backup/restore", json=document)
        assert refused.status_code == 422 and "backup_password" in refused.json()["detail"]
        assert admin.get("/config/snapshot").json()["revision"] == before


def test_upload_without_a_bucket_is_a_clear_400(env_key_server):
    with env_key_server.client("admin") as admin:
        response = admin.post("/config/backup/upload")
    assert response.status_code == 400 and "S3_BUCKET" in response.json()["detail"]


# ------------------------------------------------------------------------------------- alerts
def test_rotation_rollback_and_cleanup_alert_slack(stack):
    with stack.api.client("admin") as admin:
        for value in (1, 2):
            admin.post("/config", json={"key": "alerts.limit", "value": value})
        assert admin.post("/config/alerts.limit/rollback/1").status_code == 200
        assert "rolled 'alerts.limit' back to version 1" in stack.slack.wait_for("alerts.limit")

        for enabled in (True, False):
            admin.put("/config/features/alerts_flag", json={"enabled": enabled})
        assert admin.post("/config/features/alerts_flag/rollback/1").status_code == 200
        assert "back to version 1" in stack.slack.wait_for("flag 'alerts_flag'")

        rotated = admin.post("/config/rotate_fernet_key")
        assert rotated.status_code == 200, rotated.text
        assert "secrets re-encrypted" in stack.slack.wait_for("rotated the Fernet key")

        assert admin.post("/config/cleanup", params={"keep_versions": 1}).status_code == 200
        assert "removed_versions" in stack.slack.wait_for("ran cleanup")
    assert all(text.startswith("[prioritymax config] ") for text in stack.slack.texts())
    assert all(ADMIN_NAME in text for text in stack.slack.texts())


def test_a_corrupt_secret_fails_verification_alerts_and_blocks_rotation(stack):
    with stack.api.client("admin") as admin:
        admin.post("/config/secrets/verify_me", json={"secret_value": "fine"})
        healthy = admin.post("/config/verify")
        assert healthy.status_code == 200 and healthy.json()["ok"] is True, healthy.text
        assert not [t for t in stack.slack.texts() if "verification failed" in t]

        # Damage the ciphertext in the store behind the API's back, as a bad restore or a
        # hand edit would.
        with sqlite3.connect(stack.home / "prioritymax.db") as db:
            db.execute("UPDATE config_items SET value = ? WHERE key = 'verify_me'",
                       (json.dumps("gAAAAABnot-a-fernet-token"),))
        report = admin.post("/config/verify")
        assert report.status_code == 200 and report.json()["ok"] is False
        assert any("'verify_me'" in p and "does not decrypt" in p for p in report.json()["problems"])
        assert "verify_me" in stack.slack.wait_for("config verification failed")

        # Rotation would have to re-encrypt it: refused with the reason, not a 500.
        rotate = admin.post("/config/rotate_fernet_key")
        assert rotate.status_code == 409, rotate.text
        assert "verify_me" in rotate.json()["detail"]

        assert admin.delete("/config/secrets/verify_me").status_code == 200
        verified = admin.post("/config/verify").json()
        assert (verified["ok"], verified["problems"]) == (True, [])
        assert admin.post("/config/rotate_fernet_key").status_code == 200


# ------------------------------------------------------------------------------- Fernet keys
def test_the_key_file_is_created_with_mode_0600(stack):
    key_file = stack.home / "secrets" / "fernet.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert len(key_file.read_text().split()) == 1


def test_a_fernet_key_from_the_environment_is_used_and_not_rotated(env_key_server):
    with env_key_server.client("admin") as admin:
        assert admin.post("/config/secrets/env_secret",
                          json={"secret_value": "from-env-key"}).status_code == 200
        rotate = admin.post("/config/rotate_fernet_key")
        assert rotate.status_code == 409
        assert "FERNET_KEY" in rotate.json()["detail"]
        assert admin.post("/config/verify").json()["ok"] is True
    token = stored_value(env_key_server.home, "env_secret")
    assert Fernet(env_key_server.fernet_key.encode()).decrypt(token.encode()) == b"from-env-key"
    assert not (env_key_server.home / "secrets" / "fernet.key").exists()


# ---------------------------------------------------------------------------------- audit log
def test_the_audit_log_has_one_line_per_change_with_actor_and_version(stack):
    with stack.api.client("operator") as operator, stack.api.client("admin") as admin:
        assert operator.post("/config", json={"key": "audit.key", "value": 1}).status_code == 200
        assert admin.post("/config", json={"key": "audit.key", "value": 2}).status_code == 200
        assert operator.delete("/config/audit.key").status_code == 200
        assert operator.post("/config", json={"key": "audit.key", "value": 3}).status_code == 200
        assert admin.post("/config/audit.key/rollback/2").status_code == 200
        assert admin.post("/config/secrets/audit_secret",
                          json={"secret_value": "audit-canary"}).status_code == 200
    lines = [line for line in audit_lines(stack.home) if line.get("key") == "audit.key"]
    assert [(line["operation"], line["version"], line["actor"]) for line in lines] == [
        ("set", 1, "test-operator"), ("set", 2, ADMIN_NAME), ("delete", 3, "test-operator"),
        ("set", 4, "test-operator"), ("rollback", 5, ADMIN_NAME)]
    assert [line["value"] for line in lines] == [1, 2, None, 3, 2]
    secret_line = next(line for line in audit_lines(stack.home) if line.get("key") == "audit_secret")
    assert secret_line["version"] == 1 and secret_line["value"] is None
    assert "audit-canary" not in (stack.home / "logs" / "config_audit.jsonl").read_text()
