"""Fernet keys for config secrets, and their rotation.

The key comes from ``FERNET_KEY`` (the environment; never rotated by us, since we cannot rewrite
it) or the key file ``FERNET_KEY_PATH`` (default ``<home>/secrets/fernet.key``), created with mode
0600 on first start when absent. The file holds one key per line, newest first; decryption tries
them all (``MultiFernet``), encryption uses the first.

Rotation never leaves a secret undecryptable: (1) the new key is put first in the file - both
keys now decrypt; (2) every secret is re-encrypted with it, in one transaction; (3) the old key
is removed from the file. A crash between steps leaves a file that still decrypts everything.
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from prioritymax.files import atomic_path


class KeyringError(RuntimeError):
    """No usable key, or a rotation that cannot be done with this key source."""


class Keyring:
    def __init__(self, path: Path, env_key: str | None = None) -> None:
        self.path = Path(path)
        self.from_env = bool(env_key)
        if env_key:
            self._keys = [env_key.encode()]
        else:
            if not self.path.exists():
                self._write([Fernet.generate_key()])
            self._keys = self._read()
        self._build()

    def _read(self) -> list[bytes]:
        keys = [line.strip().encode() for line in self.path.read_text().splitlines() if line.strip()]
        if not keys:
            raise KeyringError(f"{self.path}: no Fernet key in the file")
        return keys

    def _write(self, keys: list[bytes]) -> None:
        with atomic_path(self.path) as temporary:
            temporary.write_bytes(b"\n".join(keys) + b"\n")
            os.chmod(temporary, 0o600)

    def _build(self) -> None:
        try:
            self._fernet = MultiFernet([Fernet(k) for k in self._keys])
        except ValueError as error:
            raise KeyringError(f"not a Fernet key (32 url-safe base64 bytes): {error}") from None

    def encrypt(self, plaintext: str) -> str:
        return self._fernet.encrypt(plaintext.encode()).decode()

    def decrypt(self, token: str) -> str:
        """Raises :class:`cryptography.fernet.InvalidToken` when no key opens it."""
        return self._fernet.decrypt(token.encode()).decode()

    def can_decrypt(self, token: str) -> bool:
        try:
            self._fernet.decrypt(token.encode())
            return True
        except (InvalidToken, ValueError, TypeError):
            return False

    @property
    def fingerprint(self) -> str:
        """A short, non-secret identifier of the current encryption key (for status and audit)."""
        import hashlib

        return hashlib.sha256(self._keys[0]).hexdigest()[:12]

    # -- rotation, in three steps (see the module docstring)
    def begin_rotation(self) -> None:
        if self.from_env:
            raise KeyringError("the Fernet key comes from FERNET_KEY; rotate it where it is set "
                               "(or use FERNET_KEY_PATH to let the control plane rotate)")
        self._keys = [Fernet.generate_key(), *self._keys]
        self._write(self._keys)
        self._build()

    def reencrypt(self, token: str) -> str:
        return self._fernet.rotate(token.encode()).decode()

    def finish_rotation(self) -> None:
        self._keys = self._keys[:1]
        self._write(self._keys)
        self._build()
