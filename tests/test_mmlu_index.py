"""The on-disk MMLU subject index (issue 18, start-up): the questions read through it equal a
plain parse of the file; it is reused, and rebuilt when missing, corrupt or out of date."""

from __future__ import annotations

import json

import pytest

from dmoe.data import mmlu


def _row(question, subject, answer="B"):
    return json.dumps({"question": question, "answer_a": "a", "answer_b": "b", "answer_c": "c", "answer_d": "d",
                       "correct_answer": answer, "topic": subject}, ensure_ascii=False)


HEADER = json.dumps({"question": "question", "answer_a": "a", "answer_b": "b", "answer_c": "c", "answer_d": "d",
                     "correct_answer": "answer", "topic": "x"})


def _plain(path):
    """Independent oracle: one json.loads per line, header rows and blank lines skipped."""
    out = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        row = json.loads(line)
        if row["question"] == "question" and row["correct_answer"] == "answer":
            continue
        subject = row["topic"].strip().lower()
        rows = out.setdefault(subject, [])
        rows.append(mmlu.Question(row["question"], tuple(row[f"answer_{c}"] for c in "abcd"),
                                  "ABCD".index(row["correct_answer"].strip().upper()), subject, len(rows)))
    return out


@pytest.fixture
def data_file(tmp_path, monkeypatch):
    path = tmp_path / "mmlu.jsonl"
    lines = [_row(f"q{i} é ✓", ["anatomy", "Virology ", "anatomy"][i % 3], "ABCD"[i % 4]) for i in range(30)]
    lines.insert(7, HEADER)
    lines.insert(12, "")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    monkeypatch.setenv("DMOE_MMLU_FILE", str(path))
    monkeypatch.setenv("DMOE_CACHE_DIR", str(tmp_path / "cache"))
    _clear()
    yield path
    _clear()


def _clear():
    mmlu._subject_index.cache_clear()
    mmlu._subject_questions.cache_clear()
    mmlu._PARSED.clear()


def _parses(monkeypatch):
    calls = []
    real = mmlu._parse_row
    monkeypatch.setattr(mmlu, "_parse_row", lambda *a: calls.append(1) or real(*a))
    return calls


def test_index_gives_the_plain_parse_and_is_reused(data_file, monkeypatch):
    expected = _plain(data_file)
    assert mmlu._all_questions() == {s: tuple(q) for s, q in expected.items()}
    index_path = mmlu._index_path(data_file)[0]
    assert index_path.is_file()
    # a new process: the index is read from disk and only the rows of the loaded subject are parsed
    _clear()
    calls = _parses(monkeypatch)
    assert mmlu.list_subjects() == ["anatomy", "virology"]
    assert mmlu.load_mmlu("virology") == expected["virology"]
    assert len(calls) == len(expected["virology"]) == 10
    assert mmlu.load_mmlu("anatomy", limit=3) == expected["anatomy"][:3]
    assert len(calls) == 30


@pytest.mark.parametrize("damage", ["garbage", "empty", "wrong identity", "bad entry", "wrong offsets"])
def test_bad_index_is_rebuilt(data_file, monkeypatch, damage):
    expected = _plain(data_file)
    mmlu.list_subjects()
    index_path = mmlu._index_path(data_file)[0]
    entry = json.loads(index_path.read_text())
    if damage == "garbage":
        index_path.write_text("{not json")
    elif damage == "empty":
        index_path.write_text(json.dumps({"identity": entry["identity"], "subjects": {}}))
    elif damage == "wrong identity":
        entry["identity"]["size"] += 1
        index_path.write_text(json.dumps(entry))
    elif damage == "bad entry":
        entry["subjects"]["anatomy"] = "12,x 7"
        index_path.write_text(json.dumps(entry))
    else:  # offsets of the other subject's rows
        entry["subjects"]["anatomy"] = entry["subjects"]["virology"]
        index_path.write_text(json.dumps(entry))
    _clear()
    assert mmlu.load_mmlu("anatomy") == expected["anatomy"]
    assert mmlu.load_mmlu("virology") == expected["virology"]
    assert json.loads(index_path.read_text())["subjects"] == mmlu._subject_index()


def test_changed_file_gets_a_new_index(data_file):
    mmlu.list_subjects()
    first = mmlu._index_path(data_file)[0]
    data_file.write_text(_row("new", "nutrition") + "\n", encoding="utf-8")
    _clear()
    assert mmlu.list_subjects() == ["nutrition"]
    assert mmlu._index_path(data_file)[0] != first


def test_unwritable_cache_only_costs_the_parse(data_file, tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    monkeypatch.setenv("DMOE_CACHE_DIR", str(blocker))
    assert mmlu.load_mmlu("virology") == _plain(data_file)["virology"]


def test_malformed_row_names_its_line(data_file):
    data_file.write_text(_row("ok", "anatomy") + "\n" + '{"question": "no answer"}\n', encoding="utf-8")
    _clear()
    with pytest.raises(ValueError, match=r"mmlu.jsonl:2: malformed MMLU row"):
        mmlu.list_subjects()
