"""Sub-populations of trained runs: `--where EXPR` keeps the models for which EXPR holds, `--split EXPR`
makes each run two (EXPR true, EXPR false), so that "would RegNetX be better with b = 1?" is answered
from the population already trained (docs/method.md section 5.1).

A filter is user input, so it is parsed by the small grammar below and never evaluated as Python or
pandas code:

    filter := clause ("and" clause)*
    clause := NAME OP VALUE  |  NAME "in" VALUE ".." VALUE        (both ends included)
    OP     := <  <=  >  >=  ==  =  !=
    VALUE  := a number with an optional K / M / G / T suffix (400M), a word (silu), or a quoted string

NAME is a scalar column of the analysis frame (flops, depth, w0, status, lr, ...) or a statistic of
dsd.analysis.bootstrap.model_statistics (d1, w4, b2, g1, w2/w1, d, w_sum); b, g and w alone mean every stage
(b <= 2: each stage's bottleneck ratio is at most 2). A comparison with a missing value (w0 of an
AnyNet model) is false, whatever the operator.
"""
from __future__ import annotations

import operator
import re
from dataclasses import dataclass

import numpy as np
import pandas as pd

from dsd.analysis.bootstrap import STAGE_STATS, model_statistics, stage_matrix
from dsd.analysis.load import run_names
from dsd.design.regimes import UNITS
from dsd.errors import BadInput

OPERATORS = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge, "==": operator.eq,
             "=": operator.eq, "!=": operator.ne}
TOKEN = re.compile(r"""\s*(?:
    (?P<number>-?(?:\d+(?:\.(?!\.)\d*)?|\.\d+)(?:[eE][-+]?\d+)?[kKmMgGtT]?(?!\w)(?!\.(?!\.)))
  | (?P<range>\.\.)
  | (?P<op><=|>=|==|!=|<|>|=)
  | (?P<string>"[^"]*"|'[^']*')
  | (?P<word>[A-Za-z_][\w:/-]*)
  | (?P<bad>\S))""", re.VERBOSE)


@dataclass(frozen=True)
class Clause:
    """NAME OP VALUE; `in lo..hi` is stored as two clauses (>= lo, <= hi)."""

    name: str
    op: str
    value: float | str


@dataclass(frozen=True)
class Filter:
    text: str
    clauses: tuple[Clause, ...]

    def mask(self, frame: pd.DataFrame) -> np.ndarray:
        """True for the rows of frame that satisfy every clause; BadInput naming an unknown column."""
        columns = Columns(frame, self.text)
        keep = np.ones(len(frame), dtype=bool)
        for clause in self.clauses:
            keep &= columns.test(clause)
        return keep


def _tokens(text: str, label: str) -> list[tuple[str, str]]:
    tokens = []
    for m in TOKEN.finditer(text):
        kind = m.lastgroup
        if kind == "bad":
            raise BadInput(f"{label} {text!r}: unexpected {m.group(kind)!r}")
        tokens.append((kind, m.group(kind)))
    return tokens


def _value(token: tuple[str, str] | None, label: str, after: str) -> float | str:
    if token is None or token[0] not in ("number", "word", "string"):
        raise BadInput(f"{label}: expected a value after {after!r}")
    kind, text = token
    if kind == "number":
        suffix = text[-1].upper() if text[-1].isalpha() else ""
        return float(text[:-1] if suffix else text) * UNITS[suffix]
    return text[1:-1] if kind == "string" else text


def parse_filter(text: str, label: str = "--where") -> Filter:
    """The clauses of a filter, or BadInput naming what is wrong with its syntax (label: the option)."""
    tokens = _tokens(text, label)
    if not tokens:
        raise BadInput(f"{label}: empty filter")
    clauses, i = [], 0
    where = f"{label} {text!r}"
    while True:
        if i >= len(tokens) or tokens[i][0] != "word":
            raise BadInput(f"{where}: expected a column name at {_at(tokens, i)}")
        name = tokens[i][1]
        op = tokens[i + 1] if i + 1 < len(tokens) else None
        if op == ("word", "in"):
            lo = _value(tokens[i + 2] if i + 2 < len(tokens) else None, where, "in")
            if i + 3 >= len(tokens) or tokens[i + 3][0] != "range":
                raise BadInput(f"{where}: expected '..' after {name} in {tokens[i + 2][1]}")
            hi = _value(tokens[i + 4] if i + 4 < len(tokens) else None, where, "..")
            clauses += [Clause(name, ">=", lo), Clause(name, "<=", hi)]
            i += 5
        elif op is not None and op[0] == "op":
            clauses.append(Clause(name, op[1], _value(tokens[i + 2] if i + 2 < len(tokens) else None,
                                                       where, op[1])))
            i += 3
        else:
            raise BadInput(f"{where}: expected an operator (< <= > >= == != in) after {name!r}")
        if i == len(tokens):
            return Filter(text, tuple(clauses))
        if tokens[i] != ("word", "and"):
            raise BadInput(f"{where}: expected 'and' at {_at(tokens, i)}")
        i += 1


def check_filters(where: str | None, split: str | None, prefix: str = "--") -> None:
    """Parse both filters before any data is read, so that a bad one is refused first (prefix: how the
    options are named in messages, "--" on the command line, "" in Python)."""
    for option, text in (("where", where), ("split", split)):
        if text is not None:
            parse_filter(text, prefix + option)


def _at(tokens, i: int) -> str:
    return repr(tokens[i][1]) if i < len(tokens) else "the end"


class Columns:
    """The values a filter can name, looked up in a frame: its scalar columns and the model statistics."""

    def __init__(self, frame: pd.DataFrame, text: str):
        self.frame, self.text = frame, text
        self.stats = model_statistics(frame) if len(frame) else pd.DataFrame(index=frame.index)

    def names(self) -> list[str]:
        scalar = [c for c in self.frame.columns if not _is_list(self.frame[c])]
        return sorted(set(scalar) | set(self.stats.columns) | {p for p in STAGE_STATS if p != "d"})

    def test(self, clause: Clause) -> np.ndarray:
        values = self._values(clause.name)
        numeric = values.dtype.kind in "fiub"
        if numeric != isinstance(clause.value, float):
            kind = "a number" if numeric else "text"
            raise BadInput(f"filter {self.text!r}: {clause.name} is {kind}; {clause.value!r} is not")
        present = ~pd.isna(values)
        if values.ndim == 2:  # every stage
            return np.all(OPERATORS[clause.op](np.where(present, values, 0), clause.value) | ~present, axis=1)
        result = np.zeros(len(values), dtype=bool)
        result[present] = OPERATORS[clause.op](values[present], clause.value)
        return result

    def _values(self, name: str) -> np.ndarray:
        if name in self.stats.columns:
            return self.stats[name].to_numpy(dtype=float)
        if name in STAGE_STATS and name != "d":
            return stage_matrix(self.frame[STAGE_STATS[name]])
        if name in self.frame.columns and not _is_list(self.frame[name]):
            column = self.frame[name]
            return column.to_numpy(dtype=float) if pd.api.types.is_numeric_dtype(column) \
                else column.astype(object).to_numpy()
        raise BadInput(f"filter {self.text!r}: unknown column {name!r} (known: {', '.join(self.names())})")


def _is_list(column: pd.Series) -> bool:
    first = column.dropna()
    return len(first) > 0 and isinstance(first.iat[0], (list, np.ndarray))


def subpopulations(frame: pd.DataFrame, where: str | None = None, split: str | None = None) -> pd.DataFrame:
    """The models of frame that satisfy `where`; with `split`, each run becomes "RUN: EXPR" and
    "RUN: not EXPR", analysed like runs. Parts with no model are left out and named in
    frame.attrs["empty"]; BadInput when nothing is left."""
    where_f = parse_filter(where, "--where") if where is not None else None
    split_f = parse_filter(split, "--split") if split is not None else None
    if where_f is None and split_f is None:
        return frame
    keep = where_f.mask(frame) if where_f else np.ones(len(frame), dtype=bool)
    inside = split_f.mask(frame) if split_f else None
    parts, runs, empty = [], {}, []
    for name in run_names(frame):
        in_run = (frame["run"] == name).to_numpy() & keep
        sides = [(name, in_run)] if inside is None else [
            (f"{name}: {split}", in_run & inside), (f"{name}: not {split}", in_run & ~inside)]
        for label, rows in sides:
            if not frame.loc[rows, "err"].notna().any():
                empty.append(f"{label} ({int(rows.sum())} models, none trained)" if rows.any() else f"{label} (no model)")
                continue
            parts.append(frame[rows].assign(run=label))
            runs[label] = frame.attrs["runs"][name]
    if not parts:
        raise BadInput(f"no trained model satisfies the filter: {', '.join(empty)}")
    out = pd.concat(parts, ignore_index=True)
    out.attrs = {"runs": runs, "empty": empty, "where": where, "split": split}
    return out
