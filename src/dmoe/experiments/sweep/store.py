"""A sweep's output directory: its fingerprint, the journal of finished points, atomic writes.

Layout of ``--output``:

* ``sweep.json`` -- written first once the model is loaded and the full model's reference
  computed (configuration, fingerprint, the full model's numbers, ``"complete": false``:
  a sweep that fails before that leaves nothing), and at the end with every point and the
  Pareto fronts (``"complete": true``);
* ``points.jsonl`` -- the journal: one strict-JSON line per finished point, appended,
  flushed and fsynced as the point finishes. A re-run of the same sweep skips the points
  found here (a torn last line, from a kill mid-write, is dropped);
* ``sweep.csv`` and ``pareto.png`` -- rebuilt from the journal (the CSV after each point,
  by a temporary file and a rename).

A directory holding another sweep (another fingerprint), a ``dmoe run`` output or other
files is refused before any work.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
from pathlib import Path
from typing import Sequence

from dmoe.results import strict_json

__all__ = ["SweepStore", "fingerprint", "SWEEP_FORMAT"]

#: ``sweep.json``'s ``format`` tag
SWEEP_FORMAT = "dmoe-sweep/1"
_OWN = {"sweep.json", "points.jsonl", "sweep.csv", "pareto.png"}


def _canonical(value) -> str:
    return json.dumps(strict_json(value), sort_keys=True, separators=(",", ":"), allow_nan=False)


def fingerprint(configuration: dict) -> str:
    """SHA-256 (first 16 hex digits) of ``configuration`` as canonical strict JSON (sorted keys)."""
    return hashlib.sha256(_canonical(configuration).encode()).hexdigest()[:16]


def _short(value) -> str:
    text = _canonical(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _differences(there: dict, here: dict, prefix: str = "") -> list[str]:
    """``"key: A there, B here"`` per differing key; nested dicts by dotted key (``system.snr_db``),
    so that a long value is not cut before the part that differs."""
    out = []
    for k in sorted(set(there) | set(here)):
        a, b = there.get(k), here.get(k)
        if _canonical(a) == _canonical(b):
            continue
        if isinstance(a, dict) and isinstance(b, dict):
            out += _differences(a, b, f"{prefix}{k}.")
        else:
            out.append(f"{prefix}{k}: {'absent' if k not in there else _short(a)} there, "
                       f"{'absent' if k not in here else _short(b)} here")
    return out


def _current(configuration: dict) -> dict:
    """A stored configuration in today's names: sweeps written before issue 19 recorded the
    system's number of nodes as ``num_experts`` (``SystemConfig.to_dict()`` of then)."""
    system = configuration.get("system")
    if isinstance(system, dict) and "num_experts" in system and "num_nodes" not in system:
        system = {("num_nodes" if k == "num_experts" else k): v for k, v in system.items()}
        return {**configuration, "system": system}
    return configuration


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8", newline="") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class SweepStore:
    """The output directory of one sweep (module docstring).

    Args:
        out_dir: the directory (``--output``); created by :meth:`begin`, not before.
    """

    def __init__(self, out_dir: str | Path):
        self.dir = Path(out_dir)
        self.json_path = self.dir / "sweep.json"
        self.journal = self.dir / "points.jsonl"
        self.csv_path = self.dir / "sweep.csv"
        self.png_path = self.dir / "pareto.png"

    # ------------------------------------------------------------------ before any work
    def check(self, configuration: dict) -> dict | None:
        """Refuse a directory that cannot hold this sweep; return its stored ``sweep.json`` when it
        holds this very sweep (to resume), else None. Creates nothing.

        Raises:
            ValueError: naming ``--output``: a file, an unwritable location, a ``dmoe run``
                output, another sweep (saying which settings differ), a journal without
                ``sweep.json``, or files a sweep does not write.
        """
        d = self.dir
        if d.exists() and not d.is_dir():
            raise ValueError(f"`--output` (-o) must be a directory, but {str(d)!r} is a file")
        parent = d
        while not parent.exists():
            parent = parent.parent
        if not os.access(parent, os.W_OK | os.X_OK):
            raise ValueError(f"`--output` (-o): {str(parent)!r} is not a writable directory")
        if not d.exists():
            return None
        names = {p.name for p in d.iterdir() if not p.name.endswith(".tmp")}
        if "summary.json" in names:
            raise ValueError(f"`--output` (-o) {str(d)!r} holds a `dmoe run` output (summary.json), not a sweep; "
                             "give a new or empty directory")
        if "sweep.json" not in names:
            if "points.jsonl" in names:
                raise ValueError(f"`--output` (-o) {str(d)!r} holds points.jsonl without sweep.json: cannot tell "
                                 "which sweep it belongs to; remove it or give another directory")
            if names:
                raise ValueError(f"`--output` (-o) {str(d)!r} is not empty and holds no sweep "
                                 f"({', '.join(sorted(names)[:3])}{', ...' if len(names) > 3 else ''}); give a new "
                                 "or empty directory")
            return None
        try:
            stored = json.loads(self.json_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ValueError(f"`--output` (-o): {str(self.json_path)!r} is not a readable sweep ({exc})") from None
        if not isinstance(stored, dict) or stored.get("format") != SWEEP_FORMAT:
            raise ValueError(f"`--output` (-o): {str(self.json_path)!r} is not a {SWEEP_FORMAT} file")
        there = _current(stored.get("configuration") or {})
        if stored.get("fingerprint") != fingerprint(configuration) and fingerprint(there) != fingerprint(configuration):
            diff = _differences(there, configuration)
            raise ValueError(
                f"`--output` (-o) {str(d)!r} holds a different sweep (fingerprint {stored.get('fingerprint')}, this "
                f"one {fingerprint(configuration)}): " + "; ".join(diff[:6]) + (f"; and {len(diff) - 6} more"
                                                                              if len(diff) > 6 else "")
                + ". Give another --output, or the same options to resume it")
        extra = sorted(names - _OWN)
        if extra:
            raise ValueError(f"`--output` (-o) {str(d)!r} holds files a sweep does not write ({', '.join(extra[:3])})")
        return stored

    # ------------------------------------------------------------------ writing
    def write_json(self, payload: dict) -> None:
        """Write ``sweep.json`` (strict JSON, atomically); creates the directory.

        Raises:
            ValueError: naming ``--output`` when the directory cannot be created.
        """
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ValueError(f"`--output` (-o) {str(self.dir)!r} cannot be created: {exc.strerror or exc}") from None
        _atomic_write(self.json_path, json.dumps(strict_json(payload), indent=2, allow_nan=False) + "\n")

    def finished(self) -> dict[int, dict]:
        """``{index: record}`` of the points in the journal. A torn last line (a kill while it
        was written) is cut off the file; a torn line elsewhere raises ValueError."""
        if not self.journal.exists():
            return {}
        raw = self.journal.read_bytes()
        *lines, tail = raw.split(b"\n")  # every element but the last ended with a newline
        out: dict[int, dict] = {}
        for i, line in enumerate(lines):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except ValueError:
                raise ValueError(f"`--output` (-o): {str(self.journal)!r} line {i + 1} is not JSON; remove the "
                                 "line (or the file, to start the sweep over)") from None
            out[int(rec["index"])] = rec
        if tail:  # torn: the process died while writing it
            with open(self.journal, "r+b") as f:
                f.truncate(len(raw) - len(tail))
        return out

    def append(self, record: dict) -> None:
        """Append one point to the journal and fsync it (it survives a kill right after)."""
        line = json.dumps(strict_json(record), allow_nan=False, separators=(",", ":"))
        with open(self.journal, "a", encoding="utf-8") as f:
            f.write(line + "\n")
            f.flush()
            os.fsync(f.fileno())

    def write_csv(self, records: Sequence[dict], columns: Sequence[str], axis_names: Sequence[str]) -> None:
        """Write ``sweep.csv`` (one row per record, ``columns``; axis values from ``values``;
        booleans as true/false, missing numbers empty), atomically."""
        import io

        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(columns)
        for r in records:
            row = []
            for c in columns:
                v = r["values"].get(c) if c in axis_names else r.get(c)
                row.append("" if v is None else ("true" if v is True else "false" if v is False else v))
            w.writerow(row)
        _atomic_write(self.csv_path, buf.getvalue())
