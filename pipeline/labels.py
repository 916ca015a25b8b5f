"""Checks a label column against its task before any component runs, and resolves its classes.

A label that does not fit its task is one line naming the column, what was found and the likely
fix. Rows with a missing label are counted: they stay in the data (statistics, validation) but
weigh nothing in training and evaluation.
"""

from __future__ import annotations

import dataclasses
import math

# A numeric label with more distinct values than this is not a set of classes.
MAX_NUMERIC_CLASSES = 100
MAX_CLASSES = 1000


@dataclasses.dataclass(frozen=True)
class LabelProfile:
    """What the data holds in the label column."""

    column: str
    rows: int
    missing: int
    classes: tuple[str, ...] = ()  # the classes found, sorted (classification tasks)

    def missing_note(self) -> str | None:
        if not self.missing:
            return None
        return (f"{self.missing} of {self.rows} rows have no {self.column!r}: they stay in the "
                "statistics but are left out of training and evaluation")


class LabelError(ValueError):
    """A label that does not fit its task; the message names the key and the fix."""


def _shown(values, limit: int = 3) -> str:
    listed = ", ".join(repr(v) for v in list(values)[:limit])
    return listed + (", ..." if len(values) > limit else "")


def _sorted_classes(values: set) -> tuple[str, ...]:
    """Class names in order: numbers numerically, text alphabetically."""
    if all(isinstance(v, int | float) for v in values):
        return tuple(str(int(v)) for v in sorted(values))
    return tuple(sorted(str(v) for v in values))


def _non_integers(values: set) -> set:
    return {v for v in values if isinstance(v, float) and not float(v).is_integer()}


def profile_label(
    column: str,
    values: list,
    task: str,
    positive: str | int | None = None,
    classes: tuple[str | int, ...] | None = None,
) -> LabelProfile:
    """Checks the values of a label column for a task.

    Args:
        column: the column's name, for messages.
        values: its values, None where missing.
        task: binary, multiclass or regression.
        positive: binary: the value that is class 1 (None: the column holds 0 and 1).
        classes: the classes the config lists, if any.

    Returns:
        The profile, with the classes found in the data (sorted) for classifiers.

    Raises:
        LabelError: the label does not fit the task; the message starts with the config key.
    """
    present = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    rows, missing = len(values), len(values) - len(present)
    key = f"label.column: {column!r}"
    if not present:
        raise LabelError(f"{key} has no values (all {rows} rows are missing)")
    distinct = set(present)
    text = {v for v in distinct if isinstance(v, str)}
    if task == "regression":
        if text:
            raise LabelError(f"{key} has text values such as {_shown(sorted(text))}; task "
                             "regression expects numbers (did you mean task: multiclass?)")
        if len(distinct) == 1:
            raise LabelError(f"{key} has the same value, {present[0]!r}, in every row; there is "
                             "nothing to learn")
        return LabelProfile(column, rows, missing)
    fractional = _non_integers(distinct)
    if fractional:
        expected = "two classes" if task == "binary" else "class labels"
        raise LabelError(f"{key} has {len(fractional)} distinct non-integer values; task {task} "
                         f"expects {expected} (did you mean task: regression?)")
    found = _sorted_classes(distinct)
    if len(found) == 1:
        raise LabelError(f"{key} has a single class, {found[0]!r}; a classifier needs two or more")
    if task == "binary":
        return _binary(key, LabelProfile(column, rows, missing, found), positive, bool(text))
    if classes is not None:
        listed = [str(c) for c in classes]
        absent = [c for c in listed if c not in found]
        if absent:
            raise LabelError(f"label.classes: {_shown(absent)} never occurs in column {column!r} "
                             f"(it has {_shown(found, 10)})")
        unlisted = [c for c in found if c not in listed]
        if unlisted:
            raise LabelError(f"{key} has values not in label.classes: {_shown(unlisted)} (add "
                             "them to label.classes, or leave it out to take every class)")
        return LabelProfile(column, rows, missing, found)
    limit = MAX_CLASSES if text else MAX_NUMERIC_CLASSES
    if len(found) > limit:
        raise LabelError(f"{key} has {len(found)} distinct values, more than {limit} classes "
                         "(did you mean task: regression?)")
    return LabelProfile(column, rows, missing, found)


def _binary(key: str, profile: LabelProfile, positive, text: bool) -> LabelProfile:
    found, column = profile.classes, profile.column
    if len(found) > 2:
        many_numbers = not text and len(found) > MAX_NUMERIC_CLASSES
        hint = "regression" if many_numbers else "multiclass"
        raise LabelError(f"{key} has {len(found)} distinct values ({_shown(found)}); task binary "
                         f"expects two classes (did you mean task: {hint}?)")
    if positive is None:
        if set(found) != {"0", "1"}:
            raise LabelError(f"{key} holds {found[0]!r} and {found[1]!r}, not 0 and 1; name the "
                             "positive class with label.positive")
    elif str(positive) not in found:
        raise LabelError(f"label.positive: {positive!r} is not a value of column {column!r} (it "
                         f"has {found[0]!r} and {found[1]!r})")
    return profile
