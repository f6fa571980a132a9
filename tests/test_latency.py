"""Latency tables, profiler, predictor and the differentiable penalty (tiny space, tiny sizes)."""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path

import pytest
import torch
import yaml

from nas.genotype import Genotype, build
from nas.latency import (
    Calibration,
    ForeignTableError,
    LatencyPenalty,
    LatencyTable,
    LatencyTableError,
    LatencyTableNotFound,
    MissingLatencyEntry,
    ProfileSettings,
    accuracy_metrics,
    device_fingerprint,
    expected_latency,
    fit_calibration,
    predict,
    profile_spaces,
    sample_genotypes,
    synthetic_table,
    trace_units,
)
from nas.latency.fingerprint import slugify, table_name
from nas.latency.table import calibration_scope
from nas.latency.table_io import meta_path_for
from nas.profile import main
from nas.space import load_space
from nas.supernet import MixedOp, Supernet

SIZE = (32, 32)
FAST = ["--reps", "3", "--warmup", "1", "--threads", "1", "--no-progress"]


@pytest.fixture(scope="module")
def space():
    return load_space("tiny")


@pytest.fixture(scope="module")
def _synthetic(space):
    return synthetic_table([space], [space.arch.channels], SIZE, batch=1)


@pytest.fixture
def table(_synthetic):
    """A synthetic (MACs-model) table covering the tiny space at 32x32, batch 1 (a copy)."""
    return LatencyTable(list(_synthetic), dict(_synthetic.meta))


def _genotype(space, pick: int = 1) -> Genotype:
    ops = tuple((s, space.candidates[s][pick % len(space.candidates[s])]) for s in space.slots)
    return Genotype(space.name, space.arch, ops)


# --- tracing ---------------------------------------------------------------------------------


def test_trace_supernet_has_every_candidate_tagged_with_its_slot(space):
    net = Supernet(space)
    calls = trace_units(net, SIZE)
    by_slot: dict[str, set[str]] = {}
    for c in calls:
        if c.slot is not None:
            by_slot.setdefault(c.slot, set()).add(c.op_name)
            assert ".ops." in c.path and c.mixed_path is not None
    assert by_slot == {s: set(space.candidates[s]) for s in space.slots}
    n_mixed = sum(1 for _ in net.mixed_ops())
    n_cand = sum(len(m.ops) for _, m in net.mixed_ops())
    assert sum(c.slot is not None for c in calls) == n_cand
    assert n_mixed == 2 * space.arch.cascades * 3 + 4  # SRSM slots per image, DRM slots
    # scales: feat2 / conv run on the pooled (1/2) map, with 2C in for feat2
    feat2 = next(c for c in calls if c.slot == "srsm.feat2")
    assert feat2.key.H == SIZE[0] // 2 and feat2.C_in == 2 * space.arch.channels
    head = next(c for c in calls if c.op_name == "fixed.srsm_head")
    assert head.in_shapes[2] == (1, 3, *SIZE)  # multi-input unit: all shapes recorded


def test_trace_derived_net_one_call_per_slot_instance_and_units_not_nested(space):
    g = _genotype(space)
    calls = trace_units(build(g), SIZE, batch=2)
    assert all(c.slot is None for c in calls)
    assert all(c.in_shapes[0][0] == 2 for c in calls)
    paths = [c.path for c in calls]
    assert not any(p != q and q.startswith(p + ".") for p in paths for q in paths)
    sup = trace_units(Supernet(space), SIZE)
    assert len(calls) == len([c for c in sup if c.slot is None]) + sum(
        1 for c in sup if c.slot is not None and c.op_name == g[c.slot]
    )


# --- table I/O ---------------------------------------------------------------------------------


def test_table_round_trip_atomic(tmp_path, table):
    p = tmp_path / "t.csv"
    table.save(p)
    assert p.exists() and meta_path_for(p).exists()
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]
    back = LatencyTable.read(p)
    assert len(back) == len(table) > 0
    for e in table:
        got = back.entry(*e.key)
        assert got.median_ms == pytest.approx(e.median_ms, rel=1e-5)
    assert back.device_fingerprint == table.device_fingerprint
    # merge: a re-profiled row replaces the old one with the same key, others stay
    first = next(iter(back))
    back.update([type(first)(first.key, median_ms=123.0, mean_ms=123.0)])
    back.save()
    again = LatencyTable.read(p)
    assert again.entry(*first.key).median_ms == 123.0 and len(again) == len(table)


def test_table_header_and_columns(tmp_path, table):
    p = table.save(tmp_path / "t.csv")
    with p.open() as f:
        header = next(csv.reader(f))
    for col in ("op", "C_in", "C_out", "H", "W", "stride", "batch", "median_ms", "mean_ms"):
        assert col in header
    for col in ("std_ms", "p10_ms", "p90_ms", "n"):
        assert col in header


def test_foreign_table_refused_then_accepted(tmp_path, table):
    p = table.save(tmp_path / "other.csv")
    meta = yaml.safe_load(meta_path_for(p).read_text())
    meta["device_fingerprint"] = "cuda-h100-80gb-hbm3-fp32-torch2.13-cu126"
    meta_path_for(p).write_text(yaml.safe_dump(meta))
    here = device_fingerprint("cpu")
    with pytest.raises(ForeignTableError) as ei:
        LatencyTable.load(p, device="cpu")
    msg = str(ei.value)
    assert "cuda-h100-80gb-hbm3" in msg and here in msg and "--allow-foreign-table" in msg
    ok = LatencyTable.load(p, device="cpu", allow_foreign=True)
    assert len(ok) == len(table)
    # by-directory lookup: the only table there is foreign -> not found unless allowed
    with pytest.raises(LatencyTableNotFound):
        LatencyTable.load(device="cpu", directory=tmp_path)
    assert len(LatencyTable.load(device="cpu", directory=tmp_path, allow_foreign=True)) > 0


def test_no_table_error_names_the_profile_command(tmp_path):
    with pytest.raises(LatencyTableNotFound) as ei:
        LatencyTable.load(device="cpu", directory=tmp_path / "none")
    assert "python -m nas.profile --device cpu" in str(ei.value)


def test_missing_entry_names_op_channels_and_scale(table):
    with pytest.raises(MissingLatencyEntry) as ei:
        table.lookup("conv_7", 8, 8, 32, 32, 1)
    msg = str(ei.value)
    assert "conv_7" in msg and "C_in=8" in msg and "C_out=8" in msg and "32x32" in msg
    assert isinstance(ei.value, KeyError)
    with pytest.raises(MissingLatencyEntry, match="C_in=3, C_out=8 at scale 64x64"):
        predict(_genotype(load_space("tiny")), (64, 64), table)


@pytest.mark.parametrize(
    "text,needle",
    [
        ("op,C_in,C_out\nconv_3,8,8\n", "missing column"),
        ("", "empty file"),
        (
            "op,C_in,C_out,H,W,stride,batch,median_ms,mean_ms,std_ms,p10_ms,p90_ms,n\n"
            "conv_3,8,8,32,32,1,1,abc,1,0,1,1,3\n",
            "line 2",
        ),
        (
            "op,C_in,C_out,H,W,stride,batch,median_ms,mean_ms,std_ms,p10_ms,p90_ms,n\n"
            "conv_3,8,8,32\n",
            "wrong number of fields",
        ),
    ],
)
def test_corrupt_table_clear_error(tmp_path, text, needle):
    p = tmp_path / "bad.csv"
    p.write_text(text)
    with pytest.raises(LatencyTableError) as ei:
        LatencyTable.read(p)
    assert str(p) in str(ei.value) and needle in str(ei.value)


def test_corrupt_table_is_not_overwritten_by_a_profile_run(tmp_path, capsys):
    s = ProfileSettings.quick_defaults(input_size=SIZE, reps=2, warmup=1, threads=1)
    path = tmp_path / f"{s.table_name}.csv"
    path.write_text("op,C_in\nnot,a table\n")
    before = path.read_bytes()
    rc = main(
        ["--device", "cpu", "--space", "tiny", "--channels", "8", "--quick"]
        + ["--input-size", "32", "32", "--out", str(tmp_path), *FAST]
    )
    assert rc == 2
    assert "missing column" in capsys.readouterr().err
    assert path.read_bytes() == before
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]


# --- prediction and the differentiable penalty --------------------------------------------------


def test_expected_latency_equals_predict_at_onehot_and_has_gradient(space, table):
    net = Supernet(space)
    g = _genotype(space, pick=2)
    net.set_onehot(g.choice)
    e = expected_latency(net, table, SIZE).detach()
    assert float(e) == pytest.approx(predict(g, SIZE, table), rel=1e-5)
    assert float(e) == pytest.approx(predict(build(g), SIZE, table), rel=1e-5)
    # the table sum, written out
    direct = sum(table.lookup(*c.key) for c in trace_units(build(g), SIZE))
    assert float(e) == pytest.approx(direct, rel=1e-5)

    soft = Supernet(space)  # near-uniform alpha
    out = expected_latency(soft, table, SIZE)
    out.backward()
    grads = [p.grad for p in soft.arch_parameters()]
    assert all(gr is not None for gr in grads)
    assert sum(float(gr.abs().sum()) for gr in grads) > 0


def test_penalty_is_one_at_uniform_alpha_and_tracks_ms(space, table):
    net = Supernet(space)
    with torch.no_grad():
        for a in net.arch_parameters():
            a.zero_()
    pen = LatencyPenalty(net, table, SIZE)
    val = pen()
    assert float(val.detach()) == pytest.approx(1.0, rel=1e-6)
    assert pen.last_ms == pytest.approx(pen.reference_ms, rel=1e-6)
    calls = trace_units(net, SIZE)

    def lat(slot: str, op: str) -> float:
        return sum(table.lookup(*c.key) for c in calls if c.slot == slot and c.op_name == op)

    net.set_onehot({s: max(space.candidates[s], key=lambda o: lat(s, o)) for s in space.slots})
    assert float(pen().detach()) > 1.0
    net.set_onehot({s: min(space.candidates[s], key=lambda o: lat(s, o)) for s in space.slots})
    assert float(pen().detach()) < 1.0


def test_expected_latency_constants_are_cached(space, table):
    from nas.latency.predict import slot_latency

    net = Supernet(space)
    a = slot_latency(net, table, SIZE)
    b = slot_latency(net, table, SIZE)
    assert a is b
    table2 = LatencyTable(list(table), dict(table.meta))
    assert slot_latency(net, table2, SIZE) is not a


def test_calibration_round_trip_and_applied(tmp_path, space, table):
    t = LatencyTable(list(table), dict(table.meta))
    g = _genotype(space)
    raw = predict(g, SIZE, t)
    scope = calibration_scope(space.arch.channels, False, SIZE, t.batch)
    t.set_calibration(Calibration(2.0, 0.5, scope, {"fitted_on": 3}))
    t.save(tmp_path / "c.csv")
    back = LatencyTable.read(tmp_path / "c.csv")
    assert back.calibration(scope).a == 2.0
    assert predict(g, SIZE, back) == pytest.approx(2 * raw + 0.5)
    assert predict(g, SIZE, back, calibrated=False) == pytest.approx(raw)
    net = Supernet(space)
    net.set_onehot(g.choice)
    got = float(expected_latency(net, back, SIZE).detach())
    assert got == pytest.approx(2 * raw + 0.5, rel=1e-5)


def test_fit_calibration_recovers_affine_and_metrics():
    p = [1.0, 2.0, 3.0, 5.0]
    m = [2 * x + 1 for x in p]
    cal = fit_calibration(p, m)
    assert cal.a == pytest.approx(2.0) and cal.b == pytest.approx(1.0)
    met = accuracy_metrics([cal.apply(x) for x in p], m)
    assert met["mape"] == pytest.approx(0.0, abs=1e-9) and met["within10"] == 100.0
    assert met["tau"] == pytest.approx(1.0)


def test_sample_genotypes_distinct_and_seeded(space):
    a = sample_genotypes(space, 5, seed=3)
    assert a == sample_genotypes(space, 5, seed=3) and len(set(a)) == 5
    b = sample_genotypes(space, 5, seed=4, exclude=a)
    assert not set(a) & set(b)


def test_fingerprint_and_names():
    assert slugify("Intel(R) Xeon(R) CPU @ 2.20GHz") == "intel-xeon-cpu-2-20ghz"
    fp = device_fingerprint("cpu", threads=3)
    assert fp.startswith("cpu-") and "-t3-fp32-torch" in fp
    assert table_name(fp) == fp
    assert table_name(fp, 1, (64, 64), quick=True) == f"{fp}-b1-64x64-quick"


# --- the CLI end to end --------------------------------------------------------------------------


def test_quick_profile_through_main(tmp_path, space):
    out = tmp_path / "tables"
    args = ["--device", "cpu", "--space", "tiny", "--channels", "8", "--quick"]
    args += ["--input-size", "32", "32", "--out", str(out), *FAST]
    assert main(args) == 0
    files = sorted(p.name for p in out.iterdir())
    assert len(files) == 2 and files[0].endswith("-quick.csv")
    t = LatencyTable.load(device="cpu", directory=out, threads=1)
    meta = t.meta
    assert meta["quick"] is True and meta["batch"] == 1 and meta["threads"] == 1
    assert meta["reps"] == 3 and meta["input_size"] == [32, 32]
    for k in ("device_fingerprint", "cpu_model", "torch", "dtype", "warmup", "date", "tool"):
        assert k in meta
    assert all(e.n == 3 and e.median_ms > 0 or e.key.op == "skip" for e in t)
    # every unit of every derived net of the space is covered
    for g in sample_genotypes(space, 4, seed=0):
        assert predict(g, SIZE, t) > 0
    net = Supernet(space)
    assert float(expected_latency(net, t, SIZE).detach()) > 0
    # re-profiling merges into the same file
    assert main(args + ["--channels", "8"]) == 0
    assert len(LatencyTable.read(out / files[0])) == len(t)


def test_validate_through_main(tmp_path):
    out, res = tmp_path / "tables", tmp_path / "results"
    args = ["--device", "cpu", "--space", "tiny", "--channels", "8", "--quick"]
    args += ["--input-size", "32", "32", "--out", str(out), "--results", str(res), *FAST]
    assert main(args + ["--validate", "3", "--calibrate", "3"]) == 0  # profiles first
    csvs = list(res.glob("validate-*.csv"))
    assert len(csvs) == 1 and list(res.glob("validate-*.png"))
    with csvs[0].open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 6 and sum(r["split"] == "validation" for r in rows) == 3
    for r in rows:
        assert float(r["predicted_ms"]) > 0 and float(r["measured_ms"]) > 0
        assert r["genotype"].startswith("srsm.feat1=")
    summary = yaml.safe_load(next(res.glob("validate-*.yaml")).read_text())
    assert summary["n_validation"] == 3 and "mape" in summary["raw"]
    assert math.isfinite(summary["calibrated"]["mape"])
    t = LatencyTable.read(next(out.glob("*.csv")))
    fit = Calibration.from_dict(summary["calibration"])
    stored = t.calibration(calibration_scope(8, False, SIZE, 1))
    assert (stored is not None) == (not fit.problems())  # implausible fits are not stored


def test_implausible_calibration_not_stored_and_old_one_dropped(table):
    from nas.latency.validate import store_report_calibration

    scope = calibration_scope(8, False, SIZE, 1)
    table.set_calibration(Calibration(1.1, 0.2, scope))

    class R:  # the part of a ValidationReport that is used
        calibration = Calibration(0.2, 5.0, scope)

    notes: list[str] = []
    assert not store_report_calibration(table, R(), save=False, log=notes.append)
    assert table.calibration(scope) is None and "outside" in notes[0]
    R.calibration = Calibration(1.2, 0.1, scope)
    assert store_report_calibration(table, R(), save=False, log=notes.append)
    assert table.calibration(scope).a == 1.2


def test_profile_spaces_library_call_without_writing(space):
    s = ProfileSettings(batch=1, input_size=(16, 16), reps=2, warmup=0, threads=1)
    rep = profile_spaces([space], [4], s, out_dir=None, progress=False, log=None)
    assert rep.path is None and rep.profiled == len(rep.table) > 0
    assert all(e.key.batch == 1 and e.n == 2 for e in rep.table)


def test_mixedop_is_not_a_unit():
    from nas.ops import Unit

    assert not issubclass(MixedOp, Unit)


def test_unit_files_are_world_readable(tmp_path, table):
    p = table.save(tmp_path / "perm.csv")
    assert (p.stat().st_mode & 0o044) == (0o666 & ~_umask()) & 0o044


def _umask() -> int:
    u = os.umask(0)
    os.umask(u)
    return u


def test_settings_validation():
    with pytest.raises(ValueError):
        ProfileSettings(reps=0)
    with pytest.raises(ValueError):
        ProfileSettings(dtype="int8")
    assert Path(str(ProfileSettings().torch_device)).name == "cpu" or torch.cuda.is_available()


def test_interrupted_profile_leaves_table_and_resumes(tmp_path, monkeypatch, space):
    import nas.latency.profiler as prof

    s = ProfileSettings(batch=1, input_size=(16, 16), reps=2, warmup=0, threads=1)
    first = profile_spaces([space], [4], s, tmp_path, progress=False, log=None)
    before = first.path.read_bytes()
    real, calls = prof.time_fn, [0]

    def flaky(*a, **k):
        calls[0] += 1
        if calls[0] > 5:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(prof, "time_fn", flaky)
    with pytest.raises(KeyboardInterrupt):
        profile_spaces([space], [4], s, tmp_path, progress=False, log=None, checkpoint_every_s=1e9)
    assert first.path.read_bytes() == before  # the table is untouched
    assert prof.partial_path(tmp_path, s).exists()
    monkeypatch.setattr(prof, "time_fn", real)
    rep = profile_spaces([space], [4], s, tmp_path, progress=False, log=None, resume=True)
    assert rep.reused == 5 and rep.profiled == len(rep.table) - 5
    assert not prof.partial_path(tmp_path, s).exists()


def test_estimate_through_main(capsys):
    args = ["--device", "cpu", "--space", "tiny", "--channels", "8", "--batch", "1"]
    assert main(args + ["--input-size", "16", "16", "--estimate", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "18 units" in out and "min" in out


def test_load_prefers_settings_and_statistic(tmp_path, table):
    fp = device_fingerprint("cpu")
    full = LatencyTable(list(table), {**table.meta, "batch": 1, "quick": False})
    full.save(tmp_path / f"{table_name(fp, 1, SIZE)}.csv")
    rows = [type(e)(e.key, median_ms=2 * e.median_ms, mean_ms=1.0, min_ms=0.5) for e in table]
    quick = LatencyTable(rows, {**table.meta, "batch": 1, "quick": True})
    quick.save(tmp_path / f"{table_name(fp, 1, SIZE, quick=True)}.csv")
    assert LatencyTable.load(device="cpu", directory=tmp_path).meta["quick"] is False
    q = LatencyTable.load(device="cpu", directory=tmp_path, quick=True)
    assert q.meta["quick"] is True
    e = next(iter(q))
    assert q.lookup(*e.key) == e.median_ms
    q.statistic = "min"
    assert q.lookup(*e.key) == 0.5
    with pytest.raises(ValueError):
        q.statistic = "max"
    with pytest.raises(LatencyTableNotFound, match="--batch 4"):
        LatencyTable.load(device="cpu", directory=tmp_path, batch=4)


def test_validate_with_foreign_table_flag(tmp_path, table, capsys):
    p = table.save(tmp_path / "foreign.csv")
    meta = yaml.safe_load(meta_path_for(p).read_text())
    meta.update(device_fingerprint="cpu-some-other-cpu-t8-fp32-torch2.13", batch=1, reps=2)
    meta.update(warmup=0, input_size=list(SIZE), threads=1)
    meta_path_for(p).write_text(yaml.safe_dump(meta))
    args = ["--device", "cpu", "--space", "tiny", "--validate", "2", "--calibrate", "0"]
    args += ["--table", str(p), "--results", str(tmp_path / "res"), "--no-progress"]
    assert main(args) == 2
    assert "cpu-some-other-cpu-t8" in capsys.readouterr().err
    assert main(args + ["--allow-foreign-table"]) == 0
    assert list((tmp_path / "res").glob("validate-foreign-tiny-C8.csv"))


@pytest.mark.parametrize("space", ["crmef", "crmef-misaligned"])
def test_trace_runs_on_meta_and_equals_a_real_trace(space):
    """Without explicit inputs the trace runs on a meta copy (no arithmetic); the calls are
    those of a real forward pass and name the network's own unit modules."""
    net = Supernet(load_space(space).with_channels(8))
    fast = trace_units(net, (40, 56))
    gen = torch.Generator().manual_seed(0)
    real = trace_units(net, inputs=[torch.rand(1, 3, 40, 56, generator=gen) for _ in range(2)])
    assert [(c.path, c.key, c.slot) for c in fast] == [(c.path, c.key, c.slot) for c in real]
    modules = dict(net.named_modules())
    assert all(c.module is modules[c.path] for c in fast)
    assert next(net.parameters()).device.type == "cpu"


def test_kendall_tau_by_hand() -> None:
    from nas.latency.validate import kendall_tau

    # pairs of (1,2,3,4) vs (1,3,2,4): 5 concordant, 1 discordant -> (5 - 1) / 6
    assert kendall_tau([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(4 / 6)
    assert kendall_tau([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)


def test_profile_defaults_are_cpu_sized() -> None:
    """On CPU the profiler defaults to batch 1, 100 reps and a 1 s budget per unit; the
    paper's GPU settings stay the defaults elsewhere and can be asked for on CPU."""
    from nas.latency.profiler import CPU_BATCH, CPU_MAX_SECONDS, CPU_REPS, DEFAULT_REPS
    from nas.profile import build_parser, settings_from_args

    def settings(*argv: str):
        return settings_from_args(build_parser().parse_args(list(argv)))

    cpu = settings("--device", "cpu")
    assert (cpu.batch, cpu.reps, cpu.max_seconds, cpu.warmup) == (1, 100, 1.0, 3)
    assert (CPU_BATCH, CPU_REPS, CPU_MAX_SECONDS) == (1, 100, 1.0)
    paper = settings("--device", "cpu", "--batch", "16", "--reps", "1000")
    assert (paper.batch, paper.reps, paper.max_seconds) == (16, DEFAULT_REPS, None)
    assert settings("--device", "cpu", "--max-seconds", "0").max_seconds is None
    quick = settings("--device", "cpu", "--quick")
    assert (quick.batch, quick.reps, quick.input_size) == (1, 25, (64, 64))
