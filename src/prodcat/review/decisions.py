"""The decisions file: every review decision, one CSV row appended and fsynced the moment it is made.

``DECISIONS.csv`` is an append-only log (UTF-8, header first)::

    time,reviewer,id,action,old_label,new_label,reason
    2026-12-02T01:02:03+00:00,ana,p-17,relabel,Shirts,Tshirts,mislabel
    2026-12-02T01:02:09+00:00,ana,p-18,drop,Watches,,review
    2026-12-02T01:02:15+00:00,ana,p-18,undo,Watches,,review

Actions: ``accept`` (take the suggested label: ``new_label`` is the suggestion), ``keep`` (the given label is
right), ``relabel`` (``new_label`` chosen by the reviewer), ``drop`` (remove the product from training),
``skip`` (looked at, no decision: it leaves the pending list and training ignores it) and ``undo`` (withdraws the
latest decision still in effect on that product; its labels repeat the withdrawn row's). Replaying the log gives
each product's decision in effect (:func:`replay`); nothing is ever rewritten, so a killed process loses at most
the row it was writing, which :class:`DecisionLog` notices and sets aside on the next start.

A cell that a spreadsheet would run as a formula (starting with ``=``, ``+``, ``-``, ``@``, a tab or a carriage
return: OWASP's CSV injection list) is written with a leading ``'``, as is one that starts with ``'`` itself;
reading strips that one quote, so every value comes back as it was given.

:func:`apply_decisions` turns the decisions in effect into a training catalog (``prodcat train --decisions``).
"""

from __future__ import annotations

import csv
import io
import logging
import os
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

log = logging.getLogger(__name__)

COLUMNS = ("time", "reviewer", "id", "action", "old_label", "new_label", "reason")
LABELLING = ("accept", "keep", "relabel", "drop")  # decisions that training applies
ACTIONS = (*LABELLING, "skip", "undo")
_MAX_ERRORS = 10


class DecisionsError(ValueError):
    """A decisions file that cannot be used; the message names the file and its bad rows (1-based lines)."""


@dataclass(frozen=True)
class Decision:
    """One row of the decisions file. ``line``: its 1-based line in the file (the header is line 1; 0 for a
    decision not read from a file)."""

    time: str
    reviewer: str
    id: str
    action: str
    old_label: str | None
    new_label: str | None
    reason: str = ""
    line: int = 0

    def row(self) -> dict[str, str]:
        """The CSV row as written (empty strings for missing labels, formula-like cells quoted)."""
        values = asdict(self)
        return {c: "" if values[c] is None else _escape(str(values[c])) for c in COLUMNS}


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "'")


def _escape(value: str) -> str:
    """``value`` as written to the file: a leading ``'`` when a spreadsheet would read it as a formula."""
    return "'" + value if value.startswith(_FORMULA_START) else value


def _unescape(value: str) -> str:
    """Inverse of :func:`_escape`."""
    return value[1:] if value.startswith("'") and value[1:].startswith(_FORMULA_START) else value


def now() -> str:
    """The current UTC time as ISO 8601 with seconds, as written in ``time``."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def _check_row(row: Mapping[str, Any], line: int) -> tuple[Decision | None, str | None]:
    """The :class:`Decision` of one CSV row, or the reason it is bad."""

    def text(key: str) -> str:
        v = row.get(key)
        return "" if v is None else _unescape(str(v).strip())

    pid, action, old, new = text("id"), text("action").lower(), text("old_label"), text("new_label")
    if not pid:
        return None, "empty id"
    if action not in ACTIONS:
        return None, f"action {text('action')!r} is not one of {', '.join(ACTIONS)}"
    try:
        datetime.fromisoformat(text("time"))
    except ValueError:
        return None, f"time {text('time')!r} is not an ISO 8601 date-time (e.g. 2026-12-02T01:02:03+00:00)"
    if action in ("accept", "relabel") and not new:
        return None, f"{action} needs a new_label"
    if action == "keep" and new and old and new != old:
        return None, f"keep must leave the label as it is (old_label {old!r}, new_label {new!r}); use relabel"
    if action == "drop" and new:
        return None, f"drop takes no new_label (got {new!r})"
    decision = Decision(
        time=text("time"),
        reviewer=text("reviewer"),
        id=pid,
        action=action,
        old_label=old or None,
        new_label=(new or old or None) if action == "keep" else (new or None),
        reason=text("reason"),
        line=line,
    )
    return decision, None


def _fail(source: str, problems: list[str]) -> DecisionsError:
    more = len(problems) - _MAX_ERRORS
    listed = "; ".join(problems[:_MAX_ERRORS]) + (f"; ... and {more} more bad rows" if more > 0 else "")
    return DecisionsError(f"{source}: {len(problems)} bad row(s): {listed}")


def parse_decisions(text: str, *, source: str = "decisions") -> list[Decision]:
    """Every row of a decisions CSV (see the module docstring), checked; a :class:`DecisionsError` lists the
    bad rows by line (undo rows included: an undo with nothing to withdraw is an error)."""
    reader = csv.DictReader(io.StringIO(text))
    header = [h.strip() for h in reader.fieldnames or []]
    missing = [c for c in COLUMNS if c != "reason" and c not in header]
    if missing:
        raise DecisionsError(
            f"{source}: missing column(s) {', '.join(missing)}; the header must name {', '.join(COLUMNS)}"
        )
    reader.fieldnames = header
    rows: list[Decision] = []
    problems: list[str] = []
    for row in reader:
        line = reader.line_num
        if None in row:  # more fields than the header
            problems.append(
                f"line {line}: {len(header) + len(row[None])} fields, the header has {len(header)}"
            )
            continue
        decision, problem = _check_row(row, line)
        if decision is None:
            problems.append(f"line {line}: {problem}")
        else:
            rows.append(decision)
    try:
        replay(rows)
    except DecisionsError as e:
        problems.append(str(e))
    if problems:
        raise _fail(source, problems)
    return rows


def read_decisions(path: str | Path) -> list[Decision]:
    """:func:`parse_decisions` of the file at ``path``."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise DecisionsError(f"{p}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    return parse_decisions(text, source=str(p))


def replay(events: Iterable[Decision]) -> dict[str, Decision]:
    """Product id -> the decision in effect after replaying ``events`` in order (``skip`` included; products
    whose every decision was undone are absent). An undo with nothing to withdraw raises :class:`DecisionsError`."""
    stacks: dict[str, list[Decision]] = {}
    for e in events:
        stack = stacks.setdefault(e.id, [])
        if e.action != "undo":
            stack.append(e)
        elif stack:
            stack.pop()
        else:
            raise DecisionsError(
                f"line {e.line}: undo of product {e.id!r}, which has no decision to withdraw"
            )
    return {pid: stack[-1] for pid, stack in stacks.items() if stack}


def apply_decisions(
    df: pd.DataFrame,
    events: Sequence[Decision],
    *,
    taxonomy_columns: Sequence[str] | None = None,
    source: str = "decisions",
) -> tuple[pd.DataFrame, dict[str, int]]:
    """The catalog ``df`` (catalog schema, labelled) with the decisions in effect applied: relabelled products
    take their ``new_label`` (and, with ``taxonomy_columns``, the parent categories of a product already in that
    class), dropped products are removed. Returns ``(df, counts)`` with ``counts``: ``decisions`` (rows read),
    ``products`` (with a decision in effect), ``relabelled``, ``dropped``, ``confirmed`` (keep, or accept of the
    given label), ``already_applied`` (the catalog already has the new label), ``skipped``.

    Decisions are matched on the catalog's ``id``. A decision naming a product the catalog lacks, a label
    that is not one of the catalog's classes, or a product whose label is neither the decision's old nor new
    label (the catalog changed since the review) raises :class:`DecisionsError` naming the lines.
    """
    current = replay(events)
    labels = df["label"].astype(str)
    position = pd.Series(range(len(df)), index=df["id"].astype(str).to_numpy())
    if not position.index.is_unique:
        raise DecisionsError(f"{source}: the catalog's ids are not unique; decisions are matched on them")
    classes = set(labels)
    counts = dict.fromkeys(("relabelled", "dropped", "confirmed", "already_applied", "skipped"), 0)
    new_labels: dict[int, str] = {}
    dropped: list[int] = []
    problems: list[str] = []
    for pid, d in current.items():
        if d.action == "skip":
            counts["skipped"] += 1
            continue
        if pid not in position.index:
            problems.append(f"line {d.line}: product {pid!r} is not in the catalog ({len(df)} products)")
            continue
        i = int(position[pid])
        given = labels.iat[i]
        if d.action == "drop":
            dropped.append(i)
        elif d.new_label not in classes:
            problems.append(f"line {d.line}: new label {d.new_label!r} is not a class of the catalog")
        elif d.new_label == given:
            counts["confirmed" if d.old_label in (None, given) else "already_applied"] += 1
        elif d.old_label not in (None, given):
            problems.append(
                f"line {d.line}: product {pid!r} is labelled {given!r} in the catalog, neither the decision's "
                f"old label {d.old_label!r} nor its new label {d.new_label!r} (the catalog changed since the review)"
            )
        else:
            new_labels[i] = str(d.new_label)
    if problems:
        raise _fail(source, problems)
    out = df.copy()
    if new_labels:
        rows = list(new_labels)
        out.loc[out.index[rows], "label"] = list(new_labels.values())
        for col in taxonomy_columns or ():  # parents follow the new leaf: those of a product already in it
            parent = df.assign(_label=labels).drop_duplicates("_label").set_index("_label")[col]
            out.loc[out.index[rows], col] = parent.loc[list(new_labels.values())].to_numpy()
    counts["relabelled"], counts["dropped"] = len(new_labels), len(dropped)
    out = out.drop(index=out.index[dropped]).reset_index(drop=True)
    return out, {"decisions": len(events), "products": len(current), **counts}


class DecisionLog:
    """The decisions file of one review server: read and replayed at start, then one fsynced append per decision.

    A last row cut short by a killed process (no final newline) is kept when it is a complete row, else moved
    aside to ``<file>.torn`` and logged. The file is locked (``flock``) while the log is open, so that two
    servers never write the same file.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        new = not self.path.exists() or self.path.stat().st_size == 0
        self._file = self.path.open("a+", encoding="utf-8", newline="")
        self._exclusive()
        if new:
            self._write(",".join(COLUMNS) + "\n")
            _fsync_dir(self.path.parent)
        else:
            self._repair_tail()
        self._file.seek(0)
        self.events: list[Decision] = parse_decisions(self._file.read(), source=str(self.path))
        self._file.seek(0, os.SEEK_END)

    def _exclusive(self) -> None:
        try:
            import fcntl
        except ImportError:  # not POSIX: no cross-process lock
            return
        try:
            fcntl.flock(self._file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._file.close()
            raise DecisionsError(
                f"{self.path} is open in another prodcat review; stop that one first"
            ) from None

    def _repair_tail(self) -> None:
        self._file.seek(0)
        text = self._file.read()
        if text.endswith("\n"):
            return
        head, _, tail = text.rpartition("\n")
        header = text.split("\n", 1)[0]
        try:
            complete = len(parse_decisions(f"{header}\n{tail}\n")) == 1 if head else False
        except DecisionsError:
            complete = False
        if complete:
            self._write("\n")
            return
        torn = self.path.with_name(self.path.name + ".torn")
        with torn.open("a", encoding="utf-8") as f:
            f.write(tail + "\n")
        log.warning(
            "%s: last row was cut short (killed while writing?); moved to %s: %r", self.path, torn, tail
        )
        self._file.truncate(len((head + "\n").encode("utf-8")))
        os.fsync(self._file.fileno())

    def _write(self, text: str) -> None:
        self._file.write(text)
        self._file.flush()
        os.fsync(self._file.fileno())

    def append(self, decision: Decision) -> Decision:
        """Write ``decision`` (checked like a file row) and fsync before returning it (with its line number)."""
        checked, problem = _check_row(decision.row(), 0)
        if checked is None:
            raise DecisionsError(f"decision on {decision.id!r}: {problem}")
        buf = io.StringIO()
        csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n").writerow(checked.row())
        with self._lock:
            if checked.action == "undo":
                replay([*self.events, checked])  # raises when there is nothing to withdraw
            self._write(buf.getvalue())
            line = self.events[-1].line + 1 if self.events else 2
            stored = Decision(**{**asdict(checked), "line": line})
            self.events.append(stored)
        return stored

    def close(self) -> None:
        """Release the file (and its lock)."""
        self._file.close()


def _fsync_dir(folder: Path) -> None:
    """Make a newly created file's directory entry durable too (POSIX; a no-op where directories cannot be
    opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
