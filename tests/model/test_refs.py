"""The $(...) reference language: what is a reference, how values are put in."""

from __future__ import annotations

from typing import Any

import pytest

from daskflow.model.refs import Ref, bad_references, format_value, iter_refs, substitute, suggest

VALUES: dict[Ref, Any] = {
    Ref("params", "files"): ["a.csv", "b.csv"],
    Ref("params", "n"): 3,
    Ref("params", "name"): "nightly",
    Ref("params", "cfg"): {"b": 1, "a": [True, None]},
    Ref("params", "none"): None,
    Ref("tasks", "extract"): {"rows": 10},
    Ref("item"): 2.5,
    Ref("flowrun", "name"): "etl",
    Ref("flowrun", "namespace"): "default",
}


def lookup(ref: Ref) -> Any:
    return VALUES[ref]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("$(params.files)", ["a.csv", "b.csv"]),
        ("$(params.n)", 3),
        ("$(params.cfg)", {"b": 1, "a": [True, None]}),
        ("$(params.none)", None),
        ("$(tasks.extract.result)", {"rows": 10}),
        ("$(item)", 2.5),
        ("$(flowrun.name)", "etl"),
        ("$(flowrun.namespace)", "default"),
    ],
)
def test_exact_reference_keeps_the_value_and_its_type(text: str, expected: Any) -> None:
    out = substitute(text, lookup)
    assert out == expected
    assert type(out) is type(expected)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("date=$(params.name)", "date=nightly"),  # strings as they are, no quotes
        ("n=$(params.n)!", "n=3!"),
        ("files: $(params.files)", 'files: ["a.csv","b.csv"]'),  # JSON, compact
        ("cfg=$(params.cfg)", 'cfg={"b":1,"a":[true,null]}'),
        ("$(params.none) here", "null here"),
        ("$(item)/$(item)", "2.5/2.5"),
        ("$(flowrun.namespace)/$(flowrun.name)", "default/etl"),
        (" $(params.n)", " 3"),  # one character more is no longer an exact reference
    ],
)
def test_embedded_reference_is_formatted(text: str, expected: str) -> None:
    assert substitute(text, lookup) == expected


SHELL = [
    "echo $(date +%F)",
    "$(date +%s)",
    "$(ls)",
    "$(ls | wc -l)",
    "$(cat file.txt)",
    "x=$(cat /etc/hostname) && echo $x",
    "$(./run.sh)",
    "$(command run.sh)",
    "$(python3.11 -V)",
    "$(HOME)",
    "$(task list)",  # a command named task, with an argument
    "$ (params.n)",
    "echo $(( 1 + 2 ))",
]

# Text that starts like a reference (the rule in daskflow.model.refs) but is not one.
LOOKALIKES = [
    "$(params)",
    "$(params.)",
    "$(param.n)",
    "$(parameters.n)",
    "$(PARAMS.n)",
    "$(params.n",
    "$(params.a.b)",
    "$(tasks.extract)",
    "$(tasks.extract.output)",
    "$(tasks.Bad_Name.result)",
    "$(task.extract.result)",
    "$(flowrun.uid)",
    "$(items)",
    "$(Item)",
    "$(item.x)",
    "$( params.n )",
    "$(run.sh)",  # a dotted name: a reference, not a command (write $(./run.sh))
    "$(inputs.parameters.n)",
]


@pytest.mark.parametrize("text", SHELL + LOOKALIKES)
def test_shell_and_other_dollar_parens_are_left_alone_by_substitution(text: str) -> None:
    assert list(iter_refs(text)) == []
    assert substitute(text, lookup) == text


@pytest.mark.parametrize("text", SHELL)
def test_shell_command_substitution_is_not_a_bad_reference(text: str) -> None:
    assert list(bad_references(text)) == []


@pytest.mark.parametrize("text", LOOKALIKES)
def test_text_that_starts_like_a_reference_must_be_one(text: str) -> None:
    assert list(bad_references(text)) == [text]
    assert list(bad_references(f"echo {text} $(date +%s)")) == [text]


def test_bad_references_are_cut_at_their_closing_paren() -> None:
    text = "a $(tasks.x.result) b $(tasks.x.reslt) c $(params.y"
    assert list(bad_references(text)) == ["$(tasks.x.reslt)", "$(params.y"]


@pytest.mark.parametrize(
    ("bad", "meant"),
    [
        ("$(param.p)", "$(params.p)"),
        ("$(parameters.p)", "$(params.p)"),
        ("$(Params.P)", "$(params.p)"),
        ("$(params.dat)", "$(params.date)"),
        ("$(params.p", "$(params.p)"),
        ("$( params.p )", "$(params.p)"),
        ("$(tasks.src.output)", "$(tasks.src.result)"),
        ("$(tasks.SRC.result)", "$(tasks.src.result)"),
        ("$(tasks.src)", "$(tasks.src.result)"),
        ("$(task.src.result)", "$(tasks.src.result)"),
        ("$(items)", "$(item)"),
        ("$(item.x)", "$(item)"),
        ("$(flowrun.nmae)", "$(flowrun.name)"),
        ("$(flowrun.namespac)", "$(flowrun.namespace)"),
        ("$(params)", None),
        ("$(params.zzz)", None),
        ("$(tasks.zzz.result)", None),
        ("$(flowrun.uid)", None),
        ("$(run.sh)", None),
    ],
)
def test_suggest_the_reference_a_typo_meant(bad: str, meant: str | None) -> None:
    assert suggest(bad, params={"p", "date"}, tasks={"src", "load"}) == meant


def test_shell_syntax_next_to_a_reference() -> None:
    text = "echo $(tasks.extract.result) > out-$(date +%s).json"
    assert substitute(text, lookup) == 'echo {"rows":10} > out-$(date +%s).json'


def test_containers_are_rebuilt_recursively_and_never_mutated() -> None:
    value = {"files": "$(params.files)", "nested": [{"n": "$(params.n)"}, "x$(item)"], "k": 1}
    before = repr(value)
    out = substitute(value, lookup)
    assert out == {"files": ["a.csv", "b.csv"], "nested": [{"n": 3}, "x2.5"], "k": 1}
    assert repr(value) == before


def test_mapping_keys_are_substituted_and_stay_strings() -> None:
    out = substitute({"$(params.name)": 1, "$(params.n)": 2, "$(params.files)": 3}, lookup)
    assert out == {"nightly": 1, "3": 2, '["a.csv","b.csv"]': 3}


def test_kinds_limits_what_is_replaced() -> None:
    text = ["$(params.n)", "$(item)", "a $(params.n) b $(item)"]
    out = substitute(text, lookup, frozenset({"params"}))
    assert out == [3, "$(item)", "a 3 b $(item)"]


def test_substituted_values_are_not_substituted_again() -> None:
    # A parameter whose value looks like a reference is data, not a reference.
    values = {Ref("params", "p"): "$(item)", Ref("item"): "ITEM"}
    assert substitute("x $(params.p) $(item)", values.__getitem__) == "x $(item) ITEM"
    assert substitute("$(params.p)", values.__getitem__) == "$(item)"


def test_iter_refs_finds_every_reference_in_order() -> None:
    value = {
        "$(params.k)": ["$(tasks.a.result)", {"x": "$(item) and $(flowrun.name)"}],
        "y": 1,
    }
    assert list(iter_refs(value)) == [
        Ref("params", "k"),
        Ref("tasks", "a"),
        Ref("item"),
        Ref("flowrun", "name"),
    ]


def test_parameter_names_may_use_dashes_and_underscores() -> None:
    assert list(iter_refs("$(params.my-param_2)")) == [Ref("params", "my-param_2")]


def test_format_value() -> None:
    assert format_value("s") == "s"
    assert format_value(1.5) == "1.5"
    assert format_value([1, "a"]) == '[1,"a"]'
    assert format_value(object()).startswith("<object object")  # not JSON: str() of it
