"""Tests for :func:`nas.ops.deform_conv.deform_conv2d` against a slow loop reference."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import nas.ops.deform_conv as dc
from nas.ops.deform_conv import deform_conv2d


def _pair(v: int | tuple[int, int]) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else v


def _bilinear(img: list[list[float]], py: float, px: float) -> float:
    """Bilinear sample of a 2-D list; each out-of-range integer neighbour contributes zero."""
    H, W = len(img), len(img[0])
    y0, x0 = math.floor(py), math.floor(px)
    ly, lx = py - y0, px - x0
    val = 0.0
    for yy, wy in ((y0, 1.0 - ly), (y0 + 1, ly)):
        for xx, wx in ((x0, 1.0 - lx), (x0 + 1, lx)):
            if 0 <= yy < H and 0 <= xx < W:
                val += wy * wx * img[yy][xx]
    return val


def reference_deform_conv2d(
    input: torch.Tensor,
    offset: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    stride: int | tuple[int, int] = 1,
    padding: int | tuple[int, int] = 0,
    dilation: int | tuple[int, int] = 1,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Straight loop implementation of the torchvision semantics (float64, tiny sizes only)."""
    sh, sw = _pair(stride)
    ph, pw = _pair(padding)
    dh, dw = _pair(dilation)
    B, C, H, W = input.shape
    C_out, Cpg, kh, kw = weight.shape
    groups = C // Cpg
    K = kh * kw
    og = offset.shape[1] // (2 * K)
    Cg = C // og
    H_out = (H + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    W_out = (W + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    x = input.double().tolist()
    off = offset.double().tolist()
    msk = None if mask is None else mask.double().tolist()
    wt = weight.double().tolist()
    out = torch.zeros(B, C_out, H_out, W_out, dtype=torch.float64)
    opg = C_out // groups
    for b in range(B):
        for y in range(H_out):
            for xo in range(W_out):
                # sampled[c][i][j]
                sampled = [[[0.0] * kw for _ in range(kh)] for _ in range(C)]
                for c in range(C):
                    g = c // Cg
                    for i in range(kh):
                        for j in range(kw):
                            m = g * K + i * kw + j
                            py = y * sh - ph + i * dh + off[b][2 * m][y][xo]
                            px = xo * sw - pw + j * dw + off[b][2 * m + 1][y][xo]
                            v = _bilinear(x[b][c], py, px)
                            if msk is not None:
                                v *= msk[b][m][y][xo]
                            sampled[c][i][j] = v
                for o in range(C_out):
                    gw = o // opg
                    acc = 0.0
                    for ci in range(Cpg):
                        c = gw * Cpg + ci
                        for i in range(kh):
                            for j in range(kw):
                                acc += wt[o][ci][i][j] * sampled[c][i][j]
                    if bias is not None:
                        acc += float(bias[o])
                    out[b, o, y, xo] = acc
    return out


def _out_size(n: int, k: int, s: int, p: int, d: int) -> int:
    return (n + 2 * p - d * (k - 1) - 1) // s + 1


def _make(
    B: int = 2,
    C: int = 4,
    C_out: int = 4,
    H: int = 7,
    W: int = 9,
    k: tuple[int, int] = (3, 3),
    stride: int | tuple[int, int] = 1,
    padding: int | tuple[int, int] = 1,
    dilation: int | tuple[int, int] = 1,
    groups: int = 1,
    og: int = 1,
    use_mask: bool = True,
    offset_kind: str = "random",
    dtype: torch.dtype = torch.float64,
    seed: int = 0,
) -> dict:
    gen = torch.Generator().manual_seed(seed)
    kh, kw = k
    sh, sw = _pair(stride)
    ph, pw = _pair(padding)
    dh, dw = _pair(dilation)
    Ho, Wo = _out_size(H, kh, sh, ph, dh), _out_size(W, kw, sw, pw, dw)
    x = torch.randn(B, C, H, W, generator=gen, dtype=dtype)
    w = torch.randn(C_out, C // groups, kh, kw, generator=gen, dtype=dtype)
    shape = (B, 2 * og * kh * kw, Ho, Wo)
    if offset_kind == "random":
        off = torch.randn(shape, generator=gen, dtype=dtype) * 1.5
    elif offset_kind == "outside":  # large: many samples (partly) outside the image
        off = torch.randn(shape, generator=gen, dtype=dtype) * 6.0
    elif offset_kind == "integer":  # exactly on integer (and border) positions
        off = torch.randint(-4, 5, shape, generator=gen).to(dtype)
    elif offset_kind == "half":  # half-integers, incl. exactly -1 / H boundaries
        off = torch.randint(-8, 9, shape, generator=gen).to(dtype) / 2
    elif offset_kind == "zero":
        off = torch.zeros(shape, dtype=dtype)
    else:
        raise AssertionError(offset_kind)
    mask = torch.rand(B, og * kh * kw, Ho, Wo, generator=gen, dtype=dtype) if use_mask else None
    bias = torch.randn(C_out, generator=gen, dtype=dtype)
    return dict(
        input=x,
        offset=off,
        weight=w,
        bias=bias,
        stride=stride,
        padding=padding,
        dilation=dilation,
        mask=mask,
    )


CASES = [
    # (name, kwargs for _make)
    ("basic", {}),
    ("no_mask", {"use_mask": False}),
    ("stride2", {"stride": 2}),
    ("stride_hw", {"stride": (2, 1), "padding": (0, 2)}),
    ("pad0", {"padding": 0}),
    ("pad2", {"padding": 2}),
    ("dil2", {"dilation": 2, "padding": 2}),
    ("dil_hw", {"dilation": (1, 2), "padding": (1, 0)}),
    ("groups2", {"groups": 2}),
    ("og2", {"og": 2}),
    ("groups2_og2", {"groups": 2, "og": 2, "use_mask": False}),
    ("groups2_og4", {"groups": 2, "og": 4, "C_out": 6}),
    ("groups4_og2", {"C": 8, "groups": 4, "og": 2, "C_out": 4}),
    ("k3x2", {"k": (3, 2), "padding": (1, 0)}),
    ("k1x1", {"k": (1, 1), "padding": 0}),
    ("k2x3_stride_dil", {"k": (2, 3), "stride": (1, 2), "dilation": (2, 1), "padding": 1}),
    ("odd_8x5", {"H": 8, "W": 5, "k": (3, 2)}),
    ("outside", {"offset_kind": "outside"}),
    ("outside_og2", {"offset_kind": "outside", "og": 2, "use_mask": False}),
    ("integer", {"offset_kind": "integer"}),
    ("integer_og2_g2", {"offset_kind": "integer", "og": 2, "groups": 2}),
    ("half", {"offset_kind": "half", "stride": 2}),
    ("batch1", {"B": 1, "C_out": 3}),
]


@pytest.mark.parametrize("name,kw", CASES, ids=[c[0] for c in CASES])
def test_matches_reference(name: str, kw: dict) -> None:
    args = _make(**kw)
    ref = reference_deform_conv2d(**args)
    out = deform_conv2d(**args)
    assert out.shape == ref.shape
    assert out.dtype == torch.float64
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("use_bias", [True, False])
def test_float32_matches_reference(use_bias: bool) -> None:
    args = _make(dtype=torch.float32, og=2, groups=2, offset_kind="outside")
    if not use_bias:
        args["bias"] = None
    ref = reference_deform_conv2d(**args)
    out = deform_conv2d(**args)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out.double(), ref, rtol=1e-4, atol=1e-4)


def test_bias_is_added() -> None:
    args = _make()
    with_bias = deform_conv2d(**args)
    bias = args.pop("bias")
    without = deform_conv2d(**args)
    torch.testing.assert_close(with_bias, without + bias.view(1, -1, 1, 1))


@pytest.mark.parametrize(
    "kw",
    [
        {},
        {"groups": 2},
        {"groups": 4, "C_out": 8},
        {"stride": 2, "padding": 0},
        {"dilation": (2, 1), "padding": (2, 1), "k": (3, 2)},
        {"og": 2, "groups": 2},
    ],
)
def test_zero_offset_equals_conv2d(kw: dict) -> None:
    args = _make(offset_kind="zero", use_mask=False, **kw)
    groups = args["input"].shape[1] // args["weight"].shape[1]
    expected = F.conv2d(
        args["input"],
        args["weight"],
        args["bias"],
        stride=args["stride"],
        padding=args["padding"],
        dilation=args["dilation"],
        groups=groups,
    )
    torch.testing.assert_close(deform_conv2d(**args), expected)
    args["mask"] = torch.ones(
        args["offset"].shape[0], args["offset"].shape[1] // 2, *args["offset"].shape[2:]
    ).double()
    torch.testing.assert_close(deform_conv2d(**args), expected)


def test_mask_scales_linearly() -> None:
    args = _make(use_mask=True)
    args["bias"] = None
    out1 = deform_conv2d(**args)
    args["mask"] = args["mask"] * 3.0
    out3 = deform_conv2d(**args)
    torch.testing.assert_close(out3, 3.0 * out1)


def test_integer_offset_is_shift() -> None:
    """A uniform integer offset (dy, dx) = (1, -2) is conv2d of the shifted, zero-extended image."""
    B, C, H, W = 1, 3, 6, 7
    x = torch.randn(B, C, H, W, dtype=torch.float64)
    w = torch.randn(2, C, 3, 3, dtype=torch.float64)
    off = torch.zeros(B, 18, H, W, dtype=torch.float64)
    off[:, 0::2] = 1.0  # dy
    off[:, 1::2] = -2.0  # dx
    # tap (i, j) at output (y, x) reads x[y + i, x + j - 3]; with 3 pixels of zero padding
    # and no conv padding that is conv output position (y + 3, x).
    expected = F.conv2d(F.pad(x, (3, 3, 3, 3)), w)[:, :, 3 : 3 + H, :W]
    torch.testing.assert_close(deform_conv2d(x, off, w, padding=1), expected)


@pytest.mark.parametrize("og,groups", [(1, 1), (2, 2), (1, 2)])
def test_gradcheck(og: int, groups: int) -> None:
    torch.manual_seed(0)
    B, C, H, W, C_out = 1, 2 * groups, 4, 5, 2
    x = torch.randn(B, C, H, W, dtype=torch.float64, requires_grad=True)
    w = torch.randn(C_out, C // groups, 3, 3, dtype=torch.float64, requires_grad=True)
    Ho, Wo = _out_size(H, 3, 1, 1, 1), _out_size(W, 3, 2, 1, 1)
    # keep samples away from integer coordinates (floor is not differentiable there)
    off = (torch.rand(B, 2 * og * 9, Ho, Wo, dtype=torch.float64) * 0.8 + 0.1) * 1.7 - 0.9
    off.requires_grad_(True)
    mask = torch.rand(B, og * 9, Ho, Wo, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(C_out, dtype=torch.float64, requires_grad=True)

    def fn(x, off, w, b, m):
        return deform_conv2d(x, off, w, b, stride=(1, 2), padding=1, mask=m)

    assert torch.autograd.gradcheck(fn, (x, off, w, bias, mask), eps=1e-6, atol=1e-6)


def test_grads_flow_to_all_inputs() -> None:
    args = _make(og=2, groups=2, offset_kind="outside")
    for key in ("input", "offset", "weight", "bias", "mask"):
        args[key].requires_grad_(True)
    deform_conv2d(**args).square().sum().backward()
    for key in ("input", "offset", "weight", "bias", "mask"):
        g = args[key].grad
        assert g is not None and g.shape == args[key].shape and torch.isfinite(g).all(), key


BLOCK_CASES = [
    c
    for c in CASES
    if c[0]
    in ("basic", "no_mask", "stride_hw", "groups2", "og2", "groups2_og4", "k3x2", "outside", "half")
]


@pytest.mark.parametrize("name,kw", BLOCK_CASES, ids=[c[0] for c in BLOCK_CASES])
@pytest.mark.parametrize(
    "gather_elems,table_elems", [(1, 1), (300, 40), (1000, 200), (10**6, 10**6)]
)
def test_blocked_inference_path(
    name: str, kw: dict, gather_elems: int, table_elems: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The no-grad path works in table blocks split into gather blocks: tiny ones here."""
    args = _make(**kw)
    ref = reference_deform_conv2d(**args)
    monkeypatch.setattr(dc, "_GATHER_ELEMS_CPU", gather_elems)
    monkeypatch.setattr(dc, "_TABLE_ELEMS_CPU", table_elems)
    with torch.no_grad():
        out = deform_conv2d(**args)
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)
    # ... and the autograd path (one block per image) agrees.
    args["offset"] = args["offset"].clone().requires_grad_(True)
    torch.testing.assert_close(deform_conv2d(**args).detach(), ref, rtol=1e-10, atol=1e-10)


def test_nonfinite_offsets() -> None:
    """+-inf offsets sample outside the image (zero); NaN offsets give NaN, not a crash."""
    args = _make(offset_kind="zero", use_mask=False, B=1)
    args["bias"] = None
    off = args["offset"]
    off[0, 0, 2, 3] = float("inf")  # dy of tap (0, 0) at output (2, 3)
    off[0, 3, 4, 4] = -float("inf")  # dx of tap (0, 1) at output (4, 4)
    out = deform_conv2d(**args)
    assert torch.isfinite(out).all()
    # the same as pushing those samples far outside
    off2 = off.clone()
    off2[0, 0, 2, 3] = 1e4
    off2[0, 3, 4, 4] = -1e4
    torch.testing.assert_close(out, deform_conv2d(**{**args, "offset": off2}))
    off[0, 5, 1, 1] = float("nan")
    with torch.no_grad():
        out = deform_conv2d(**args)
    assert torch.isnan(out[0, :, 1, 1]).all()
    assert torch.isfinite(out[0, :, 0, 0]).all()


def test_inference_mode_and_noncontiguous() -> None:
    args = _make(og=2)
    expected = deform_conv2d(**args)
    args["input"] = args["input"].transpose(2, 3).contiguous().transpose(2, 3)
    args["offset"] = args["offset"].contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        out = deform_conv2d(**args)
    torch.testing.assert_close(out, expected)
    # offset and mask as channel slices of one tensor (as a DCNv2 layer produces them)
    om = torch.cat([args["offset"], args["mask"]], dim=1)
    n_off = args["offset"].shape[1]
    args["offset"], args["mask"] = om[:, :n_off], om[:, n_off:]
    assert not args["offset"].is_contiguous()
    torch.testing.assert_close(deform_conv2d(**args), expected)


@pytest.mark.parametrize(
    "change,match",
    [
        (lambda a: a.update(offset=a["offset"][:, :-1]), "offset"),
        (lambda a: a.update(offset=a["offset"][:, :, :-1]), "offset"),
        (lambda a: a.update(offset=a["offset"][:1]), "offset"),
        (lambda a: a.update(offset=a["offset"][0]), "offset"),
        (lambda a: a.update(mask=a["mask"][:, :-1]), "mask"),
        (lambda a: a.update(mask=a["mask"][:, :, :, :-1]), "mask"),
        (lambda a: a.update(weight=a["weight"][:, :3]), "weight"),
        (lambda a: a.update(weight=a["weight"][0]), "weight"),
        (lambda a: a.update(input=a["input"][0]), "input"),
        (lambda a: a.update(bias=a["bias"][:-1]), "bias"),
        (lambda a: a.update(stride=0), "stride"),
    ],
)
def test_bad_shapes_raise(change, match: str) -> None:
    args = _make(use_mask=True)
    change(args)
    with pytest.raises(ValueError, match=match):
        deform_conv2d(**args)


def test_offset_groups_must_divide_channels() -> None:
    args = _make(C=4, og=1)
    # 3 offset groups do not divide 4 input channels
    args["offset"] = torch.zeros(2, 2 * 3 * 9, 7, 9, dtype=torch.float64)
    args["mask"] = None
    with pytest.raises(ValueError, match=r"offset.*\(2, 54, 7, 9\)"):
        deform_conv2d(**args)


@pytest.mark.cuda
def test_cuda_matches_cpu() -> None:
    args = _make(og=2, groups=2, offset_kind="outside")
    expected = deform_conv2d(**args)
    cuda_args = {k: (v.cuda() if isinstance(v, torch.Tensor) else v) for k, v in args.items()}
    torch.testing.assert_close(deform_conv2d(**cuda_args).cpu(), expected)


# --- backend dispatch: torchvision's kernel on CUDA when present --------------------------


def test_backend_setting_and_auto_on_cpu() -> None:
    from nas.ops.deform_conv import deform_backend, deform_backend_for

    assert deform_backend_for("cpu") == "torch"  # auto: the pure path for CPU tensors
    with deform_backend("torch"):
        assert deform_backend_for("cpu") == "torch"
    with pytest.raises(ValueError, match="deform backend"):
        with deform_backend("cudnn"):
            pass


def test_forcing_a_missing_torchvision_is_a_clear_error() -> None:
    from nas.ops.deform_conv import _torchvision_ops, deform_backend

    if _torchvision_ops() is not None:
        pytest.skip("torchvision imports here")
    x = torch.rand(1, 2, 5, 5)
    with deform_backend("torchvision"), pytest.raises(RuntimeError, match="torchvision"):
        deform_conv2d(x, torch.zeros(1, 18, 5, 5), torch.rand(3, 2, 3, 3), padding=1)


def _float64_case(seed: int, x: tuple, off: tuple, mask: tuple, w: tuple) -> dict:
    """Random float64 arguments (offsets of a few pixels) that need gradients."""
    g = torch.Generator().manual_seed(seed)
    return {
        "input": torch.rand(x, generator=g, dtype=torch.float64, requires_grad=True),
        "offset": (3 * torch.randn(off, generator=g, dtype=torch.float64)).requires_grad_(),
        "mask": torch.rand(mask, generator=g, dtype=torch.float64, requires_grad=True),
        "weight": torch.randn(w, generator=g, dtype=torch.float64, requires_grad=True),
        "bias": torch.randn(w[0], generator=g, dtype=torch.float64),
    }


def _assert_backends_agree(names: tuple[str, str], case: dict, **geometry) -> None:
    """Both backends give the same output and the same gradients w.r.t. every tensor."""
    from nas.ops.deform_conv import deform_backend, deform_backend_for

    outs = []
    for name in names:
        with deform_backend(name):
            assert deform_backend_for("cpu") == name
            y = deform_conv2d(**case, **geometry)
        wrt = (case["input"], case["offset"], case["mask"], case["weight"])
        outs.append((y.detach(), torch.autograd.grad(y.square().sum(), wrt)))
    torch.testing.assert_close(outs[1][0], outs[0][0])
    for a, c in zip(outs[1][1], outs[0][1]):
        torch.testing.assert_close(a, c)


def test_torchvision_and_pure_paths_agree() -> None:
    """Forced onto torchvision's kernel (on CPU here; on CUDA it is the default there), the
    result and the gradients equal the pure path's."""
    from nas.ops.deform_conv import _torchvision_ops

    if _torchvision_ops() is None:
        pytest.skip("torchvision does not import beside this torch build")
    case = _float64_case(0, (2, 4, 9, 11), (2, 18, 9, 11), (2, 9, 9, 11), (5, 4, 3, 3))
    _assert_backends_agree(("torch", "torchvision"), case, padding=1)


def test_grid_sample_backend_agrees_with_the_pure_path() -> None:
    """The export kernel, forced as a backend: same values and gradients (float64; two offset
    groups, two weight groups, stride 2), and the same argument checks before it runs."""
    from nas.ops.deform_conv import deform_backend

    case = _float64_case(1, (2, 4, 9, 11), (2, 36, 5, 6), (2, 18, 5, 6), (6, 2, 3, 3))
    _assert_backends_agree(("torch", "grid_sample"), case, stride=2, padding=1)
    case["mask"] = case["mask"][:, :9]
    with deform_backend("grid_sample"), pytest.raises(ValueError, match="mask shape"):
        deform_conv2d(**case, stride=2, padding=1)


@pytest.mark.cuda
def test_auto_uses_torchvision_on_cuda_when_present() -> None:
    from nas.ops.deform_conv import _torchvision_ops, deform_backend_for

    want = "torchvision" if _torchvision_ops() is not None else "torch"
    assert deform_backend_for("cuda") == want


# --- argument checks run before dispatch, on every kernel ---------------------------------


class _FakeTorchvisionOps:
    """Stands in for ``torchvision.ops``: records calls (a bad call must never get here)."""

    def __init__(self) -> None:
        self.calls = 0

    def deform_conv2d(self, *args, **kwargs) -> torch.Tensor:
        self.calls += 1
        return torch.zeros(1)


_BAD_ARGS = [
    (lambda a: a.update(offset=a["offset"][:, :-1]), "offset"),
    (lambda a: a.update(offset=a["offset"][:, :, :-1]), "offset"),
    (lambda a: a.update(mask=a["mask"][:, :-1]), "mask"),
    (lambda a: a.update(weight=a["weight"][:, :3]), "weight"),
    (lambda a: a.update(input=a["input"][0]), "input"),
    (lambda a: a.update(bias=a["bias"][:-1]), "bias"),
    (lambda a: a.update(stride=0), "stride"),
    (lambda a: a.update(padding=-1), "padding"),
    (lambda a: a.update(dilation=(1, 2, 3)), "dilation"),
]


@pytest.mark.parametrize("branch", ["torch", "torchvision", "export"])
@pytest.mark.parametrize("change,match", _BAD_ARGS)
def test_bad_arguments_raise_on_every_branch(monkeypatch, branch: str, change, match) -> None:
    """The same ``ValueError`` whichever kernel would run: the pure path, torchvision's
    (forced with a stand-in module, which must not be called), or the export kernel (forced
    by pretending to export)."""
    fake = _FakeTorchvisionOps()
    if branch == "torchvision":
        monkeypatch.setattr(dc, "_TV_OPS", [fake])
        monkeypatch.setattr(dc, "_backend", "torchvision")
    elif branch == "export":
        monkeypatch.setattr(torch.compiler, "is_exporting", lambda: True)
    args = _make(use_mask=True)
    # the good arguments reach the branch's kernel
    out = deform_conv2d(**args)
    if branch == "torchvision":
        assert fake.calls == 1
    else:
        torch.testing.assert_close(out, reference_deform_conv2d(**args))
    change(args)
    with pytest.raises(ValueError, match=match):
        deform_conv2d(**args)
    assert fake.calls == (1 if branch == "torchvision" else 0)
