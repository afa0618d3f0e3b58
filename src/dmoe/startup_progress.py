"""The start-up progress bar of ``dmoe run`` (issue 18, item 4).

A warm ``dmoe run`` spends about 3 s importing torch and transformers' model classes before
it does any work of its own; this bar appears as soon as click has checked the options,
before those imports, and advances as each real start-up stage finishes: the imports, then
the stages :func:`dmoe.main_job.run_main_job` reports to its ``on_stage`` hook
(:data:`MAIN_JOB_STAGES`). Its description says what is being done now ("start-up:
importing transformers"); it closes (and clears its line) once the last stage is done, before
the first work bar (the full model's held-out pass, or the first policy's questions).

This module imports neither torch nor transformers (only tqdm, when a bar is shown), so the
CLI can show the bar before they load.
"""

from __future__ import annotations

import sys
import warnings
from typing import Callable, Sequence

__all__ = ["GENERATE_STAGES", "IMPORT_STAGES", "MAIN_JOB_STAGES", "RUN_STAGES", "StartupProgress"]

#: What the CLI imports before :func:`~dmoe.main_job.run_main_job` runs, in order:
#: (stage name, what is being done while it runs).
IMPORT_STAGES: tuple[tuple[str, str], ...] = (
    ("import torch", "importing torch"),
    ("import transformers", "importing transformers"),
    ("import dmoe", "importing dmoe's runtime"),
)

#: The stages :func:`~dmoe.main_job.run_main_job` reports to its ``on_stage`` hook, in order,
#: each once it has finished: (stage name, what is being done while it runs).
MAIN_JOB_STAGES: tuple[tuple[str, str], ...] = (
    ("plan", "checking the policies, planning the deployment"),
    ("questions", "reading the questions"),
    ("model", "loading the model"),
    ("placement", "placing the experts on the nodes"),
    ("engine", "starting the engine"),
)

#: Every stage of ``dmoe run``'s start-up, in order.
RUN_STAGES: tuple[tuple[str, str], ...] = IMPORT_STAGES + MAIN_JOB_STAGES

#: The start-up of ``dmoe generate`` and ``dmoe chat``: the imports, the model and the
#: placement (:func:`dmoe.deployment.deploy`'s ``on_stage``), then the policies and the engine
#: (the runtime); it ends before the first token streams.
GENERATE_STAGES: tuple[tuple[str, str], ...] = IMPORT_STAGES + (
    ("model", "loading the model"),
    ("placement", "placing the experts on the nodes"),
    ("engine", "choosing the policies, starting the engine"),
)


class StartupProgress:
    """A tqdm bar over ``stages`` (on stderr, ``leave=False``) whose :meth:`stage` is called
    after each stage has finished; it closes itself after the last one.

    Args:
        stages: ``[num_stages]`` pairs (name, what is being done while it runs), in the order
            they run; names unique and non-empty.
        enabled: False: no bar (``--quiet``); :meth:`stage` still checks the names.

    Raises:
        TypeError: ``stages`` is not a sequence of (str, str) pairs.
        ValueError: ``stages`` is empty or repeats a name.

    Use as a context manager: leaving it (an error included) closes the bar.
    """

    def __init__(self, stages: Sequence[tuple[str, str]] = RUN_STAGES, *, enabled: bool = True) -> None:
        if isinstance(stages, (str, bytes)) or not isinstance(stages, Sequence):
            raise TypeError(f"`stages` must be a sequence of (name, description) pairs, got {stages!r}")
        stages = tuple(stages)
        for s in stages:
            if not (isinstance(s, tuple) and len(s) == 2 and all(isinstance(x, str) and x for x in s)):
                raise TypeError(f"`stages`: each must be a (name, description) pair of non-empty strings, got {s!r}")
        names = [name for name, _ in stages]
        if not names:
            raise ValueError("`stages` must name at least one stage")
        if len(set(names)) != len(names):
            raise ValueError(f"`stages` must not repeat a name, got {names}")
        if not isinstance(enabled, bool):
            raise TypeError(f"`enabled` must be a bool, got {enabled!r}")
        self._stages = stages
        self._index = {name: i for i, name in enumerate(names)}
        self.done = 0  # stages finished
        self._bar = None
        if enabled:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=len(stages), desc=self._desc(0), unit="stage", leave=False,
                             bar_format="{desc}: {n_fmt}/{total_fmt} |{bar}| {elapsed}")
            # a Python warning shown while the bar is open clears it first (like log), and the
            # bar is drawn again after it; warnings.showwarning is restored on close
            self._showwarning = warnings.showwarning
            warnings.showwarning = self._show_warning

    def _show_warning(self, message, category, filename, lineno, file=None, line=None) -> None:
        if self._bar is None:
            self._showwarning(message, category, filename, lineno, file, line)
            return
        with self._bar.external_write_mode(file=sys.stderr):
            self._showwarning(message, category, filename, lineno, file, line)

    @staticmethod
    def _label(what: str) -> str:
        return f"start-up: {what}"

    def _desc(self, i: int) -> str:
        return self._label(self._stages[i][1])

    @property
    def is_open(self) -> bool:
        """Whether the bar is on the screen (enabled and not yet closed)."""
        return self._bar is not None

    def stage(self, name: str) -> None:
        """Record that stage ``name`` has finished: the bar advances to it (stages skipped
        before it count as done) and says what runs next; after the last one it closes.

        Raises:
            TypeError: ``name`` is not a str.
            ValueError: ``name`` is not one of the stages, or is not after the last one recorded.
        """
        if not isinstance(name, str):
            raise TypeError(f"`name` must be a stage name (str), got {name!r}")
        i = self._index.get(name)
        if i is None:
            raise ValueError(f"`name`: unknown start-up stage {name!r}; the stages are {list(self._index)}")
        if i == self.done - 1:
            raise ValueError(f"`name`: start-up stage {name!r} has already finished")
        if i < self.done:
            raise ValueError(f"`name`: start-up stage {name!r} comes before {self._stages[self.done - 1][0]!r}, "
                             "which has already finished")
        step, self.done = i + 1 - self.done, i + 1
        if self._bar is None:
            return
        if self.done == len(self._stages):
            self.close()
            return
        self._bar.set_description_str(self._desc(self.done), refresh=False)
        if not self._bar.update(step):  # drawn now, whatever tqdm's mininterval
            self._bar.refresh()

    def import_runtime(self) -> None:
        """Import torch, then transformers (the package and its Auto* entry points, what every
        model dmoe loads goes through), recording the stages ``"import torch"`` and
        ``"import transformers"``.

        Raises:
            ValueError: those stages are not among this bar's (checked before importing).
        """
        missing = [name for name in ("import torch", "import transformers") if name not in self._index]
        if missing:
            raise ValueError(f"`stages` must include {missing} to import the runtime; the stages are {list(self._index)}")
        import torch  # noqa: F401

        self.stage("import torch")
        import transformers  # noqa: F401
        from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer  # noqa: F401

        self.stage("import transformers")

    def log(self, echo: Callable[[str], None]) -> Callable[[str], None]:
        """``echo`` for messages written while the bar may be open: the bar is cleared
        before each message and drawn again after it (tqdm's external write mode), so a
        message to stdout does not land on the bar's line; once the bar is closed, ``echo`` itself.

        Raises:
            TypeError: ``echo`` is not callable.
        """
        if not callable(echo):
            raise TypeError(f"`echo` must be a callable taking a message, got {echo!r}")
        def write(message: str) -> None:
            if self._bar is None:
                echo(message)
                return
            with self._bar.external_write_mode(file=sys.stdout):
                echo(message)

        return write

    def close(self) -> None:
        """Close the bar (clearing its line); idempotent."""
        bar, self._bar = self._bar, None
        if bar is not None:
            if warnings.showwarning == self._show_warning:
                warnings.showwarning = self._showwarning
            bar.close()

    def __enter__(self) -> "StartupProgress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
