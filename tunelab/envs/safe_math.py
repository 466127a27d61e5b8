"""A safe arithmetic evaluator for agent ``calculate[...]`` actions (never ``eval``).

Numbers (ints, decimals, ``1,000``-style separators, a leading ``$``), ``+ - * / // % **``, unary
signs and parentheses, parsed with :mod:`ast` and evaluated exactly with :class:`fractions.Fraction`.
Anything else (names, calls, attributes) is refused; exponents and magnitudes are bounded so an
expression cannot exhaust memory or time.
"""

from __future__ import annotations

import ast
import re
from fractions import Fraction

MAX_EXPONENT = 64
MAX_MAGNITUDE = Fraction(10) ** 30
MAX_LENGTH = 200


class CalcError(ValueError):
    """The expression is not plain arithmetic, or its value is out of bounds; the message says why."""


_OPS = {ast.Add: lambda a, b: a + b, ast.Sub: lambda a, b: a - b, ast.Mult: lambda a, b: a * b}


def _eval(node: ast.AST) -> Fraction:
    if isinstance(node, ast.Expression):
        return _eval(node.body)
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
        return Fraction(str(node.value))
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.UAdd, ast.USub)):
        value = _eval(node.operand)
        return value if isinstance(node.op, ast.UAdd) else -value
    if isinstance(node, ast.BinOp):
        a, b = _eval(node.left), _eval(node.right)
        if type(node.op) in _OPS:
            value = _OPS[type(node.op)](a, b)
        elif isinstance(node.op, (ast.Div, ast.FloorDiv, ast.Mod)):
            if b == 0:
                raise CalcError("division by zero")
            value = a / b if isinstance(node.op, ast.Div) else Fraction(a // b) if isinstance(node.op, ast.FloorDiv) \
                else a % b
        elif isinstance(node.op, ast.Pow):
            if b.denominator != 1 or abs(b) > MAX_EXPONENT:
                raise CalcError(f"exponent {b} is not a whole number up to {MAX_EXPONENT}")
            if a == 0 and b < 0:
                raise CalcError("division by zero")
            value = a ** int(b)
        else:
            raise CalcError(f"operator {type(node.op).__name__} is not allowed")
        if abs(value) > MAX_MAGNITUDE:
            raise CalcError("the result is too large")
        return value
    raise CalcError(f"{type(node).__name__} is not allowed (numbers and + - * / // % ** only)")


def calculate(expression: str) -> Fraction:
    """The exact value of a plain arithmetic expression (see the module docstring).

    Raises:
        CalcError: Not plain arithmetic, too long, or out of bounds.
    """
    text = expression.strip().replace("×", "*").replace("÷", "/").replace("^", "**")
    text = re.sub(r"(?<=\d),(?=\d{3}\b)", "", text).replace("$", "")
    if not text or len(text) > MAX_LENGTH:
        raise CalcError(f"the expression must have 1 to {MAX_LENGTH} characters")
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError as e:
        raise CalcError(f"not an arithmetic expression: {e.msg}") from None
    return _eval(tree)


def format_number(value: Fraction) -> str:
    """An integer as is, else a decimal with up to 6 places (trailing zeros dropped)."""
    if value.denominator == 1:
        return str(value.numerator)
    return f"{float(value):.6f}".rstrip("0").rstrip(".")
