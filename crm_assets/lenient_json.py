"""Reading JSON that orjson refuses for one value, so that one bad record does not make a whole page unreadable.

orjson rejects a whole document for a single lone surrogate ("\\ud800"), a number beyond a double (1e400)
or nesting deeper than 1024 levels. The stdlib parser keeps lone surrogates (the warehouse then quarantines
the record: it cannot store them); values that no JSON document can store become `UnreadableValue`
markers, which the warehouse quarantines with the record that holds them.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any, NoReturn

# Containers opened deeper than this are cut out: the stdlib parser recurses once a level (RecursionError
# near 1,000), and the warehouse stores at most 255 levels anyway, so no storable record loses anything.
MAX_DEPTH = 300
_EXCERPT_CHARS = 60
# Stands in for a cut container, as {_CUT_KEY: index of the cut text}; the NUL keeps it apart from CRM keys.
_CUT_KEY = "\x00crm-assets-cut"
# A JSON string (escapes included) or a bracket: the tokens that nesting depth depends on.
_DEPTH_TOKEN = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]')
_OPENERS, _CLOSERS = frozenset("[{"), frozenset("]}")

TOO_DEEP = f"nested deeper than {MAX_DEPTH} levels"
NUMBER_OUT_OF_RANGE = "a number beyond the range of a double"
NUMBER_NOT_JSON = "a number JSON does not allow"
INTEGER_TOO_LONG = "an integer too long to read"


class UnreadableValue:
    """A value of a CRM answer that no JSON document can store; `text` is (the start of) what was sent.

    Not a dataclass: orjson would write a dataclass as an object instead of asking `refuse_unreadable`.
    """

    __slots__ = ("problem", "text")

    def __init__(self, problem: str, text: str) -> None:
        self.problem = problem
        self.text = text

    def __repr__(self) -> str:
        return f"<{self.problem}: {self.text}>"


class UnreadableValueError(TypeError):
    """Raised by `refuse_unreadable` when orjson meets an `UnreadableValue`; its message names the value."""


def refuse_unreadable(value: Any) -> NoReturn:
    """orjson's `default`: an `UnreadableValue` cannot be written, and says why."""
    if isinstance(value, UnreadableValue):
        raise UnreadableValueError(f"{value.problem}: {value.text}")
    raise TypeError(f"Type is not JSON serializable: {type(value).__name__}")


def loads_lenient(content: bytes) -> Any:
    """The JSON value of `content`, with what JSON cannot store marked; ValueError when it is not JSON at all."""
    text = content.decode("utf-8")  # UnicodeDecodeError is a ValueError: not JSON either
    try:
        return _loads(text, [])
    except RecursionError:
        capped, cuts = _cap_depth(text)
        return _loads(capped, cuts)


def _loads(text: str, cuts: list[str]) -> Any:
    return json.loads(
        text,
        parse_float=_float,
        parse_int=_int,
        parse_constant=_constant,
        object_hook=_cut_marker(cuts) if cuts else None,
    )


def _excerpt(text: str) -> str:
    return text if len(text) <= _EXCERPT_CHARS else text[:_EXCERPT_CHARS] + "..."


def _float(text: str) -> float | UnreadableValue:
    value = float(text)
    return UnreadableValue(NUMBER_OUT_OF_RANGE, _excerpt(text)) if math.isinf(value) else value


def _int(text: str) -> int | UnreadableValue:
    try:
        return int(text)
    except ValueError:  # beyond Python's limit on digits converted (4,300 by default)
        return UnreadableValue(INTEGER_TOO_LONG, _excerpt(text))


def _constant(name: str) -> UnreadableValue:
    return UnreadableValue(NUMBER_NOT_JSON, name)  # NaN, Infinity, -Infinity


def _cut_marker(cuts: list[str]) -> Any:
    def hook(obj: dict[str, Any]) -> Any:
        index = obj.get(_CUT_KEY) if len(obj) == 1 else None
        if isinstance(index, int) and 0 <= index < len(cuts):
            return UnreadableValue(TOO_DEEP, cuts[index])
        return obj

    return hook


def _cap_depth(text: str) -> tuple[str, list[str]]:
    """`text` with each container opened deeper than MAX_DEPTH replaced by a placeholder, and the cut texts.

    Broken JSON (an unterminated string, say) may be cut anywhere: the parser then refuses it as it would have.
    """
    pieces: list[str] = []
    cuts: list[str] = []
    depth = 0
    kept_from = 0
    cut_from: int | None = None
    for token in _DEPTH_TOKEN.finditer(text):
        bracket = token.group()
        if bracket in _OPENERS:
            depth += 1
            if depth == MAX_DEPTH + 1:
                cut_from = token.start()
        elif bracket in _CLOSERS:
            depth -= 1
            if depth == MAX_DEPTH and cut_from is not None:
                pieces.append(text[kept_from:cut_from] + json.dumps({_CUT_KEY: len(cuts)}))
                cuts.append(_excerpt(text[cut_from : token.end()]))
                kept_from, cut_from = token.end(), None
    pieces.append(text[kept_from:])
    return "".join(pieces), cuts
