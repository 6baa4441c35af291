"""The short-schedule protocol's options: linear warm-up into the cosine, zero-initialised residual
branches, both in the fingerprint; and the near-chance flag of `dsd status`."""
from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from dsd.design.model import Block, build_model
from dsd.training.checkpoints import fingerprint
from dsd.training.loop import fresh_state, train_model
from synthetic_runs import anynet_rows, dsd, write_run
from test_train import Interrupt, specs, stop_after, synthetic, synthetic_settings  # noqa: F401  (fixtures)


def expected_lr(t: int, total: int, warm: float, lr: float) -> float:
    """The schedule written out here: a linear ramp from 0.1 to 1 over `warm` steps times the cosine."""
    cosine = 0.5 * (1 + math.cos(math.pi * t / total))
    ramp = 0.1 + 0.9 * t / warm if t < warm else 1.0
    return lr * cosine * ramp


@pytest.mark.parametrize("warmup_epochs", [0, 0.5, 2])
def test_the_learning_rate_at_every_step_is_the_warm_up_times_the_cosine(specs, warmup_epochs):
    settings = synthetic_settings(epochs=3, warmup_epochs=warmup_epochs)
    steps = 512 // 32
    state = fresh_state(specs[0], settings, torch.device("cpu"), seed=1, steps=steps)
    seen = []
    for _ in range(3 * steps + 1):
        seen.append(state.opt.param_groups[0]["lr"])
        state.opt.step()
        state.schedule.step()
    want = [expected_lr(t, 3 * steps, warmup_epochs * steps, settings.lr) for t in range(3 * steps + 1)]
    np.testing.assert_allclose(seen, want, rtol=1e-12, atol=1e-15)
    assert seen[-1] == pytest.approx(0, abs=1e-15)
    if warmup_epochs == 0:  # exactly today's schedule, not merely close
        assert seen == [settings.lr * 0.5 * (1 + math.cos(math.pi * t / (3 * steps))) for t in range(3 * steps + 1)]
    else:
        assert seen[0] == pytest.approx(0.1 * settings.lr) and max(seen) < settings.lr


def test_no_warm_up_trains_exactly_as_before(specs, synthetic):
    plain = synthetic_settings(epochs=2, warmup_epochs=0, zero_init_residual=False)
    a = train_model(specs[1], synthetic, plain, model_id=1)
    b = train_model(specs[1], synthetic, replace(plain, warmup_factor=0.5), model_id=1)  # unused without warm-up
    c = train_model(specs[1], synthetic, replace(plain, warmup_epochs=1.0), model_id=1)
    assert a["loss_curve"] == b["loss_curve"] and a["error_curve"] == b["error_curve"]
    assert c["loss_curve"] != a["loss_curve"]
    assert (a["warmup_epochs"], a["zero_init_residual"], c["warmup_epochs"]) == (0.0, False, 1.0)


def test_zero_init_sets_exactly_the_last_bn_gamma_of_each_residual_branch(specs):
    for spec in specs:
        torch.manual_seed(0)
        plain = dict(build_model(spec).named_parameters())
        torch.manual_seed(0)
        model = build_model(spec, zero_init=True)
        zeroed = {name for name, p in model.named_parameters() if not torch.equal(p, plain[name])}
        blocks = [m for m in model.modules() if isinstance(m, Block)]
        assert len(zeroed) == len(blocks) > 0
        for name in zeroed:
            assert name.endswith(".weight") and not model.get_parameter(name).any()
            bn = model.get_submodule(name.rsplit(".", 1)[0])
            assert isinstance(bn, torch.nn.BatchNorm2d)


def without_branches(model, x):
    """The network with every residual branch removed: stem, then relu(shortcut) per block, head."""
    x = model.stem(x)
    for block in (m for m in model.modules() if isinstance(m, Block)):
        x = torch.relu(block.proj(x) if block.proj is not None else x)
    return model.fc(torch.flatten(model.pool(x), 1))


def test_a_zero_initialised_network_computes_its_shortcuts_only(specs):
    torch.manual_seed(0)
    x = torch.randn(4, specs[0].in_channels, specs[0].resolution, specs[0].resolution)
    for spec in specs:
        model = build_model(spec, zero_init=True).eval()
        with torch.no_grad():
            torch.testing.assert_close(model(x), without_branches(model, x), rtol=0, atol=0)
            assert not torch.allclose(build_model(spec).eval()(x), without_branches(model, x))


def test_both_options_are_in_the_fingerprint_and_a_changed_one_restarts_the_model(specs, synthetic, tmp_path):
    settings, device = synthetic_settings(epochs=2), torch.device("cpu")
    prints = {fingerprint(specs[0], s, synthetic, device)
              for s in (settings, replace(settings, warmup_epochs=settings.warmup_epochs + 0.5),
                       replace(settings, zero_init_residual=not settings.zero_init_residual))}
    assert len(prints) == 3
    checkpoint = tmp_path / "0.pt"
    with pytest.raises(Interrupt):
        train_model(specs[0], synthetic, settings, model_id=0, checkpoint_path=checkpoint, on_epoch=stop_after(1, []))
    other = replace(settings, zero_init_residual=not settings.zero_init_residual)
    seen = []
    row = train_model(specs[0], synthetic, other, model_id=0, checkpoint_path=checkpoint, on_epoch=stop_after(0, seen))
    assert seen == [1, 2] and row["message"] == ""
    assert row["loss_curve"] == train_model(specs[0], synthetic, other, model_id=0)["loss_curve"]


def test_bad_warm_up_values_exit_2(tiny_run):
    from helpers import dsd as run_dsd

    run = tiny_run(1)
    for value, epochs in (("-1", "3"), ("4", "3")):
        proc = run_dsd("train", run, "--dataset", "synthetic", "--epochs", epochs, "--warmup-epochs", value)
        assert proc.returncode == 2 and "--warmup-epochs must be between 0 and --epochs" in proc.stderr, proc.stderr
    assert not (run / "results").exists()


def test_status_flags_a_run_with_many_models_near_chance_and_not_a_healthy_one(tmp_path):
    rows = anynet_rows(20, np.random.default_rng(0))
    sick = write_run(tmp_path / "sick", rows, errors=[88.5] * 6 + [30.0] * 12 + [20.0] * 2,
                     statuses=["done"] * 18 + ["diverged", "failed"])
    healthy = write_run(tmp_path / "healthy", rows, errors=[30.0] * 19 + [86.0])
    code, out, err = dsd("status", sick, healthy, "--json")
    flags = {r["name"]: (r["near_chance"], r["near_chance_flag"]) for r in json.loads(out)}
    assert flags == {"sick": (pytest.approx(7 / 19), True), "healthy": (pytest.approx(1 / 20), False)}
    code, out, err = dsd("status", sick, healthy)
    assert code == 0 and err.count("near chance") == 1 and "sick" in err and "--warmup-epochs" in err


def test_the_regimes_protocol_is_the_one_home_of_the_training_defaults():
    from dsd.design.regimes import Protocol, get_regime
    from dsd.training.settings import settings_for

    regime = replace(get_regime("fashion"), train=Protocol(epochs=4, batch_size=32, lr=0.2, warmup_epochs=0.5,
                                                          zero_init_residual=True, train_images=640))
    s = settings_for(regime, "synthetic")
    assert (s.epochs, s.batch_size, s.lr, s.warmup_epochs, s.zero_init_residual) == (4, 32, 0.2, 0.5, True)
    assert (s.data.train_images, s.data.eval_images) == (640, None)
    s = settings_for(regime, "synthetic", epochs=2, warmup_epochs=0.0, zero_init_residual=False, train_images=320)
    assert (s.epochs, s.warmup_epochs, s.zero_init_residual, s.data.train_images) == (2, 0.0, False, 320)
