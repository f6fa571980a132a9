"""Every ``python -m nas.*`` tool follows the one convention of :mod:`nas.cli`.

The test walks each tool's parser (and its subcommands) and checks the flags a tool has
against the convention table: one spelling per concept, ``--device`` defaulting to auto,
``--config`` and ``--set`` on every run-producing tool, ``--no-progress`` wherever a tool shows
progress, subcommands as argparse subparsers.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil

import pytest

import nas
from nas.config import resolve
from nas.search import PRESETS, SearchConfig

RUN_PRODUCING = {"nas.search", "nas.train", "nas.sweep"}
WITH_PROGRESS = {"nas.search", "nas.train", "nas.sweep", "nas.profile", "nas.evaluate"}
# concept -> the one primary spelling (aliases may follow it in the same action)
PRIMARY = {"out": "--out", "device": "--device", "no_progress": "--no-progress"}
FORBIDDEN_PRIMARY = {"--output", "-o", "--out-dir", "--arch", "--quiet", "--table"}


def cli_modules() -> list[str]:
    names = []
    for info in pkgutil.walk_packages(nas.__path__, "nas."):
        if info.name.endswith("__main__"):
            continue
        mod = importlib.import_module(info.name)
        if callable(getattr(mod, "main", None)) and callable(getattr(mod, "build_parser", None)):
            names.append(info.name.removesuffix(".cli"))
    return sorted(set(names))


def parser_of(name: str) -> argparse.ArgumentParser:
    mod = importlib.import_module(name)
    if not hasattr(mod, "build_parser"):
        mod = importlib.import_module(name + ".cli")
    return mod.build_parser()


def walk(p: argparse.ArgumentParser, prefix: str = ""):
    yield prefix, p
    for a in p._actions:
        if isinstance(a, argparse._SubParsersAction):
            for sub, sp in a.choices.items():
                yield from walk(sp, f"{prefix} {sub}".strip())


def test_every_tool_is_found():
    assert set(cli_modules()) >= {
        "nas.demo",
        "nas.evaluate",
        "nas.export",
        "nas.flops",
        "nas.fuse",
        "nas.plot",
        "nas.profile",
        "nas.search",
        "nas.sweep",
        "nas.train",
    }


@pytest.mark.parametrize("name", cli_modules())
def test_tool_follows_the_convention(name: str):
    top = parser_of(name)
    assert top.prog == f"python -m {name}", "prog names the module as users type it"
    seen: set[str] = set()
    for sub, p in walk(top):
        where = f"{name} {sub}".strip()
        for a in p._actions:
            if not a.option_strings:
                continue
            seen.update(a.option_strings)
            primary = a.option_strings[0]
            assert primary not in FORBIDDEN_PRIMARY, f"{where}: {primary} is an old spelling"
            if a.dest in PRIMARY:
                assert primary == PRIMARY[a.dest], f"{where}: {a.dest} is spelled {primary}"
            if primary == "--device":
                default_auto = a.default == "auto" or (a.default is None and "auto" in a.help)
                assert default_auto, f"{where}: --device must default to auto"
            if primary in ("--model", "--models"):
                assert a.dest in ("model", "models", "arch"), where
        argv0_dispatch = [
            a for a in p._actions if isinstance(a, argparse._SubParsersAction) and not a.choices
        ]
        assert not argv0_dispatch
    if name in RUN_PRODUCING:
        assert {"--config", "--set"} <= seen, f"{name}: run-producing tools take --config/--set"
    if name in WITH_PROGRESS:
        assert "--no-progress" in seen, f"{name}: tools with progress output take --no-progress"


def test_set_applies_between_config_and_flags(tmp_path):
    from nas.search import build_parser

    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("epochs: 5\nbatch: 3\n")
    argv = ["--config", str(cfg_file), "--set", "epochs=7", "crop=40", "--batch", "2"]
    cfg = resolve(SearchConfig, build_parser().parse_args(argv), PRESETS)
    assert (cfg.epochs, cfg.crop, cfg.batch) == (7, 40, 2)
    with pytest.raises(ValueError, match="unknown key"):
        resolve(SearchConfig, build_parser().parse_args(["--set", "nope=1"]), PRESETS)


def test_sweep_subcommands_are_subparsers():
    from nas.sweep import build_parser

    p = build_parser()
    assert p.parse_args(["plot", "--studies", "a", "b"]).command == "plot"
    assert p.parse_args(["report", "--study", "a"]).command == "report"
    run = p.parse_args(["--eta", "0", "1", "--out", "x"])
    assert run.command is None and run.eta == [0.0, 1.0] and run.out_dir == "x"


def test_old_spellings_still_parse():
    from nas import fuse, train

    assert fuse.build_parser().parse_args(["--model", "m", "a", "b", "-o", "f.png"]).out == "f.png"
    assert train.build_parser().parse_args(["--arch", "ffmef"]).arch == "ffmef"


@pytest.mark.parametrize("name", ["nas.search", "nas.train"])
def test_run_folder_goes_under_out(name: str) -> None:
    """Search and train take ``--out DIR`` (the folder their run folder goes in), with
    ``--runs-dir`` as its older name; both set the config's ``runs_dir``."""
    p = parser_of(name)
    assert p.parse_args(["--out", "a"]).runs_dir == "a"
    assert p.parse_args(["--runs-dir", "b"]).runs_dir == "b"
    cls = SearchConfig if name == "nas.search" else importlib.import_module(name).TrainConfig
    presets = importlib.import_module(name).PRESETS
    assert resolve(cls, p.parse_args(["--out", "c"]), presets).runs_dir == "c"
    assert resolve(cls, p.parse_args([]), presets).runs_dir == cls().runs_dir
