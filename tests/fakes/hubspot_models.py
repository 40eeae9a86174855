"""Every HubSpot request body the fake receives, checked against HubSpot's own generated models (the
`hubspot-api-client` package, built from HubSpot's OpenAPI specs): an unknown key, a missing required field, a
wrong type or a value outside an enum is refused, as HubSpot's validation would refuse it.
"""

from __future__ import annotations

import importlib
import re
from types import ModuleType
from typing import Any

# The request model of each endpoint the client calls (POST unless named), by the path after /crm/v3/objects/{type}.
_REQUESTS = {
    "": "SimplePublicObjectInputForCreate",
    "/search": "PublicObjectSearchRequest",
    "/batch/create": "BatchInputSimplePublicObjectBatchInputForCreate",
    "/batch/update": "BatchInputSimplePublicObjectBatchInput",
    "/batch/upsert": "BatchInputSimplePublicObjectBatchInputUpsert",
    "/batch/read": "BatchReadInputSimplePublicObjectId",
    "/merge": "PublicMergeInput",
    "PATCH /{id}": "SimplePublicObjectInput",
}
_MODULES = {"contacts": "hubspot.crm.contacts.models"}
_PRIMITIVES: dict[str, type | tuple[type, ...]] = {"str": str, "int": int, "bool": bool, "float": (int, float),
                                                  "object": object}
_PATH = re.compile(r"/crm/v3/objects/(\w+)(/search|/batch/\w+|/[^/]+)?")


class Refused(ValueError):
    """The body does not match HubSpot's model; the message says where."""


def check_request(method: str, path: str, body: Any) -> None:
    """Raise `Refused` when `body` is not a valid request for `method path` by HubSpot's generated models."""
    match = _PATH.fullmatch(path)
    if match is None:
        raise Refused(f"no HubSpot endpoint {method} {path}")
    object_type, rest = match.group(1), match.group(2) or ""
    if method in ("GET", "DELETE") and rest not in ("", *_REQUESTS) and body is None:
        return  # a read or an archive of one record by id: no body to check
    key = rest if rest in _REQUESTS else ("PATCH /{id}" if method == "PATCH" and rest else None)
    if key is None or (key == "PATCH /{id}") != (method == "PATCH"):
        raise Refused(f"no HubSpot endpoint {method} {path}")
    models = importlib.import_module(_MODULES.get(object_type, f"hubspot.crm.objects.{object_type}.models"))
    _build(models, _REQUESTS[key], body, _REQUESTS[key])


def _build(models: ModuleType, type_name: str, value: Any, where: str) -> Any:
    """The model instance for `value`, built as the generated deserializer would, but refusing unknown keys."""
    if value is None:
        return None
    if type_name.startswith("list["):
        if not isinstance(value, list):
            raise Refused(f"{where} must be a list")
        return [_build(models, type_name[5:-1], item, f"{where}[{n}]") for n, item in enumerate(value)]
    if type_name.startswith("dict["):
        if not isinstance(value, dict):
            raise Refused(f"{where} must be an object")
        inner = type_name[5:-1].split(", ", 1)[1]
        return {key: _build(models, inner, item, f"{where}.{key}") for key, item in value.items()}
    if type_name in _PRIMITIVES:
        if not isinstance(value, _PRIMITIVES[type_name]) or (type_name == "int" and isinstance(value, bool)):
            raise Refused(f"{where} must be {type_name}")
        return value
    model = getattr(models, type_name)
    if not isinstance(value, dict):
        raise Refused(f"{where} must be a {type_name} object")
    by_key = {key: attribute for attribute, key in model.attribute_map.items()}
    if unknown := sorted(set(value) - set(by_key)):
        raise Refused(f"{where} has keys {type_name} does not have: {unknown}")
    arguments = {by_key[key]: _build(models, model.openapi_types[by_key[key]], item, f"{where}.{key}")
                 for key, item in value.items()}
    try:
        return model(**arguments)
    except ValueError as exc:  # a required field missing, or a value outside its enum
        raise Refused(f"{where}: {exc}") from None
