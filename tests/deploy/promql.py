"""What the tests need from PromQL without promtool: the metric selectors an expression uses, and a balance check."""

from __future__ import annotations

import re
from dataclasses import dataclass

# A metric name followed by an optional {label matchers}; function names are followed by "(" and are skipped.
_SELECTOR = re.compile(r"(?<![\w:.$\"'])([a-zA-Z_:][a-zA-Z0-9_:]*)(?![\w:])\s*(\{[^}]*\})?(?!\s*\()")
_MATCHER = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*\"([^\"]*)\"")
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless", "offset",
            "le", "inf", "nan"}


@dataclass(frozen=True)
class Selector:
    metric: str
    matchers: tuple[tuple[str, str, str], ...]


def selectors(expr: str) -> list[Selector]:
    """Metric selectors in ``expr`` (grouping label lists, durations, strings and keywords removed first)."""
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)
    text = re.sub(r"\[[^\]]*\]", " ", text)  # range durations [5m], [$__rate_interval]
    found = []
    for match in _SELECTOR.finditer(text):
        name, braces = match.group(1), match.group(2) or ""
        if name.lower() in KEYWORDS or re.fullmatch(r"\d+[smhdwy]?", name):
            continue
        if match.start() > 0 and text[match.start() - 1] in "{,=~":
            continue
        found.append(Selector(name, tuple(_MATCHER.findall(braces))))
    # label names inside braces were matched as names when braces were empty of quotes; drop names inside {...}
    inside = {m for b in re.findall(r"\{([^}]*)\}", text) for m in re.findall(r"[a-zA-Z_]\w*", b)}
    return [s for s in found if s.metric not in inside or s.metric.startswith("mrdserve_") or s.metric == "up"]


def balanced(expr: str) -> bool:
    pairs, stack = {")": "(", "]": "[", "}": "{"}, []
    for char in re.sub(r"\"[^\"]*\"", "", expr):
        if char in "([{":
            stack.append(char)
        elif char in pairs and (not stack or stack.pop() != pairs[char]):
            return False
    return not stack
