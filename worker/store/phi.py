"""Protected health information at rest: field encryption and blind indexes for dedup.

Every PHI column is encrypted with Fernet (AES-CBC + HMAC-SHA256), stored after the id of the key that encrypted
it, so a key can be added in front and old rows re-encrypted later, and a value no configured key opens names the
key to restore. Dedup cannot compare ciphertexts, so each normalized phone and email also
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
    """A stored value does not decrypt with any configured key; the message names the key id it needs."""

    def __init__(self, message: str, key_id: str | None = None) -> None:
        super().__init__(message)
        self.key_id = key_id


def key_id(raw_key: bytes) -> str:
    """A key's public fingerprint: 8 hex digits of a hash, safe to print, log and store beside what it encrypted."""
    return hashlib.sha256(b"admitflow key id\0" + raw_key).hexdigest()[:8]


def token_key_id(token: str) -> str | None:
    """The id of the key a stored value was encrypted with; None for a value written before ids were stored."""
    kid, separator, _ = token.partition(KEY_ID_SEPARATOR)
    return kid if separator else None


# Stored values are "<key id>:<Fernet token>" (a Fernet token is url-safe base64, never a colon), so a value that
# no configured key opens says which key it needs. Values without the prefix predate it; `keys rotate` adds it.
KEY_ID_SEPARATOR = ":"


@dataclass(frozen=True)
class PhiVault:
    ciphers: MultiFernet
    index_keys: tuple[bytes, ...]  # newest first: digests are written under the first, looked up under all
    key_ids: tuple[str, ...]  # the encryption keys' ids, newest first, in the order of `ciphers`
    by_id: dict[str, Fernet]
    # Where the keys came from, for the fix when a value needs a key that is not there.
    restore_hint: str = "restore it from your secret store's backup"

    @property
    def primary_id(self) -> str:
        return self.key_ids[0]

    @property
    def index_key_ids(self) -> tuple[str, ...]:
        return tuple(key_id(key) for key in self.index_keys)

    def is_current(self, token: str) -> bool:
        """Was this value encrypted with the newest key already (and says so)?"""
        return token_key_id(token) == self.primary_id

    def rotate(self, token: str) -> str:
        """The same value re-encrypted with the newest key, its original time kept."""
        fernet, body = self._cipher_for(token)
        try:
            plaintext = fernet.decrypt(body)
            written_at = fernet.extract_timestamp(body)
        except InvalidToken:
            raise self._undecryptable(token) from None
        fresh = self.by_id[self.primary_id].encrypt_at_time(plaintext, written_at)
        return f"{self.primary_id}{KEY_ID_SEPARATOR}{fresh.decode('ascii')}"

    def encrypt(self, plaintext: str) -> str:
        token = self.by_id[self.primary_id].encrypt(plaintext.encode("utf-8")).decode("ascii")
        return f"{self.primary_id}{KEY_ID_SEPARATOR}{token}"

    def decrypt(self, token: str) -> str:
        fernet, body = self._cipher_for(token)
        try:
            return fernet.decrypt(body).decode("utf-8")
        except InvalidToken:
            raise self._undecryptable(token) from None

    def _cipher_for(self, token: str) -> tuple[Fernet | MultiFernet, bytes]:
        kid = token_key_id(token)
        if kid is None:
            return self.ciphers, token.encode("ascii")
        fernet = self.by_id.get(kid)
        if fernet is None:
            raise self._undecryptable(token)
        return fernet, token.partition(KEY_ID_SEPARATOR)[2].encode("ascii")

    def _undecryptable(self, token: str) -> UndecryptableValue:
        kid = token_key_id(token)
        configured = ", ".join(self.key_ids)
        if kid is None:
            return UndecryptableValue(
                f"a stored PHI value (written before key ids were recorded) opens with none of the configured "
                f"encryption keys ({configured}): {self.restore_hint}, put it in ADMITFLOW_ENCRYPTION_KEYS after the "
                "newest key, then run `admitflow keys rotate`"
            )
        if kid in self.by_id:
            return UndecryptableValue(
                f"a stored PHI value under key {kid} fails its integrity check: the row is damaged; restore it from "
                "a database backup", kid,
            )
        return UndecryptableValue(
            f"a stored PHI value needs encryption key {kid}, which is not configured (configured: {configured}): "
            f"{self.restore_hint}, and list it in ADMITFLOW_ENCRYPTION_KEYS after the newest key", kid,
        )

    def blind_index(self, kind: str, normalized: str) -> str:
        """The digest to store, under the newest blind-index key."""
        return self.blind_indexes(kind, normalized)[0]

    def blind_indexes(self, kind: str, normalized: str) -> tuple[str, ...]:
        """The value's digest under every configured blind-index key, newest first: what a lookup must match
        while stored digests are being rewritten to the newest key."""
        message = f"{kind}:{normalized}".encode()
        return tuple(hmac.new(key, message, hashlib.sha256).hexdigest() for key in self.index_keys)


def _parse_fernet_keys(raw: str) -> dict[str, Fernet]:
    """The keys by id, newest first."""
    keys = [part.strip() for part in raw.split(",") if part.strip()]
    if not keys:
        raise KeyConfigurationError("ADMITFLOW_ENCRYPTION_KEYS is empty: set one or more Fernet keys, newest first")
    parsed: dict[str, Fernet] = {}
    for key in keys:
        try:
            parsed[key_id(base64.urlsafe_b64decode(key.encode("ascii")))] = Fernet(key.encode("ascii"))
        except (ValueError, UnicodeEncodeError):
            raise KeyConfigurationError(
                "ADMITFLOW_ENCRYPTION_KEYS holds a value that is not a Fernet key (32 url-safe base64 bytes); "
                "make one with `admitflow keys generate`"
            ) from None
    if len(parsed) != len(keys):
        raise KeyConfigurationError("ADMITFLOW_ENCRYPTION_KEYS lists the same key twice: list each key once")
    return parsed


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


LEGACY_KEY_FILE = ".admitflow-keys.json"  # where versions before ADMITFLOW_HOME kept it: the current directory


def _read_key_file(path: Path) -> dict[str, str]:
    if not path.exists():
        raise KeyConfigurationError(
            f"the key file {path} is missing, and the database was made with it: restore it from your backup (or "
            "set ADMITFLOW_HOME to the directory that holds it); a new key could not read what is stored"
        )
    try:
        stored: dict[str, str] = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise KeyConfigurationError(
            f"the key file {path} cannot be read ({type(exc).__name__}): restore it from your backup"
        ) from None
    return stored


def uses_local_key_file(settings: Settings) -> bool:
    """Development without keys in the environment: the embedded default's key file holds them."""
    enc = settings.encryption_keys.get_secret_value() if settings.encryption_keys else ""
    idx = settings.blind_index_key.get_secret_value() if settings.blind_index_key else ""
    return settings.environment != "production" and not (enc and idx)


def create_local_key_file(settings: Settings) -> None:
    """Make the embedded default's key file for a database being created, unless it exists. Only a new database
    gets a new key: one that holds PHI needs the key it was written with."""
    path = settings.key_file
    if not uses_local_key_file(settings) or path.exists():
        return
    legacy = Path.cwd() / LEGACY_KEY_FILE
    if legacy.exists():
        raise KeyConfigurationError(
            f"found {LEGACY_KEY_FILE} in the current directory, where older versions kept the keys: move it to "
            f"{path} (and admitflow.db to {path.parent}) so what it encrypted stays readable"
        )
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(generate_keys(), handle)
    log.warning(
        "created a local PHI key file at %s (mode 0600) for the embedded default; back it up with the database, or "
        "the stored submissions cannot be read. In production set ADMITFLOW_ENCRYPTION_KEYS and "
        "ADMITFLOW_BLIND_INDEX_KEY.", path,
    )


def load_vault(settings: Settings) -> PhiVault:
    """Keys from the environment; in development only, from the local key file (`create_local_key_file`)."""
    enc = settings.encryption_keys.get_secret_value() if settings.encryption_keys else ""
    idx = settings.blind_index_key.get_secret_value() if settings.blind_index_key else ""
    hint = "restore it from your secret store's history or backup"
    if not (enc and idx):
        if settings.environment == "production":
            raise KeyConfigurationError(
                "ADMITFLOW_ENV=production needs ADMITFLOW_ENCRYPTION_KEYS and ADMITFLOW_BLIND_INDEX_KEY from the "
                "environment; make them with `admitflow keys generate` and keep them in your secret store"
            )
        stored = _read_key_file(settings.key_file)
        enc = enc or stored["ADMITFLOW_ENCRYPTION_KEYS"]
        idx = idx or stored["ADMITFLOW_BLIND_INDEX_KEY"]
        hint = f"restore the key file {settings.key_file} from your backup"
    fernets = _parse_fernet_keys(enc)
    return PhiVault(ciphers=MultiFernet(list(fernets.values())), index_keys=_parse_index_keys(idx),
                    key_ids=tuple(fernets), by_id=fernets, restore_hint=hint)


_vault: PhiVault | None = None


def current_vault() -> PhiVault:
    global _vault
    if _vault is None:
        _vault = load_vault(get_settings())
    return _vault


def use_vault(vault: PhiVault) -> None:
    """Make `vault` this process's keys (start-up loads and checks them before anything is stored)."""
    global _vault
    _vault = vault


def reset_vault() -> None:
    """Forget the loaded keys (tests, and after a key change in the same process)."""
    global _vault
    _vault = None
