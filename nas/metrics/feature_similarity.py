"""FSIM / FSIMc (Zhang et al. 2011): a port of the authors' ``FeatureSIM.m`` with its
bundled ``phasecong2``; part of :mod:`nas.metrics`.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from nas.metrics.basic import _check_data_range, _check_pair, _conv2_same_zero

# --------------------------------------------------------------------------------------------
# FSIM / FSIMc (Zhang et al. 2011), port of the authors' FeatureSIM.m + phasecong2
# --------------------------------------------------------------------------------------------


def _pc_range(n: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """Kovesi's frequency range normalised to +/-0.5 (odd and even sizes as in phasecong2)."""
    idx = torch.arange(n, dtype=dtype, device=device)
    if n % 2:
        return (idx - (n - 1) / 2) / (n - 1)
    return (idx - n / 2) / n


def _phasecong2(im: Tensor) -> Tensor:
    """Phase congruency, the ``phasecong2`` bundled with FeatureSIM.m (Kovesi, PC_2 measure).

    ``(N, rows, cols)`` float64 -> ``(N, rows, cols)`` in ``[0, 1]``.  4 scales, 4 orientations,
    minWaveLength 6, mult 2, sigmaOnf 0.55, dThetaOnSigma 1.2, k 2, epsilon 1e-4, low-pass
    Butterworth (cutoff 0.45, order 15); noise threshold from the median of the squared
    smallest-scale response (MATLAB ``median``: mean of the two middle values for even counts),
    divided by the empirical 1.7 factor.
    """
    nscale, norient = 4, 4
    min_wavelength, mult, sigma_onf, d_theta_on_sigma = 6.0, 2.0, 0.55, 1.2
    k, epsilon = 2.0, 1e-4
    theta_sigma = math.pi / norient / d_theta_on_sigma
    _, rows, cols = im.shape
    dt, dev = im.dtype, im.device

    imagefft = torch.fft.fft2(im)
    yy, xx = torch.meshgrid(_pc_range(rows, dt, dev), _pc_range(cols, dt, dev), indexing="ij")
    radius = torch.fft.ifftshift(torch.sqrt(xx**2 + yy**2))
    theta = torch.fft.ifftshift(torch.atan2(-yy, xx))
    radius[0, 0] = 1.0
    sintheta, costheta = torch.sin(theta), torch.cos(theta)

    # lowpassfilter([rows, cols], .45, 15): same ranges, radius from the centre, ifftshift.
    lp_radius = torch.fft.ifftshift(torch.sqrt(xx**2 + yy**2))
    lp = 1.0 / (1.0 + (lp_radius / 0.45) ** (2 * 15))

    log_gabor = []
    for s in range(nscale):
        fo = 1.0 / (min_wavelength * mult**s)
        lg = torch.exp(-(torch.log(radius / fo) ** 2) / (2 * math.log(sigma_onf) ** 2)) * lp
        lg[0, 0] = 0.0
        log_gabor.append(lg)

    spread = []
    for o in range(norient):
        angl = o * math.pi / norient
        ds = sintheta * math.cos(angl) - costheta * math.sin(angl)
        dc = costheta * math.cos(angl) + sintheta * math.sin(angl)
        dtheta = torch.abs(torch.atan2(ds, dc))
        spread.append(torch.exp(-(dtheta**2) / (2 * theta_sigma**2)))

    energy_all = torch.zeros_like(im)
    an_all = torch.zeros_like(im)
    sqrt_n = math.sqrt(rows * cols)
    for o in range(norient):
        sum_e = torch.zeros_like(im)
        sum_o = torch.zeros_like(im)
        sum_an = torch.zeros_like(im)
        eo_list = []
        ifft_filters = []
        em_n = None
        for s in range(nscale):
            filt = log_gabor[s] * spread[o]
            ifft_filters.append(torch.fft.ifft2(filt).real * sqrt_n)
            eo = torch.fft.ifft2(imagefft * filt)
            eo_list.append(eo)
            sum_an = sum_an + eo.abs()
            sum_e = sum_e + eo.real
            sum_o = sum_o + eo.imag
            if s == 0:
                em_n = torch.sum(filt**2)
        x_energy = torch.sqrt(sum_e**2 + sum_o**2) + epsilon
        mean_e = sum_e / x_energy
        mean_o = sum_o / x_energy
        energy = torch.zeros_like(im)
        for eo in eo_list:
            e, od = eo.real, eo.imag
            energy = energy + e * mean_e + od * mean_o - torch.abs(e * mean_o - od * mean_e)

        # Noise compensation (per image): median of |EO(scale 1)|^2 -> Rayleigh noise model.
        median_e2n = torch.quantile((eo_list[0].abs() ** 2).flatten(1), 0.5, dim=1)  # (N,)
        mean_e2n = -median_e2n / math.log(0.5)
        noise_power = mean_e2n / em_n
        est_sum_an2 = sum(f**2 for f in ifft_filters)
        est_sum_aiaj = sum(
            ifft_filters[i] * ifft_filters[j]
            for i in range(nscale - 1)
            for j in range(i + 1, nscale)
        )
        est_noise_energy2 = (
            2 * noise_power * est_sum_an2.sum() + 4 * noise_power * est_sum_aiaj.sum()
        )
        tau = torch.sqrt(est_noise_energy2 / 2)
        est_noise_energy = tau * math.sqrt(math.pi / 2)
        est_noise_energy_sigma = torch.sqrt((2 - math.pi / 2) * tau**2)
        T = (est_noise_energy + k * est_noise_energy_sigma) / 1.7  # (N,)
        energy = torch.clamp(energy - T.view(-1, 1, 1), min=0.0)
        energy_all = energy_all + energy
        an_all = an_all + sum_an
    # MATLAB divides unguarded (0/0 = NaN); a response-free pixel has no congruency: 0.
    return torch.where(an_all > 0, energy_all / an_all.clamp_min(1e-300), torch.zeros_like(im))


@torch.no_grad()
def fsim(
    fused: Tensor, reference: Tensor, data_range: float = 1.0, chromatic: bool = True
) -> Tensor:
    """Feature similarity index, Zhang, Zhang, Mou & Zhang, IEEE TIP 20(8) 2011 (FSIM / FSIMc).

    A port of the authors' ``FeatureSIM.m`` (with its bundled ``phasecong2``):

    * inputs scaled to 0-255; for RGB, ``Y = .299R + .587G + .114B``,
      ``I = .596R - .274G - .322B``, ``Q = .211R - .523G + .312B`` (YIQ);
    * automatic downsampling: ``F = max(1, round(min(H, W) / 256))``, an FxF average filter
      (``conv2(.., 'same')``, zero padding) and every F-th sample of Y, I and Q;
    * phase congruency PC of Y by log-Gabor filters (4 scales, 4 orientations, minWaveLength 6,
      mult 2, sigmaOnf 0.55, dThetaOnSigma 1.2, k 2, Kovesi's noise compensation);
    * gradient magnitude of Y with the Scharr kernels ``[3 0 -3; 10 0 -10; 3 0 -3] / 16``;
    * ``S_PC = (2 PC1 PC2 + T1) / (PC1^2 + PC2^2 + T1)``, T1 = 0.85;
      ``S_G = (2 G1 G2 + T2) / (G1^2 + G2^2 + T2)``, T2 = 160;
      ``FSIM = sum(S_PC S_G PCm) / sum(PCm)`` with ``PCm = max(PC1, PC2)``;
    * FSIMc (RGB, ``chromatic=True``) multiplies by ``real((S_I S_Q)^lambda)``, lambda = 0.03,
      ``S_I = (2 I1 I2 + T3) / (I1^2 + I2^2 + T3)``, same for Q, T3 = T4 = 200.

    Range ``[0, 1]`` (FSIMc can dip marginally below 0 only for pathological chroma); **higher
    is better**; identical images give exactly 1, mild distortions typically 0.85-0.99.  Images
    without any phase congruency (e.g. both constant) give NaN, as the MATLAB code does (0/0).
    Details that are this port's reading: a pixel where the summed filter amplitude is exactly
    0 gets PC = 0 (MATLAB: 0/0); images must be at least 3x3 after downsampling.

    Args:
        fused: ``(B, C, H, W)`` in ``[0, data_range]``; C = 3 gives FSIMc (or FSIM with
            ``chromatic=False``), C = 1 gives FSIM.
        reference: same shape as ``fused``.
        data_range: dynamic range of the inputs (mapped to 0-255).
        chromatic: for RGB, return FSIMc (default) rather than luminance-only FSIM.

    Returns:
        ``(B,)`` float64 tensor.
    """
    fused, reference = _check_pair(fused, "fused", reference, "reference")
    data_range = _check_data_range(data_range)
    scale = 255.0 / data_range
    ref = reference.double() * scale  # "imageRef"
    dis = fused.double() * scale  # "imageDis"
    B, C, rows, cols = ref.shape
    color = C == 3

    def yiq(img: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        r, g, b = img[:, 0:1], img[:, 1:2], img[:, 2:3]
        return (
            0.299 * r + 0.587 * g + 0.114 * b,
            0.596 * r - 0.274 * g - 0.322 * b,
            0.211 * r - 0.523 * g + 0.312 * b,
        )

    if color:
        y1, i1, q1 = yiq(ref)
        y2, i2, q2 = yiq(dis)
    else:
        y1, y2 = ref, dis
        i1 = i2 = q1 = q2 = None

    f = max(1, math.floor(min(rows, cols) / 256 + 0.5))  # MATLAB round (half away from zero)

    def down(z: Tensor) -> Tensor:
        if f == 1:
            return z
        kernel = torch.full((f, f), 1.0 / (f * f), dtype=z.dtype, device=z.device)
        return _conv2_same_zero(z, kernel)[:, :, ::f, ::f]

    y1, y2 = down(y1), down(y2)
    h, w = y1.shape[-2:]
    if h < 3 or w < 3:
        raise ValueError(
            f"fused is too small for FSIM ({h}x{w} after the authors' downsampling by {f}); "
            f"got shape {tuple(fused.shape)}"
        )

    pc = _phasecong2(torch.cat([y1, y2], dim=0)[:, 0])
    pc1, pc2 = pc[:B], pc[B:]

    dx = torch.tensor([[3, 0, -3], [10, 0, -10], [3, 0, -3]], dtype=y1.dtype) / 16
    dy = torch.tensor([[3, 10, 3], [0, 0, 0], [-3, -10, -3]], dtype=y1.dtype) / 16
    dx, dy = dx.to(y1.device), dy.to(y1.device)
    ys = torch.cat([y1, y2], dim=0)
    grad = torch.sqrt(_conv2_same_zero(ys, dx) ** 2 + _conv2_same_zero(ys, dy) ** 2)[:, 0]
    g1, g2 = grad[:B], grad[B:]

    t1, t2, t3, t4, lam = 0.85, 160.0, 200.0, 200.0, 0.03
    s_pc = (2 * pc1 * pc2 + t1) / (pc1**2 + pc2**2 + t1)
    s_g = (2 * g1 * g2 + t2) / (g1**2 + g2**2 + t2)
    pcm = torch.maximum(pc1, pc2)
    sim = s_g * s_pc
    if color and chromatic:
        i1, i2, q1, q2 = (down(z)[:, 0] for z in (i1, i2, q1, q2))
        s_i = (2 * i1 * i2 + t3) / (i1**2 + i2**2 + t3)
        s_q = (2 * q1 * q2 + t4) / (q1**2 + q2**2 + t4)
        base = s_i * s_q
        # real(base .^ lambda) for a possibly negative base (principal branch).
        chroma = base.abs() ** lam * torch.where(
            base < 0, torch.full_like(base, math.cos(lam * math.pi)), torch.ones_like(base)
        )
        sim = sim * chroma
    return (sim * pcm).sum(dim=(1, 2)) / pcm.sum(dim=(1, 2))
