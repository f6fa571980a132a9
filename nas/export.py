"""``python -m nas.export``: derive a search run's network, or export any model for deployment.

**Search runs** (``python -m nas.export RUN``, the default behaviour): from the run's last
complete checkpoint, the genotype (``genotype.yaml``), the derived network's weights inherited
from the supernet (``derived_init.pt``: a state dict plus the genotype, the starting point for
retraining), and ``export.yaml`` with its parameter count, MACs (thop) and FLOPs (torch's
FlopCounterMode, interpolation and deformable sampling counted), and the latency predicted by
this device's table.

**Deployable files** (``python -m nas.export --model RUN_OR_NAME --format FORMAT [--out PATH]``;
any model reference of :func:`nas.models.resolve_model`: a training run, a model file, a
genotype, a search run, a registry name such as ``ffmef``). ``RUN --format F`` derives first,
then exports the derived network. Formats:

* ``state-dict`` (``.pt``): :func:`nas.models.save_model`'s ``{"arch", "state_dict", ...}``;
  the file alone rebuilds the network (``resolve_model(file)``); needs this package to load.
* ``torch-export`` (``.pt2``): a ``torch.export`` program (``torch.export.load(f).module()``,
  no ``nas`` import needed), exported with automatic dynamic batch, height and width
  (``Dim.AUTO``: the dimensions that the model's code does not force to a constant stay
  dynamic; which ones did is reported). The architecture record and model metadata are
  attached as extra files ``arch.json`` / ``meta.json`` (``torch.export.load(f,
  extra_files={"arch.json": ""})``).
* ``onnx`` (``.onnx``): ``torch.onnx.export`` of that same program (dynamo exporter; the
  TorchScript exporter as a fallback), dynamic axes as above, the architecture record in the
  model's ``metadata_props``. Needs the optional ``onnx`` and ``onnxscript`` packages
  (``pip install .[export]``); the check runs with ``onnxruntime`` when installed.

Every export is **checked** against the eager model on random pairs at two sizes (the export
example, batch 2 x 64 x 96 or ``--input-size H W``, and batch 1 x 72 x 100, a different size,
to prove the dynamic dimensions): the max abs difference is printed and written to
``<out>.check.yaml`` with the dynamic dimensions, the versions and the architecture. Exit
codes: 0 exported and within ``--tol``; 1 the export failed or the check exceeded ``--tol``
(the reason is printed and written to the check file); 2 a usage error (bad model reference,
missing optional package).

Deformable convolutions: :func:`nas.ops.deform_conv.deform_conv2d` loops over the batch and
over blocks of positions in Python and casts sizes to ``float``, which ``torch.export``
specialises to the example's shapes; while exporting, it runs its ``grid_sample`` backend
instead (see :data:`nas.ops.deform_conv.BACKENDS`: the same sampling, written with
``F.grid_sample``; exported ONNX maps it to ``GridSample``), so the misaligned networks export
with dynamic shapes. The check compares against the original implementation.

Size classes: a genotype with a ``pyramid`` or ``fast`` head blends a Laplacian pyramid whose
depth (:func:`nas.pyramid.max_levels`) and coarse-level sizes follow H x W. ``torch.export``
keeps H and W symbolic but guards on that structure (range guards: the depth is computed by
comparisons, and the pyramid's crops gather instead of slicing while exporting), so the program
takes the sizes whose pyramid matches the example's. Export such a net at its deployment size
(``--input-size``); its second check size is :func:`parity_partner`'s (one pixel off per side,
same half size), and the report says so (``size_class``) and which heights and widths the
program's guards take (``accepts``, :func:`accepted_sizes`: bisected with meta tensors, so
nothing is computed). ONNX keeps no guards: with dynamic
H and W, a size with another pyramid would run the example's and differ from the eager net (the
fast net exported at 768 x 1024, run at 1080 x 1920: max abs difference 0.0026) instead of
refusing, so the ONNX file of such a net has a fixed H x W (batch dynamic), and ONNX Runtime
refuses any other size.

Known limits (every format checked on the registry models; see the check files): LCNDR's
``torch-export`` program only accepts widths / heights for which its internal padding to a
multiple of 8 is zero, as the example's (the crop ``fused[..., :h, :w]`` makes ``torch.export``
specialise on it), so its check fails at 72 x 100 and the command exits 1; its ONNX file runs
at any size but keeps the example's branch of the attention's token cap (inputs above about
512 x 512 are not pooled before attending as the eager model does). Every other registry
network exports to all three formats with dynamic batch, height and width.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import json
import os
import sys
import warnings
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import Tensor, nn

from nas.derive import derive_run
from nas.runs import RunError
from nas.utils import atomic_write, atomic_write_text

# --- deployable exports ------------------------------------------------------------------

FORMATS = ("state-dict", "torch-export", "onnx")
"""Export formats of ``--format``."""
SUFFIXES = {"state-dict": ".pt", "torch-export": ".pt2", "onnx": ".onnx"}
CHECK_SHAPES = ((2, 3, 64, 96), (1, 3, 72, 100))
"""Check inputs: the export example (batch 2: torch.export specialises sizes 0 and 1) and a
second, different size (its batch is the example's when the batch dimension is static).
Size-class networks (:func:`size_class`) and ``--input-size`` use :func:`parity_partner`'s
second size instead."""
DEFAULT_TOL = 1e-4
"""Largest max abs difference from the eager model accepted by the check (``--tol``)."""


class ExportError(RuntimeError):
    """A format cannot be exported for a model (or its check failed); the message says why."""


class MissingDependencyError(ExportError):
    """An optional package the format needs is not installed."""


def check_pair_inputs(shape: tuple[int, ...], seed: int = 0) -> tuple[Tensor, Tensor]:
    """A reproducible random (under, over) pair: under in [0, 0.5), over in [0.5, 1)."""
    g = torch.Generator().manual_seed(seed)
    u = torch.rand(shape, generator=g) * 0.5
    o = torch.rand(shape, generator=g) * 0.5 + 0.5
    return u, o


def size_class(resolved: Any) -> bool:
    """True when the model's graph depends on the input size: a genotype with a pyramid or fast
    head, whose pyramid depth and coarse-level sizes follow H x W. ``torch.export`` keeps H and
    W symbolic but guards on that structure, so the program takes the sizes whose pyramid
    matches the example's (e.g. the fast net exported at 768 x 1024 runs 514 x 700 to
    1000 x 1000): export it at the deployment size (``--input-size``)."""
    return bool(resolved.pyramid_blend)


def parity_partner(h: int, w: int) -> tuple[int, int]:
    """A second check size that differs from ``(h, w)`` at full resolution only.

    Each side moves by one pixel to the other parity with the same ``ceil(side / 2)`` (even
    sides down, odd sides up), so every coarser pyramid level keeps its size; a side whose move
    would change the pyramid depth (:func:`nas.pyramid.max_levels`) stays put.
    """
    from nas.pyramid import max_levels

    def move(n: int) -> int:
        return n - 1 if n % 2 == 0 else n + 1

    depth = max_levels(h, w)
    h2 = move(h) if h > 2 and max_levels(move(h), w) == depth else h
    w2 = move(w) if w > 2 and max_levels(h2, move(w)) == depth else w
    return h2, w2


def _short(e: BaseException, limit: int = 600) -> str:
    text = " ".join(str(e).split())
    return f"{type(e).__name__}: {text[:limit]}{' ...' if len(text) > limit else ''}"


class PairModule(nn.Module):
    """Exports ``model(under, over)`` with the two inputs declared to have the same shape.

    ``torch.export``'s automatic dynamic dimensions give every input its own symbols; a model
    that never compares the two shapes (LCNDR pads each input by its own size) would then be
    specialised where the symbols meet. The ``torch._check`` calls unify them.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, under: Tensor, over: Tensor) -> Tensor:
        for i in range(4):
            torch._check(under.shape[i] == over.shape[i])
        return self.model(under, over)


def export_program(
    model: nn.Module, example: tuple[Tensor, Tensor], dynamic_size: bool = True
) -> Any:
    """``torch.export`` the model with automatic dynamic batch / H / W (see module docstring);
    with ``dynamic_size=False`` only the batch is dynamic, H and W are the example's."""
    auto = torch.export.Dim.AUTO
    spec = {0: auto, 2: auto, 3: auto} if dynamic_size else {0: auto}
    return torch.export.export(
        PairModule(model), example, dynamic_shapes=(spec, spec), strict=False
    )


def program_dynamic_dims(program: Any) -> dict[str, bool]:
    """Which of batch / height / width of the first input the exported program keeps symbolic."""
    user = set(program.graph_signature.user_inputs)
    for node in program.graph.nodes:
        if node.op == "placeholder" and node.name in user:
            shape = node.meta["val"].shape
            return {
                k: isinstance(shape[i], torch.SymInt)
                for k, i in (("batch", 0), ("height", 2), ("width", 3))
            }
    return {"batch": False, "height": False, "width": False}


def _check_shapes(
    dynamic: dict[str, bool], example: tuple[int, ...], partner: bool
) -> list[tuple[int, ...]]:
    """The example shape and a second one (:data:`CHECK_SHAPES`, or the parity partner)."""
    first = example
    second = [1, 3, *parity_partner(*example[-2:])] if partner else list(CHECK_SHAPES[1])
    for i, dim in ((0, "batch"), (2, "height"), (3, "width")):
        if not dynamic.get(dim, True):
            second[i] = first[i]
    return [first, tuple(second)]


def _compare(eager: nn.Module, run: Any, shapes: list[tuple[int, ...]]) -> list[dict[str, Any]]:
    """Max abs difference of ``run(u, o)`` from ``eager(u, o)`` on a random pair per shape."""
    rows = []
    for i, shape in enumerate(shapes):
        u, o = check_pair_inputs(shape, seed=i)
        with torch.no_grad():
            ref = eager(u, o)
            try:
                got = torch.as_tensor(run(u, o))
            except Exception as e:  # noqa: BLE001 - report which size fails and why
                rows.append({"shape": list(shape), "max_abs_diff": None, "error": _short(e)})
                continue
        if tuple(got.shape) != tuple(ref.shape):
            err = f"output shape {tuple(got.shape)} != eager {tuple(ref.shape)}"
            rows.append({"shape": list(shape), "max_abs_diff": None, "error": err})
            continue
        diff = float((got.float() - ref.float()).abs().max())
        rows.append({"shape": list(shape), "max_abs_diff": diff})
    return rows


def _readable(path: Path) -> None:
    """Exported files are for sharing: ``rw-r--r--`` (temporary files are created ``rw-------``)."""
    with contextlib.suppress(OSError):
        os.chmod(path, 0o644)


def _write_report(out: Path, report: dict[str, Any]) -> None:
    """Write ``report`` (made YAML-safe: tuples become lists) to ``<out>.check.yaml``."""
    plain = json.loads(json.dumps(report, default=str))
    path = atomic_write_text(Path(f"{out}.check.yaml"), yaml.safe_dump(plain, sort_keys=False))
    _readable(path)


def _default_out(ref: str, name: str, fmt: str) -> Path:
    p = Path(ref)
    if p.is_dir():
        return p / "export" / f"model{SUFFIXES[fmt]}"
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "model"
    return Path("exports") / f"{safe}{SUFFIXES[fmt]}"


def _meta(resolved: Any) -> dict[str, Any]:
    return {
        "name": resolved.name,
        "source": resolved.source,
        "trained": bool(resolved.trained),
        "arch": resolved.arch,
        "input": "under, over: RGB (B, 3, H, W) float32 in [0, 1]",
        "output": "fused RGB (B, 3, H, W) float32 in [0, 1]",
    }


def _write_state_dict(resolved: Any, out: Path, example: tuple[int, ...]) -> Any:
    from nas.models import resolve_model, save_model

    extra = {k: v for k, v in _meta(resolved).items() if k in ("name", "source", "trained")}
    if resolved.genotype is not None:
        extra["genotype"] = resolved.genotype.to_dict()
    save_model(out, resolved.model, resolved.arch, **extra)
    _readable(out)
    reloaded = resolve_model(out).model.eval()
    return reloaded, {"batch": True, "height": True, "width": True}, {}


def _write_torch_export(resolved: Any, out: Path, example: tuple[int, ...]) -> Any:
    program = export_program(resolved.model, check_pair_inputs(example))
    meta = _meta(resolved)
    extra = {"arch.json": json.dumps(resolved.arch), "meta.json": json.dumps(meta)}
    atomic_write(out, lambda f: torch.export.save(program, f, extra_files=extra))
    _readable(out)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="No complete tensor found")
        loaded = torch.export.load(out)
    run = loaded.module()
    info = {}
    if size_class(resolved):
        accepts = accepted_sizes(run, example[-2], example[-1])
        if accepts is not None:
            info["accepts"] = accepts  # {"height": [first, last or None], "width": [...]}
    return run, program_dynamic_dims(program), info


def _passes_guards(run: Any, h: int, w: int) -> bool:
    """Whether an exported program's shape guards take a ``(1, 3, h, w)`` pair. Probed with meta
    tensors: the guards run first, then the first operation stops at a weight on another
    device, so nothing is computed."""
    x = torch.empty(1, 3, h, w, device="meta")
    try:
        run(x, x)
    except AssertionError as e:
        if "Guard failed" in str(e):
            return False
        raise
    except Exception:  # noqa: BLE001 - past the guards: meta inputs stop the computation
        return True
    return True


def accepted_sizes(run: Any, h: int, w: int, reach: int = 8) -> dict[str, list[int | None]] | None:
    """The heights (at width ``w``) and widths (at height ``h``) an exported program takes.

    Each side is bisected between 8 and ``reach`` times the example's, the other side held:
    the guards of a pyramid net are ranges (depth, coarse sizes, border mode), so the sizes
    one side can take form one interval; ``None`` as its upper end where ``reach`` times the
    example passes (e.g. the long side, while the short one sets the depth). ``None`` in all
    when the example itself does not pass (the probe cannot tell)."""

    def passes(n: int, axis: int) -> bool:
        return _passes_guards(run, n, w) if axis == 0 else _passes_guards(run, h, n)

    out: dict[str, list[int | None]] = {}
    for axis, name, n0 in ((0, "height", h), (1, "width", w)):
        if not passes(n0, axis):
            return None
        lo, hi = 8, n0  # smallest passing in [lo, hi]
        if passes(lo, axis):
            hi = lo
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (lo, mid) if passes(mid, axis) else (mid, hi)
        first, last = hi, None
        if not passes(reach * n0, axis):
            lo, hi = n0, reach * n0  # largest passing in [lo, hi)
            while hi - lo > 1:
                mid = (lo + hi) // 2
                lo, hi = (mid, hi) if passes(mid, axis) else (lo, mid)
            last = lo
        out[name] = [first, last]
    return out


def _write_onnx(resolved: Any, out: Path, example_shape: tuple[int, ...]) -> Any:
    missing = [m for m in ("onnx", "onnxscript") if importlib.util.find_spec(m) is None]
    if missing:
        raise MissingDependencyError(
            f"format 'onnx' needs {' and '.join(missing)}: pip install .[export] "
            "(or pip install onnx onnxscript onnxruntime)"
        )
    import onnx

    example = check_pair_inputs(example_shape)
    # ONNX keeps no shape guards: a size-class net would run another size's input through
    # the example's pyramid, so its height and width stay fixed
    dynamic_size = not size_class(resolved)
    names = {"input_names": ["under", "over"], "output_names": ["fused"]}
    info: dict[str, Any] = {}
    try:
        program = export_program(resolved.model, example, dynamic_size=dynamic_size)
        onnx_program = torch.onnx.export(program, example, dynamo=True, verbose=False, **names)
        proto = onnx_program.model_proto
        info["exporter"] = "dynamo"
    except Exception as e:  # noqa: BLE001 - fall back, report both failures if it fails too
        info["dynamo_error"] = _short(e)
        dims = {0: "batch", 2: "height", 3: "width"} if dynamic_size else {0: "batch"}
        axes = {n: dims for n in ("under", "over", "fused")}
        buf = io.BytesIO()
        try:
            torch.onnx.export(
                resolved.model, example, buf, dynamo=False, dynamic_axes=axes, **names
            )
        except Exception as e2:  # noqa: BLE001
            raise ExportError(
                f"dynamo exporter: {info['dynamo_error']}; TorchScript exporter: {_short(e2)}"
            ) from None
        proto = onnx.load_from_string(buf.getvalue())
        info["exporter"] = "torchscript"
    for key, value in (
        ("nas.arch", json.dumps(resolved.arch)),
        ("nas.meta", json.dumps(_meta(resolved))),
    ):
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    data = proto.SerializeToString()
    atomic_write(out, lambda f: f.write(data))
    _readable(out)
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    dynamic = {k: bool(dims[i].dim_param) for k, i in (("batch", 0), ("height", 2), ("width", 3))}
    if importlib.util.find_spec("onnxruntime") is None:
        info["check_note"] = "onnxruntime is not installed: the ONNX file was not run"
        return None, dynamic, info
    import onnxruntime as ort

    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    in_names = [i.name for i in session.get_inputs()]

    def run(u: Tensor, o: Tensor) -> Tensor:
        feeds = dict(zip(in_names, (u.numpy(), o.numpy())))
        return torch.from_numpy(session.run(None, feeds)[0])

    info["runtime"] = f"onnxruntime {ort.__version__}"
    return run, dynamic, info


_WRITERS = {
    "state-dict": _write_state_dict,
    "torch-export": _write_torch_export,
    "onnx": _write_onnx,
}


def export_model(
    ref: str | Path,
    fmt: str,
    out: str | Path | None = None,
    *,
    tol: float = DEFAULT_TOL,
    input_size: tuple[int, int] | None = None,
    **model_kwargs: Any,
) -> dict[str, Any]:
    """Export a model reference to ``fmt`` and check it against the eager model.

    Args:
        ref: any model reference (:func:`nas.models.resolve_model`).
        fmt: one of :data:`FORMATS`.
        out: destination (default: ``<run>/export/model.<ext>`` for a run folder, else
            ``exports/<name>.<ext>``); the check report goes to ``<out>.check.yaml``.
        tol: largest accepted max abs difference.
        input_size: ``(H, W)`` of the export example (batch 2), e.g. the deployment size;
            default :data:`CHECK_SHAPES`' first. With it, or for a :func:`size_class` network,
            the second check size is :func:`parity_partner`'s.
        model_kwargs: passed to registry models (e.g. ``channels``).

    Returns:
        The report written to the check file: ``ok``, ``checks`` (shape, ``max_abs_diff``),
        ``dynamic`` (batch / height / width), ``max_abs_diff``, and on failure ``error``.

    Raises:
        ModelRefError: ``ref`` cannot be resolved. MissingDependencyError: onnx is missing.
        ValueError: unknown format, or ``out`` would overwrite the model's source file.
    """
    from nas.models import resolve_model

    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; valid formats: {', '.join(FORMATS)}")
    resolved = resolve_model(ref, **model_kwargs)
    resolved.model.eval()
    out = Path(out) if out is not None else _default_out(str(ref), resolved.name, fmt)
    if fmt != "state-dict" and out.suffix != SUFFIXES[fmt]:
        raise ValueError(f"--out for {fmt} must end in {SUFFIXES[fmt]}, got '{out}'")
    src = Path(resolved.source)
    if src.is_file() and src.resolve() == out.resolve():
        raise ValueError(f"refusing to overwrite the source model file '{src}' (choose --out)")
    if input_size is not None and (len(input_size) != 2 or min(input_size) < 8):
        raise ValueError(f"input_size must be (H, W) with both >= 8, got {tuple(input_size)}")
    example = (2, 3, *input_size) if input_size is not None else CHECK_SHAPES[0]
    partner = input_size is not None or size_class(resolved)
    report: dict[str, Any] = {
        "ok": False,
        "format": fmt,
        "file": str(out),
        **{k: v for k, v in _meta(resolved).items() if k not in ("input", "output")},
        "torch": str(torch.__version__),
        "tol": tol,
    }
    try:
        run, dynamic, info = _WRITERS[fmt](resolved, out, example)
    except MissingDependencyError:
        raise
    except Exception as e:  # noqa: BLE001 - the report says which format fails and why
        report["error"] = f"{fmt} export failed for {resolved.name}: {_short(e, 1500)}"
        _write_report(out, report)
        return report
    report.update(info)
    report["dynamic"] = dynamic
    if size_class(resolved) and fmt != "state-dict":
        report["size_class"] = (
            f"the graph follows the pyramid of a {example[2]} x {example[3]} input: it takes "
            "sizes with the same pyramid shape, not every size"
        )
        if fmt == "onnx":
            report["size_class"] = (
                f"ONNX keeps no shape guards, so this file has a fixed {example[2]} x "
                f"{example[3]} input (batch dynamic): at another size it would run this "
                "pyramid and differ from the eager net instead of refusing"
            )
    if run is None:
        report["checks"] = []
        report["max_abs_diff"] = None
        report["ok"] = True
    else:
        checks = _compare(resolved.model, run, _check_shapes(dynamic, example, partner))
        report["checks"] = checks
        diffs = [c["max_abs_diff"] for c in checks]
        bad = [c for c in checks if c["max_abs_diff"] is None]
        report["max_abs_diff"] = None if bad else max(diffs)
        if bad:
            report["error"] = f"{fmt} file of {resolved.name} fails at " + "; ".join(
                f"{tuple(c['shape'])}: {c['error']}" for c in bad
            )
        elif report["max_abs_diff"] > tol:
            report["error"] = (
                f"{fmt} file of {resolved.name} differs from the eager model by "
                f"{report['max_abs_diff']:.3g} > tol {tol:g}"
            )
        else:
            report["ok"] = True
    _write_report(out, report)
    return report


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m nas.export",
        description=__doc__.split("\n")[0],
        epilog="See the module docstring (python -c 'import nas.export; help(nas.export)').",
    )
    p.add_argument("run", nargs="?", help="a search run folder (results/runs/<name>) to derive")
    p.add_argument("--max-skip", type=int, help="cap parameter-free ops at derivation")
    p.add_argument(
        "--model", help="model to export: training run, model .pt, genotype, registry name, ..."
    )
    p.add_argument("--format", choices=FORMATS, help="deployable format to write")
    p.add_argument("--out", help="output file (default: <run>/export/model.<ext>, exports/...)")
    p.add_argument("--channels", type=int, help="width of crmef-* registry models")
    p.add_argument("--tol", type=float, default=DEFAULT_TOL, help="accepted max abs difference")
    p.add_argument(
        "--input-size",
        type=int,
        nargs=2,
        metavar=("H", "W"),
        help="export example size, e.g. the deployment size (default 64 96); pyramid and fast "
        "heads export one graph per pyramid shape, so give them the size they will run at",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    from nas.models import ModelRefError

    p = build_parser()
    args = p.parse_args(argv)
    if args.run and args.model:
        p.error("give either a search RUN to derive or --model, not both")
    if not args.run and not args.model:
        p.error("give a search RUN to derive, or --model RUN_OR_NAME --format FORMAT")
    if args.model and not args.format:
        p.error("--model needs --format (state-dict, torch-export or onnx)")
    try:
        if args.run:
            report = derive_run(args.run, args.max_skip)
            print(yaml.safe_dump(report, sort_keys=False))
            if not args.format:
                return 0
        ref = args.model or args.run
        kwargs = {"channels": args.channels} if args.channels else {}
        size = tuple(args.input_size) if args.input_size else None
        result = export_model(ref, args.format, args.out, tol=args.tol, input_size=size, **kwargs)
    except (RunError, FileNotFoundError, ValueError, ModelRefError, MissingDependencyError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    check = f"{result['file']}.check.yaml"
    if not result["ok"]:
        print(f"error: {result['error']} (details: {check})", file=sys.stderr)
        return 1
    dyn = ", ".join(k for k, v in result["dynamic"].items() if v) or "none"
    if result["checks"]:
        sizes = "; ".join(
            f"{'x'.join(map(str, c['shape']))}: {c['max_abs_diff']:.3g}" for c in result["checks"]
        )
        checked = f"max abs diff vs eager {result['max_abs_diff']:.3g} ({sizes})"
    else:
        checked = f"not run ({result.get('check_note', 'no runtime')})"
    if not result["trained"]:
        print(f"note: {result['name']} has no trained weights (exported as initialised)")
    print(
        f"exported {result['name']} as {args.format}: {result['file']}\n"
        f"  dynamic dims: {dyn}\n  check: {checked}\n  report: {check}"
    )
    if "size_class" in result:
        print(f"  note: {result['size_class']}")
    if "accepts" in result:
        (h0, h1), (w0, w1) = result["accepts"]["height"], result["accepts"]["width"]
        h, w = result["checks"][0]["shape"][-2:]
        print(
            f"  takes: height {h0} to {h1 or 'any'} at width {w}; "
            f"width {w0} to {w1 or 'any'} at height {h}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
