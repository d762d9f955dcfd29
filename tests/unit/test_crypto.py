from __future__ import annotations

import stat
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from gateway.crypto import KEY_FILE, SecretBox, load_box, parse_keys
from gateway.errors import SecretError, SettingsError
from gateway.settings import Settings


def test_round_trip_and_no_plaintext_in_ciphertext() -> None:
    box = SecretBox([Fernet.generate_key()])
    token = box.encrypt("whsec_hunter2")
    assert "hunter2" not in token
    assert box.decrypt(token) == "whsec_hunter2"


def test_rotation_first_key_encrypts_all_decrypt() -> None:
    old, new = Fernet.generate_key(), Fernet.generate_key()
    stored = SecretBox([old]).encrypt("s3cret")
    both = SecretBox([new, old])
    assert both.decrypt(stored) == "s3cret"
    rotated = both.rotate(stored)
    assert SecretBox([new]).decrypt(rotated) == "s3cret"
    with pytest.raises(SecretError) as exc:
        SecretBox([old]).decrypt(rotated)
    assert "s3cret" not in str(exc.value)


def test_keys_from_settings() -> None:
    k1, k2 = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    s = Settings.from_env({"GATEWAY_ENCRYPTION_KEYS": f"{k1}, {k2}"})
    assert [k.reveal() for k in s.encryption_keys] == [k1, k2]
    assert k1 not in repr(s)
    with pytest.raises(SettingsError, match="GATEWAY_ENCRYPTION_KEYS: key #2 is not a Fernet key"):
        Settings.from_env({"GATEWAY_ENCRYPTION_KEYS": f"{k1},nope"})
    assert parse_keys("") == ()


def test_development_key_is_generated_owner_only(tmp_path: Path) -> None:
    box = load_box((), tmp_path)
    path = tmp_path / KEY_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again = load_box((), tmp_path)  # reused, not regenerated
    assert again.decrypt(box.encrypt("x")) == "x"
