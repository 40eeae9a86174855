"""Gravity Forms form definitions: register them from any file people have, fetch them, and show how each is read."""

from __future__ import annotations

from pathlib import Path

import click

from config.sites import load_sites, site_named
from integrations.errors import IntegrationError
from integrations.gravityforms.answers import NOT_ANSWERS
from integrations.gravityforms.mapping import (
    ATTRIBUTION_KEYS,
    CONSENT_ROLES,
    SOMEONE_ELSES,
    FormMapping,
    infer_mapping,
)
from integrations.gravityforms.models import Form
from worker.cli.common import command_settings, open_store, read_json_file
from worker.delivery.dispatch import dispatcher_for
from worker.intake.entries import RejectedEntry, known_form, register_forms
from worker.intake.poller import client_for
from worker.leads.processing import form_overrides
from worker.staff.services import default_services
from worker.store.db import session_scope

PERSON_ROLES = ("first_name", "last_name", "email", "phone", "message", *CONSENT_ROLES, "best_time", "for_whom",
                "honeypot")


@click.group()
def forms() -> None:
    """Gravity Forms form definitions."""


@forms.command("add")
@click.argument("form_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--site", default=None, help="Site name (default ADMITFLOW_SITE).")
@click.option("--form-id", default=None, help="Register only this form of an export that holds several.")
def forms_add(form_file: Path, site: str | None, form_id: str | None) -> None:
    """Register the forms of a file: a form object (GET /wp-json/gf/v2/forms/{id}), a Forms > Import/Export >
    Export Forms file (every form in it), or a list of form objects."""
    register_document(read_json_file(form_file), site, form_id)


@forms.command("fetch")
@click.argument("site_name")
@click.argument("form_id")
def forms_fetch(site_name: str, form_id: str) -> None:
    """Fetch a form from the site's REST API (GET /wp-json/gf/v2/forms/{id}) and register it."""
    settings = command_settings()
    site = site_named(load_sites(settings), site_name)
    if site is None or not (site.base_url and site.consumer_key and site.consumer_secret):
        raise click.ClickException(
            f"site {site_name} has no Gravity Forms API address and key pair configured "
            "(GRAVITYFORMS_BASE_URL, GRAVITYFORMS_CONSUMER_KEY/SECRET or SITES_FILE)"
        )
    try:
        form_object = client_for(site, settings).get_form(form_id)
    except IntegrationError as exc:
        raise click.ClickException(exc.message) from None
    register_document(form_object, site.name, form_id)


@forms.command("show")
@click.argument("form_id")
@click.option("--site", default=None, help="Site name (default ADMITFLOW_SITE).")
def forms_show(form_id: str, site: str | None) -> None:
    """How admitflow reads this form: the field each role comes from, best first, and what to check."""
    settings = command_settings()
    open_store(settings)
    site = site or settings.site
    with session_scope() as session:
        form = known_form(session, site, form_id)
    if form is None:
        raise click.ClickException(f"form {form_id} is not registered for site {site}: run `admitflow forms add "
                                   f"FORM.json` or `admitflow forms fetch {site} {form_id}`")
    click.echo("\n".join(describe(form, infer_mapping(form, form_overrides(settings, site, form_id)), site)))


def register_document(document: object, site: str | None, form_id: str | None) -> list[str]:
    """Register the forms of a document, release the entries held for them, and say what was done; returns the
    registered form ids."""
    settings = command_settings()
    open_store(settings)
    site = site or settings.site
    with session_scope() as session:
        try:
            done = register_forms(session, site=site, document=document, form_id=form_id)
        except RejectedEntry as exc:
            raise click.ClickException(str(exc)) from None
        registered = [(definition.form_id, Form.model_validate(definition.definition), held)
                      for definition, held in done]
    dispatcher = dispatcher_for(settings, default_services())
    for registered_id, form, held in registered:
        dispatcher.submissions_stored(held)
        warnings = infer_mapping(form, form_overrides(settings, site, registered_id)).warnings
        advice = f"; {len(warnings)} warning(s): see `admitflow forms show {registered_id}`" if warnings else ""
        click.echo(f"form {registered_id} registered; {len(held)} held submission(s) released{advice}")
    return [registered_id for registered_id, _, _ in registered]


def describe(form: Form, mapping: FormMapping, site: str) -> list[str]:
    """The mapping as an operator reads it. Field labels and ids only: a form holds no entry data."""
    pages = 1 + sum(1 for field in form.fields if field.type == "page")
    title = " ".join(form.title.split()) or "untitled"
    lines = [f'form {form.id} "{title}" on site {site}: {len(form.fields)} fields on {pages} page(s)', "",
             "role             read from (the first answered, in this order)"]
    for role in PERSON_ROLES:
        sources = [source for source in mapping.roles.get(role, ()) if source.rank < SOMEONE_ELSES]
        shown = "; then ".join(source.describe() for source in sources) or "-"
        lines.append(f"{role:<16} {shown}")
    attribution = [f"{key} <- {mapping.roles[key][0].describe()}" for key in ATTRIBUTION_KEYS
                   if mapping.roles.get(key)]
    lines.append(f"{'attribution':<16} {'; '.join([*attribution, 'form_page <- the entry source_url'])}")
    not_used = [source.describe() for sources in mapping.roles.values() for source in sources
                if source.rank >= SOMEONE_ELSES]
    if not_used:
        lines.append(f"{'not the person':<16} {'; '.join(dict.fromkeys(not_used))} (into the note)")
    mapped = {source.field.id for sources in mapping.roles.values() for source in sources}
    rest = [f'{field.id} "{field.title}"' for field in form.fields
            if field.id not in mapped and field.effective_type not in NOT_ANSWERS]
    lines.append(f"{'into the note':<16} {', '.join(rest) or '-'}, and every candidate above that was not used")
    lines += ["", "warnings:" if mapping.warnings else "warnings: none"]
    lines += [f"- {warning}" for warning in mapping.warnings]
    return lines
