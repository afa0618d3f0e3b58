"""Adapters to other tools.

* :mod:`dmoe.integrations.lm_eval` — the lm-evaluation-harness model ``dmoe`` (needs the
  ``eval`` extra: ``pip install dmoe[eval]``; imported on demand, not here; the top-level
  :mod:`dmoe_lm_eval_hook` registers it for the harness's own ``lm_eval`` command);
* :mod:`dmoe.integrations.tasks` — local-file harness tasks made from the MMLU questions
  dmoe ships with (``dmoe lm-eval-tasks DIR``).
"""

from .tasks import TASK_PREFIX, task_name, write_lm_eval_tasks

__all__ = ["TASK_PREFIX", "task_name", "write_lm_eval_tasks"]
