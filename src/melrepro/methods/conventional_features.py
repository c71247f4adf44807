"""The 394 conventional colour, texture and shape features of a dermoscopic image.

The sp_graphs paper (§5) adds "conventional color, geometric, and texture features [46]" and
counts them as F3 = 394 without listing them. Its reference [46] (Oliveira, Pereira & Tavares,
Comput. Methods Programs Biomed. 149:43–53, 2017) describes colour statistics and histograms,
GLCM, LBP and Gabor texture, and lesion-shape descriptors; this module computes 394 features of
those families (the exact list of [46] is not recoverable from the paper):

=========================================  =====
colour statistics inside the lesion        63  (RGB, HSV, L*a*b* × mean, std, skew, kurtosis,
                                                 10th/50th/90th percentile)
colour statistics of the surrounding skin  63
RGB histograms of the lesion (16 bins)     48
hue histogram of the lesion (16 bins)      16
GLCM properties (6 × 4 angles × 3 dist.)   72
uniform LBP histograms (P,R = 8,1/16,2/24,3) 54
gradient magnitude (16-bin hist + mean, std) 18
lesion shape                               20
Gabor energy (5 frequencies × 4 angles × mean, std) 40
=========================================  =====

# DEVIATION: the lesion is segmented by Otsu's threshold on the grey image (largest component,
# holes filled), not by the ISIC ground-truth masks, because the 300 archive melanomas have no
# masks: using masks for some images only would let a classifier tell the two sources apart.
"""

from __future__ import annotations

import logging

import numpy as np
from scipy import ndimage, signal
from skimage import color, feature, filters, measure, transform

logger = logging.getLogger(__name__)

__all__ = ["N_CONVENTIONAL", "conventional_feature_names", "conventional_features", "otsu_lesion"]

N_CONVENTIONAL = 394
_CHANNELS = ("R", "G", "B", "H", "S", "V", "L", "a", "b")
_STATS = ("mean", "std", "skew", "kurt", "p10", "p50", "p90")
_GLCM_PROPS = ("contrast", "dissimilarity", "homogeneity", "energy", "correlation", "ASM")
_LBP = ((8, 1), (16, 2), (24, 3))
_SHAPE = (
    "area", "perimeter", "compactness", "eccentricity", "solidity", "extent", "major", "minor",
    "orientation_cos", "orientation_sin", "equivalent_diameter", "asymmetry_major",
    "asymmetry_minor", *(f"hu_{i}" for i in range(7)),
)  # fmt: skip
_GABOR_FREQ = (0.05, 0.1, 0.2, 0.3, 0.4)
_GABOR_THETA = (0.0, np.pi / 4, np.pi / 2, 3 * np.pi / 4)


def conventional_feature_names() -> list[str]:
    """Names of the 394 features, in the order :func:`conventional_features` returns them."""
    names = [f"lesion_{c}_{s}" for c in _CHANNELS for s in _STATS]
    names += [f"skin_{c}_{s}" for c in _CHANNELS for s in _STATS]
    names += [f"hist_{c}_{b}" for c in "RGB" for b in range(16)]
    names += [f"hist_H_{b}" for b in range(16)]
    names += [f"glcm_{p}_d{d}_a{a}" for p in _GLCM_PROPS for d in (1, 2, 4) for a in range(4)]
    names += [f"lbp{p}_{b}" for p, _ in _LBP for b in range(p + 2)]
    names += [f"grad_hist_{b}" for b in range(16)] + ["grad_mean", "grad_std"]
    names += [f"shape_{s}" for s in _SHAPE]
    names += [
        f"gabor_f{f}_t{t}_{s}" for f in _GABOR_FREQ for t in range(4) for s in ("mean", "std")
    ]
    return names


def otsu_lesion(gray: np.ndarray) -> np.ndarray:
    """Lesion mask: darker-than-Otsu pixels, largest connected component, holes filled.

    Falls back to the central half of the image when the threshold finds nothing.
    """
    mask = gray < filters.threshold_otsu(gray)
    lab, n = ndimage.label(mask)
    if n == 0:
        h, w = gray.shape
        mask = np.zeros_like(mask)
        mask[h // 4 : 3 * h // 4, w // 4 : 3 * w // 4] = True
        return mask
    sizes = np.bincount(lab.ravel())
    sizes[0] = 0
    return ndimage.binary_fill_holes(lab == np.argmax(sizes))


def _channel_stats(values: np.ndarray) -> np.ndarray:
    """(k, C) values -> (C * 7) statistics; zeros for empty regions."""
    if values.shape[0] < 2:
        return np.zeros(values.shape[1] * len(_STATS))
    v = np.ascontiguousarray(values.T)  # (C, k): every reduction runs along contiguous rows
    mean = v.mean(axis=1, keepdims=True)
    centred = v - mean
    var = np.einsum("ij,ij->i", centred, centred) / v.shape[1]
    std = np.sqrt(var)
    safe = std > 1e-12
    sq = centred * centred
    m3 = np.einsum("ij,ij->i", sq, centred) / v.shape[1]
    m4 = np.einsum("ij,ij->i", sq, sq) / v.shape[1]
    with np.errstate(all="ignore"):
        skew = np.where(safe, m3 / np.where(safe, std**3, 1.0), 0.0)
        kurt = np.where(safe, m4 / np.where(safe, var**2, 1.0) - 3.0, 0.0)
    pct = np.percentile(v, [10, 50, 90], axis=1)
    return np.stack([mean[:, 0], std, skew, kurt, *pct], axis=1).ravel()


def _shape_features(mask: np.ndarray) -> np.ndarray:
    props = measure.regionprops(mask.astype(np.uint8))[0]
    h, w = mask.shape
    diag = np.hypot(h, w)
    area = props.area
    perim = max(props.perimeter, 1.0)
    # asymmetry: area of the mask not overlapped by its mirror about each principal axis
    crop = props.image.astype(float)
    rotated = ndimage.rotate(crop, -np.degrees(props.orientation), order=0, reshape=True)
    asym = [np.logical_xor(rotated > 0.5, np.flip(rotated, ax) > 0.5).sum() / (2 * area)
            for ax in (0, 1)]  # fmt: skip
    hu = props.moments_hu
    hu = -np.sign(hu) * np.log10(np.abs(hu) + 1e-30)
    return np.array([
        area / (h * w), perim / diag, 4 * np.pi * area / perim**2, props.eccentricity,
        props.solidity, props.extent, props.axis_major_length / diag,
        props.axis_minor_length / diag, np.cos(2 * props.orientation),
        np.sin(2 * props.orientation), props.equivalent_diameter_area / diag, *asym, *hu,
    ])  # fmt: skip


def conventional_features(
    image: np.ndarray, *, analysis_size: int = 256, gabor_size: int = 128
) -> np.ndarray:
    """Compute the 394 conventional features of one RGB image.

    Parameters
    ----------
    image : (H, W, 3) uint8 ndarray
        RGB image at the working resolution.
    analysis_size : int
        Longest side the image is reduced to (never enlarged) before any feature is computed;
        the paper gives no working resolution, and these global statistics change little with
        it while their cost falls with the pixel count.
    gabor_size : int
        Longest side the grey image is resized to before Gabor filtering (cost control).

    Returns
    -------
    (394,) float ndarray
        In the order of :func:`conventional_feature_names`; finite.
    """
    rgb = image.astype(float) / 255.0
    factor = analysis_size / max(rgb.shape[:2])
    if factor < 1:
        rgb = np.clip(transform.rescale(rgb, factor, anti_aliasing=True, channel_axis=2), 0, 1)
    gray = color.rgb2gray(rgb)
    hsv = color.rgb2hsv(rgb)
    lab = color.rgb2lab(rgb)
    chans = np.concatenate([rgb, hsv, lab], axis=2)
    mask = otsu_lesion(gray)
    if mask.all() or not mask.any():
        mask = otsu_lesion(gray + np.linspace(0, 1e-6, gray.size).reshape(gray.shape))
    inside = chans[mask]
    outside = chans[~mask]
    out = [_channel_stats(inside), _channel_stats(outside)]
    for c in range(3):
        out.append(np.histogram(rgb[..., c][mask], bins=16, range=(0, 1))[0] / mask.sum())
    out.append(np.histogram(hsv[..., 0][mask], bins=16, range=(0, 1))[0] / mask.sum())

    gray8 = np.round(gray * 255).astype(np.uint8)
    q = (gray8 // 8).astype(np.uint8)  # 32 grey levels
    glcm = feature.graycomatrix(
        q, distances=[1, 2, 4], angles=[0, np.pi / 4, np.pi / 2, 3 * np.pi / 4], levels=32,
        symmetric=True, normed=True,
    )  # fmt: skip
    out.extend(feature.graycoprops(glcm, p).ravel() for p in _GLCM_PROPS)
    for p, r in _LBP:
        codes = feature.local_binary_pattern(gray8, P=p, R=r, method="uniform").astype(int)
        out.append(np.bincount(codes.ravel(), minlength=p + 2)[: p + 2] / codes.size)

    grad = np.hypot(ndimage.sobel(gray, axis=0), ndimage.sobel(gray, axis=1))
    out.append(np.histogram(grad, bins=16, range=(0, 4))[0] / grad.size)
    out.append(np.array([grad.mean(), grad.std()]))
    out.append(_shape_features(mask))

    scale = gabor_size / max(gray.shape)
    small = transform.rescale(gray, scale, anti_aliasing=True) if scale < 1 else gray
    gab = []
    for f in _GABOR_FREQ:
        for t in _GABOR_THETA:
            kern = filters.gabor_kernel(f, theta=t)
            resp = np.abs(signal.fftconvolve(small, kern, mode="same"))
            gab.extend([resp.mean(), resp.std()])
    out.append(np.array(gab))
    vec = np.concatenate(out).astype(float)
    if vec.size != N_CONVENTIONAL:  # pragma: no cover - guards the table above
        raise RuntimeError(f"computed {vec.size} conventional features, expected {N_CONVENTIONAL}")
    return np.nan_to_num(vec, nan=0.0, posinf=0.0, neginf=0.0)
