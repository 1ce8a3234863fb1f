"""A calculator tool: exact arithmetic with sympy over a whitelisted expression grammar.

The expression is parsed with Python's `ast` and built node by node into sympy objects;
nothing is `eval`ed, so a call cannot reach Python beyond the listed functions.
Numbers are exact: `0.1` is the rational 1/10 and `1/3` stays 1/3. Since this runs in
the caller's process (a sympy import per call in a child would cost most of a second),
it bounds the work instead of timing it out: integers, exponents and factorial
arguments above fixed sizes are refused with reason `too_large` before sympy builds
them, and the input length is capped.
"""
from __future__ import annotations

import ast
import operator
import time

import sympy

from reasoning_jax.tools.base import ERROR, OK, TOO_LARGE, ToolResult

_BINARY = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
           ast.Div: operator.truediv, ast.Pow: operator.pow, ast.Mod: operator.mod,
           ast.FloorDiv: lambda a, b: sympy.floor(a / b)}
_UNARY = {ast.UAdd: operator.pos, ast.USub: operator.neg}
_FUNCTIONS = {"sqrt": sympy.sqrt, "abs": sympy.Abs, "exp": sympy.exp, "log": sympy.log,
              "sin": sympy.sin, "cos": sympy.cos, "tan": sympy.tan, "floor": sympy.floor,
              "ceiling": sympy.ceiling, "gcd": sympy.gcd, "lcm": sympy.lcm,
              "binomial": sympy.binomial, "factorial": sympy.factorial,
              "Rational": sympy.Rational, "min": sympy.Min, "max": sympy.Max}
_CONSTANTS = {"pi": sympy.pi, "E": sympy.E, "I": sympy.I}


class TooLarge(ValueError):
  """The expression asks for a number above the calculator's size bounds."""


class Calculator:
  """`run("2**10 / 3")` -> ToolResult("1024/3"); exact, with bounded work.

  Args:
    max_chars: the longest expression accepted.
    max_digits: the most digits of an integer literal or an integer result.
    max_exponent: the largest |exponent| of a power; max_factorial likewise.
    decimals: digits of the numeric value shown after an irrational exact result
      (0 shows the exact form only).
  """
  name = "calculator"

  def __init__(self, max_chars: int = 500, max_digits: int = 400, max_exponent: int = 2000,
               max_factorial: int = 500, decimals: int = 15):
    self.max_chars, self.max_digits = max_chars, max_digits
    self.max_exponent, self.max_factorial, self.decimals = max_exponent, max_factorial, decimals

  def evaluate(self, expression: str) -> sympy.Expr:
    """The exact sympy value of `expression`; raises ValueError (or `TooLarge`)."""
    if len(expression) > self.max_chars:
      raise TooLarge(f"expression longer than {self.max_chars} characters")
    try:
      tree = ast.parse(expression.strip().replace("^", "**"), mode="eval")
    except SyntaxError as e:
      raise ValueError(f"not an expression: {e.msg}") from None
    return self._build(tree.body)

  def _number(self, value) -> sympy.Expr:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
      raise ValueError(f"unsupported literal {value!r}")
    if isinstance(value, int):
      if len(str(abs(value))) > self.max_digits:
        raise TooLarge(f"integer with more than {self.max_digits} digits")
      return sympy.Integer(value)
    return sympy.Rational(repr(value))  # the decimal as written, exactly

  def _check(self, value: sympy.Expr) -> sympy.Expr:
    if value.is_Integer and abs(value) >= 10 ** self.max_digits:
      raise TooLarge(f"result with more than {self.max_digits} digits")
    return value

  def _build(self, node: ast.AST) -> sympy.Expr:
    if isinstance(node, ast.Constant):
      return self._number(node.value)
    if isinstance(node, ast.Name):
      if node.id not in _CONSTANTS:
        raise ValueError(f"unknown name {node.id!r}; known: {sorted(_CONSTANTS)}")
      return _CONSTANTS[node.id]
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
      return _UNARY[type(node.op)](self._build(node.operand))
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
      left, right = self._build(node.left), self._build(node.right)
      if isinstance(node.op, ast.Pow) and right.is_number and (
          abs(right) > self.max_exponent):
        raise TooLarge(f"exponent above {self.max_exponent}")
      if (isinstance(node.op, ast.Pow) and left.is_Integer and right.is_number
          and abs(left) > 1 and len(str(abs(left))) * abs(right) > self.max_digits + 1):
        raise TooLarge(f"power with more than {self.max_digits} digits")
      if isinstance(node.op, (ast.Div, ast.Mod, ast.FloorDiv)) and right == 0:
        raise ValueError("division by zero")
      return self._check(_BINARY[type(node.op)](left, right))
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
        and node.func.id in _FUNCTIONS and not node.keywords):
      args = [self._build(a) for a in node.args]
      if node.func.id == "factorial" and args and args[0].is_number and (
          abs(args[0]) > self.max_factorial):
        raise TooLarge(f"factorial above {self.max_factorial}")
      return self._check(_FUNCTIONS[node.func.id](*args))
    raise ValueError(f"unsupported syntax {ast.dump(node)[:60]!r}; use numbers, + - * / "
                     f"// % ** and {sorted(_FUNCTIONS)}")

  def format(self, value: sympy.Expr) -> str:
    """The exact value, with its decimal expansion when it is not rational."""
    text = sympy.sstr(value)
    if self.decimals and value.is_number and not value.is_Rational:
      text += f" ≈ {sympy.N(value, self.decimals)}"
    return text

  def run(self, argument: str) -> ToolResult:
    """Evaluates one expression; errors come back as results with a reason."""
    start = time.monotonic()
    try:
      value = self.evaluate(str(argument))
      return ToolResult(self.format(value), OK, seconds=time.monotonic() - start)
    except TooLarge as e:
      return ToolResult(f"Error: {e}", TOO_LARGE, str(e), time.monotonic() - start)
    except (ValueError, TypeError, ZeroDivisionError, ArithmeticError) as e:
      return ToolResult(f"Error: {e}", ERROR, str(e), time.monotonic() - start)
