"""Hypothesis strategies for the reader property tests: valid JSON documents with one place
deleted or replaced by something hostile, serialised to the bytes a reader would see."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import strategies as st

# Stand-ins that json.dumps cannot write; replaced in the serialised text.
_DEEP = "\x00deep\x00"
_BIG_INT = "\x00bigint\x00"
_RAW = {
    json.dumps(_DEEP): "[" * 50_000 + "]" * 50_000,  # RecursionError for json.loads
    json.dumps(_BIG_INT): "9" * 5000,  # over int()'s 4300-digit limit
}

#: Awkward strings: control characters, NUL, lone surrogates, a BOM, very long text.
nasty_text = st.one_of(
    st.text(max_size=20),
    st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=0x1F), max_size=10),
    st.sampled_from(["\ud800", "a\udc00b", "\ufeff", "\x00", "\u2028", " ", "1 - correct", "-1", "1e309",
                     "NaN", "9" * 5000]),
    st.integers(1000, 100_000).map(lambda n: "x" * n),
)

#: Values a field may be retyped to.
hostile_values = st.one_of(
    st.none(), st.booleans(), st.integers(), st.sampled_from([10**30, -(10**30), 2**63]),
    st.floats(allow_nan=True, allow_infinity=True), nasty_text,
    st.just(_DEEP), st.just(_BIG_INT),
    st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    st.recursive(st.none() | st.integers(), lambda inner: st.lists(inner, max_size=2), max_leaves=30),
)


def _paths(doc: Any, prefix: tuple = ()) -> list[tuple]:
    """Every place in ``doc`` (a key of a dict or an index of a list), depth first."""
    out = []
    if isinstance(doc, dict):
        for key, value in doc.items():
            out.append((*prefix, key))
            out.extend(_paths(value, (*prefix, key)))
    elif isinstance(doc, list):
        for i, value in enumerate(doc):
            out.append((*prefix, i))
            out.extend(_paths(value, (*prefix, i)))
    return out


@st.composite
def mutated(draw: st.DrawFn, doc: Any, max_mutations: int = 3) -> Any:
    """A deep copy of ``doc`` with 1 to ``max_mutations`` places deleted or replaced."""
    doc = json.loads(json.dumps(doc))
    for _ in range(draw(st.integers(1, max_mutations))):
        paths = _paths(doc)
        if not paths:
            return doc
        path = draw(st.sampled_from(paths))
        parent = doc
        for step in path[:-1]:
            parent = parent[step]
        if draw(st.booleans()):
            del parent[path[-1]]
        else:
            parent[path[-1]] = draw(hostile_values)
    return doc


def dumps(doc: Any) -> str:
    """JSON text of ``doc`` (NaN and Infinity written as Python's json does), with the deep and
    long-integer stand-ins expanded."""
    text = json.dumps(doc)
    for token, raw in _RAW.items():
        text = text.replace(token, raw)
    return text


def encode(text: str) -> bytes:
    """UTF-8 bytes, keeping a lone surrogate as its (invalid) three bytes, the way a broken writer would."""
    return text.encode("utf-8", "surrogatepass")


#: How a file may be damaged as bytes: a BOM in front, NUL bytes, an invalid byte, truncation.
@st.composite
def damaged(draw: st.DrawFn, data: bytes) -> bytes:
    how = draw(st.sampled_from(["none", "bom", "nul", "latin1", "truncate", "crlf"]))
    if how == "bom":
        return b"\xef\xbb\xbf" + data
    if how == "nul":
        at = draw(st.integers(0, len(data)))
        return data[:at] + b"\x00" + data[at:]
    if how == "latin1":
        at = draw(st.integers(0, len(data)))
        return data[:at] + b"\xff" + data[at:]
    if how == "truncate":
        return data[:draw(st.integers(0, len(data)))]
    if how == "crlf":
        return data.replace(b"\n", b"\r\n")
    return data
