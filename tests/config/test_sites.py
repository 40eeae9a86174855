from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import SecretStr

from config.settings import Settings
from config.sites import SitesError, load_sites
from tests.conftest import REPO

EXAMPLE = REPO / "config" / "sites.example.toml"
EXAMPLE_SECRETS = {
    f"GF_{site}_{kind}": f"{site.lower()}-{kind.lower()}-value"
    for site in ("MAIN", "KETAMINE")
    for kind in ("CONSUMER_KEY", "CONSUMER_SECRET", "WEBHOOK_SECRET")
}


def with_file(settings: Settings, path: Path) -> Settings:
    return settings.model_copy(update={"sites_file": path})


def test_without_a_sites_file_there_is_one_site_from_the_gravityforms_settings(settings: Settings) -> None:
    configured = settings.model_copy(
        update={"gravityforms_base_url": "https://clinic.example.org", "gravityforms_consumer_key": "ck",
                "gravityforms_consumer_secret": SecretStr("cs"), "gravityforms_form_ids": "1, 3"}
    )
    [site] = load_sites(configured)
    assert (site.name, site.base_url, [f.id for f in site.forms], site.can_poll) == (
        "main", "https://clinic.example.org", ["1", "3"], True
    )
    assert site.webhook_secret == "test-webhook-secret"


def test_the_example_sites_file_loads_with_secrets_from_the_environment(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in EXAMPLE_SECRETS.items():
        monkeypatch.setenv(name, value)

    main, ketamine = load_sites(with_file(settings, EXAMPLE))

    assert main.consumer_key == "main-consumer_key-value"
    assert main.form("3") is not None and main.form("3").fields == {  # type: ignore[union-attr]
        "best_time": "7", "for_whom": "8", "consent_to_text": "9.1", "utm_source": "12"
    }
    assert [form.id for form in ketamine.forms] == ["2"] and ketamine.crm == "auto" and main.crm == "hubspot"
    assert "value" not in repr(main)


def test_a_secret_variable_that_is_not_set_is_named_in_the_error(settings: Settings) -> None:
    with pytest.raises(SitesError, match="GF_MAIN_CONSUMER_KEY, which is not set"):
        load_sites(with_file(settings, EXAMPLE))


@pytest.mark.parametrize(
    ("content", "says"),
    [
        ('[[site]]\nname = "a"\nbase_url = "http://clinic.example.org"\npoll = false\n', "https://"),
        ('[[site]]\nname = "a"\npoll = false\n[[site]]\nname = "a"\npoll = false\n', "names a site twice"),
        ('[[site]]\nname = "a"\nforms = ["1"]\n', "polling needs base_url"),
        ('[[site]]\nname = "Bad Name"\npoll = false\n', "name"),
        ("title = 'no sites'\n", "no [[site]] entries"),
        ("[[site]\n", "not valid TOML"),
    ],
)
def test_an_invalid_sites_file_fails_with_what_to_fix(
    settings: Settings, tmp_path: Path, content: str, says: str
) -> None:
    path = tmp_path / "sites.toml"
    path.write_text(content)
    with pytest.raises(SitesError, match=re.escape(says)):
        load_sites(with_file(settings, path))
