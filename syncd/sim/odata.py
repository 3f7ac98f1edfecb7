"""The OData v4 query options InLoox clients use: $filter, $select,
$orderby, $top, $skip, $count, and server-driven paging."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

JSON = dict[str, Any]
Predicate = Callable[[JSON], bool]

_TOKEN = re.compile(
    r"""
    \s*(?:
      (?P<string>'(?:[^']|'')*')
    | (?P<guid>[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12})
    | (?P<datetime>\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?
                   (?:Z|[+-]\d{2}:\d{2}))
    | (?P<number>-?\d+(?:\.\d+)?)
    | (?P<paren>[()])
    | (?P<word>[A-Za-z_][A-Za-z0-9_]*)
    )""",
    re.VERBOSE,
)
_COMPARISONS: dict[str, Callable[[Any, Any], Any]] = {
    "eq": lambda a, b: a == b,
    "ne": lambda a, b: a != b,
    "gt": lambda a, b: a is not None and b is not None and a > b,
    "ge": lambda a, b: a is not None and b is not None and a >= b,
    "lt": lambda a, b: a is not None and b is not None and a < b,
    "le": lambda a, b: a is not None and b is not None and a <= b,
}
_GUID = re.compile(r"^[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$")
_INSTANT = re.compile(
    r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:\d{2})$"
)


class ODataError(ValueError):
    """A query option the service cannot understand (answered 400)."""


@dataclass(frozen=True)
class _Token:
    kind: str
    text: str


def parse_filter(text: str, fields: set[str] | None = None) -> Predicate:
    """Compile a $filter expression into a predicate over entities."""
    tokens = _tokenize(text)
    parser = _Parser(tokens, fields)
    predicate = parser.expression()
    if parser.position != len(tokens):
        raise ODataError(f"unexpected '{tokens[parser.position].text}' in $filter")
    return predicate


def _tokenize(text: str) -> list[_Token]:
    tokens, position = [], 0
    while position < len(text):
        if text[position:].strip() == "":
            break
        match = _TOKEN.match(text, position)
        if not match or match.end() == position:
            raise ODataError(f"cannot read $filter at: {text[position:]!r}")
        kind = match.lastgroup or ""
        tokens.append(_Token(kind, match.group(kind)))
        position = match.end()
    return tokens


class _Parser:
    """Recursive descent: or < and < not < comparison < parentheses."""

    def __init__(self, tokens: list[_Token], fields: set[str] | None) -> None:
        self.tokens = tokens
        self.fields = fields
        self.position = 0

    def expression(self) -> Predicate:
        left = self._conjunction()
        while self._accept_word("or"):
            right = self._conjunction()
            left = _either(left, right)
        return left

    def _conjunction(self) -> Predicate:
        left = self._negation()
        while self._accept_word("and"):
            right = self._negation()
            left = _both(left, right)
        return left

    def _negation(self) -> Predicate:
        if self._accept_word("not"):
            inner = self._negation()
            return lambda entity: not inner(entity)
        return self._primary()

    def _primary(self) -> Predicate:
        if self._peek("paren", "("):
            self.position += 1
            inner = self.expression()
            if not self._peek("paren", ")"):
                raise ODataError("missing ')' in $filter")
            self.position += 1
            return inner
        return self._comparison()

    def _comparison(self) -> Predicate:
        left = self._operand()
        operator = self._next()
        if operator.kind != "word" or operator.text.lower() not in _COMPARISONS:
            raise ODataError(f"expected a comparison operator, got '{operator.text}'")
        right = self._operand()
        compare = _COMPARISONS[operator.text.lower()]
        return lambda entity: bool(compare(left(entity), right(entity)))

    def _operand(self) -> Callable[[JSON], Any]:
        token = self._next()
        constant = _literal(token)
        if constant is not _NOT_LITERAL:
            return lambda entity: constant
        if token.kind != "word":
            raise ODataError(f"unexpected '{token.text}' in $filter")
        name = token.text
        if self.fields is not None and name not in self.fields:
            raise ODataError(f"could not find a property named '{name}'")
        return lambda entity: comparable(entity.get(name))

    def _next(self) -> _Token:
        if self.position >= len(self.tokens):
            raise ODataError("$filter ends too early")
        token = self.tokens[self.position]
        self.position += 1
        return token

    def _peek(self, kind: str, text: str) -> bool:
        if self.position >= len(self.tokens):
            return False
        token = self.tokens[self.position]
        return token.kind == kind and token.text == text

    def _accept_word(self, word: str) -> bool:
        if self.position < len(self.tokens):
            token = self.tokens[self.position]
            if token.kind == "word" and token.text.lower() == word:
                self.position += 1
                return True
        return False


_NOT_LITERAL = object()


def _literal(token: _Token) -> Any:
    if token.kind == "string":
        return token.text[1:-1].replace("''", "'")
    if token.kind == "guid":
        return token.text.lower()
    if token.kind == "datetime":
        return datetime.fromisoformat(token.text.replace("Z", "+00:00"))
    if token.kind == "number":
        return float(token.text) if "." in token.text else int(token.text)
    if token.kind == "word" and token.text in ("null", "true", "false"):
        return {"null": None, "true": True, "false": False}[token.text]
    return _NOT_LITERAL


def comparable(value: Any) -> Any:
    """Entity values as the filter compares them: instants and guids parsed."""
    if isinstance(value, str):
        if _INSTANT.match(value):
            return datetime.fromisoformat(value.replace("Z", "+00:00"))
        if _GUID.match(value):
            return value.lower()
    return value


def _either(a: Predicate, b: Predicate) -> Predicate:
    return lambda entity: a(entity) or b(entity)


def _both(a: Predicate, b: Predicate) -> Predicate:
    return lambda entity: a(entity) and b(entity)


def query(
    entities: list[JSON],
    options: dict[str, str],
    *,
    fields: set[str],
    page_size: int,
    context: str,
    link_base: str,
) -> JSON:
    """Apply OData options to ``entities`` and build one page of the answer."""
    selected = entities
    if "$filter" in options:
        predicate = parse_filter(options["$filter"], fields)
        selected = [e for e in selected if predicate(e)]
    selected = _ordered(selected, options.get("$orderby", ""), fields)
    total = len(selected)
    skip = _non_negative(options, "$skip") or 0
    top = _non_negative(options, "$top")
    remaining = selected[skip:] if top is None else selected[skip : skip + top]
    page = remaining[:page_size]
    body: JSON = {"@odata.context": context}
    if options.get("$count", "").lower() == "true":
        body["@odata.count"] = total
    body["value"] = [_selected(e, options.get("$select", ""), fields) for e in page]
    if len(remaining) > page_size:
        following = dict(options)
        following["$skip"] = str(skip + page_size)
        if top is not None:
            following["$top"] = str(top - page_size)
        body["@odata.nextLink"] = f"{link_base}?{urlencode(following)}"
    return body


def _ordered(entities: list[JSON], orderby: str, fields: set[str]) -> list[JSON]:
    result = list(entities)
    clauses = [c.split() for c in orderby.split(",") if c.strip()]
    for clause in reversed(clauses):
        name = clause[0]
        if name not in fields or len(clause) > 2:
            raise ODataError(f"cannot order by '{' '.join(clause)}'")
        descending = len(clause) == 2 and clause[1].lower() == "desc"
        if len(clause) == 2 and clause[1].lower() not in ("asc", "desc"):
            raise ODataError(f"cannot order by '{' '.join(clause)}'")
        result.sort(key=_sort_key_of(name), reverse=descending)
    return result


def _sort_key_of(name: str) -> Callable[[JSON], tuple[int, Any]]:
    return lambda entity: _sort_key(entity.get(name))


def _sort_key(value: Any) -> tuple[int, Any]:
    value = comparable(value)
    if value is None:
        return (0, "")
    if isinstance(value, datetime):
        return (1, value.timestamp())
    return (1, value)


def _selected(entity: JSON, select: str, fields: set[str]) -> JSON:
    names = [n.strip() for n in select.split(",") if n.strip()]
    if not names:
        return dict(entity)
    unknown = [n for n in names if n not in fields]
    if unknown:
        raise ODataError(f"could not find a property named '{unknown[0]}'")
    return {n: entity.get(n) for n in names}


def _non_negative(options: dict[str, str], name: str) -> int | None:
    raw = options.get(name)
    if raw is None:
        return None
    if not raw.isdigit():
        raise ODataError(f"{name} must be a non-negative integer")
    return int(raw)
