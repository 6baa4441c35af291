"""Sub-populations (--where / --split): the grammar, and statistics equal to those of the filtered frame."""
import json

import numpy as np
import pytest
from scipy import stats

from dsd.analysis.bootstrap import trends
from dsd.analysis.edf import edf_table
from dsd.analysis.filters import parse_filter, subpopulations
from dsd.analysis.load import load_runs
from dsd.errors import BadInput
from synthetic_runs import anynet_rows, dsd, write_run


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("filters")
    rows = anynet_rows(120, np.random.default_rng(5))
    statuses = ["done"] * 118 + ["untrained", "failed"]
    return write_run(root / "xa", rows, statuses=statuses)


@pytest.fixture(scope="module")
def frame(run):
    return load_runs([run])


def _reference(frame, keep):
    part = frame[keep].copy()
    part.attrs = frame.attrs
    return part


def test_where_equals_the_filtered_frame(frame):
    sub = subpopulations(frame, where="b1 <= 2 and flops >= 1M")
    b1 = np.array([b[0] for b in frame["bottleneck_ratios"]])
    keep = (b1 <= 2) & (frame["flops"].to_numpy() >= 1e6)
    ref = _reference(frame, keep)
    assert len(sub) == keep.sum()
    assert edf_table(sub).equals(edf_table(ref))
    assert trends(sub, ["d1", "w2"], samples=500).equals(trends(ref, ["d1", "w2"], samples=500))


def test_split_gives_two_runs_with_ks_of_the_parts(frame):
    sub = subpopulations(frame, split="d in 12..28")
    inside = frame["depth"].between(12, 28).to_numpy()
    table = edf_table(sub)
    assert list(table["run"]) == ["xa: d in 12..28", "xa: not d in 12..28"]
    e_in = frame.loc[inside, "err"].dropna().to_numpy()
    e_out = frame.loc[~inside, "err"].dropna().to_numpy()
    assert list(table["n"]) == [len(e_in), len(e_out)]
    ks = stats.ks_2samp(e_in, e_out)
    assert table["ks_d"].iat[1] == pytest.approx(ks.statistic)
    assert table["ks_p"].iat[1] == pytest.approx(ks.pvalue)


def test_d_is_total_depth_and_bare_stage_prefix_means_every_stage(frame):
    total = frame["depth"].to_numpy()
    assert (subpopulations(frame, where="d in 12..28")["depth"].between(12, 28)).all()
    assert len(subpopulations(frame, where="d in 12..28")) == ((total >= 12) & (total <= 28)).sum()
    every = frame["bottleneck_ratios"].map(lambda b: max(b) <= 2).to_numpy()
    assert len(subpopulations(frame, where="b <= 2")) == every.sum()


def test_words_and_strings_compare_text_columns(frame):
    assert len(subpopulations(frame, where="status == done")) == 118
    with pytest.raises(BadInput, match=r"no trained model satisfies the filter: xa \(2 models, none trained\)"):
        subpopulations(frame, where="status != 'done' and model_id >= 0")


@pytest.mark.parametrize("text, message", [
    ("b <=", "expected a value after '<='"),
    ("b 2", "expected an operator"),
    ("b <= 2 or g > 1", "expected 'and' at 'or'"),
    ("d in 4 9", "expected '..'"),
    ("", "empty filter"),
    ("b <= 2; import os", "unexpected ';'"),
    ("__import__('os') == 1", "unexpected '\\('"),
])
def test_bad_syntax_is_named(text, message):
    with pytest.raises(BadInput, match=message):
        parse_filter(text)


def test_unknown_column_and_type_mismatch_are_named(frame):
    with pytest.raises(BadInput, match="unknown column 'colour'"):
        subpopulations(frame, where="colour == red")
    with pytest.raises(BadInput, match="status is text"):
        subpopulations(frame, where="status > 3")
    with pytest.raises(BadInput, match="flops is a number"):
        subpopulations(frame, where="flops == big")


def test_quantity_suffixes():
    clause = parse_filter("flops >= 380M").clauses[0]
    assert clause.value == 380e6
    assert parse_filter("lr < 1.5e-2").clauses[0].value == pytest.approx(0.015)
    assert [c.value for c in parse_filter("w4 in 0.1K..2K").clauses] == [100.0, 2000.0]


def test_cli_split_and_empty_part(run):
    code, out, err = dsd("edf", run, "--split", "d1 <= 8", "--json")
    assert code == 0, err
    names = [r["run"] for r in json.loads(out)["runs"]]
    assert names == ["xa: d1 <= 8", "xa: not d1 <= 8"]
    code, out, err = dsd("edf", run, "--split", "d1 <= 100", "--json")
    assert code == 0, err
    assert "left out, nothing to analyse: xa: not d1 <= 100 (no model)" in err
    assert [r["run"] for r in json.loads(out)["runs"]] == ["xa: d1 <= 100"]


@pytest.mark.parametrize("command", ["edf", "trends", "fit-linear", "search-efficiency", "report", "export"])
def test_every_analysis_command_refuses_a_bad_filter_before_loading(tmp_path, command):
    extra = ["--out", tmp_path / "x.parquet"] if command == "export" else []
    code, _, err = dsd(command, tmp_path / "missing-run", "--where", "b <= ", *extra)
    assert code == 2
    assert err.strip().endswith("expected a value after '<='")
    code, _, err = dsd(command, tmp_path / "missing-run", "--split", "b <= 2 or b > 3", *extra)
    assert code == 2 and "expected 'and' at 'or'" in err


def test_old_run_folders_read_as_relu_and_quoted_text_is_kept(frame):
    assert (frame["activation"] == "relu").all()  # synthetic runs write no activation: as old files
    assert len(subpopulations(frame, where="activation == relu")) == len(frame)
    assert parse_filter('host == "n1..2"').clauses[0].value == "n1..2"
    assert [c.value for c in parse_filter("x in -5..-1").clauses] == [-5.0, -1.0]
