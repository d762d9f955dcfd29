"""Secrets at rest: encrypt and decrypt with Fernet keys from GATEWAY_ENCRYPTION_KEYS.

Several keys may be configured (comma-separated) for rotation: the first encrypts, all
decrypt. With no key configured (the embedded development setup) a key is generated into
``$GATEWAY_DATA_DIR/encryption.key`` with owner-only permissions, and a warning says so
once. Errors never carry the plaintext or the key.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from gateway.errors import SecretError, SettingsError

log = logging.getLogger(__name__)

KEY_FILE = "encryption.key"


class SecretBox:
    def __init__(self, keys: Sequence[bytes]) -> None:
        if not keys:
            raise SettingsError("GATEWAY_ENCRYPTION_KEYS: at least one key is needed")
        self._keys = tuple(keys)
        self._fernet = MultiFernet([Fernet(k) for k in keys])

    @property
    def key_count(self) -> int:
        return len(self._keys)

    def encrypt(self, plaintext: str) -> str:
        return self._fernet.encrypt(plaintext.encode()).decode()

    def decrypt(self, token: str) -> str:
        try:
            return self._fernet.decrypt(token.encode()).decode()
        except (InvalidToken, ValueError):
            raise SecretError(
                "stored secret cannot be decrypted with the configured keys"
            ) from None

    def rotate(self, token: str) -> str:
        """Re-encrypt under the first (newest) key."""
        try:
            return self._fernet.rotate(token.encode()).decode()
        except (InvalidToken, ValueError):
            raise SecretError(
                "stored secret cannot be decrypted with the configured keys"
            ) from None


def parse_keys(raw: str, name: str = "GATEWAY_ENCRYPTION_KEYS") -> tuple[bytes, ...]:
    """Comma-separated Fernet keys (``Fernet.generate_key()``); SettingsError names the variable."""
    keys = []
    for i, part in enumerate(p.strip() for p in raw.split(",")):
        if not part:
            continue
        try:
            Fernet(part.encode())
        except ValueError:
            raise SettingsError(
                f"{name}: key #{i + 1} is not a Fernet key (32 url-safe base64-encoded bytes)"
            ) from None
        keys.append(part.encode())
    return tuple(keys)


def load_box(configured: Sequence[bytes], data_dir: Path) -> SecretBox:
    """The configured keys, or the generated development key under ``data_dir``."""
    if configured:
        return SecretBox(configured)
    path = data_dir / KEY_FILE
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, Fernet.generate_key())
        finally:
            os.close(fd)
        log.warning(
            "GATEWAY_ENCRYPTION_KEYS is not set: generated a key in %s (owner-only). "
            "Set GATEWAY_ENCRYPTION_KEYS in production.",
            path,
        )
    return SecretBox(parse_keys(path.read_text(), str(path)))


# Columns holding SecretBox tokens, as (table, primary key column, secret column):
# ``gateway secrets rotate`` re-encrypts every one of them. A new encrypted column is
# listed here.
ENCRYPTED_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("integration_mappings", "id", "credentials"),
    ("webhook_subscriptions", "id", "secret"),
    ("webhook_subscriptions", "id", "previous_secret"),
    ("webhook_subscriptions", "id", "auth_secret"),
    ("sync_jobs", "id", "auth_secret"),
)


async def rotate_all(
    conn: Any, box: SecretBox, columns: Sequence[tuple[str, str, str]] = ENCRYPTED_COLUMNS
) -> int:
    """Re-encrypt every stored secret under the newest key; return how many were rewritten."""
    count = 0
    for table, pk, column in columns:
        async with conn.transaction():
            rows = await conn.fetch(
                f"SELECT {pk} AS pk, {column} AS secret FROM {table} "
                f"WHERE {column} IS NOT NULL FOR UPDATE"
            )
            for row in rows:
                await conn.execute(
                    f"UPDATE {table} SET {column} = $2 WHERE {pk} = $1",
                    row["pk"],
                    box.rotate(row["secret"]),
                )
                count += 1
    return count
