"""Plain YAML scalars as NeMo 1.0 reads them: YAML 1.1 (`yes`/`no`/`on`/`off` are booleans, `017` is octal) plus
OmegaConf's float resolver (`1e-5` is a float), timestamps left as strings.

Shared by the YAML reader (`migrator.yaml.document`), the converter's model_config reader and the verdicts
(`coerce_literal`), so it sits below all of them.
"""
from __future__ import annotations

import math
import re
from typing import Any

_BOOL_11 = {
    **dict.fromkeys(["yes", "Yes", "YES", "true", "True", "TRUE", "on", "On", "ON"], True),
    **dict.fromkeys(["no", "No", "NO", "false", "False", "FALSE", "off", "Off", "OFF"], False),
}
_NULL = {"~", "null", "Null", "NULL", ""}
_INT_11 = re.compile(
    r"^(?:[-+]?0b[0-1_]+|[-+]?0[0-7_]+|[-+]?(?:0|[1-9][0-9_]*)|[-+]?0x[0-9a-fA-F_]+"
    r"|[-+]?[1-9][0-9_]*(?::[0-5]?[0-9])+)$"
)
# PyYAML's float resolver and the one OmegaConf adds (exponent without a dot); either one makes a float
_FLOAT_11 = re.compile(
    r"^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?|[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)"
    r"|\.[0-9_]+(?:[eE][-+]?[0-9]+)?|[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+\.[0-9_]*"
    r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
)


def type_name(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "bool", int: "int", float: "float", str: "str"}.get(type(value), type(value).__name__)


def resolve_yaml11(text: str) -> Any:
    """The Python value OmegaConf/PyYAML gives a plain (unquoted) scalar."""
    if text in _BOOL_11:
        return _BOOL_11[text]
    if text in _NULL:
        return None
    if _INT_11.match(text):
        return _int_11(text)
    if _FLOAT_11.match(text):
        return _float_11(text)
    return text


def _int_11(text: str) -> int:
    t = text.replace("_", "")
    sign = -1 if t.startswith("-") else 1
    t = t.lstrip("+-")
    if t == "0":
        return 0
    if t.startswith("0b"):
        return sign * int(t[2:], 2)
    if t.startswith("0x"):
        return sign * int(t[2:], 16)
    if t.startswith("0"):
        return sign * int(t, 8)
    if ":" in t:
        value = 0
        for part in t.split(":"):
            value = value * 60 + int(part)
        return sign * value
    return sign * int(t)


def _float_11(text: str) -> float:
    t = text.replace("_", "").lower()
    if t.endswith(".inf"):
        return -math.inf if t.startswith("-") else math.inf
    if t.endswith(".nan"):
        return math.nan
    if ":" in t:
        sign = -1 if t.startswith("-") else 1
        value = 0.0
        for part in t.lstrip("+-").split(":"):
            value = value * 60 + float(part)
        return sign * value
    return float(t)
