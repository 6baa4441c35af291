"""`dsd spaces`, `dsd sample`, `dsd describe` as a user runs them, bad input included."""
import json

import pyarrow.parquet as pq
import pytest
import yaml

from dsd.runfolder import MODEL_SCHEMA
from tests.helpers import REPO, dsd


def snapshot(folder):
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_spaces_lists_spaces_and_regimes():
    out = json.loads(dsd("spaces", "--json", check=True).stdout)
    names = [s["name"] for s in out["spaces"]]
    assert names == sorted(["AnyNetXA", "AnyNetXB", "AnyNetXC", "AnyNetXD", "AnyNetXE", "RegNetX", "RegNetY"])
    dims = {s["name"]: s["free_dims"] for s in out["spaces"]}
    assert dims == {"AnyNetXA": 16, "AnyNetXB": 13, "AnyNetXC": 10, "AnyNetXD": 10, "AnyNetXE": 10,
                    "RegNetX": 6, "RegNetY": 6}
    assert f"{[s for s in out['spaces'] if s['name'] == 'AnyNetXA'][0]['size']:.1e}" == "1.8e+18"
    assert {r["name"] for r in out["regimes"]} == {"imagenet", "cifar", "fashion"}


def test_sample_writes_a_run_folder_and_is_idempotent(tmp_path):
    out = tmp_path / "runs" / "xc"
    proc = dsd("sample", "--space", "AnyNetXC", "--n", "20", "--out", out, check=True)
    assert "sampled 20 models" in proc.stderr and proc.stdout == ""
    table = pq.read_table(out / "models.parquet")
    assert table.schema.names == MODEL_SCHEMA.names and table.num_rows == 20
    meta = yaml.safe_load((out / "run.yaml").read_text())
    assert (meta["space"], meta["name"], meta["seed"], meta["n"]) == ("AnyNetXC", "xc", 0, 20)
    before = snapshot(out)
    assert dsd("sample", "--space", "AnyNetXC", "--n", "20", "--out", out).returncode == 0
    assert snapshot(out) == before
    # growing the run keeps the first models (prefix-stable)
    dsd("sample", "--space", "AnyNetXC", "--n", "30", "--out", out, check=True)
    grown = pq.read_table(out / "models.parquet").to_pylist()
    assert grown[:20] == table.to_pylist() and len(grown) == 30


def test_default_out_is_runs_short_name(tmp_path):
    dsd("sample", "--space", "RegNetX", "--regime", "fashion", "--n", "5", cwd=tmp_path, check=True)
    assert (tmp_path / "runs" / "regnetx" / "models.parquet").is_file()
    (tmp_path / "mine.yaml").write_text("name: My RegNet/2\nextends: RegNetX\n")  # no short: from the name
    dsd("sample", "--space", "mine.yaml", "--regime", "fashion", "--n", "5", cwd=tmp_path, check=True)
    assert (tmp_path / "runs" / "my-regnet-2" / "models.parquet").is_file()


def test_example_user_space_works_like_a_builtin(tmp_path):
    space = REPO / "spaces" / "examples" / "regnet_se_cifar.yaml"
    out = tmp_path / "se"
    proc = dsd("sample", "--space", space, "--n", "10", "--out", out, "--json", check=True)
    assert json.loads(proc.stdout)["n"] == 10
    rows = pq.read_table(out / "models.parquet").to_pylist()
    for r in rows:
        assert len(r["depths"]) == 2 and 6 <= r["depth"] <= 16 and r["block"] == "Y"
        assert (r["stem"], r["stem_width"], r["resolution"], r["num_classes"]) == ("cifar", 16, 32, 10)
        assert 120e6 <= r["flops"] <= 130e6 and r["params"] <= 2e6 and r["acts"] <= 1e6
    describe = json.loads(dsd("describe", out, "--id", "3", "--json", check=True).stdout)
    assert describe["flops"] == rows[3]["flops"] and describe["widths"] == rows[3]["widths"]


def test_flops_override_with_units(tmp_path):
    out = tmp_path / "r"
    dsd("sample", "--space", "AnyNetXA", "--n", "10", "--flops", "1.5G:", "--params", ":20M", "--out", out, check=True)
    rows = pq.read_table(out / "models.parquet").to_pylist()
    assert all(r["flops"] >= 1.5e9 and r["params"] <= 20e6 for r in rows)


BAD_SPACES = {
    "yaml": ("name: Bad\nnetwork: {stem: simple\nparameters: {}\n", "line"),
    "unknown_key": ("name: Bad\nextends: AnyNetXA\ncolour: blue\n", "unknown key 'colour'"),
    "low_high": ("name: Bad\nextends: AnyNetXA\nparameters:\n  depth: {low: 9, high: 3}\n", "low 9 is above high 3"),
    "log_nonpositive": ("name: Bad\nextends: AnyNetXA\nparameters:\n  width: {low: 0}\n", "log_uniform needs low > 0"),
    "unsatisfiable": ("name: Bad\nextends: AnyNetXA\nparameters:\n  width: {low: 8, high: 16}\n", "found only 0 of 5 models"),
    "short_escapes": ("name: Bad\nshort: ../../etc\nextends: AnyNetXA\n", "bad.yaml: short '../../etc' is not a plain"),
    "short_hidden": ("name: Bad\nshort: .bad\nextends: AnyNetXA\n", "short '.bad' is not a plain folder name"),
    "negative_depth": ("name: Bad\nextends: AnyNetXA\nparameters:\n  depth: {distribution: uniform, low: -5, high: 16}\n",
                       "bad.yaml: parameter 'depth': low must be >= 1, got -5"),
    "zero_group_width": ("name: Bad\nextends: AnyNetXA\nparameters:\n  group_width: {values: [0, 8]}\n",
                         "parameter 'group_width': values must be >= 1, got 0"),
    "wm_not_above_1": ("name: Bad\nextends: RegNetX\nparameters:\n  wm: {distribution: uniform, low: 1, high: 3}\n",
                       "parameter 'wm': low must be > 1, got 1"),
    "negative_wa": ("name: Bad\nextends: RegNetX\nparameters:\n  wa: {distribution: uniform, low: -8, high: 256}\n",
                    "parameter 'wa': low must be >= 0, got -8"),
    "zero_w0": ("name: Bad\nextends: RegNetX\nparameters:\n  w0: {distribution: uniform, low: 0, high: 248, quantum: 8}\n",
                "parameter 'w0': low must be > 0, got 0"),
    "complexity_range": ("name: Bad\nextends: AnyNetXA\ncomplexity: {flops: '9G:1M'}\n",
                         "bad.yaml: complexity: flops 9G:1M: low 9G is above high 1M"),
    "extends_unknown": ("name: Bad\nextends: NoSuchParent\n", "bad.yaml: extends: unknown space 'NoSuchParent'"),
    "extends_missing_file": ("name: Bad\nextends: parent.yaml\n", "bad.yaml: extends: space file parent.yaml does not exist"),
    "extends_itself": ("name: Bad\nextends: bad.yaml\n", "`extends` makes a cycle: bad.yaml -> bad.yaml"),
}


@pytest.mark.parametrize("case", list(BAD_SPACES))
def test_bad_space_files_exit_2_with_one_line_and_write_nothing(tmp_path, case):
    text, expected = BAD_SPACES[case]
    f = tmp_path / "bad.yaml"
    f.write_text(text)
    proc = dsd("sample", "--space", f, "--n", "5", "--out", tmp_path / "out")
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and expected in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists()


def test_an_extends_cycle_is_named_as_one(tmp_path):
    (tmp_path / "a.yaml").write_text("name: A\nextends: b.yaml\n")
    (tmp_path / "b.yaml").write_text("name: B\nextends: a.yaml\n")
    proc = dsd("sample", "--space", tmp_path / "a.yaml", "--n", "5", "--out", tmp_path / "out")
    assert proc.returncode == 2 and "makes a cycle: a.yaml -> b.yaml -> a.yaml" in proc.stderr, proc.stderr


def test_a_short_name_cannot_lead_the_default_run_folder_out_of_runs(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    (work / "bad.yaml").write_text("name: Bad\nshort: ../../escaped\nextends: AnyNetXA\n")
    proc = dsd("sample", "--space", "bad.yaml", "--n", "2", cwd=work)
    assert proc.returncode == 2 and "bad.yaml: short '../../escaped'" in proc.stderr, proc.stderr
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["bad.yaml", "work"]


def test_yaml_error_names_its_line(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("name: Bad\nextends: AnyNetXA\nparameters:\n  depth: [1, 2\n")
    proc = dsd("sample", "--space", f, "--n", "5", "--out", tmp_path / "out")
    assert proc.returncode == 2 and "line 5" in proc.stderr


@pytest.mark.parametrize("args,expected", [
    (["--space", "AnyNetXZ", "--n", "5"], "known: AnyNetXA, AnyNetXB"),
    (["--space", "nosuch.yaml", "--n", "5"], "space file nosuch.yaml does not exist"),
    (["--space", "AnyNetXA", "--n", "0"], "--n must be positive"),
    (["--space", "AnyNetXA", "--n", "-3"], "--n must be positive"),
    (["--space", "AnyNetXA", "--n", "5", "--regime", "mnist"], "unknown regime"),
    (["--space", "AnyNetXA", "--n", "5", "--flops", "400M:300M"], "above high"),
    (["--space", "AnyNetXA", "--n", "5", "--flops", "lots"], "not a quantity"),
    (["--space", "AnyNetXA", "--n", "5", "--flops", "1:2"], "found only 0 of 5"),
])
def test_bad_arguments(tmp_path, args, expected):
    proc = dsd("sample", *args, "--out", tmp_path / "out")
    assert proc.returncode == 2 and expected in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_existing_run_with_other_arguments_is_refused_unless_force(tmp_path):
    out = tmp_path / "xa"
    dsd("sample", "--space", "AnyNetXA", "--n", "10", "--out", out, check=True)
    (out / "results").mkdir()
    (out / "results" / "0.parquet").write_bytes(b"pretend result")
    before = snapshot(out)
    proc = dsd("sample", "--space", "AnyNetXA", "--n", "10", "--seed", "1", "--out", out)
    assert proc.returncode == 2 and "other arguments" in proc.stderr and "seed" in proc.stderr
    assert snapshot(out) == before
    dsd("sample", "--space", "AnyNetXA", "--n", "10", "--seed", "1", "--out", out, "--force", check=True)
    assert yaml.safe_load((out / "run.yaml").read_text())["seed"] == 1
    assert not (out / "results").exists()


def test_resampling_over_a_corrupt_models_file_names_it(tmp_path):
    out = tmp_path / "xa"
    dsd("sample", "--space", "AnyNetXA", "--n", "5", "--out", out, check=True)
    (out / "models.parquet").write_text("garbage\n")
    before = snapshot(out)
    proc = dsd("sample", "--space", "AnyNetXA", "--n", "5", "--out", out)
    assert proc.returncode == 2 and "models.parquet: not a readable Parquet file" in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and snapshot(out) == before


REGNETX_200MF = ["--depth", "13", "--w0", "24", "--wa", "36.44", "--wm", "2.49", "--group-width", "8"]


@pytest.mark.parametrize("option,value,expected", [
    ("--resolution", "0", "--resolution must be >= 1, got 0"),
    ("--classes", "0", "--classes must be >= 1, got 0"),
    ("--in-channels", "-1", "--in-channels must be >= 1, got -1"),
    ("--stem-width", "0", "--stem-width must be >= 1, got 0"),
    ("--se-ratio", "-0.5", "--se-ratio must be in [0, 1), got -0.5"),
    ("--se-ratio", "1", "--se-ratio must be in [0, 1), got 1"),
    ("--group-width", "0", "--group-width must be >= 1, got 0"),
    ("--depth", "0", "--depth must be >= 1, got 0"),
    ("--w0", "0", "--w0 must be > 0, got 0"),
    ("--wa", "-1", "--wa must be >= 0, got -1"),
    ("--wm", "1", "--wm must be > 1, got 1"),
    ("--bottleneck-ratio", "0", "--bottleneck-ratio must be > 0, got 0"),
])
def test_describe_refuses_impossible_values_by_option(option, value, expected):
    proc = dsd("describe", *REGNETX_200MF, option, value)
    assert proc.returncode == 2 and expected in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_describe_bad_input(tmp_path):
    proc = dsd("describe", "--depths", "1,2", "--widths", "8")
    assert proc.returncode == 2 and "widths has 1 entries" in proc.stderr
    proc = dsd("describe", tmp_path, "--id", "0")
    assert proc.returncode == 2 and "not a run folder" in proc.stderr


def test_sampling_commands_do_not_import_torch(tmp_path):
    import subprocess
    import sys

    code = ("import sys; from dsd.cli import main; sys.argv = ['dsd', 'sample', '--space', 'AnyNetXA', "
            f"'--n', '3', '--out', {str(tmp_path / 'x')!r}]\ntry:\n    main()\nexcept SystemExit: pass\n"
            "assert 'torch' not in sys.modules, 'torch was imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("args,expected", [
    (["sample"], "Missing option '--space'"),
    (["sample", "--space", "AnyNetXA", "--n", "many"], "Invalid value for '--n'"),
    (["no-such-command"], "No such command"),
])
def test_usage_errors_are_one_line_with_exit_2(args, expected):
    proc = dsd(*args)
    assert proc.returncode == 2 and expected in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_bare_dsd_prints_help():
    proc = dsd()
    assert proc.returncode == 0 and "sample" in proc.stdout and "report" in proc.stdout


def test_force_with_the_same_arguments_keeps_results(tmp_path):
    out = tmp_path / "xa"
    dsd("sample", "--space", "AnyNetXA", "--n", "5", "--out", out, check=True)
    (out / "results").mkdir()
    (out / "results" / "0.parquet").write_bytes(b"pretend result")
    dsd("sample", "--space", "AnyNetXA", "--n", "5", "--out", out, "--force", check=True)
    assert (out / "results" / "0.parquet").read_bytes() == b"pretend result"


def test_negative_seed_is_bad_input(tmp_path):
    proc = dsd("sample", "--space", "AnyNetXA", "--n", "5", "--seed", "-1", "--out", tmp_path / "o")
    assert proc.returncode == 2 and "--seed" in proc.stderr and not (tmp_path / "o").exists()


def test_a_space_keeps_its_own_stem_only_under_its_own_regime():
    from dsd.design.regimes import REGIMES
    from dsd.design.sampler import space_network as network_for
    from dsd.design.spaces import load_space

    space = load_space(REPO / "spaces" / "examples" / "regnet_se_cifar.yaml")
    assert (network_for(space, REGIMES["cifar"]).stem, network_for(space, REGIMES["cifar"]).strides) == ("cifar", (2, 2))
    assert network_for(space, REGIMES["fashion"]).stem == "simple"
    assert network_for(space, REGIMES["fashion"]).strides == (1, 2)


@pytest.mark.parametrize("network,expected", [
    ("{stages: 4, strides: 2}", "strides must be 4 positive integers"),
    ("{stages: 0}", "stages must be an integer"),
    ("{stages: 4, block: Z}", "block must be one of"),
])
def test_bad_network_fields(tmp_path, network, expected):
    f = tmp_path / "bad.yaml"
    f.write_text(f"name: Bad\nextends: AnyNetXA\nnetwork: {network}\n")
    proc = dsd("sample", "--space", f, "--n", "5", "--out", tmp_path / "out")
    assert proc.returncode == 2 and expected in proc.stderr, proc.stderr


def test_resampling_with_another_band_names_the_regime_field(tmp_path):
    out = tmp_path / "xa"
    dsd("sample", "--space", "AnyNetXA", "--n", "5", "--out", out, check=True)
    proc = dsd("sample", "--space", "AnyNetXA", "--n", "5", "--flops", "300M:400M", "--out", out)
    assert proc.returncode == 2 and "(differs in: regime.flops)" in proc.stderr, proc.stderr
