"""Manifest text to Python values, within bounds a hostile or careless file cannot break.

A manifest is read before anything checks it, so reading it must be safe on any input: a
file too big to be a manifest, bytes that are not UTF-8, a list nested thousands deep (the
YAML composer and every walk after it recurse), or a few hundred bytes of YAML aliases that
expand to billions of values (each alias is a reference, but every consumer walks the
expansion). The loader here bounds the nesting depth and the number of values *after*
alias expansion while it composes, at the cost of a lookup per alias. A value past a bound
becomes an :class:`Overflow` marker in place, so that validation can report it with the task
and field it sits in (see :func:`daskflow.model.validate.parse_flowrun`), and the rest of
the manifest is still checked.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from yaml._yaml import CParser
from yaml.composer import Composer
from yaml.constructor import SafeConstructor
from yaml.events import AliasEvent, CollectionEndEvent, CollectionStartEvent
from yaml.nodes import CollectionNode, MappingNode, Node, ScalarNode
from yaml.resolver import Resolver

MAX_MANIFEST_BYTES = 3 * 1024 * 1024
MAX_DEPTH = 100  # containers inside containers, the document itself being the first
MAX_VALUES = 250_000  # every scalar, list and mapping, counted after alias expansion

_OVERFLOW_TAG = "tag:daskflow.io,2026:overflow"


class UnreadableManifest(ValueError):
    """A file that cannot be turned into a document at all; the text says why."""


class Overflow:
    """Stands in for a value that broke a bound; ``why`` says which."""

    def __init__(self, why: str) -> None:
        self.why = why

    def __repr__(self) -> str:
        return f"Overflow({self.why!r})"


TOO_DEEP = f"nested deeper than {MAX_DEPTH} levels"
TOO_MANY = f"more than {MAX_VALUES:,} values (counting each use of a YAML alias in full)"
RECURSIVE = "a YAML alias inside its own anchor"


class _BoundedLoader(Composer, CParser, SafeConstructor, Resolver):
    """A safe loader that composes at most MAX_DEPTH levels and MAX_VALUES values.

    libyaml parses (fast, and linear in nesting depth where PyYAML's own scanner is
    quadratic); PyYAML's composer, bounded here, builds the nodes.
    """

    def __init__(self, stream: str) -> None:
        CParser.__init__(self, stream)
        Composer.__init__(self)
        SafeConstructor.__init__(self)
        Resolver.__init__(self)
        self._level = 0  # collections open around the next value
        self._values = 0
        self._open: set[str] = set()  # anchors being composed: an alias to one is recursive
        self._expanded: dict[int, tuple[int, int]] = {}  # node id -> (values, height)

    def compose_document(self) -> Node | None:
        self._expanded.clear()  # node ids of an earlier document may be reused
        node: Node | None = super().compose_document()
        return node

    def compose_node(self, parent: Node | None, index: Any) -> Node:
        event: Any = self.peek_event()
        if isinstance(event, AliasEvent):
            target = self.anchors.get(event.anchor)
            if target is not None:  # else PyYAML reports the undefined alias
                if event.anchor in self._open:
                    return self._overflow(RECURSIVE)
                values, height = self._size(target)
                if self._level + height > MAX_DEPTH:
                    return self._overflow(TOO_DEEP)
                if self._values + values > MAX_VALUES:
                    return self._overflow(TOO_MANY)
                self._values += values
            return _node(super().compose_node(parent, index))
        is_collection = isinstance(event, CollectionStartEvent)
        if is_collection and self._level >= MAX_DEPTH:
            return self._overflow(TOO_DEEP)
        if self._values >= MAX_VALUES:
            return self._overflow(TOO_MANY)
        self._values += 1
        if not is_collection:
            return _node(super().compose_node(parent, index))
        anchor = event.anchor
        self._level += 1
        if anchor is not None:
            self._open.add(anchor)
        try:
            return _node(super().compose_node(parent, index))
        finally:
            self._level -= 1
            if anchor is not None:
                self._open.remove(anchor)

    def _overflow(self, why: str) -> Node:
        """Consume the next value (a whole collection, iteratively) and stand in for it."""
        event: Any = self.get_event()
        node = ScalarNode(_OVERFLOW_TAG, why, event.start_mark, event.end_mark)
        anchors = [] if isinstance(event, AliasEvent) else [event.anchor]
        depth = 1 if isinstance(event, CollectionStartEvent) else 0
        while depth:
            inner: Any = self.get_event()
            if isinstance(inner, CollectionEndEvent):
                depth -= 1
                continue
            depth += isinstance(inner, CollectionStartEvent)
            if not isinstance(inner, AliasEvent):
                anchors.append(inner.anchor)
        for anchor in anchors:  # a later alias to an anchor skipped here gets the marker
            if anchor is not None:
                self.anchors[anchor] = node
        return node

    def _size(self, node: Node) -> tuple[int, int]:
        """Values and height of ``node`` with every alias in it expanded (memoized)."""
        known = self._expanded.get(id(node))
        if known is not None:
            return known
        values, height = 1, 0
        if isinstance(node, CollectionNode):
            children = node.value
            if isinstance(node, MappingNode):
                children = [part for pair in children for part in pair]
            for child in children:
                child_values, child_height = self._size(child)
                values += child_values
                height = max(height, child_height)
            height += 1
        self._expanded[id(node)] = (values, height)
        return values, height


def _node(node: Any) -> Node:
    assert isinstance(node, Node)
    return node


_BoundedLoader.add_constructor(_OVERFLOW_TAG, lambda _loader, node: Overflow(node.value))


def load_yaml(text: str) -> Any:
    """One YAML value (``--set`` values, say), within the bounds; raises yaml.YAMLError."""
    loader = _BoundedLoader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def _documents(text: str) -> list[Any]:
    loader = _BoundedLoader(text)
    try:
        docs = []
        while loader.check_node():
            docs.append(loader.get_data())
        return docs
    finally:
        loader.dispose()


def yaml_problem(err: yaml.YAMLError) -> str:
    """A YAML error on one line: what is wrong and where."""
    if isinstance(err, yaml.MarkedYAMLError) and err.problem_mark is not None:
        mark = err.problem_mark
        context = f" ({err.context})" if err.context else ""
        return f"{err.problem} at line {mark.line + 1}, column {mark.column + 1}{context}"
    return " ".join(str(err).split())


def read_manifest(path: str | Path) -> Any:
    """The single document of a manifest file, within the bounds.

    Raises :class:`UnreadableManifest` when there is no such document to check.
    """
    try:
        with Path(path).open("rb") as stream:
            data = stream.read(MAX_MANIFEST_BYTES + 1)
    except OSError as err:
        raise UnreadableManifest(f"cannot read file: {err.strerror}") from None
    if len(data) > MAX_MANIFEST_BYTES:
        raise UnreadableManifest(f"larger than {MAX_MANIFEST_BYTES >> 20} MiB, the limit")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise UnreadableManifest(
            f"not UTF-8 text: byte 0x{data[err.start]:02x} on line {line}"
        ) from None
    try:
        docs = [d for d in _documents(text) if d is not None]
    except yaml.YAMLError as err:
        raise UnreadableManifest(f"not valid YAML: {yaml_problem(err)}") from None
    if not docs:
        raise UnreadableManifest("no FlowRun in the file: it is empty")
    if len(docs) > 1:
        raise UnreadableManifest(f"expected exactly one FlowRun document, found {len(docs)}")
    return docs[0]
