"""Callables that workflow ``python`` tasks may run.

A python task names ``"module:function"`` (``config.callable``); only modules under
``PRIORITYMAX_WORKFLOW_PYTHON_MODULES`` (default ``workflows``) are importable, so user code for
workflows lives in this package (or in another package added to that list). See
:mod:`workflows.tasks` for the calling convention and examples.
"""
