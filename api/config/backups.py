"""Off-site backups of the config store: the JSON of :meth:`ConfigService.export` put in S3.

The document is the one ``GET /config/backup`` returns, so ``POST /config/backup/restore`` takes
it back as is; secrets stay Fernet ciphertext, so the object is only useful together with the key
(``<home>/secrets/fernet.key`` or ``FERNET_KEY``), which is deliberately *not* uploaded with it.

The bucket and prefix are the seed's ``S3_BUCKET`` / ``S3_PREFIX``; everything else about S3
(``AWS_ENDPOINT_URL`` for MinIO or moto, ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``,
``AWS_DEFAULT_REGION``, profiles, ``AWS_MAX_ATTEMPTS``) is boto3's own configuration, read from the
environment as every AWS tool reads it, so there are no settings of ours for it.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from api.config.service import ConfigError

#: Upper bounds on one S3 call, so an unreachable endpoint fails the request instead of hanging
#: it for botocore's default 60 s per attempt.
CONNECT_TIMEOUT_S = 5.0
READ_TIMEOUT_S = 30.0


class BackupError(ConfigError):
    """A backup that could not be made; a ConfigError, so the routes answer its status."""


class NotConfigured(BackupError):
    status = 400


class UploadFailed(BackupError):
    """S3 refused or could not be reached: a 502, since the fault is upstream of the API."""

    status = 502


@dataclass(frozen=True)
class Uploaded:
    bucket: str
    key: str
    items: int
    revision: int
    bytes: int

    def response(self) -> dict[str, Any]:
        return {"bucket": self.bucket, "key": self.key, "items": self.items}


def object_key(prefix: str, revision: int, now: float | None = None) -> str:
    """``<prefix>config-backup-<UTC time to the microsecond>-r<revision>.json``: names sort by
    time, and two backups in the same second never overwrite each other."""
    now = time.time() if now is None else now
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now)) + f".{int(now % 1 * 1e6):06d}Z"
    return f"{prefix}config-backup-{stamp}-r{revision}.json"


def s3_client():
    """A fresh client from a fresh session: boto3's default session is not safe to share across
    the threads the route runs uploads in, and a new session re-reads the AWS_* environment."""
    import boto3  # imported here: only processes that upload pay for loading boto3
    from botocore.config import Config

    return boto3.session.Session().client(
        "s3", config=Config(connect_timeout=CONNECT_TIMEOUT_S, read_timeout=READ_TIMEOUT_S))


def upload(document: dict[str, Any], bucket: str | None, prefix: str, client=None) -> Uploaded:
    """Put one exported document in ``s3://bucket/prefix…``. Blocking: call it in a thread.

    Raises :class:`NotConfigured` without a bucket and :class:`UploadFailed` with S3's own message
    (no such bucket, access denied, endpoint unreachable…) when the put does not succeed."""
    if not bucket:
        raise NotConfigured("S3 backups are not configured: set S3_BUCKET (and S3_PREFIX, "
                            "AWS_ENDPOINT_URL and the AWS_* credentials as boto3 reads them)")
    from botocore.exceptions import BotoCoreError, ClientError

    body = json.dumps(document, sort_keys=True).encode()
    key = object_key(prefix, int(document.get("revision") or 0))
    try:
        (client or s3_client()).put_object(Bucket=bucket, Key=key, Body=body,
                                           ContentType="application/json")
    except ClientError as error:
        details = error.response.get("Error", {})
        raise UploadFailed(f"S3 refused s3://{bucket}/{key}: {details.get('Code', 'error')}: "
                           f"{details.get('Message', error)}") from None
    except BotoCoreError as error:
        raise UploadFailed(f"S3 upload to s3://{bucket}/{key} failed: {error}") from None
    return Uploaded(bucket=bucket, key=key, items=len(document.get("items", [])),
                    revision=int(document.get("revision") or 0), bytes=len(body))
