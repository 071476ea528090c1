"""`winnode crds`: the CustomResourceDefinitions of winnode, generated from the pydantic models.

pydantic emits JSON Schema (2020-12) with $defs/$ref and anyOf-with-null for optional fields; the
apiserver wants a structural OpenAPI v3 schema. `structural()` rewrites one into the other and
refuses keywords the apiserver would reject, so a model change that cannot be expressed in a CRD
fails here, at generation time, instead of at `kubectl apply`.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from winnode.api import patterns
from winnode.api.common import VALIDATIONS, ResourceInfo
from winnode.api.windowsnetwork import WINDOWS_NETWORK
from winnode.api.windowsnode import WINDOWS_NODE

RESOURCES: tuple[ResourceInfo, ...] = (WINDOWS_NODE, WINDOWS_NETWORK)

HEADER = "# Generated from operator/winnode/api by `winnode crds`; do not edit: change the models and run `make crds`.\n"

# Keywords copied as they are (after their values are converted), in the order they are written.
_KEY_ORDER = (
    "description",
    "type",
    "format",
    "enum",
    "default",
    "nullable",
    "pattern",
    "minLength",
    "maxLength",
    "minimum",
    "maximum",
    "minItems",
    "maxItems",
    "minProperties",
    "maxProperties",
    "required",
    "properties",
    "additionalProperties",
    "items",
    "x-kubernetes-preserve-unknown-fields",
    "x-kubernetes-list-type",
    "x-kubernetes-list-map-keys",
    "x-kubernetes-map-type",
    "x-kubernetes-int-or-string",
    VALIDATIONS,
)
# Keywords of pydantic's output that carry nothing the apiserver uses.
_DROPPED = frozenset({"title", "$defs", "examples"})
# Formats the apiserver validates (k8s.io/kube-openapi strfmt); others are refused.
_FORMATS = frozenset(
    {"date-time", "date", "int32", "int64", "byte", "uri", "email", "hostname", "ipv4", "ipv6"}
)


class SchemaError(ValueError):
    """A model produces a schema the apiserver would not accept as a structural CRD schema."""


def structural(schema: Mapping[str, Any], defs: Mapping[str, Any], path: str = "") -> dict[str, Any]:
    """A structural OpenAPI v3 schema for one pydantic JSON schema node (refs inlined)."""
    node = dict(schema)
    where = path or "<root>"

    ref = node.pop("$ref", None)
    if ref is not None:
        name = ref.rsplit("/", 1)[-1]
        if name not in defs:
            raise SchemaError(f"{where}: unresolved $ref {ref}")
        return _merge(structural(defs[name], defs, path), structural(node, defs, path) if node else {})

    for combinator in ("anyOf", "oneOf"):
        if combinator in node:
            branches = [b for b in node.pop(combinator) if b != {"type": "null"}]
            if len(branches) != 1:
                raise SchemaError(
                    f"{where}: {combinator} with {len(branches)} non-null branches cannot be a structural schema"
                )
            if node.get("default", 0) is None:
                del node["default"]  # "default: null" only says the field is optional
            return _merge(structural(branches[0], defs, path), structural(node, defs, path) if node else {})
    if "allOf" in node:
        raise SchemaError(f"{where}: allOf is not supported")

    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROPPED:
            continue
        if key == "default" and value is None:
            continue
        if key == "const":
            out["enum"] = [value]
        elif key == "properties":
            out["properties"] = {
                name: _described(structural(prop, defs, f"{path}.{name}"), f"{path}.{name}")
                for name, prop in value.items()
            }
        elif key == "items":
            out["items"] = structural(value, defs, f"{path}[]")
        elif key == "additionalProperties":
            if value is False:
                continue  # pydantic's extra="forbid"; the apiserver prunes unknown fields instead
            if value is True:
                out["x-kubernetes-preserve-unknown-fields"] = True
            else:
                out["additionalProperties"] = structural(value, defs, f"{path}.*")
        elif key == "format":
            if value not in _FORMATS:
                raise SchemaError(f"{where}: format {value!r} is not one the apiserver validates")
            out[key] = value
        elif key in ("minLength", "maxLength") and node.get("type") == "object":
            # pydantic spells a dict's length bounds like a string's
            out[key.replace("Length", "Properties")] = value
        elif key in _KEY_ORDER:
            out[key] = value
        else:
            raise SchemaError(f"{where}: keyword {key!r} is not supported in a CRD schema")
    if "properties" in out and "additionalProperties" in out:
        raise SchemaError(f"{where}: properties and additionalProperties cannot be used together")
    return out


def _described(schema: dict[str, Any], path: str) -> dict[str, Any]:
    description = schema.get("description")
    if not description:
        raise SchemaError(f"{path}: every field needs a description (it is what `kubectl explain` shows)")
    # `kubectl explain` does not show defaults, so scalar ones are spelled out in the description.
    default = schema.get("default")
    if isinstance(default, bool | int | str) and default != "" and "default" not in description.lower():
        shown = json.dumps(default) if isinstance(default, bool) else str(default)
        schema["description"] = f"{description.rstrip()} Defaults to {shown}."
    return schema


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """`over` (the referring field: its description, default, rules) on top of `base` (the referred type)."""
    merged = dict(base)
    for key, value in over.items():
        if key == VALIDATIONS:
            merged[VALIDATIONS] = [*merged.get(VALIDATIONS, []), *value]
        else:
            merged[key] = value
    return merged


def _ordered(schema: Any) -> Any:
    """Keys in one fixed order at every level, so that output is stable and reads top-down."""
    if isinstance(schema, list):
        return [_ordered(v) for v in schema]
    if not isinstance(schema, dict):
        return schema
    rank = {k: i for i, k in enumerate(_KEY_ORDER)}
    out: dict[str, Any] = {}
    for key in sorted(schema, key=lambda k: (rank.get(k, len(rank)), k)):
        value = schema[key]
        if key == "properties":
            out[key] = {name: _ordered(prop) for name, prop in value.items()}
        elif key in ("default", "enum", "required", "x-kubernetes-list-map-keys"):
            out[key] = value  # data, not schema
        elif key == VALIDATIONS:
            out[key] = [
                {
                    k: rule[k]
                    for k in ("rule", "message", "messageExpression", "fieldPath", "reason")
                    if k in rule
                }
                for rule in value
            ]
        else:
            out[key] = _ordered(value)
    return out


def model_schema(model: type[Any]) -> dict[str, Any]:
    raw = model.model_json_schema(by_alias=True, mode="validation")
    return structural(raw, raw.get("$defs", {}))


def openapi_schema(resource: ResourceInfo) -> dict[str, Any]:
    root: dict[str, Any] = {
        "description": resource.description,
        "type": "object",
        "required": ["spec"],
        "properties": {
            "apiVersion": {
                "description": "APIVersion defines the versioned schema of this representation of an object.",
                "type": "string",
            },
            "kind": {
                "description": "Kind is a string value representing the REST resource this object represents.",
                "type": "string",
            },
            "metadata": {"type": "object"},
            "spec": patterns.readable(model_schema(resource.spec)),
            "status": model_schema(resource.status),
        },
    }
    if resource.validations:
        root[VALIDATIONS] = [r.to_schema() for r in resource.validations]
    ordered: dict[str, Any] = _ordered(root)
    return ordered


def crd(resource: ResourceInfo) -> dict[str, Any]:
    """The CustomResourceDefinition object of one resource."""
    version: dict[str, Any] = {
        "name": resource.version,
        "served": True,
        "storage": True,
        "schema": {"openAPIV3Schema": openapi_schema(resource)},
        "subresources": {"status": {}},
        "additionalPrinterColumns": [
            {
                "name": c.name,
                "type": c.type,
                **({"format": c.format} if c.format else {}),
                "description": c.description,
                "jsonPath": c.json_path,
                **({"priority": c.priority} if c.priority else {}),
            }
            for c in resource.printer_columns
        ],
    }
    if resource.selectable_fields:
        version["selectableFields"] = [{"jsonPath": p} for p in resource.selectable_fields]
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": resource.crd_name,
            "labels": {"app.kubernetes.io/name": "winnode", "app.kubernetes.io/part-of": "winnode"},
        },
        "spec": {
            "group": resource.group,
            "names": {
                "kind": resource.kind,
                "listKind": resource.list_kind,
                "plural": resource.plural,
                "singular": resource.singular,
                "shortNames": list(resource.short_names),
                "categories": list(resource.categories),
            },
            "scope": "Cluster",
            "versions": [version],
        },
    }


class _Dumper(yaml.SafeDumper):
    """Block style throughout, and no YAML anchors for repeated sub-schemas (conditions)."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def to_yaml(obj: Mapping[str, Any]) -> str:
    text: str = yaml.dump(
        obj, Dumper=_Dumper, sort_keys=False, default_flow_style=False, allow_unicode=True, width=100
    )
    return text


def file_name(resource: ResourceInfo) -> str:
    return f"{resource.crd_name}.yaml"


def render_all() -> dict[str, str]:
    """File name -> contents of every CRD file, as `winnode crds --write` writes them."""
    return {file_name(r): HEADER + to_yaml(crd(r)) for r in RESOURCES}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--write",
        metavar="DIR",
        type=Path,
        help="write one <plural>.<group>.yaml file per CRD into DIR instead of printing them all",
    )


def run(args: argparse.Namespace) -> int:
    rendered = render_all()
    directory: Path | None = args.write
    if directory is None:
        sys.stdout.write("---\n".join(rendered.values()))
        return 0
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in rendered.items():
        target = directory / name
        if not target.exists() or target.read_text() != text:
            target.write_text(text)
            print(f"wrote {target}", file=sys.stderr)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="winnode crds")
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
