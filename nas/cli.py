"""One command-line convention for every ``python -m nas.*`` tool.

=========================  ====================================================================
flag                       meaning
=========================  ====================================================================
``--model REF``            the one model a tool works on (train, fuse, export)
``--models REF ...``       the models a tool compares (evaluate)
``--out PATH``             where the output goes (a file or a folder, as the tool says)
``--device D``             ``auto`` (default: CUDA when present), ``cpu``, ``cuda``, ``cuda:N``
``--config FILE``          run-producing tools (search, train, sweep): YAML of the settings
``--set KEY=VALUE ...``    run-producing tools: settings on top of the file (YAML values)
``--no-progress``          no progress bars or progress messages
subcommands                argparse subparsers (``nas.plot tradeoff``, ``nas.sweep plot``)
=========================  ====================================================================

``tests/test_cli.py`` walks every parser and holds each tool to this table. Older spellings
(``--arch``, ``-o/--output``, ``--out-dir``, ``--runs-dir``, ``--quiet``) remain as aliases.
For search and train, ``--out`` is the folder their run folder goes in (``runs_dir``).

Settings resolve as defaults <- ``--preset`` <- ``--config`` <- ``--set`` <- explicit flags
(:func:`nas.config.resolve`).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

import yaml

DEVICE_HELP = "auto (default: CUDA when present), cpu, cuda or cuda:N"


def parse_set(text: str) -> tuple[str, Any]:
    """``KEY=VALUE`` -> ``(KEY, yaml.safe_load(VALUE))`` (so ``3`` is an int, ``[1, 2]`` a list)."""
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    k, v = text.split("=", 1)
    return k.strip(), yaml.safe_load(v)


def add_device(p: argparse.ArgumentParser | Any, from_config: bool = False) -> None:
    """``--device``; ``from_config``: default None, so the config's ``auto`` is not masked."""
    p.add_argument("--device", default=None if from_config else "auto", help=DEVICE_HELP)


def add_progress(p: argparse.ArgumentParser | Any, *aliases: str) -> None:
    p.add_argument(
        "--no-progress",
        *aliases,
        dest="no_progress",
        action="store_true",
        help="no progress bars or progress messages",
    )


def add_table_args(
    p: argparse.ArgumentParser | Any,
    what: str = "explicit table CSV",
    from_config: bool = False,
    aliases: tuple[str, ...] = (),
) -> None:
    """``--latency-table CSV`` and ``--allow-foreign-table`` (a table profiled on another
    device is refused unless allowed)."""
    p.add_argument("--latency-table", *aliases, dest="latency_table", help=what)
    p.add_argument(
        "--allow-foreign-table",
        dest="allow_foreign_table",
        action="store_true",
        default=None if from_config else False,
        help="accept a table profiled on another device",
    )


def add_run_args(p: argparse.ArgumentParser, config_cls: str) -> None:
    """The flags every run-producing tool shares: ``--config``, ``--set``, ``--seed``,
    ``--run-name``, ``--out`` (the folder the run folder goes in, config key ``runs_dir``;
    ``--runs-dir``: its older name), ``--resume``, ``--no-progress``."""
    p.add_argument("--config", help=f"YAML file of settings (keys = {config_cls} fields)")
    p.add_argument(
        "--set",
        dest="set",
        type=parse_set,
        nargs="+",
        metavar="KEY=VALUE",
        help=f"settings on top of --config ({config_cls} fields; YAML values)",
    )
    p.add_argument("--seed", type=int)
    p.add_argument("--run-name", dest="run_name")
    p.add_argument(
        "--out",
        "--runs-dir",
        dest="runs_dir",
        help="folder the run folder <run-name> goes in (default results/runs; --runs-dir: "
        "older name)",
    )
    p.add_argument("--resume", action="store_true", help="continue the run named --run-name")
    add_progress(p)


def add_training_args(p: argparse.ArgumentParser, config_cls: str) -> None:
    """What every training loop takes (search and train): data, device, epochs, batch, crop,
    samples per epoch, memory format, how real photos are read, then :func:`add_run_args`."""
    p.add_argument(
        "--data",
        help="'synthetic' (bundled photos), a SICE root, a folder of pairs or of exposure "
        "sequences, or a folder of photos",
    )
    add_device(p, from_config=True)
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch", type=int)
    p.add_argument("--crop", type=int)
    p.add_argument("--samples-per-epoch", dest="samples_per_epoch", type=int)
    p.add_argument(
        "--channels-last",
        dest="channels_last",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="channels_last memory format (default: on for CUDA, off on CPU)",
    )
    p.add_argument(
        "--max-side", dest="max_side", type=int, help="downscale real photos to this long side"
    )
    p.add_argument(
        "--cache",
        action="store_true",
        default=None,
        help="keep decoded real photos in memory (sequences data)",
    )
    add_run_args(p, config_cls)


def run_command(
    run: Callable[[], Any], errors: tuple[type[BaseException], ...], fatal: dict | None = None
) -> tuple[int, Any]:
    """``(0, run())``, or ``(code, None)`` after printing ``error: ...`` for an exception in
    ``errors`` (code 2) or in ``fatal`` (``{exception type: code}``, checked first)."""
    try:
        return 0, run()
    except BaseException as e:  # noqa: BLE001 - filtered below
        for kind, code in (fatal or {}).items():
            if isinstance(e, kind):
                print(f"error: {e}", file=sys.stderr)
                return code, None
        if isinstance(e, errors):
            print(f"error: {e}", file=sys.stderr)
            return 2, None
        raise


def run_config_command(
    cls: type,
    presets: Any,
    run: Any,
    args: Any,
    errors: tuple[type[BaseException], ...],
) -> tuple[int, Any]:
    """The body of a run-producing CLI (search, train): resolve ``cls`` from the saved config
    (``--resume``), preset, ``--config``, ``--set`` and flags, then ``run(cfg, resume=...,
    progress=...)``. Returns ``(0, result)``, or the exit code after a one-line error: 3 for
    a non-finite loss (the last good checkpoint is kept), 2 for ``errors``."""
    from nas.config import resolve
    from nas.engine import NonFiniteLossError
    from nas.runs import resume_config

    def go() -> Any:
        cfg = resolve(cls, args, presets, base=resume_config(cls, args))
        return run(cfg, resume=args.resume, progress=not args.no_progress)

    return run_command(go, errors, {NonFiniteLossError: 3})
