"""No field of any action can change what a script does: whatever the values, they end up as data.

For every action, hypothesis fills every string field (and every string in a list field) with text
built from PowerShell's dangerous pieces (quotes of every kind PowerShell accepts, backticks, `$()`,
`;`, newlines, NUL, here-string and block-comment delimiters, the protocol's own markers, non-ASCII).
The rendered script must parse into exactly the syntax tree of the same action rendered with benign
values: only the header comment and the base64 literal differ, and both give back the input exactly.
"""

from __future__ import annotations

import types
import typing
from dataclasses import dataclass
from enum import Enum
from typing import Any

import pytest
import tree_sitter_powershell as tsp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from tree_sitter import Language, Node, Parser, Tree

from winnode.host import actions as A
from winnode.host.protocol import extract_params, fill_secrets, parse_header, split_stdin
from winnode.host.scripts import placeholder_params, render

PARSER = Parser(Language(tsp.language()))

# 16 actions with fields x 640 examples: over 10,000 scripts per default run.
EXAMPLES_PER_ACTION = 640

NASTY = [
    "'",
    "''",
    '"',
    "`",
    "`n",
    "$(",
    "$(Remove-Item C:\\ -Recurse)",
    ")",
    "${",
    "}",
    "{",
    ";",
    "; exit 0",
    "|",
    "&",
    "&&",
    "\n",
    "\r",
    "\r\n",
    "\x00",
    "\x1b",
    "<#",
    "#>",
    "@'",
    "'@",
    '@"',
    '"@',
    "\u2018",  # PowerShell treats these curly quotes as quotes
    "\u2019",
    "\u201a",
    "\u201b",
    "\u201c",
    "\u201d",
    "\u201e",
    "\u2013",  # and these dashes as '-'
    "\u2014",
    "\u2028",
    "\u2029",
    "\x85",
    "\ufeff",
    "é",
    "€",
    "漢字",
    "😀",
    "\\",
    "%PATH%",
    "^",
    "\t",
    "$P",
    "$env:ComputerName",
    "$WinnodeParamsB64 = 'AAAA'",
    '##RESULT## {"ok":true}',
    "# winnode-action: {}",
    "#winnode:include _prelude.ps1",
]

nasty_text = st.lists(st.one_of(st.sampled_from(NASTY), st.text(max_size=8)), max_size=8).map("".join)


def _constraint(info: FieldInfo, name: str) -> Any:
    for item in info.metadata:
        value = getattr(item, name, None)
        if value is not None:
            return value
    return None


def _strategy(annotation: Any, info: FieldInfo) -> st.SearchStrategy[Any]:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        members = [a for a in typing.get_args(annotation) if a is not type(None)]
        (member,) = members
        return st.one_of(st.none(), _strategy(member, info))
    if origin is list:
        (item,) = typing.get_args(annotation)
        return st.lists(_strategy(item, FieldInfo()), max_size=4)
    if isinstance(annotation, type) and issubclass(annotation, Enum):
        return st.sampled_from(list(annotation))
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        fields = {name: _strategy(sub.annotation, sub) for name, sub in annotation.model_fields.items()}
        return st.fixed_dictionaries(fields)
    if annotation is bool:
        return st.booleans()
    if annotation is int:
        low = _constraint(info, "ge")
        high = _constraint(info, "le")
        return st.integers(min_value=0 if low is None else low, max_value=10**9 if high is None else high)
    if annotation is str:
        pattern = _constraint(info, "pattern")
        return st.from_regex(pattern, fullmatch=True) if pattern else nasty_text
    raise AssertionError(f"no strategy for {annotation!r}: extend this test for the new field type")


def params_strategy(model: type[A.Params]) -> st.SearchStrategy[A.Params]:
    fields = {name: _strategy(info.annotation, info) for name, info in model.model_fields.items()}
    return st.fixed_dictionaries(fields).map(model.model_validate)


def benign(model: type[BaseModel]) -> Any:
    values: dict[str, Any] = {}
    for name, info in model.model_fields.items():
        annotation = info.annotation
        if typing.get_origin(annotation) in (typing.Union, types.UnionType):
            values[name] = None
        elif typing.get_origin(annotation) is list:
            (item,) = typing.get_args(annotation)
            is_model = isinstance(item, type) and issubclass(item, BaseModel)
            values[name] = [benign(item).model_dump()] if is_model else ["x"]
        elif isinstance(annotation, type) and issubclass(annotation, Enum):
            values[name] = next(iter(annotation))
        elif annotation is bool:
            values[name] = False
        elif annotation is int:
            values[name] = _constraint(info, "ge") or 1
        elif _constraint(info, "pattern") == r"^(TCP|UDP)$":
            values[name] = "TCP"
        elif _constraint(info, "pattern") == r"^(Inbound|Outbound)$":
            values[name] = "Inbound"
        else:
            values[name] = "x"
    return model.model_validate(values)


ACTIONS_WITH_FIELDS = sorted(action for action, (model, _) in A.ACTIONS.items() if model.model_fields)


@dataclass(frozen=True)
class Reference:
    text: str
    source: bytes
    tree: Tree
    body: str
    descendants: int
    params_statement: str


def _parse(source: bytes, old: Tree | None = None) -> Tree:
    tree = PARSER.parse(source, old) if old is not None else PARSER.parse(source)
    assert not tree.root_node.has_error, "the rendered script does not parse"
    return tree


def _params_statement(tree: Tree) -> Node:
    """The first statement: the `$WinnodeParamsB64 = '...'` assignment on line 2."""
    root = tree.root_node
    assert [c.type for c in root.children] == ["comment", "statement_list"]
    header = root.children[0]
    assert header.start_point[0] == header.end_point[0] == 0, "the header is one comment on line 1"
    statement = root.children[1].children[0]
    assert statement.start_point[0] == statement.end_point[0] == 1, "line 2 is one statement"
    return statement


def _reference(action: str) -> Reference:
    text = render(benign(A.ACTIONS[action][0])).text
    source = text.encode("utf-8")
    tree = _parse(source)
    return Reference(
        text=text,
        source=source,
        tree=tree,
        body=text.split("\n", 2)[2],
        descendants=tree.root_node.descendant_count,
        params_statement=str(_params_statement(tree)),
    )


REFERENCES = {action: _reference(action) for action in ACTIONS_WITH_FIELDS}


def _line_ends(source: bytes) -> tuple[int, int]:
    first = source.index(b"\n")
    return first, source.index(b"\n", first + 1)


def same_shape(action: str, text: str, *, full: bool = False) -> None:
    """`text` parses into the reference's tree except for the text inside lines 1 and 2.

    Checked three ways: an independent parse has no error, as many nodes as the reference and the
    same node types on line 2; an incremental parse from the reference, edited to the new lines 1-2,
    reports syntactic changes only inside those lines; with `full`, the whole S-expressions (node
    types, no text) are equal as well.
    """
    ref = REFERENCES[action]
    source = text.encode("utf-8")
    tree = _parse(source)
    assert tree.root_node.descendant_count == ref.descendants
    assert str(_params_statement(tree)) == ref.params_statement
    ref_header_end, ref_params_end = _line_ends(ref.source)
    header_end, params_end = _line_ends(source)
    edited = ref.tree.copy()
    edited.edit(
        start_byte=0,
        old_end_byte=ref_params_end,
        new_end_byte=params_end,
        start_point=(0, 0),
        old_end_point=(1, ref_params_end - ref_header_end - 1),
        new_end_point=(1, params_end - header_end - 1),
    )
    incremental = _parse(source, edited)
    for changed in edited.changed_ranges(incremental):
        assert changed.end_byte <= params_end + 1, f"structure changed beyond line 2: {changed}"
    if full:
        assert str(tree.root_node) == str(ref.tree.root_node)


def check_only_data_differs(params: A.Params, *, full: bool = False) -> None:
    rendered = render(params)
    script = rendered.text
    action = params.action
    expected = params.model_dump(mode="json")
    # The values come back exactly, from the header and from what the body decodes; a secret field
    # holds only its placeholder there and its value comes back from the secret section on stdin.
    text_params = placeholder_params(params)
    assert parse_header(script) == (action, text_params)
    decoded = extract_params(script)
    assert decoded == text_params
    sent_script, secrets = split_stdin(rendered.stdin.decode("utf-8"))
    assert sent_script == script
    assert fill_secrets(decoded, secrets) == expected
    assert type(params).model_validate(fill_secrets(decoded, secrets)) == params
    # Everything after the header and the params line is the template, byte for byte.
    _head, _, rest = script.partition("\n")
    _, _, body = rest.partition("\n")
    assert body == REFERENCES[action].body
    # And the whole script parses into the same tree as with benign values.
    same_shape(action, script, full=full)
    if params.secret_fields:
        # The dry-run form replaces exactly the secret values and keeps the same shape.
        redacted = rendered.redacted()
        shown = extract_params(redacted)
        assert parse_header(redacted) == (action, shown)
        for name, value in expected.items():
            assert shown[name] == (f"<secret:{name}>" if name in params.secret_fields else value)
        same_shape(action, redacted, full=full)


def test_every_action_with_fields_is_covered() -> None:
    assert len(ACTIONS_WITH_FIELDS) == len(A.ACTIONS) - 2  # all but facts and host_owner_query
    assert EXAMPLES_PER_ACTION * len(ACTIONS_WITH_FIELDS) >= 10_000


@pytest.mark.parametrize("action", ACTIONS_WITH_FIELDS)
@settings(
    max_examples=EXAMPLES_PER_ACTION,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(data=st.data())
def test_values_stay_data(action: str, data: st.DataObject) -> None:
    params = data.draw(params_strategy(A.ACTIONS[action][0]), label="params")
    check_only_data_differs(params)


@pytest.mark.parametrize("action", ACTIONS_WITH_FIELDS)
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_values_stay_data_whole_tree(action: str, data: st.DataObject) -> None:
    """Fewer examples, each compared on the full S-expression of the tree."""
    params = data.draw(params_strategy(A.ACTIONS[action][0]), label="params")
    check_only_data_differs(params, full=True)


@pytest.mark.parametrize(
    "tamper",
    [
        lambda line: line + "; Remove-Item C:\\k -Recurse",
        lambda line: line + " + $(whoami)",
        lambda line: line[:-1],
    ],
)
def test_the_shape_check_catches_code_in_the_parameters(tamper: Any) -> None:
    """Control: had a value escaped its literal, the checks above would fail."""
    text = REFERENCES["write_file"].text
    header, params_line, body = text.split("\n", 2)
    forged = "\n".join((header, tamper(params_line), body))
    with pytest.raises(AssertionError):
        same_shape("write_file", forged)


@pytest.mark.parametrize("action", ACTIONS_WITH_FIELDS)
def test_every_nasty_piece_in_every_field(action: str) -> None:
    """Deterministic: the whole list of dangerous pieces, joined, in every free-text field at once."""
    model = A.ACTIONS[action][0]
    everything = "".join(NASTY)
    base = benign(model).model_dump(mode="json")
    filled = 0
    for name, info in model.model_fields.items():
        annotation = info.annotation
        if annotation is str and _constraint(info, "pattern") is None:
            base[name] = everything
            filled += 1
        elif typing.get_origin(annotation) is list:
            (item,) = typing.get_args(annotation)
            if isinstance(item, type) and issubclass(item, BaseModel):
                # Every free-text field of each nested entry, one entry per nasty piece.
                entry = benign(item).model_dump(mode="json")
                texts = [k for k, f in item.model_fields.items() if f.annotation is str]
                base[name] = [{**entry, **dict.fromkeys(texts, piece)} for piece in (everything, *NASTY)]
            else:
                base[name] = [everything, *NASTY]
            filled += 1
        elif (
            typing.get_origin(annotation) in (typing.Union, types.UnionType)
            and str in typing.get_args(annotation)
            and _constraint(info, "pattern") is None
        ):
            base[name] = everything
            filled += 1
    assert filled > 0 or action in ("service_start", "service_stop", "service_remove")
    check_only_data_differs(model.model_validate(base), full=True)
