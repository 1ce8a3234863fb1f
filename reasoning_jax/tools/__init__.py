"""Tools a model may call mid-rollout (host code): a sandboxed Python executor and an
exact sympy calculator behind one small interface (`Tool.run(argument) -> ToolResult`),
the parsing of tool calls out of generated text, and the environment that turns a
row paused at a tool call into observation tokens (`ToolEnvironment`).

Never imported by `model/`, `sampling/` or `objectives/` (checked by import-linter).
"""
from reasoning_jax.tools.base import REASONS, Tool, ToolCounts, ToolResult
from reasoning_jax.tools.calculator import Calculator
from reasoning_jax.tools.sandbox import PythonSandbox

__all__ = ["REASONS", "Calculator", "PythonSandbox", "Tool", "ToolCounts", "ToolResult"]
