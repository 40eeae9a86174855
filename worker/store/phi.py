"""Protected health information at rest: field encryption and blind indexes for dedup.

Every PHI column is encrypted with Fernet (AES-CBC + HMAC-SHA256) through `MultiFernet`, so a key can be added
in front and old rows re-encrypted later. Dedup cannot compare ciphertexts, so each normalized phone and email also
gets a blind index: a keyed HMAC-SHA256 digest that matches equal values without revealing them. Blind-index keys
rotate the same way: digests are written under the newest key and looked up under every configured key until
`admitflow keys rotate` has rewritten the stored ones.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from config.settings import Settings, get_settings

log = logging.getLogger(__name__)


class KeyConfigurationError(RuntimeError):
    """The PHI keys are missing or malformed; the message says which variable to fix."""


class UndecryptableValue(RuntimeError):
    """A stored value does not decrypt with any configured key."""


@dataclass(frozen=True)
class PhiVault:
    ciphers: MultiFernet
    index_keys: tuple[bytes, ...]  # newest first: digests are written under the first, looked up under all
    primary: Fernet | None = None  # the newest key, which `rotate` re-encrypts everything to

    def is_current(self, token: str) -> bool:
        """Was this value encrypted with the newest key already?"""
        if self.primary is None:
            return True
        try:
            self.primary.decrypt(token.encode("ascii"))
        except InvalidToken:
            return False
        return True

    def rotate(self, token: str) -> str:
        """The same value re-encrypted with the newest key."""
        try:
            return self.ciphers.rotate(token.encode("ascii")).decode("ascii")
        except InvalidToken:
            raise UndecryptableValue(
                "a PHI column does not decrypt with ADMITFLOW_ENCRYPTION_KEYS: keep the old key in the list, after "
                "the new one, until the rotation has finished"
            ) from None

    def encrypt(self, plaintext: str) -> str:
        return self.ciphers.encrypt(plaintext.encode("utf-8")).decode("ascii")

    def decrypt(self, token: str) -> str:
        try:
            return self.ciphers.decrypt(token.encode("ascii")).decode("utf-8")
        except InvalidToken:
            raise UndecryptableValue(
                "a PHI column does not decrypt with ADMITFLOW_ENCRYPTION_KEYS: add the key it was written with "
                "(old keys stay in the list, after the new one)"
            ) from None

    def blind_index(self, kind: str, normalized: str) -> str:
        """The digest to store, under the newest blind-index key."""
        return self.blind_indexes(kind, normalized)[0]

    def blind_indexes(self, kind: str, normalized: str) -> tuple[str, ...]:
        """The value's digest under every configured blind-index key, newest first: what a lookup must match
        while stored digests are being rewritten to the newest key."""
        message = f"{kind}:{normalized}".encode()
        return tuple(hmac.new(key, message, hashlib.sha256).hexdigest() for key in self.index_keys)


def _parse_fernet_keys(raw: str) -> list[Fernet]:
    keys = [part.strip() for part in raw.split(",") if part.strip()]
    if not keys:
        raise KeyConfigurationError("ADMITFLOW_ENCRYPTION_KEYS is empty: set one or more Fernet keys, newest first")
    try:
        return [Fernet(key.encode("ascii")) for key in keys]
    except (ValueError, UnicodeEncodeError):
        raise KeyConfigurationError(
            "ADMITFLOW_ENCRYPTION_KEYS holds a value that is not a Fernet key (32 url-safe base64 bytes); "
            "make one with `admitflow keys generate`"
        ) from None


def _parse_index_keys(raw: str) -> tuple[bytes, ...]:
    keys = tuple(_parse_index_key(part.strip()) for part in raw.split(",") if part.strip())
    if not keys:
        raise KeyConfigurationError("ADMITFLOW_BLIND_INDEX_KEY is empty: set one or more keys, newest first")
    if len(set(keys)) != len(keys):
        raise KeyConfigurationError("ADMITFLOW_BLIND_INDEX_KEY lists the same key twice: list each key once")
    return keys


def _parse_index_key(raw: str) -> bytes:
    try:
        key = base64.urlsafe_b64decode(raw.encode("ascii"))
    except (ValueError, UnicodeEncodeError):
        key = b""
    if len(key) < 32:
        raise KeyConfigurationError(
            "ADMITFLOW_BLIND_INDEX_KEY must be one or more keys (comma-separated, newest first), each at least 32 "
            "random bytes, url-safe base64; make one with `admitflow keys generate`"
        )
    return key


def generate_keys() -> dict[str, str]:
    """A fresh key pair in the form the environment variables take."""
    return {
        "ADMITFLOW_ENCRYPTION_KEYS": Fernet.generate_key().decode("ascii"),
        "ADMITFLOW_BLIND_INDEX_KEY": base64.urlsafe_b64encode(secrets.token_bytes(32)).decode("ascii"),
    }


def _local_key_file(path: Path) -> dict[str, str]:
    if path.exists():
        stored: dict[str, str] = json.loads(path.read_text(encoding="utf-8"))
        return stored
    keys = generate_keys()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(keys, handle)
    log.warning(
        "created a local PHI key file at %s (mode 0600) for the embedded default; back it up, or the stored "
        "submissions cannot be read. In production set ADMITFLOW_ENCRYPTION_KEYS and ADMITFLOW_BLIND_INDEX_KEY.",
        path.resolve(),
    )
    return keys


def load_vault(settings: Settings) -> PhiVault:
    """Keys from the environment; in development only, a local key file made on first use."""
    enc = settings.encryption_keys.get_secret_value() if settings.encryption_keys else ""
    idx = settings.blind_index_key.get_secret_value() if settings.blind_index_key else ""
    if not (enc and idx):
        if settings.environment == "production":
            raise KeyConfigurationError(
                "ADMITFLOW_ENV=production needs ADMITFLOW_ENCRYPTION_KEYS and ADMITFLOW_BLIND_INDEX_KEY from the "
                "environment; make them with `admitflow keys generate` and keep them in your secret store"
            )
        stored = _local_key_file(settings.key_file)
        enc = enc or stored["ADMITFLOW_ENCRYPTION_KEYS"]
        idx = idx or stored["ADMITFLOW_BLIND_INDEX_KEY"]
    fernets = _parse_fernet_keys(enc)
    return PhiVault(ciphers=MultiFernet(fernets), index_keys=_parse_index_keys(idx), primary=fernets[0])


_vault: PhiVault | None = None


def current_vault() -> PhiVault:
    global _vault
    if _vault is None:
        _vault = load_vault(get_settings())
    return _vault


def reset_vault() -> None:
    """Forget the loaded keys (tests, and after a key change in the same process)."""
    global _vault
    _vault = None
