"""Colour conversions: exact round trips, neutral grey, agreement with kornia, finite gradients."""

from __future__ import annotations

import pytest
import torch

from nas.color import (
    CHROMA_NEUTRAL,
    fuse_chroma,
    fuse_in_lab,
    fuse_in_ycbcr,
    lab_to_rgb,
    rgb_to_gray,
    rgb_to_lab,
    rgb_to_y,
    rgb_to_ycbcr,
    ycbcr_to_rgb,
)


def _grey(b: int = 2, h: int = 17, w: int = 23) -> torch.Tensor:
    return torch.rand(b, 1, h, w).expand(b, 3, h, w).contiguous()


@pytest.mark.parametrize("make", [lambda: torch.rand(2, 3, 37, 53), _grey])
def test_ycbcr_round_trip(make) -> None:
    x = make()
    assert torch.allclose(ycbcr_to_rgb(rgb_to_ycbcr(x)), x, atol=1e-5, rtol=0)


@pytest.mark.parametrize("make", [lambda: torch.rand(2, 3, 37, 53), _grey])
def test_lab_round_trip(make) -> None:
    x = make()
    assert torch.allclose(lab_to_rgb(rgb_to_lab(x)), x, atol=1e-5, rtol=0)


def test_grey_is_neutral() -> None:
    g = _grey()
    ycc, lab = rgb_to_ycbcr(g), rgb_to_lab(g)
    assert torch.allclose(ycc[:, 1:], torch.full_like(ycc[:, 1:], CHROMA_NEUTRAL), atol=1e-6)
    assert lab[:, 1:].abs().max() < 1e-3
    assert torch.allclose(rgb_to_gray(g), g[:, :1], atol=1e-6)


def test_ycbcr_scale_matches_ffmef() -> None:
    """Black -> Y 16/255, white -> Y 235/255 (BT.601 studio swing, /255 like FFMEF's code)."""
    x = torch.tensor([0.0, 1.0]).view(1, 1, 1, 2).expand(1, 3, 1, 2)
    y = rgb_to_y(x).flatten() * 255
    assert torch.allclose(y, torch.tensor([16.0, 235.0]), atol=1e-3)
    red = torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1)
    expected = torch.tensor([16 + 65.481, 128 - 37.797, 128 + 112.0])
    assert torch.allclose(rgb_to_ycbcr(red).flatten() * 255, expected, atol=1e-2)


def test_lab_reference_values_and_kornia() -> None:
    kornia = pytest.importorskip("kornia")
    white = torch.ones(1, 3, 1, 1)
    assert torch.allclose(rgb_to_lab(white).flatten(), torch.tensor([100.0, 0.0, 0.0]), atol=1e-3)
    x = torch.rand(2, 3, 16, 16)
    assert torch.allclose(rgb_to_lab(x), kornia.color.rgb_to_lab(x), atol=1e-2)


def test_rgb_to_gray_bt601() -> None:
    x = torch.rand(2, 3, 5, 7)
    ref = 0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]
    assert torch.allclose(rgb_to_gray(x)[:, 0], ref, atol=1e-6)


def test_gradients_finite_at_black() -> None:
    x = torch.zeros(1, 3, 4, 4, requires_grad=True)
    lab_to_rgb(rgb_to_lab(x)).sum().backward()
    assert torch.isfinite(x.grad).all()
    y = torch.zeros(1, 3, 4, 4, requires_grad=True)
    ycbcr_to_rgb(rgb_to_ycbcr(y)).sum().backward()
    assert torch.isfinite(y.grad).all()


def test_fuse_chroma_formula() -> None:
    n = CHROMA_NEUTRAL
    c0 = torch.tensor([n, n, n + 0.2, n + 0.1])
    c1 = torch.tensor([n, n - 0.3, n, n - 0.1])
    out = fuse_chroma(c0, c1)
    expected = torch.tensor([n, n - 0.3, n + 0.2, ((n + 0.1) * 0.1 + (n - 0.1) * 0.1) / 0.2])
    assert torch.allclose(out, expected, atol=1e-6)
    assert out[0] == n  # 0/0 -> neutral, exactly


def test_colour_paths_keep_grey_grey() -> None:
    """Two grey exposures fuse to a grey image through both colour paths."""
    under, over = _grey() * 0.4, _grey() * 0.4 + 0.5
    for path in (fuse_in_ycbcr, fuse_in_lab):
        out = path(under, over, lambda a, b: 0.5 * (a + b))
        assert out.shape == under.shape
        assert (out[:, 0] - out[:, 1]).abs().max() < 1e-4
        assert (out[:, 1] - out[:, 2]).abs().max() < 1e-4
