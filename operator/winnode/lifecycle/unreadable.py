"""A WindowsNode the apiserver stored but the operator's model refuses.

The CRD schema and the models are meant to agree (a test holds them together), but an object stored
under an older schema, or one the two still read differently, must not wedge the operator: no status
and a retry every two seconds, a deletion stuck on the finalizer, a WindowsNetwork whose whole
reconcile fails. Instead:

- the problems are named field by field (`spec.artifacts.baseURL: ...`), in a condition and an Event;
- the object is read without the offending fields where that is safe (`salvage`), so a deletion
  still cleans the host and the network still counts the node; fields that say which host, which
  Node or which network (ESSENTIAL) are never guessed: without them the host is left as it is and
  status.leftOnHost says what may remain there.
"""

from __future__ import annotations

import copy
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)

# Paths whose value decides which host, Node or subnet an action touches: never dropped to read on.
ESSENTIAL: tuple[tuple[str, ...], ...] = (
    ("metadata",),
    ("apiVersion",),
    ("kind",),
    ("spec", "address"),
    ("spec", "winrm"),
    ("spec", "nodeName"),
    ("spec", "network"),
)
_MAX_PASSES = 8


def problems(exc: ValidationError) -> list[str]:
    """`field.path: message` per error, with the wire (camelCase) names and without the values."""
    out: list[str] = []
    for error in exc.errors(include_input=False, include_url=False):
        where = ".".join(str(part) for part in error["loc"]) or "(object)"
        item = f"{where}: {error['msg']}"
        if item not in out:
            out.append(item)
    return out


def message(kind: str, name: str, found: list[str]) -> str:
    shown = "; ".join(found[:5]) + (f"; and {len(found) - 5} more" if len(found) > 5 else "")
    return (
        f"{kind} {name} was stored by the cluster but winnode cannot read it: {shown}. Correct the "
        f"field (kubectl edit {kind.lower()} {name}); until then winnode does not change the host"
    )


def _essential(loc: tuple[Any, ...]) -> bool:
    return any(tuple(str(p) for p in loc[: len(e)]) == e for e in ESSENTIAL)


def _drop(data: dict[str, Any], loc: tuple[Any, ...]) -> bool:
    """Remove the value at `loc` (or, for a missing one, its parent's entry); whether anything went."""
    cursor: Any = data
    for part in loc[:-1]:
        if (isinstance(cursor, dict) and part in cursor) or (
            isinstance(cursor, list) and isinstance(part, int) and 0 <= part < len(cursor)
        ):
            cursor = cursor[part]
        else:
            return False
    last = loc[-1]
    if isinstance(cursor, dict) and last in cursor:
        del cursor[last]
        return True
    if isinstance(cursor, list) and isinstance(last, int) and 0 <= last < len(cursor):
        del cursor[last]
        return True
    return False


def salvage(model: type[M], obj: dict[str, Any]) -> M | None:
    """`obj` read without the fields the model refuses, or None when that would drop an essential one.

    A field whose removal leaves a required one missing takes its parent with it (an invalid
    artifacts.baseURL drops artifacts: the default mirror is as good as any for a deletion)."""
    data = copy.deepcopy(obj)
    for _ in range(_MAX_PASSES):
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            errors = exc.errors(include_input=False, include_url=False)
        progressed = False
        for error in errors:
            loc = tuple(error["loc"])
            # A required field that is now missing: take its parent away instead.
            target = loc[:-1] if error["type"] == "missing" else loc
            if not target or _essential(target):
                return None
            progressed = _drop(data, target) or progressed
        if not progressed:
            return None
    return None
