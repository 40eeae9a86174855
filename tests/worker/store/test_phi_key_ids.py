from __future__ import annotations

import base64

import pytest
from cryptography.fernet import Fernet
from pydantic import SecretStr

from config.settings import Settings
from tests.conftest import TEST_KEYS
from worker.store.phi import PhiVault, UndecryptableValue, key_id, load_vault, token_key_id

OLD_KEY = TEST_KEYS["ADMITFLOW_ENCRYPTION_KEYS"]
NEW_KEY = Fernet.generate_key().decode()


def vault_with(settings: Settings, keys: str) -> PhiVault:
    return load_vault(settings.model_copy(update={"encryption_keys": SecretStr(keys)}))


def test_a_stored_value_carries_the_id_of_the_key_that_encrypted_it(settings: Settings) -> None:
    vault = vault_with(settings, OLD_KEY)

    token = vault.encrypt("+16175550142")

    assert token_key_id(token) == vault.primary_id == key_id(base64.urlsafe_b64decode(OLD_KEY))
    assert "+16175550142" not in token
    assert vault.decrypt(token) == "+16175550142"


def test_a_value_whose_key_is_gone_names_the_key_it_needs_and_how_to_restore_it(settings: Settings) -> None:
    token = vault_with(settings, OLD_KEY).encrypt("Jordan")
    only_new = vault_with(settings, NEW_KEY)

    with pytest.raises(UndecryptableValue) as caught:
        only_new.decrypt(token)

    old_id = token_key_id(token)
    assert caught.value.key_id == old_id
    message = str(caught.value)
    assert f"needs encryption key {old_id}" in message and f"configured: {only_new.primary_id}" in message
    assert "restore it from your secret store" in message and "ADMITFLOW_ENCRYPTION_KEYS" in message
    assert "Jordan" not in message


def test_values_written_before_key_ids_still_open_and_rotation_tags_them(settings: Settings) -> None:
    legacy = Fernet(OLD_KEY.encode()).encrypt(b"jordan.sample@example.org").decode()
    vault = vault_with(settings, f"{NEW_KEY},{OLD_KEY}")

    assert token_key_id(legacy) is None and not vault.is_current(legacy)
    assert vault.decrypt(legacy) == "jordan.sample@example.org"
    rotated = vault.rotate(legacy)
    assert token_key_id(rotated) == vault.primary_id and vault.is_current(rotated)
    assert vault.decrypt(rotated) == "jordan.sample@example.org"


def test_a_damaged_value_is_reported_as_damaged_not_as_a_missing_key(settings: Settings) -> None:
    vault = vault_with(settings, OLD_KEY)
    token = vault.encrypt("Jordan")

    with pytest.raises(UndecryptableValue, match="fails its integrity check"):
        vault.decrypt(token[:-6] + "AAAAAA")


def test_listing_one_key_twice_is_refused(settings: Settings) -> None:
    from worker.store.phi import KeyConfigurationError

    with pytest.raises(KeyConfigurationError, match="same key twice"):
        vault_with(settings, f"{OLD_KEY},{OLD_KEY}")
