"""`dsd findings`: statements made only when the numbers support them, with their evidence."""
import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from dsd.analysis.findings import Evidence, edf_findings
from dsd.errors import BadInput
from synthetic_runs import anynet_rows, dsd, regnet_rows, write_run


def _frame(errors: dict[str, np.ndarray]) -> pd.DataFrame:
    """A minimal analysis frame: done models with errors, one run per key."""
    frame = pd.concat([pd.DataFrame({"run": name, "err": e, "status": "done"}) for name, e in errors.items()],
                      ignore_index=True)
    frame.attrs = {"runs": {name: {"path": name, "meta": {}} for name in errors}}
    return frame


def test_each_pair_is_tested_at_alpha_over_the_pairs():
    rng = np.random.default_rng(2)
    frame = _frame({name: rng.normal(25, 3, 30) for name in "abcd"})
    found = edf_findings(Evidence(frame, alpha=0.06))
    assert len(found) == 6 and all(f["evidence"]["level"] == pytest.approx(0.01) for f in found)


def test_planted_difference_is_stated_with_its_evidence():
    rng = np.random.default_rng(1)
    frame = _frame({"xa": rng.normal(25, 2, 80), "regnetx": rng.normal(22, 2, 80)})
    [found] = edf_findings(Evidence(frame))
    assert found["kind"] == "edf-order"
    ev = found["evidence"]
    assert (ev["better"], ev["worse"]) == ("regnetx", "xa")
    ks = stats.ks_2samp(frame["err"][:80], frame["err"][80:])
    assert ev["ks_d"] == pytest.approx(ks.statistic) and ev["ks_p"] == pytest.approx(ks.pvalue)
    assert ev["ks_p"] < 0.05 and ev["within_noise"] is None
    assert found["statement"].startswith("regnetx is better than xa")


@pytest.mark.parametrize("runs", [2, 3])
def test_one_distribution_is_called_different_in_at_most_alpha_of_200_studies(runs):
    claims = 0
    for seed in range(200):
        rng = np.random.default_rng(seed)
        frame = _frame({f"r{i}": rng.normal(25, 3, 40) for i in range(runs)})
        claims += any(f["kind"] == "edf-order" for f in edf_findings(Evidence(frame)))
    assert claims <= 0.05 * 200, claims  # alpha / pairs keeps the family-wise rate at alpha


def test_no_difference_is_said_as_such_and_edf_order_is_absent():
    rng = np.random.default_rng(7)
    frame = _frame({"a": rng.normal(25, 3, 50), "b": rng.normal(25, 3, 50)})
    found = edf_findings(Evidence(frame))
    assert [f["kind"] for f in found] == ["edf-same"]
    assert "do not differ detectably" in found[0]["statement"]


def test_bad_alpha_and_samples_are_refused():
    frame = _frame({"a": np.arange(5.0)})
    with pytest.raises(BadInput, match="--alpha"):
        Evidence(frame, alpha=1.5)
    with pytest.raises(BadInput, match="--samples"):
        Evidence(frame, samples=0)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """xa (best at d1 = 7) and a clearly better regnetx, with curves whose ranking settles late, and a
    copy run of xa whose seed noise (SD 2) is larger than the runs' difference of medians."""
    root = tmp_path_factory.mktemp("findings")
    rng = np.random.default_rng(3)
    rows = anynet_rows(80, rng)
    xa_err = np.array([20.0 + 1.5 * abs(r["depths"][0] - 7) + rng.normal(0, 0.7) for r in rows])
    curves = [np.concatenate([rng.uniform(30, 90, 3), [e + 3, e]]) for e in xa_err]
    xa = write_run(root / "xa", rows, errors=xa_err, curves=curves, epochs=5)
    rx = write_run(root / "regnetx", regnet_rows(80, np.random.default_rng(4)),
                   errors=rng.normal(xa_err.mean() - 0.8, 0.5, 80))
    code, _, err = dsd("reseed", xa, "--n", 10, "--repeats", 3, "--seed", 1)
    assert code == 0, err
    copies = root / "xa-reseed"
    _train_copies(copies, xa_err, rng)
    return xa, rx, copies


def _train_copies(copies, source_errors, rng):
    import pyarrow.parquet as pq

    from dsd import runfolder

    for row in pq.read_table(copies / runfolder.MODELS_FILE).to_pylist():
        err = float(source_errors[row["source_model_id"]] + rng.normal(0, 2.0))
        runfolder.write_result(copies, {"model_id": row["model_id"], "status": "done", "error": err, "epochs": 5,
                                        "dataset": "other", "error_curve": [err], "loss_curve": [1.0]})


def test_findings_json_names_every_kind_with_evidence(study):
    code, out, err = dsd("findings", *study, "--samples", 500, "--json")
    assert code == 0, err
    found = json.loads(out)["findings"]
    kinds = {f["kind"] for f in found}
    assert {"edf-order", "best-range", "fit", "epochs", "sample-size", "noise-floor"} <= kinds
    assert all(set(f) == {"kind", "statement", "evidence"} for f in found)
    [order] = [f for f in found if f["kind"] == "edf-order"]
    assert (order["evidence"]["better"], order["evidence"]["worse"]) == ("regnetx", "xa")
    [epochs] = [f for f in found if f["kind"] == "epochs" and f["evidence"]["run"] == "xa"]
    assert set(epochs["evidence"]["kendall"]) == {"1", "2", "3", "4", "5"}
    assert epochs["evidence"]["kendall"]["5"] == pytest.approx(1.0)
    ranges = [f["evidence"] for f in found if f["kind"] == "best-range" and f["evidence"]["run"] == "xa"]
    d1 = [r for r in ranges if r["stat"] == "d1"]
    assert d1 and d1[0]["lo"] <= 7 <= d1[0]["hi"]


def test_a_difference_smaller_than_the_noise_is_flagged(study):
    code, out, err = dsd("findings", *study, "--samples", 500, "--json")
    [order] = [f for f in json.loads(out)["findings"] if f["kind"] == "edf-order"]
    noise = [f for f in json.loads(out)["findings"] if f["kind"] == "noise-floor"]
    # the copies were not trained like xa (another data set): the originals do not join; SD ~ 2
    assert noise and 1.0 < noise[0]["evidence"]["seed_sd"] < 3.5
    diff = order["evidence"]["median_worse"] - order["evidence"]["median_better"]
    assert diff < noise[0]["evidence"]["seed_sd"]
    assert order["evidence"]["within_noise"] is True and "within the noise of training" in order["statement"]


def test_findings_text_and_bad_input(study, tmp_path):
    code, out, err = dsd("findings", study[0], "--samples", 500)
    assert code == 0, err
    assert out.startswith("1. [")
    code, _, err = dsd("findings", study[0], "--alpha", 2)
    assert code == 2 and err.strip() == "error: --alpha must be in (0, 1), got 2.0"
    code, _, err = dsd("findings", tmp_path / "nothing")
    assert code == 2 and "nothing" in err
