"""Building blocks shared by the WindowsNode and WindowsNetwork models.

Two kinds of things live here:

- types both resources use (SecretReference, Taint, Condition, the base model classes) and the
  helpers that read and write conditions;
- schema hints the CRD generator turns into apiserver validation (`Rule` for a CEL rule,
  `MapKeys` for the keys of a map, `Extra` for any other `x-kubernetes-*` keyword). Each hint
  rule has a Python twin (a pydantic constraint or a validator next to the rule), so an object
  the models accept is one the apiserver accepts and the other way round; integration tests
  hold the two against a real apiserver.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, ClassVar

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    StringConstraints,
    field_validator,
)
from pydantic.alias_generators import to_camel
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import core_schema

from winnode.settings import API_GROUP, API_VERSION

VALIDATIONS = "x-kubernetes-validations"

# Patterns are written so that Go (apiserver), Rust (pydantic) and Python regex engines agree;
# they never contain a single quote because they are also embedded in CEL string literals.
DNS1123_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS1123_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
# RFC 1123 host name, any case: Windows hosts are commonly registered in DNS as WIN-01.corp.example.
HOSTNAME = r"^[A-Za-z0-9]([-A-Za-z0-9]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([-A-Za-z0-9]{0,61}[A-Za-z0-9])?)*$"
# Label and taint keys: an optional DNS subdomain prefix and "/", then a name of at most 63 characters.
QUALIFIED_NAME = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
)
LABEL_VALUE = r"^(([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9])?$"
# metav1.Condition's own validation of type and reason.
CONDITION_TYPE = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$"
)
CONDITION_REASON = r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"
# resource.Quantity without a sign: reservations and limits are never negative.
QUANTITY = r"^(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
SHA256_HEX = r"^[A-Fa-f0-9]{64}$"

MAX_DNS_SUBDOMAIN = 253
MAX_DNS_LABEL = 63
MAX_QUALIFIED_NAME = 317
MAX_CIDR = 49  # the longest IPv6 address (45, with an embedded IPv4 address) plus "/128"
MAX_IP = 45
MAX_CONDITION_MESSAGE = 32768


def full_match(pattern: str, value: str) -> bool:
    """Whole-string match the way the apiserver's Go regexp sees an anchored pattern."""
    return re.fullmatch(pattern, value) is not None


# --- schema hints ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Rule:
    """A CEL rule the apiserver enforces (an entry of x-kubernetes-validations).

    Use it in `Annotated[...]` metadata of a field (the rule's `self` is the field's value) or
    list it in `model_rules(...)` of a model (`self` is the object). `field_path` names the field
    an object-level rule is about, relative to the object, so the error points at that field.
    """

    rule: str
    message: str
    field_path: str | None = None
    reason: str | None = None
    # A CEL string expression for the message, to quote the offending value; `message` is the
    # fallback when it fails to evaluate.
    message_expression: str | None = None

    def to_schema(self) -> dict[str, str]:
        out = {"rule": self.rule, "message": self.message}
        if self.message_expression:
            out["messageExpression"] = self.message_expression
        if self.field_path:
            out["fieldPath"] = self.field_path
        if self.reason:
            out["reason"] = self.reason
        return out

    def __get_pydantic_json_schema__(
        self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        json_schema = handler(schema)
        json_schema.setdefault(VALIDATIONS, []).append(self.to_schema())
        return json_schema


def model_rules(*rules: Rule) -> dict[str, Any]:
    """`json_schema_extra` for a model whose rules span several of its fields."""
    return {VALIDATIONS: [r.to_schema() for r in rules]}


@dataclass(frozen=True)
class Extra:
    """Schema keywords pydantic does not produce itself (x-kubernetes-list-type and the like)."""

    values: Mapping[str, Any]

    def __get_pydantic_json_schema__(
        self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        json_schema = handler(schema)
        json_schema.update(self.values)
        return json_schema


def list_map(*keys: str) -> Extra:
    """A list whose items are identified by `keys` (duplicates are rejected, server-side apply merges)."""
    return Extra({"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": list(keys)})


LIST_SET = Extra({"x-kubernetes-list-type": "set"})
LIST_ATOMIC = Extra({"x-kubernetes-list-type": "atomic"})


def _cel_str(s: str) -> str:
    return "'" + s.replace("\\", "\\\\").replace("'", "\\'") + "'"


class _MapConstraint:
    """Checked by pydantic after the map is parsed (`check`), and by the apiserver as CEL (`rules`)."""

    def check(self, value: Any) -> Any:
        raise NotImplementedError

    def rules(self) -> list[Rule]:
        raise NotImplementedError

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.no_info_after_validator_function(self.check, handler(source))

    def __get_pydantic_json_schema__(
        self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        json_schema = handler(schema)
        json_schema.setdefault(VALIDATIONS, []).extend(r.to_schema() for r in self.rules())
        return json_schema


@dataclass(frozen=True)
class MapKeys(_MapConstraint):
    """Constraints on the keys of a map field, checked by pydantic and (as CEL) by the apiserver.

    OpenAPI in CRDs cannot constrain map keys (no propertyNames), so each constraint becomes a
    rule over `self.all(k, ...)`. `what` names the keys in messages ("label keys").
    """

    what: str
    pattern: str | None = None
    max_length: int | None = None
    allowed: tuple[str, ...] = ()
    forbidden: tuple[str, ...] = ()
    # Why the forbidden keys are refused, for messages.
    forbidden_why: str = "winnode sets these itself"
    # What a valid key looks like, for messages; without it the pattern is quoted.
    hint: str = ""

    def rules(self) -> list[Rule]:
        out: list[Rule] = []
        if self.pattern is not None or self.max_length is not None:
            checks = []
            if self.max_length is not None:
                checks.append(f"size(k) <= {self.max_length}")
            if self.pattern is not None:
                checks.append(f"k.matches({_cel_str(self.pattern)})")
            out.append(self._rule(" && ".join(checks), self._pattern_message()))
        if self.allowed:
            listed = ", ".join(_cel_str(a) for a in self.allowed)
            out.append(self._rule(f"k in [{listed}]", self._allowed_message()))
        if self.forbidden:
            listed = ", ".join(_cel_str(f) for f in self.forbidden)
            out.append(
                self._rule(f"!(k in [{listed}])", self._forbidden_message(), reason="FieldValueForbidden")
            )
        return out

    @staticmethod
    def _rule(ok: str, message: str, reason: str | None = None) -> Rule:
        """`self.all(k, ok)`, with a message that quotes the first key that is not ok.

        Only the first: joining all of them exceeds the apiserver's cost budget for messages,
        because map keys have no length bound it could reason with.
        """
        first_bad = f"self.filter(k, !({ok}))[0]"
        return Rule(
            f"self.all(k, {ok})",
            message,
            reason=reason,
            message_expression=f"{_cel_str(chr(39))} + {first_bad} + {_cel_str(chr(39) + ': ' + message)}",
        )

    def _allowed_message(self) -> str:
        return f"{self.what} must be one of: {', '.join(self.allowed)}"

    def _forbidden_message(self) -> str:
        return f"{self.what} must not set {', '.join(self.forbidden)}: {self.forbidden_why}"

    def _pattern_message(self) -> str:
        if self.hint:
            message = f"{self.what} must be {self.hint}"
        else:
            message = f"{self.what} must match {self.pattern}"
        if self.max_length is not None:
            message += f", at most {self.max_length} characters long"
        return message

    def check(self, value: Mapping[str, Any]) -> Mapping[str, Any]:
        for key in value:
            if (self.max_length is not None and len(key) > self.max_length) or (
                self.pattern is not None and not full_match(self.pattern, key)
            ):
                raise ValueError(f"{key!r}: {self._pattern_message()}")
            if self.allowed and key not in self.allowed:
                raise ValueError(f"{key!r}: {self._allowed_message()}")
            if key in self.forbidden:
                raise ValueError(f"{key!r}: {self._forbidden_message()}")
        return value


@dataclass(frozen=True)
class MapValuesExclude(_MapConstraint):
    """Values of a map of strings must not contain `character`; checked by pydantic and by CEL.

    The CEL message quotes the first key whose value has it, so the error names the entry to fix.
    """

    what: str
    character: str
    why: str

    def message(self) -> str:
        return f"{self.what} must not contain {self.character!r}: {self.why}"

    def rule(self) -> Rule:
        ok = f"!self[k].contains({_cel_str(self.character)})"
        first_bad = f"self.filter(k, !({ok}))[0]"
        return Rule(
            f"self.all(k, {ok})",
            self.message(),
            message_expression=f"{_cel_str(chr(39))} + {first_bad} + {_cel_str(chr(39) + ': ' + self.message())}",
        )

    def check(self, value: Mapping[str, str]) -> Mapping[str, str]:
        for key, item in value.items():
            if self.character in item:
                raise ValueError(f"{key!r}: {self.message()}")
        return value

    def rules(self) -> list[Rule]:
        return [self.rule()]


# --- addresses ---------------------------------------------------------------------------------


def parse_ip(value: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address, or None when the apiserver's CEL `isIP` would say false."""
    if "%" in value:  # zones are rejected by the apiserver
        return None
    try:
        addr = ipaddress.ip_address(value)
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return None
    return addr


def parse_cidr(value: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    """The network of a CIDR with no host bits set, or None (CEL: isCIDR and cidr(x) == cidr(x).masked())."""
    address, sep, bits = value.partition("/")
    if not sep or parse_ip(address) is None or not bits.isdigit() or (len(bits) > 1 and bits[0] == "0"):
        return None
    try:
        return ipaddress.ip_network(value, strict=True)
    except ValueError:
        return None


def _check_ip(value: str) -> str:
    if parse_ip(value) is None:
        raise ValueError(f"{value!r} is not an IP address")
    return value


def _check_cidr(value: str) -> str:
    if parse_cidr(value) is None:
        raise ValueError(f"{value!r} is not a CIDR network address such as 10.0.0.0/8 (no host bits set)")
    return value


def _check_host(value: str) -> str:
    if parse_ip(value) is not None:
        return value
    if full_match(HOSTNAME, value) and not full_match(r"^[0-9.]+$", value):
        return value
    raise ValueError(f"{value!r} is neither a DNS name nor an IP address")


IPAddress = Annotated[
    str,
    StringConstraints(max_length=MAX_IP),
    Rule("isIP(self)", "must be an IPv4 or IPv6 address such as 10.96.0.10"),
    AfterValidator(_check_ip),
]
_CIDR_RULES = (
    Rule("isCIDR(self)", "must be a CIDR such as 10.244.0.0/16"),
    Rule(
        "!isCIDR(self) || cidr(self) == cidr(self).masked()",
        "must be a network address: no bits set after the prefix (10.244.0.0/16, not 10.244.1.0/16)",
    ),
)
CIDR = Annotated[
    str, StringConstraints(max_length=MAX_CIDR), _CIDR_RULES[0], _CIDR_RULES[1], AfterValidator(_check_cidr)
]


def _check_ipv4_cidr(value: str) -> str:
    network = parse_cidr(value)
    if network is not None and network.version != 4:
        raise ValueError(f"{value!r} is not an IPv4 CIDR")
    return value


IPv4CIDR = Annotated[
    CIDR,
    Rule("!isCIDR(self) || cidr(self).ip().family() == 4", "must be an IPv4 CIDR"),
    AfterValidator(_check_ipv4_cidr),
]
HostAddress = Annotated[
    str,
    StringConstraints(min_length=1, max_length=MAX_DNS_SUBDOMAIN),
    Rule(
        f"isIP(self) || (self.matches({_cel_str(HOSTNAME)}) && !self.matches('^[0-9.]+$'))",
        "must be a DNS name (win-01.corp.example) or an IPv4/IPv6 address",
    ),
    AfterValidator(_check_host),
]
DNSSubdomain = Annotated[
    str, StringConstraints(min_length=1, max_length=MAX_DNS_SUBDOMAIN, pattern=DNS1123_SUBDOMAIN)
]
DNSLabel = Annotated[str, StringConstraints(min_length=1, max_length=MAX_DNS_LABEL, pattern=DNS1123_LABEL)]
QualifiedName = Annotated[
    str, StringConstraints(min_length=1, max_length=MAX_QUALIFIED_NAME, pattern=QUALIFIED_NAME)
]
LabelValue = Annotated[str, StringConstraints(max_length=MAX_DNS_LABEL, pattern=LABEL_VALUE)]
Quantity = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=QUANTITY)]
Sha256Hex = Annotated[str, StringConstraints(min_length=64, max_length=64, pattern=SHA256_HEX)]


# --- base models -----------------------------------------------------------------------------


class ApiModel(BaseModel):
    """Base of every spec part: camelCase on the wire, snake_case in Python, unknown fields refused.

    The CRD is generated from these same models and the apiserver prunes fields it does not know,
    so an unknown field here is a typo in Python code or a hand-written object, never API data.
    """

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
    )

    def to_dict(self) -> dict[str, Any]:
        """The object as the Kubernetes API spells it (camelCase, unset optional fields left out)."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


class StatusModel(ApiModel):
    """Base of status parts: unknown fields are ignored, because kopf and newer operator versions
    write fields of their own next to ours."""

    model_config = ConfigDict(extra="ignore")


class SecretReference(ApiModel):
    """A Secret in a given namespace."""

    namespace: DNSLabel = Field(description="Namespace of the Secret.")
    name: DNSSubdomain = Field(description="Name of the Secret.")


class TaintEffect(StrEnum):
    NO_SCHEDULE = "NoSchedule"
    PREFER_NO_SCHEDULE = "PreferNoSchedule"
    NO_EXECUTE = "NoExecute"


class Taint(ApiModel):
    """A taint of the Node (as in Node.spec.taints)."""

    key: QualifiedName = Field(description="Taint key, e.g. os or example.com/dedicated.")
    value: LabelValue | None = Field(None, description="Taint value; empty or a valid label value.")
    effect: TaintEffect = Field(
        description="What happens to pods that do not tolerate the taint: NoSchedule, PreferNoSchedule or NoExecute."
    )


class ConditionStatus(StrEnum):
    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class Condition(StatusModel):
    """One aspect of the object's state, shaped like metav1.Condition."""

    type: str = Field(
        max_length=316,
        pattern=CONDITION_TYPE,
        description="Type of condition in CamelCase, e.g. Reachable or NodeReady.",
    )
    status: ConditionStatus = Field(description="True, False or Unknown.")
    reason: str = Field(
        min_length=1,
        max_length=1024,
        pattern=CONDITION_REASON,
        description="Programmatic identifier (CamelCase) of the reason for the last transition.",
    )
    message: str = Field(
        "",
        max_length=MAX_CONDITION_MESSAGE,
        description="What happened and, when it is a problem, what to do about it.",
    )
    last_transition_time: datetime = Field(description="When status last changed.")
    observed_generation: int | None = Field(
        None,
        ge=0,
        description="metadata.generation of the object this condition was set for.",
        json_schema_extra={"format": "int64"},
    )

    @field_validator("last_transition_time")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def find_condition(conditions: Iterable[Condition], type_: str) -> Condition | None:
    return next((c for c in conditions if c.type == type_), None)


def set_condition(
    conditions: Sequence[Condition],
    type_: str,
    status: ConditionStatus | bool,
    reason: str,
    message: str = "",
    *,
    observed_generation: int | None = None,
    now: datetime | None = None,
) -> list[Condition]:
    """A new list with condition `type_` set; lastTransitionTime moves only when status changes."""
    if isinstance(status, bool):
        status = ConditionStatus.TRUE if status else ConditionStatus.FALSE
    if len(message) > MAX_CONDITION_MESSAGE:
        # A long script error must not make the status update itself fail.
        message = message[: MAX_CONDITION_MESSAGE - 3] + "..."
    stamp = (now or datetime.now(UTC)).replace(microsecond=0)
    old = find_condition(conditions, type_)
    changed = old is None or old.status != status
    new = Condition(
        type=type_,
        status=status,
        reason=reason,
        message=message,
        last_transition_time=stamp if changed or old is None else old.last_transition_time,
        observed_generation=observed_generation,
    )
    out = [c for c in conditions if c.type != type_]
    # Keep the position of an existing condition so that status diffs stay small.
    index = next((i for i, c in enumerate(conditions) if c.type == type_), len(out))
    out.insert(index, new)
    return out


def remove_condition(conditions: Sequence[Condition], type_: str) -> list[Condition]:
    return [c for c in conditions if c.type != type_]


Conditions = Annotated[list[Condition], list_map("type"), Field(max_length=32)]


# --- resources -------------------------------------------------------------------------------


@dataclass(frozen=True)
class PrinterColumn:
    name: str
    json_path: str
    description: str
    type: str = "string"
    priority: int = 0
    format: str | None = None


@dataclass(frozen=True)
class ResourceInfo:
    """Names and presentation of a custom resource: everything of its CRD except the schema."""

    kind: str
    plural: str
    singular: str
    short_names: tuple[str, ...]
    spec: type[BaseModel]
    status: type[BaseModel]
    description: str
    printer_columns: tuple[PrinterColumn, ...]
    categories: tuple[str, ...] = ("windows",)
    selectable_fields: tuple[str, ...] = ()
    # Rules on the whole object (they may read metadata.name).
    validations: tuple[Rule, ...] = field(default=())
    group: str = API_GROUP
    version: str = API_VERSION

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}"

    @property
    def list_kind(self) -> str:
        return f"{self.kind}List"

    @property
    def crd_name(self) -> str:
        return f"{self.plural}.{self.group}"


class ObjectMeta(BaseModel):
    """The part of metav1.ObjectMeta the operator reads; everything else is kept as is."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="allow")

    name: str
    uid: str | None = None
    generation: int | None = None
    resource_version: str | None = None
    creation_timestamp: datetime | None = None
    deletion_timestamp: datetime | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    finalizers: list[str] = Field(default_factory=list)


class CustomResource(BaseModel):
    """A whole object (apiVersion, kind, metadata, spec, status) as read from or sent to the API."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")

    info: ClassVar[ResourceInfo]

    api_version: str = Field(default=f"{API_GROUP}/{API_VERSION}")
    kind: str
    metadata: ObjectMeta

    @field_validator("api_version")
    @classmethod
    def _our_version(cls, value: str) -> str:
        if value != cls.info.api_version:
            raise ValueError(f"apiVersion must be {cls.info.api_version}, not {value!r}")
        return value

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")
