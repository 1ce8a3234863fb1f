"""Imported once by the forkserver before it forks reward workers (see runner.py).

Importing sympy and math-verify's LaTeX grammar is slow; doing it here, in the
server, means every worker (and every replacement of a killed one) starts warm. This
module exists only for that side effect; the trainer process never imports it.
"""
from reasoning_jax.rewards import _worker

_worker.warm_up()
