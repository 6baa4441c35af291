"""The analysis commands on partial runs, their outputs, and their answers to bad input."""
import json
from pathlib import Path
import subprocess
import sys

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from synthetic_runs import anynet_rows, dsd, regnet_rows, write_run

ROWS = 40


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two partial runs: untrained, failed and diverged models next to done ones."""
    root = tmp_path_factory.mktemp("cli")
    statuses = ["done"] * ROWS
    statuses[:6] = ["untrained", "failed", "diverged", "untrained", "diverged", "failed"]
    write_run(root / "runs" / "xa", anynet_rows(ROWS, np.random.default_rng(0)), statuses=statuses)
    write_run(root / "runs" / "regnetx", regnet_rows(ROWS, np.random.default_rng(1)), statuses=statuses[::-1])
    return root


def _snapshot(folder):
    return sorted((str(p.relative_to(folder)), p.stat().st_size, p.stat().st_mtime_ns)
                  for p in folder.rglob("*"))


def test_edf_json_on_partial_runs(runs):
    code, out, err = dsd("edf", runs / "runs/xa", runs / "runs/regnetx", "--json")
    assert code == 0, err
    table = json.loads(out)["runs"]
    assert [r["run"] for r in table] == ["xa", "regnetx"]
    assert (table[0]["done"], table[0]["diverged"], table[0]["failed"], table[0]["untrained"]) == (34, 2, 2, 2)
    assert table[0]["n"] == 36 and table[0]["ks_p"] is None and 0 <= table[1]["ks_p"] <= 1


def test_every_command_on_partial_runs(runs, tmp_path):
    a, b = runs / "runs/xa", runs / "runs/regnetx"
    for args in [("trends", a, b, "--samples", 300, "--json"), ("fit-linear", a, b, "--top", 4, "--json"),
                 ("search-efficiency", a, b, "--json"), ("edf", a, "--normalize", "flops", "--bins", 4, "--json")]:
        code, out, err = dsd(*args)
        assert code == 0, (args, err)
        assert json.loads(out)
    fits = pq.read_table(a / "fits.parquet").to_pandas()
    assert (fits["scope"] == "model").sum() == 4
    code, out, err = dsd("trends", a, "--stats", "d1,g2", "--samples", 500, "--json")
    assert {r["stat"] for r in json.loads(out)["trends"]} == {"d1", "g2"}


def test_figures_by_extension(runs, tmp_path):
    a, b = runs / "runs/xa", runs / "runs/regnetx"
    code, _, err = dsd("edf", a, b, "--plot")
    assert code == 0 and (a / "edf.png").read_bytes()[:4] == b"\x89PNG" and str(a / "edf.png") in err
    checks = [("edf", tmp_path / "e.svg", b"<?xml"), ("search-efficiency", tmp_path / "s.pdf", b"%PDF"),
              ("fit-linear", tmp_path / "f.png", b"\x89PNG"), ("trends", tmp_path / "t.png", b"\x89PNG")]
    for command, path, magic in checks:
        extra = ("--samples", 200, "--stats", "d1,w2,flops") if command == "trends" else ()
        code, _, err = dsd(command, a, b, "--out", path, *extra)
        assert code == 0, err
        assert path.read_bytes()[:len(magic)] == magic
    assert not (tmp_path / "t_across.png").exists()  # unrelated runs: no across figure (tests/test_series.py)


def test_no_runs_given_uses_every_run_under_runs(runs, monkeypatch):
    monkeypatch.chdir(runs)
    code, out, err = dsd("search-efficiency", "--json")
    assert code == 0, err
    assert {r["run"] for r in json.loads(out)["search_efficiency"]} == {"xa", "regnetx"}


def test_export_parquet_and_csv(runs, tmp_path):
    a, b = runs / "runs/xa", runs / "runs/regnetx"
    assert dsd("export", a, b, "--out", tmp_path / "all.parquet")[0] == 0
    frame = pq.read_table(tmp_path / "all.parquet").to_pandas()
    assert len(frame) == 2 * ROWS
    assert set(frame["status"]) == {"done", "failed", "diverged", "untrained"}
    assert list(frame.loc[0, "widths"]) == anynet_rows(1, np.random.default_rng(0))[0]["widths"]
    code, out, _ = dsd("export", a, "--out", tmp_path / "xa.csv", "--json")
    assert code == 0 and json.loads(out) == {"out": str(tmp_path / "xa.csv"), "models": ROWS}
    csv = pd.read_csv(tmp_path / "xa.csv")
    assert len(csv) == ROWS and json.loads(csv.loc[0, "depths"]) == list(frame.loc[0, "depths"])


def _make_bad(kind, folder):
    folder.mkdir()
    if kind == "not a run":
        (folder / "notes.txt").write_text("hello")
        return folder
    if kind == "missing":
        return folder / "nope"
    if kind == "empty run":
        write_run(folder / "r", [])
    elif kind == "corrupt models":
        write_run(folder / "r", anynet_rows(5, np.random.default_rng(0)))
        (folder / "r" / "models.parquet").write_bytes(b"PAR1 this is not parquet")
    elif kind == "corrupt result":
        write_run(folder / "r", anynet_rows(5, np.random.default_rng(0)))
        (folder / "r" / "results" / "3.parquet").write_bytes(b"garbage")
    elif kind == "nothing trained":
        write_run(folder / "r", anynet_rows(5, np.random.default_rng(0)), statuses=["untrained"] * 4 + ["failed"])
    return folder / "r"


@pytest.mark.parametrize("kind, message", [
    ("not a run", "not a run folder"), ("missing", "no such run folder"), ("empty run", "no models"),
    ("corrupt models", "not a readable Parquet file"), ("corrupt result", "not a readable Parquet file"),
    ("nothing trained", "no trained models")])
def test_bad_runs_exit_2_and_change_nothing(tmp_path, kind, message):
    run = _make_bad(kind, tmp_path / "case")
    before = _snapshot(tmp_path)
    commands = [("edf",), ("trends", "--samples", 50), ("fit-linear",), ("search-efficiency",), ("report",),
                ("edf", "--plot")]
    if kind != "nothing trained":  # export needs no trained model
        commands.append(("export", "--out", tmp_path / "x.csv"))
    for command in commands:
        code, out, err = dsd(command[0], run, *command[1:])
        assert code == 2, (command, err)
        assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert _snapshot(tmp_path) == before


@pytest.mark.parametrize("args, message", [
    (("edf", "--normalize", "depth"), "--normalize"), (("edf", "--bins", 0, "--normalize", "flops"), "--bins"),
    (("trends", "--stats", "d9"), "--stats"), (("trends", "--subsample", 2), "--subsample"),
    (("fit-linear", "--top", 0), "--top"), (("edf", "--out", "fig.txt"), "--out"),
    (("fit-linear", "--out", "fig.txt"), "--out"), (("trends", "--out", "fig.jpg"), "--out"),
    (("report", "--out", "r.pdf"), "--out"), (("export", "--out", "x.json"), "--out"),
    (("report", "--samples", 0), "--samples"), (("report", "--bins", 0), "--bins"),
    (("trends", "--stats", ""), "--stats: no statistic named"), (("trends", "--stats", " , "), "no statistic named"),
    (("edf", "--bins", 0), "--bins"), (("edf", "--bins", -3, "--normalize", "flops"), "--bins")])
def test_bad_options_exit_2_and_change_nothing(runs, args, message):
    before = _snapshot(runs)
    code, out, err = dsd(args[0], runs / "runs/xa", *args[1:])
    assert code == 2 and message in err and out == "" and len(err.strip().splitlines()) == 1, err
    assert _snapshot(runs) == before


@pytest.mark.parametrize("command, name", [("report", "d.html"), ("export", "d.csv"), ("edf", "d.png")])
def test_out_that_cannot_be_written_exits_2_and_changes_nothing(runs, tmp_path, command, name):
    """A folder named like the file, or a path under a plain file: refused before any work."""
    (tmp_path / "figs" / name).mkdir(parents=True)
    (tmp_path / "notes.txt").write_text("a file, not a folder")
    before = _snapshot(runs), _snapshot(tmp_path)
    for out, message in [(tmp_path / "figs" / name, "is a folder"), (tmp_path / "notes.txt" / name, "cannot write")]:
        code, stdout, err = dsd(command, runs / "runs/xa", "--out", out)
        assert code == 2 and f"--out {out}: {message}" in err and stdout == "", err
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert (_snapshot(runs), _snapshot(tmp_path)) == before
    if Path("/proc/self").is_dir():  # a place that only the write itself finds unwritable (as root too)
        out = Path("/proc/dsd-none") / name
        code, stdout, err = dsd(command, runs / "runs/xa", "--out", out)
        assert code == 2 and str(out) in err and "cannot write" in err and len(err.strip().splitlines()) == 1, err


def test_json_names_the_figure(runs, tmp_path):
    a, b = runs / "runs/xa", runs / "runs/regnetx"
    for command, key, extra in [("edf", "runs", ()), ("search-efficiency", "search_efficiency", ()),
                                ("fit-linear", "fits", ("--top", 3)),
                                ("trends", "trends", ("--samples", 100, "--stats", "d1"))]:
        path = tmp_path / f"{command}.svg"
        code, out, err = dsd(command, a, b, "--out", path, "--json", *extra)
        assert code == 0, err
        result = json.loads(out)
        assert result["figure"] == str(path) and path.exists() and result[key]
        code, out, err = dsd(command, a, "--json", *extra)
        assert code == 0 and json.loads(out)["figure"] is None, err
    assert result["figure_across"] is None  # unrelated runs: no across figure


def test_entry_point_exit_code_and_help(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "dsd", "edf", str(tmp_path)], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("error:") and "not a run folder" in proc.stderr
    for command in ["edf", "trends", "fit-linear", "search-efficiency", "report", "export"]:
        code, out, err = dsd(command, "--help")
        assert code == 0 and "Example: dsd " + command in out


def test_single_trained_model(tmp_path):
    """Too early for trends, but the other commands and the report still answer."""
    run = write_run(tmp_path / "one", anynet_rows(3, np.random.default_rng(0)),
                    statuses=["done", "untrained", "failed"])
    code, _, err = dsd("trends", run)
    assert code == 2 and "no statistic varies" in err
    for option in ["--samples", "--bins"]:  # bad input even where the data leaves the option unused
        code, _, err = dsd("report", run, option, 0)
        assert code == 2 and option in err, err
    assert not (run / "report.html").exists()
    for command in ["edf", "search-efficiency", "fit-linear", "report"]:
        code, _, err = dsd(command, run)
        assert code == 0, (command, err)
    assert "No trends" in (run / "report.html").read_text()


def test_fit_linear_top_and_all_are_exclusive(tmp_path):
    from tests.helpers import dsd

    proc = dsd("fit-linear", tmp_path, "--top", "3", "--all")
    assert proc.returncode == 2 and "--top N or --all" in proc.stderr
