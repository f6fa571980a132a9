"""Image statistics that catch a washed-out fusion: luminance RMS contrast and colourfulness.

Neither is a quality score on its own (a noisy image has a high contrast); they are read
beside a reference fusion's values, as ratios, to see whether a method flattens global
contrast or drains colour.
"""

from __future__ import annotations

from torch import Tensor

from nas.metrics.basic import _check_image


def rms_contrast(x: Tensor) -> Tensor:
    """RMS contrast: the standard deviation of the Rec. 601 luminance.

    Args:
        x: (B, 3, H, W) RGB in [0, 1].

    Returns:
        (B,) float64, in [0, 0.5].
    """
    _check_image(x, "x", channels=(3,))
    r, g, b = x.double().unbind(1)
    y = 0.299 * r + 0.587 * g + 0.114 * b
    return y.flatten(1).std(dim=1, correction=0)


def colourfulness(x: Tensor) -> Tensor:
    """Hasler & Suesstrunk (2003) colourfulness on 0-255 RGB.

    ``M = sqrt(sd_rg^2 + sd_yb^2) + 0.3 sqrt(mu_rg^2 + mu_yb^2)`` with ``rg = R - G`` and
    ``yb = (R + G) / 2 - B``; 0 for a grey image.

    Args:
        x: (B, 3, H, W) RGB in [0, 1].

    Returns:
        (B,) float64.
    """
    _check_image(x, "x", channels=(3,))
    r, g, b = (x.double() * 255.0).flatten(2).unbind(1)
    rg, yb = r - g, 0.5 * (r + g) - b
    spread = (rg.std(dim=1, correction=0) ** 2 + yb.std(dim=1, correction=0) ** 2).sqrt()
    return spread + 0.3 * (rg.mean(dim=1) ** 2 + yb.mean(dim=1) ** 2).sqrt()
