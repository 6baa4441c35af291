"""Findings: what a study's numbers support, each stated with its evidence and the threshold it passed
(docs/method.md section 5.4).

A statement is made only when its test passes: two runs' EDFs are called different only when the KS
p-value is below alpha divided by the number of pairs of runs (so runs of one distribution are called
different in at most alpha of studies), a best range only when its bootstrap interval is
narrow, and a difference of medians smaller than the seed-to-seed spread of training is said to be
within the noise. Copy runs (`dsd reseed`) measure the noise and are not compared as spaces.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from itertools import combinations

import numpy as np
import pandas as pd
from scipy import stats

from dsd.analysis.load import run_meta, run_names, scored
from dsd.analysis.noise import within_noise
from dsd.errors import BadInput

ALPHA = 0.05
NARROW = 0.25  # a best range is stated when its interval covers at most this share of the observed range
STABLE_TAU = 0.8  # rankings agree "closely" when the lower bound of Kendall's tau is at least this
POWER = 0.8  # n models "suffice" to separate two runs when KS rejects in this share of subsamples


@dataclass
class Evidence:
    """The numbers of a study, each computed once on first use and shared by the report and the findings."""

    frame: pd.DataFrame
    samples: int = 10_000
    seed: int = 0
    alpha: float = ALPHA

    def __post_init__(self):
        from dsd.analysis.bootstrap import check_settings

        check_settings(self.samples)
        check_alpha(self.alpha)

    @cached_property
    def spaces(self) -> list[str]:
        """The runs compared as populations, samples of a space: not copy runs (`dsd reseed`, `dsd
        promote`) nor zoo runs, whose models were chosen and repeated, not drawn."""
        return [name for name in run_names(self.frame)
                if "copies" not in run_meta(self.frame, name) and run_meta(self.frame, name).get("space") != "zoo"]

    @cached_property
    def models(self) -> pd.DataFrame:
        return scored(self.frame)

    @cached_property
    def errors(self) -> dict[str, np.ndarray]:
        """The error of each scored model, per compared run."""
        return {name: self.models.loc[self.models["run"] == name, "err"].to_numpy() for name in self.spaces}

    @cached_property
    def pair_tests(self) -> dict[tuple[str, str], tuple[float, float]]:
        """(KS D, p) of every pair of compared runs, on all their models (scipy's ks_2samp)."""
        tests = {(a, b): stats.ks_2samp(self.errors[a], self.errors[b]) for a, b in combinations(self.spaces, 2)}
        return {pair: (float(t.statistic), float(t.pvalue)) for pair, t in tests.items()}

    @cached_property
    def trends(self) -> pd.DataFrame:
        from dsd.analysis.bootstrap import trends

        return trends(self.frame, samples=self.samples, seed=self.seed)

    @cached_property
    def fits(self) -> pd.DataFrame:
        from dsd.analysis.fit import fit_runs

        return fit_runs(self.frame, top=20)

    @cached_property
    def agreement(self) -> pd.DataFrame:
        from dsd.analysis.epochs import rank_agreement

        return rank_agreement(self.frame, seed=self.seed)

    @cached_property
    def ks_sizes(self) -> pd.DataFrame:
        from dsd.analysis.samplesize import ks_by_size

        return ks_by_size(self.frame, pairs=list(combinations(self.spaces, 2)), seed=self.seed,
                          alpha=pair_alpha(self))

    @cached_property
    def widths(self) -> pd.DataFrame:
        from dsd.analysis.samplesize import width_by_size

        return width_by_size(self.frame, seed=self.seed)

    @cached_property
    def noise(self) -> pd.DataFrame:
        from dsd.analysis.noise import noise_floor

        return noise_floor(self.frame)


def check_alpha(alpha: float) -> None:
    if not 0 < alpha < 1:
        raise BadInput(f"--alpha must be in (0, 1), got {alpha}")


def finding(kind: str, statement: str, **evidence) -> dict:
    return {"kind": kind, "statement": statement, "evidence": _plain(evidence)}


def _plain(value):
    """Numbers as plain Python for JSON (numpy scalars, NaN as None)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def pair_alpha(ev: Evidence) -> float:
    """The level each pair of runs is tested at: alpha / pairs (Bonferroni), so that the chance of any
    false claim among all the pairs stays at most alpha; the sample-size study uses the same level, so
    that its verdicts agree with the EDF comparisons."""
    pairs = len(ev.spaces) * (len(ev.spaces) - 1) // 2
    return ev.alpha / max(pairs, 1)


def noise_sd(ev: Evidence, runs: tuple[str, ...]) -> float | None:
    """The seed-to-seed SD that applies to these runs: that of a copy run of one of them, else of any."""
    measured = ev.noise[np.isfinite(ev.noise["seed_sd"].astype(float))]
    if not len(measured):
        return None
    own = measured[measured["source"].isin(runs)]
    return float((own if len(own) else measured)["seed_sd"].iloc[0])


def edf_findings(ev: Evidence) -> list[dict]:
    """edf-order for each pair of runs whose EDFs differ (KS p < pair_alpha), edf-same for the rest."""
    errors, pairs, level = ev.errors, list(ev.pair_tests), pair_alpha(ev)
    out = []
    for (a, b), (ks_d, ks_p) in ev.pair_tests.items():
        ma, mb = float(np.median(errors[a])), float(np.median(errors[b]))
        better, worse = (a, b) if (ma, np.mean(errors[a])) <= (mb, np.mean(errors[b])) else (b, a)
        m_better, m_worse = min(ma, mb), max(ma, mb)
        common = dict(ks_d=ks_d, ks_p=ks_p, level=level, alpha=ev.alpha,
                      pairs=len(pairs), n={a: len(errors[a]), b: len(errors[b])})
        threshold = f"{level:.2g}" + (f" = {ev.alpha:g} / {len(pairs)} pairs" if len(pairs) > 1 else "")
        test_text = f"KS D = {ks_d:.2f}, p = {ks_p:.2g}"
        if ks_p >= level:
            out.append(finding("edf-same", f"{a} and {b} do not differ detectably ({test_text}, not below "
                                           f"{threshold}; n = {len(errors[a])} and {len(errors[b])}).",
                               runs=[a, b], **common))
            continue
        sd = noise_sd(ev, (a, b))
        within = sd is not None and within_noise(m_worse - m_better, sd)
        text = (f"{better} is better than {worse}: median error {m_better:.1f}% against {m_worse:.1f}% "
                f"({test_text} < {threshold}).")
        if within:
            text += (f" The difference of medians ({m_worse - m_better:.2f}) is smaller than the seed-to-seed "
                     f"SD of a model's error ({sd:.2f}): within the noise of training.")
        out.append(finding("edf-order", text, better=better, worse=worse, median_better=m_better,
                           median_worse=m_worse, within_noise=within if sd is not None else None,
                           noise_sd=sd, **common))
    return out


def range_findings(ev: Evidence) -> list[dict]:
    """best-range for each statistic whose bootstrap interval covers at most NARROW of the values seen."""
    from dsd.analysis.bootstrap import log_scaled, model_statistics

    try:
        ev.trends
    except BadInput:  # e.g. nothing varies yet: no range to state
        return []
    values = model_statistics(ev.models)
    out = []
    for name in ev.spaces:
        seen = values[(ev.models["run"] == name).to_numpy()]
        rows = ev.trends[ev.trends["run"] == name]
        for r in rows.itertuples(index=False):
            log = log_scaled(r.stat, seen[r.stat])
            scale = np.log if log else (lambda v: v)
            span = float(scale(seen[r.stat].max()) - scale(seen[r.stat].min()))
            share = (scale(r.hi) - scale(r.lo)) / span if span > 0 else np.inf
            if share > NARROW:
                continue
            out.append(finding(
                "best-range",
                f"In {name}, the best models have {r.stat} in [{r.lo:.4g}, {r.hi:.4g}], most likely {r.median:.4g} "
                f"(95% bootstrap interval, {share:.0%} of the values seen, {seen[r.stat].min():.4g} to "
                f"{seen[r.stat].max():.4g}{' on a log scale' if log else ''}; stated when at most {NARROW:.0%}).",
                run=name, stat=r.stat, lo=r.lo, median=r.median, hi=r.hi, share_of_range=share,
                log_scale=log, threshold=NARROW, n=r.n))
    return out


def fit_findings(ev: Evidence) -> list[dict]:
    """fit: how close each run's best models are to a quantized linear rule (e_fit, docs/method.md section 5)."""
    out = []
    for name in ev.spaces:
        part = ev.fits[ev.fits["run"] == name]
        pop, each = part[part["scope"] == "population"], part[part["scope"] == "model"]
        if not len(pop) or not len(each):
            continue
        p = pop.iloc[0]
        median = float(each["e_fit"].median())
        out.append(finding(
            "fit", f"The {len(each)} best models of {name} lie at a median e_fit of {median:.3f} from their own "
                   f"quantized linear rule; pooled, they follow w0 = {p.w0:.0f}, wa = {p.wa:.1f}, "
                   f"wm = {p.wm:.2f} at e_fit {p.e_fit:.3f}.",
            run=name, models=len(each), median_e_fit=median, w0=p.w0, wa=p.wa, wm=p.wm,
            population_e_fit=p.e_fit))
    return out


def epoch_findings(ev: Evidence) -> list[dict]:
    """epochs: did the short schedule rank the models as its last epoch does? Kendall tau per epoch."""
    from dsd.analysis.epochs import agreement_sentence

    out = []
    for name in ev.spaces:
        rows = ev.agreement[ev.agreement["run"] == name]
        sentence = agreement_sentence(ev.agreement, name)
        if sentence is None or len(rows) < 2:
            continue
        before_last = rows.iloc[-2]
        settled = bool(before_last["kendall_lo"] >= STABLE_TAU)
        verdict = (f"the ranking had settled (the epoch before the last agrees at a lower bound of at least "
                   f"{STABLE_TAU})" if settled else
                   f"the ranking was still changing in the last epoch (lower bound below {STABLE_TAU}): more "
                   f"epochs may reorder the models")
        out.append(finding(
            "epochs", f"{name}: {sentence}; {verdict}.", run=name, settled=settled, threshold=STABLE_TAU,
            kendall={int(r.epoch): r.kendall for r in rows.itertuples()},
            kendall_lo={int(r.epoch): r.kendall_lo for r in rows.itertuples()},
            kendall_hi={int(r.epoch): r.kendall_hi for r in rows.itertuples()},
            spearman={int(r.epoch): r.spearman for r in rows.itertuples()}))
    return out


def size_findings(ev: Evidence) -> list[dict]:
    """sample-size: from how many models per run KS separates each pair of runs (in POWER of subsamples)."""
    from dsd.analysis.samplesize import pair_rows, separating_n, separation_sentence

    out = []
    for (a, b), (_, full) in ev.pair_tests.items():
        sentence = separation_sentence(ev.ks_sizes, a, b, POWER)
        if sentence is None:
            continue
        rows = pair_rows(ev.ks_sizes, a, b)
        separating = separating_n(rows, POWER)
        if separating is None and full < pair_alpha(ev):  # unequal runs: all models tell more than equal halves
            sentence += (f"; with all their models ({len(ev.errors[a])} and {len(ev.errors[b])}) they do "
                         f"separate (KS p = {full:.2g})")
        out.append(finding("sample-size", sentence + ".", runs=[a, b], alpha=ev.alpha, level=pair_alpha(ev),
                           threshold=POWER, separating_n=separating, full_sample_p=full,
                           power={int(r.n): r.power for r in rows.itertuples()}))
    return out


def noise_findings(ev: Evidence) -> list[dict]:
    """noise-floor: the seed-to-seed spread of error beside the model-to-model spread."""
    out = []
    for r in ev.noise.itertuples(index=False):
        if not np.isfinite(r.seed_sd):
            continue
        out.append(finding(
            "noise-floor",
            f"Retraining {r.models} models of {r.source} with new seeds ({r.run}): a model's error moves by "
            f"SD {r.seed_sd:.2f} [{r.seed_sd_lo:.2f}, {r.seed_sd_hi:.2f}] from seed to seed, against SD "
            f"{r.model_sd:.2f} from model to model ({r.ratio:.0%}). Differences of medians below "
            f"{r.seed_sd:.2f} are within the noise.",
            run=r.run, source=r.source, models=r.models, repeats=r.repeats, seed_sd=r.seed_sd,
            seed_sd_lo=r.seed_sd_lo, seed_sd_hi=r.seed_sd_hi, model_sd=r.model_sd, ratio=r.ratio))
    return out


def findings(ev: Evidence) -> list[dict]:
    """Every finding the numbers support, in the order the report gives them."""
    return [*edf_findings(ev), *range_findings(ev), *fit_findings(ev), *epoch_findings(ev),
            *size_findings(ev), *noise_findings(ev)]
