"""The kinds of value a setting takes: each parses the setting's text once, at start, into a
typed value, and says what it accepts as data (bounds, patterns, choices) so that the
command line, docs/settings.md and the chart's values.schema.json are generated from the
same facts (nra.settings, scripts/chart_schema.py). Pure, no I/O.

Numbers are ASCII only: `int()` and `float()` take other scripts' digits (`٢٠` is 20) and
`inf`/`nan`/`1e309`, none of which a manifest means. Every message quotes the given value
through shown(), so a 100 KB value or one with a newline stays one short line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable

from pydantic_core import core_schema

MAX_SHOWN = 48  # characters of a refused value an error message quotes
SPACE = " \t\n\r\f"  # what surrounds a value harmlessly: Go's (and so Helm's) \s
TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("0", "false", "no", "off", "")


def shown(value: Any) -> str:
    """The value as a message may quote it: repr (newlines escaped), cut to MAX_SHOWN."""
    text = repr(value)
    if len(text) <= MAX_SHOWN:
        return text
    size = f" ({len(value)} characters)" if isinstance(value, str) else ""
    return text[:MAX_SHOWN] + "..." + size


def _text(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ValueError(f"expected a single value, got {shown(value)}")
    return str(value).strip(SPACE)


# -- regular expressions of number ranges (for the chart's schema, whose validators speak RE2) --

def _digit_class(low: str, high: str) -> str:
    return low if low == high else f"[{low}-{high}]"


def _same_length(low: str, high: str) -> list[str]:
    """Alternatives matching exactly the numbers low..high, both of the same length."""
    if low == high:
        return [low]
    if len(low) == 1:
        return [_digit_class(low, high)]
    rest = len(low) - 1
    if low[1:] == "0" * rest and high[1:] == "9" * rest:
        return [_digit_class(low[0], high[0]) + _any_digits(rest)]
    if low[0] == high[0]:
        return [low[0] + _group(_same_length(low[1:], high[1:]))]
    parts = [low[0] + _group(_same_length(low[1:], "9" * rest))]
    if int(high[0]) - int(low[0]) > 1:
        parts.append(_digit_class(str(int(low[0]) + 1), str(int(high[0]) - 1)) + _any_digits(rest))
    parts.append(high[0] + _group(_same_length("0" * rest, high[1:])))
    return parts


def _any_digits(count: int) -> str:
    return "[0-9]" if count == 1 else f"[0-9]{{{count}}}"


def _group(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else "(?:" + "|".join(parts) + ")"


def range_pattern(low: int, high: int) -> str:
    """An RE2 expression matching the decimal numbers low..high (no sign, no leading zeros)."""
    if not 0 <= low <= high:
        raise ValueError(f"bad range {low}..{high}")
    parts: list[str] = []
    for digits in range(len(str(low)), len(str(high)) + 1):
        first = max(low, 10 ** (digits - 1) if digits > 1 else 0)
        last = min(high, 10**digits - 1)
        if first <= last:
            parts += _same_length(str(first), str(last))
    return _group(parts)


def intervals_pattern(intervals: list[tuple[int, int]]) -> str:
    """Decimal text of a number in one of the intervals, leading zeros allowed."""
    return "0*" + _group([range_pattern(low, high) for low, high in intervals])


def whole_pattern(body: str) -> str:
    return rf"^[ \t\n\f\r]*{body}[ \t\n\f\r]*$"


# -- the kinds ---------------------------------------------------------------------------------

class Kind:
    """A setting's kind of value; used as pydantic metadata: Annotated[T, SomeKind(...)]."""

    metavar = "VALUE"

    def parse(self, text: str) -> Any:  # the stripped text -> the typed value
        raise NotImplementedError

    def accept(self, value: Any) -> Any:
        """Given value (environment text, flag text, or a Python value) -> typed value."""
        return self.parse(_text(value))

    def json_schema(self) -> dict[str, Any]:
        """What a Helm values file may hold for it (YAML scalars or text)."""
        raise NotImplementedError

    def bounds(self) -> str:
        """What it accepts, for docs/settings.md."""
        return ""

    def __get_pydantic_core_schema__(self, source: Any, handler: Any) -> core_schema.CoreSchema:
        return core_schema.no_info_plain_validator_function(self.accept)


@dataclass(frozen=True)
class Whole(Kind):
    """A whole number in low..high, ASCII decimal, except the reserved ids (id -> why)."""

    low: int
    high: int
    reserved: dict[int, str] = field(default_factory=dict)
    why: str = ""  # appended to the out-of-range message
    metavar: str = "N"

    def intervals(self) -> list[tuple[int, int]]:
        spans, start = [], self.low
        for number in sorted(n for n in self.reserved if self.low <= n <= self.high):
            if start < number:
                spans.append((start, number - 1))
            start = number + 1
        if start <= self.high:
            spans.append((start, self.high))
        return spans

    def check(self, number: int) -> int:
        if number in self.reserved:
            raise ValueError(f"{number} is {self.reserved[number]}; pick another")
        if not self.low <= number <= self.high:
            raise ValueError(f"must be {self.low}..{self.high}{self.why} (got {number})")
        return number

    def parse(self, text: str) -> int:
        if not re.fullmatch("[0-9]+", text):
            raise ValueError(f"expected a whole number {self.low}..{self.high} in ASCII digits, got {shown(text)}")
        return self.check(int(text))

    def accept(self, value: Any) -> int:
        if isinstance(value, int) and not isinstance(value, bool):
            return self.check(value)
        return super().accept(value)

    def json_schema(self) -> dict[str, Any]:
        spans = self.intervals()
        numbers = [{"type": "integer", "minimum": low, "maximum": high} for low, high in spans]
        return {"anyOf": [*numbers, {"type": "string", "pattern": whole_pattern(intervals_pattern(spans))}]}

    def bounds(self) -> str:
        text = f"{self.low}..{self.high}"
        inside = sorted(n for n in self.reserved if self.low <= n <= self.high)
        if inside:
            text += ", not " + ", ".join(str(n) for n in inside)
        return text


@dataclass(frozen=True)
class Seconds(Kind):
    """A duration above 0 and at most `high` seconds, ASCII decimal (`2`, `2.5`, `.5`)."""

    high: int
    metavar: str = "SECONDS"

    def check(self, number: float) -> float:
        if not 0 < number <= self.high:  # also refuses nan
            raise ValueError(f"must be a number of seconds above 0 and at most {self.high} (got {shown(number)})")
        return float(number)

    def parse(self, text: str) -> float:
        if not re.fullmatch(r"[0-9]+(\.[0-9]*)?|\.[0-9]+", text):
            raise ValueError(f"must be a number of seconds above 0 and at most {self.high} in ASCII digits "
                             f"such as 2.5 (got {shown(text)})")
        return self.check(float(text))

    def accept(self, value: Any) -> float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return self.check(value)
        return super().accept(value)

    def json_schema(self) -> dict[str, Any]:
        below = [range_pattern(1, self.high - 1) + r"(?:\.[0-9]*)?"] if self.high > 1 else []
        text = "0*" + _group([*below, f"{self.high}" + r"(?:\.0*)?", r"\.[0-9]*[1-9][0-9]*"])
        return {"anyOf": [{"type": "number", "exclusiveMinimum": 0, "maximum": self.high},
                          {"type": "string", "pattern": whole_pattern(text)}]}

    def bounds(self) -> str:
        return f"above 0, at most {self.high}"


@dataclass(frozen=True)
class Switch(Kind):
    """On or off: 1/0, true/false, yes/no, on/off (any case); empty is off."""

    metavar: str = "0|1"

    def parse(self, text: str) -> bool:
        word = text.lower()
        if word in TRUE_WORDS or word in FALSE_WORDS:
            return word in TRUE_WORDS
        raise ValueError(f"expected 1/0, true/false, yes/no or on/off, got {shown(text)}")

    def accept(self, value: Any) -> bool:
        if isinstance(value, bool):
            return value
        return super().accept(value)

    def json_schema(self) -> dict[str, Any]:
        words = "|".join(w for w in (*TRUE_WORDS, *FALSE_WORDS) if w)
        return {"anyOf": [{"type": "boolean"}, {"enum": [0, 1]},
                          {"type": "string", "pattern": whole_pattern(f"(?i:{words})?")}]}

    def bounds(self) -> str:
        return "1/0, true/false, yes/no, on/off"


@dataclass(frozen=True)
class Choice(Kind):
    """One of the choices (any case), or an alias of one."""

    choices: tuple[str, ...]
    aliases: dict[str, str] = field(default_factory=dict)

    @property
    def metavar(self) -> str:  # type: ignore[override]
        return "|".join(self.choices)

    def parse(self, text: str) -> str:
        word = self.aliases.get(text.lower(), text.lower())
        if word not in self.choices:
            raise ValueError(f"expected one of {', '.join(self.choices)}, got {shown(text)}")
        return word

    def json_schema(self) -> dict[str, Any]:
        words = "|".join(re.escape(w) for w in (*self.choices, *self.aliases))
        return {"type": "string", "pattern": whole_pattern(f"(?i:{words})")}

    def bounds(self) -> str:
        text = ", ".join(self.choices)
        if self.aliases:
            text += " (also " + ", ".join(f"{a} = {c}" for a, c in self.aliases.items()) + ")"
        return text


@dataclass(frozen=True)
class Text(Kind):
    """Free text, read by `parser` into the typed value (ValueError with the reason); its
    syntax, as far as a regular expression can say it, is `pattern` (for the chart: what the
    pattern lets through the parser may still refuse, and `agent_only` says what)."""

    parser: Callable[[str], Any] = str
    pattern: str | None = None
    metavar: str = "TEXT"
    agent_only: str = ""  # what nra refuses at start that the pattern cannot tell
    accepts: str = ""  # what it accepts, in words, for the docs
    blank_is_unset: bool = False  # `FOO=` in a manifest means FOO unset

    def accept(self, value: Any) -> Any:
        if value is None and self.blank_is_unset:
            return None
        text = _text(value)
        if not text and self.blank_is_unset:
            return None
        return self.parser(text)

    def parse(self, text: str) -> Any:
        return self.parser(text)

    def _takes_empty(self) -> bool:
        try:
            self.parser("")
        except ValueError:
            return False
        return True

    def json_schema(self) -> dict[str, Any]:
        schema: dict[str, Any] = {"type": "string"}
        if self.pattern:
            body = f"(?:{self.pattern})?" if self.blank_is_unset or self._takes_empty() else f"(?:{self.pattern})"
            schema["pattern"] = whole_pattern(body)
        return schema

    def bounds(self) -> str:
        return self.accepts
