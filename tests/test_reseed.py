"""Copy runs (dsd.runfolder.copies) and `dsd reseed`: numbering, provenance, idempotence, refusals."""
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import yaml

from dsd import runfolder as store
from dsd.analysis.load import load_runs
from dsd.analysis.noise import noise_floor
from dsd.errors import BadInput
from synthetic_runs import anynet_rows, dsd, write_run

STATUSES = ["done"] * 8 + ["failed", "untrained", "diverged", "done"]  # 9 done: ids 0..7 and 11


def snapshot(folder: Path) -> dict:
    return {p.relative_to(folder): p.read_bytes() for p in sorted(Path(folder).rglob("*")) if p.is_file()}


def copy_result(run: Path, model_id: int, err: float, **settings) -> None:
    """A done result as synthetic_runs.write_run writes them (same training settings unless overridden)."""
    store.write_result(run, {"model_id": model_id, "status": "done", "error": err, "best_error": err,
                             "epochs": 3, "dataset": "synthetic", "batch_size": 128, "lr": 0.1, "wd": 5e-4,
                             "train_seed": 1, **settings})


@pytest.fixture
def source(tmp_path):
    return write_run(tmp_path / "runs" / "xa", anynet_rows(12, np.random.default_rng(0)), statuses=STATUSES)


def test_copies_get_new_ids_provenance_and_every_other_column(source, tmp_path):
    out = tmp_path / "runs" / "c"
    made = store.copy_models(source, [7, 2], 3, out, {"made_by": "test"})
    assert (made.model_ids, made.copy_ids, made.unchanged) == ((7, 2), tuple(range(12, 18)), False)
    originals = {r["model_id"]: r for r in store.read_models(source).to_pylist()}
    copies = store.read_models(out).to_pylist()
    # a copy numbered like a source model would train with that model's seed: ids never overlap
    assert {r["model_id"] for r in copies}.isdisjoint(originals)
    assert [r["source_model_id"] for r in copies] == [7, 7, 7, 2, 2, 2]
    assert {r["source_run"] for r in copies} == {"../xa"}
    assert store.source_folder(out, "../xa") == source
    skip = {"model_id", "source_run", "source_model_id"}
    for r in copies:
        assert {k: v for k, v in r.items() if k not in skip} == \
               {k: v for k, v in originals[r["source_model_id"]].items() if k not in skip}
    meta, source_meta = store.read_meta(out), store.read_meta(source)
    assert (meta["name"], meta["n"]) == ("c", 6)
    assert meta["copies"] == {"source": "../xa", "models": 2, "repeats": 3, "made_by": "test"}
    assert {k: v for k, v in meta.items() if k not in ("name", "n", "copies")} == \
           {k: v for k, v in source_meta.items() if k not in ("name", "n")}
    assert not (out / store.RESULTS_DIR).exists()
    # a copy of a copy: numbered after the copies, pointing at them
    again = store.copy_models(out, [12], 2, tmp_path / "runs" / "cc")
    assert again.copy_ids == (18, 19)
    assert {r["source_run"] for r in store.read_models(again.run).to_pylist()} == {"../c"}


def test_the_same_copies_again_change_nothing_and_keep_results(source, tmp_path):
    out = tmp_path / "c"
    store.copy_models(source, [1, 3], 2, out, {"made_by": "test"})
    copy_result(out, 12, 21.5)
    before = snapshot(out)
    made = store.copy_models(source, [1, 3], 2, out, {"made_by": "test"})
    assert made.unchanged and made.copy_ids == (12, 13, 14, 15) and made.model_ids == (1, 3)
    assert snapshot(out) == before


@pytest.mark.parametrize("ids, repeats, reason, message", [
    ([1, 4], 2, {"made_by": "test"}, "already holds copies of other models"),
    ([1, 3], 3, {"made_by": "test"}, "holds another run (differs in: copies.repeats)"),
    ([1, 3], 2, {"made_by": "other"}, "holds another run (differs in: copies.made_by)"),
    ([1, 99], 2, {}, "no model with id 99"),
    ([1, 1], 2, {}, "model ids given twice: 1"),
    ([], 2, {}, "no models to copy"),
    ([1], 0, {}, "--repeats must be >= 1, got 0"),
])
def test_refusals_write_nothing(source, tmp_path, ids, repeats, reason, message):
    out = tmp_path / "c"
    store.copy_models(source, [1, 3], 2, out, {"made_by": "test"})
    copy_result(out, 12, 21.5)
    before, source_before = snapshot(out), snapshot(source)
    with pytest.raises(BadInput, match=message.replace("(", r"\(").replace(")", r"\)")):
        store.copy_models(source, ids, repeats, out, reason)
    assert snapshot(out) == before and snapshot(source) == source_before
    fresh = tmp_path / "fresh"
    if "differs" not in message and "other models" not in message:
        with pytest.raises(BadInput):
            store.copy_models(source, ids, repeats, fresh, reason)
        assert not fresh.exists()


def test_bad_out_folders_are_refused(source, tmp_path):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "notes.txt").write_text("mine")
    (tmp_path / "file").write_text("mine")
    (tmp_path / "empty").mkdir()
    before = snapshot(tmp_path)
    for out, message in ((tmp_path / "full", "exists and is not a run folder"),
                         (tmp_path / "file", "exists and is not a run folder"),
                         (source, "inside the source run"), (source / "sub", "inside the source run"),
                         (source.parent / "xa" / ".." / "xa", "inside the source run")):
        with pytest.raises(BadInput, match=message):
            store.copy_models(source, [1], 2, out)
    assert snapshot(tmp_path) == before
    assert store.copy_models(source, [1], 2, tmp_path / "empty").copy_ids == (12, 13)  # an empty folder is fine


def test_old_models_files_without_provenance_still_load(source, tmp_path):
    old = pa.schema([f for f in store.MODEL_SCHEMA if f.name not in store.files.MODEL_COLUMNS_ADDED])
    table = store.read_models(source).select(old.names).cast(old)
    store.write_parquet(table, source / store.MODELS_FILE)
    assert store.read_models(source).column("source_model_id").null_count == 12
    frame = load_runs([source])
    assert frame["source_model_id"].isna().all() and frame["source_run"].isna().all()
    assert noise_floor(frame).empty
    assert store.copy_models(source, [0], 2, tmp_path / "c").copy_ids == (12, 13)
    assert store.read_models(tmp_path / "c").column("source_model_id").to_pylist() == [0, 0]


def test_sampled_models_have_no_source(tmp_path):
    from dsd.api import sample_run

    run = sample_run("RegNetX", 3, regime="fashion", flops=":800K", out=tmp_path / "r").run
    models = store.read_models(run)
    assert models.column("source_run").null_count == models.column("source_model_id").null_count == 3


def test_reseed_end_to_end(source, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = dsd("reseed", "runs/xa", "--n", "4", "--repeats", "3", "--json")
    assert code == 0, err
    made = json.loads(out)
    assert made["run"] == "runs/xa-reseed" and made["source"] == "runs/xa" and not made["unchanged"]
    assert set(made["models"]) <= {0, 1, 2, 3, 4, 5, 6, 7, 11} and len(set(made["models"])) == 4
    assert made["copy_ids"] == list(range(12, 24))
    train = "dsd train runs/xa-reseed --dataset synthetic --epochs 3 --batch-size 128 --lr 0.1 --wd 0.0005"
    assert made["train"] == train and f"next: {train}" in err
    assert "copied 4 trained models of runs/xa 3 times each -> runs/xa-reseed (12 models, ids 12..23)" in err
    meta = yaml.safe_load(Path("runs/xa-reseed/run.yaml").read_text())
    assert meta["copies"] == {"source": "../xa", "models": 4, "repeats": 3, "made_by": "dsd reseed", "seed": 0}
    # the copies train like any run; their results survive the same command again
    for i, copy_id in enumerate(made["copy_ids"]):
        copy_result(Path("runs/xa-reseed"), copy_id, 20.0 + i % 3)
    before = snapshot(Path("runs/xa-reseed"))
    code, _, err = dsd("reseed", "runs/xa", "--n", "4", "--repeats", "3")
    assert code == 0 and "already made with these arguments; nothing to do" in err
    assert snapshot(Path("runs/xa-reseed")) == before
    row = noise_floor(load_runs(["runs/xa", "runs/xa-reseed"])).iloc[0]
    assert (row["run"], row["source"], row["models"], row["repeats"], row["originals"]) == \
           ("xa-reseed", "xa", 4, 3, 4)


def test_reseed_picks_by_seed_among_done_models(source, tmp_path):
    picks = {seed: store.reseed(source, 5, 1, seed=seed, out=tmp_path / f"s{seed}").model_ids for seed in (0, 0, 1)}
    assert all(set(p) <= {0, 1, 2, 3, 4, 5, 6, 7, 11} for p in picks.values())
    assert picks[0] == store.reseed(source, 5, 1, seed=0, out=tmp_path / "again").model_ids
    assert store.reseed(source, 9, 1, out=tmp_path / "all").model_ids == (0, 1, 2, 3, 4, 5, 6, 7, 11)
    assert store.beside(Path("runs/xa"), "reseed") == Path("runs/xa-reseed")


@pytest.mark.parametrize("args, message", [
    (["runs/xa", "--n", "40"], "error: runs/xa has 9 trained models; --n 40 asks for more"),
    (["runs/xa", "--n", "0"], "error: --n must be >= 1, got 0"),
    (["runs/xa", "--repeats", "0"], "error: --repeats must be >= 1, got 0"),
    (["runs/none"], "error: runs/none: no such run folder"),
    (["runs", "--n", "2"], "error: runs: not a run folder"),
    (["runs/xa", "--seed", "-1"], "error: --seed must be >= 0, got -1"),
    (["runs/xa", "--n", "2", "--out", "runs/xa/copies"], "error: --out runs/xa/copies: inside the source run runs/xa"),
    (["runs/xa", "--n", "2", "--out", "notes.txt"], "error: notes.txt exists and is not a run folder"),
])
def test_reseed_refusals_exit_2_with_one_line_and_write_nothing(source, tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    Path("notes.txt").write_text("mine")
    before = snapshot(tmp_path)
    code, out, err = dsd("reseed", *args)
    assert (code, out) == (2, "") and err.startswith(message) and err.count("\n") == 1, err
    assert snapshot(tmp_path) == before and not Path("runs/xa-reseed").exists()


def test_reseed_with_other_arguments_is_refused_and_keeps_the_copies(source, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert dsd("reseed", "runs/xa", "--n", "2")[0] == 0
    copy_result(Path("runs/xa-reseed"), 12, 20.0)
    before = snapshot(tmp_path)
    code, _, err = dsd("reseed", "runs/xa", "--n", "2", "--seed", "1")
    assert code == 2 and "runs/xa-reseed holds another run (differs in: copies.seed)" in err
    code, _, err = dsd("reseed", "runs/xa", "--n", "3")
    assert code == 2 and "differs in: copies.models" in err
    assert snapshot(tmp_path) == before
