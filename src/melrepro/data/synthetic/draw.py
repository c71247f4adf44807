"""The lesion painter of the synthetic twin: a dermoscopic-looking image, its lesion mask and the
masks of the five task-2 structures, all drawn from explicit parameters.

A lesion lives in its own coordinates ``(u, v)``: its border is ``rho = r(phi)`` with
``r(phi) = 1 + sum_k a_k cos(k phi + p_k)`` (mean radius 1), its textures are sums of sines in
``(u, v)`` and its structures (network patches, streaks, dots) are placed in ``(u, v)`` too. A
*view* maps those coordinates into an image (centre, radius in pixels, rotation, flip), so several
images of one lesion show the same lesion. Everything random is drawn by :func:`sample_lesion`,
:func:`sample_view` and :func:`sample_scene`; :func:`render` is a pure function of their results.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image
from scipy import ndimage
from skimage import draw

from melrepro.data.layouts import ATTRIBUTES

__all__ = [
    "STYLES",
    "Lesion",
    "Rendered",
    "Scene",
    "View",
    "render",
    "sample_lesion",
    "sample_scene",
    "sample_view",
]

_C = {
    "light_brown": (178, 128, 88),
    "brown": (135, 86, 52),
    "dark_brown": (84, 52, 33),
    "black": (38, 30, 30),
    "blue_grey": (104, 114, 136),
    "red": (178, 76, 76),
    "tan": (202, 162, 118),
    "waxy": (208, 184, 124),
    "pink": (222, 152, 146),
    "white": (238, 230, 218),
    "purple": (112, 38, 78),
    "dark_red": (150, 36, 56),
}
_SKIN = np.array(
    [(243, 212, 192), (232, 186, 156), (200, 146, 108), (150, 104, 72), (96, 66, 48)], np.float32
)

#: Visual style of each kind of lesion: ranges (low, high) drawn uniformly per lesion.
#: ``radius``: mean radius as a fraction of half the image's short side; ``asymmetry``: amplitude
#: of the harmonics 1-3 of the border; ``irregularity``: of the harmonics 4-24; ``edge``: width of
#: the soft border in pixels; ``opacity``: how much the lesion colour covers the skin;
#: ``structures``: probability that each task-2 structure is painted.
STYLES: dict[str, dict[str, Any]] = {
    "melanoma": {
        "radius": (0.5, 0.82),
        "elongation": (1.0, 1.5),
        "asymmetry": (0.08, 0.18),
        "irregularity": (0.02, 0.045),
        "edge": (1.5, 3.5),
        "opacity": (0.9, 1.0),
        "colours": (["dark_brown"], ["light_brown", "brown", "black", "blue_grey", "red"], (2, 4)),
        "texture": 0.12,
        "structures": {
            "pigment_network": 0.7,
            "negative_network": 0.35,
            "streaks": 0.5,
            "globules": 0.6,
            "milia_like_cyst": 0.12,
        },
        "features": (),
    },
    "nevus": {
        "radius": (0.28, 0.48),
        "elongation": (1.0, 1.15),
        "asymmetry": (0.0, 0.03),
        "irregularity": (0.0, 0.008),
        "edge": (0.8, 1.6),
        "opacity": (0.8, 0.95),
        "colours": ([], ["brown", "light_brown"], (1, 1)),
        "texture": 0.04,
        "structures": {
            "pigment_network": 0.55,
            "negative_network": 0.04,
            "streaks": 0.04,
            "globules": 0.3,
            "milia_like_cyst": 0.1,
        },
        "features": (),
    },
    "seborrheic_keratosis": {
        "radius": (0.34, 0.58),
        "elongation": (1.0, 1.35),
        "asymmetry": (0.02, 0.06),
        "irregularity": (0.008, 0.02),
        "edge": (0.8, 1.3),
        "opacity": (0.6, 0.85),
        "colours": ([], ["tan", "waxy", "light_brown"], (2, 3)),
        "texture": 0.0,
        "structures": {
            "pigment_network": 0.08,
            "negative_network": 0.03,
            "streaks": 0.02,
            "globules": 0.1,
            "milia_like_cyst": 0.85,
        },
        "features": ("waxy",),
    },
    "lentigo": {
        "radius": (0.25, 0.45),
        "elongation": (1.0, 1.4),
        "asymmetry": (0.02, 0.07),
        "irregularity": (0.005, 0.02),
        "edge": (1.5, 3.0),
        "opacity": (0.45, 0.7),
        "colours": ([], ["light_brown", "tan"], (1, 1)),
        "texture": 0.05,
        "structures": {
            "pigment_network": 0.4,
            "negative_network": 0.02,
            "streaks": 0.0,
            "globules": 0.05,
            "milia_like_cyst": 0.1,
        },
        "features": (),
    },
    "bcc": {
        "radius": (0.25, 0.5),
        "elongation": (1.0, 1.4),
        "asymmetry": (0.03, 0.1),
        "irregularity": (0.01, 0.03),
        "edge": (1.5, 3.0),
        "opacity": (0.55, 0.8),
        "colours": (["pink"], ["white", "pink"], (1, 1)),
        "texture": 0.05,
        "structures": {
            "pigment_network": 0.02,
            "negative_network": 0.02,
            "streaks": 0.05,
            "globules": 0.4,
            "milia_like_cyst": 0.05,
        },
        "features": ("vessels", "nests"),
    },
    "actinic_keratosis": {
        "radius": (0.25, 0.5),
        "elongation": (1.0, 1.4),
        "asymmetry": (0.03, 0.1),
        "irregularity": (0.01, 0.03),
        "edge": (2.0, 4.0),
        "opacity": (0.45, 0.7),
        "colours": (["pink"], ["red", "pink"], (1, 1)),
        "texture": 0.05,
        "structures": {
            "pigment_network": 0.05,
            "negative_network": 0.02,
            "streaks": 0.0,
            "globules": 0.05,
            "milia_like_cyst": 0.05,
        },
        "features": ("scale",),
    },
    "scc": {
        "radius": (0.3, 0.55),
        "elongation": (1.0, 1.4),
        "asymmetry": (0.04, 0.12),
        "irregularity": (0.01, 0.04),
        "edge": (1.5, 3.5),
        "opacity": (0.6, 0.85),
        "colours": (["red"], ["pink", "dark_red"], (1, 1)),
        "texture": 0.06,
        "structures": {
            "pigment_network": 0.02,
            "negative_network": 0.02,
            "streaks": 0.0,
            "globules": 0.05,
            "milia_like_cyst": 0.05,
        },
        "features": ("keratin", "dotted_vessels"),
    },
    "dermatofibroma": {
        "radius": (0.18, 0.32),
        "elongation": (1.0, 1.2),
        "asymmetry": (0.0, 0.04),
        "irregularity": (0.0, 0.01),
        "edge": (2.0, 4.0),
        "opacity": (0.55, 0.8),
        "colours": (["light_brown"], ["tan", "brown"], (1, 1)),
        "texture": 0.03,
        "structures": {
            "pigment_network": 0.5,
            "negative_network": 0.02,
            "streaks": 0.0,
            "globules": 0.02,
            "milia_like_cyst": 0.02,
        },
        "features": ("central_white",),
    },
    "vascular": {
        "radius": (0.18, 0.38),
        "elongation": (1.0, 1.3),
        "asymmetry": (0.0, 0.05),
        "irregularity": (0.005, 0.02),
        "edge": (0.8, 1.5),
        "opacity": (0.85, 1.0),
        "colours": (["dark_red"], ["red", "purple"], (1, 2)),
        "texture": 0.05,
        "structures": dict.fromkeys(ATTRIBUTES, 0.0),
        "features": ("lobules",),
    },
}
STYLES["bkl"] = STYLES["seborrheic_keratosis"] | {
    "colours": ([], ["tan", "waxy", "light_brown", "brown"], (1, 3))
}


@dataclass(frozen=True)
class Lesion:
    """A lesion in its own coordinates; see the module docstring."""

    style: str
    radius: float  # fraction of half the short side of an image showing it
    elongation: float
    harmonics: np.ndarray  # (24, 2): amplitude and phase of harmonics 1..24
    edge: float
    opacity: float
    colours: np.ndarray  # (n, 3) float32
    colour_fields: list[np.ndarray]  # one sine field per colour
    colour_bias: np.ndarray  # (n,) how much of the lesion each colour takes (first = base)
    texture: float
    texture_field: np.ndarray
    structures: dict[str, dict[str, Any] | None]
    features: dict[str, dict[str, Any]]


@dataclass(frozen=True)
class View:
    """Where a lesion sits in one image: centre (fraction of width/height), scale, rotation, flip."""

    cx: float
    cy: float
    scale: float
    rotation: float
    flip: bool


@dataclass(frozen=True)
class Scene:
    """Everything about one image that is not the lesion: size, skin, light, hair, ruler."""

    width: int
    height: int
    skin_tone: float
    brightness: float
    vignetting: float
    hair: int
    ruler: str  # "" or one of top/bottom/left/right
    seed: int
    max_render_side: int = 1024


@dataclass
class Rendered:
    """A painted image (H, W, 3) uint8, its lesion mask (H, W) bool and the structure masks."""

    image: np.ndarray
    mask: np.ndarray
    attributes: dict[str, np.ndarray] = field(default_factory=dict)
    radius_px: float = 0.0


# ---------------------------------------------------------------------------------------------
# random parameters


def _sines(rng: np.random.Generator, n: int, fmin: float, fmax: float) -> np.ndarray:
    """A random smooth field: ``n`` sines with frequencies (cycles per unit) in [fmin, fmax]."""
    freq = rng.uniform(fmin, fmax, n) * 2 * np.pi
    angle = rng.uniform(0, 2 * np.pi, n)
    amp = rng.uniform(0.5, 1.0, n)
    amp = amp / np.sqrt(np.sum(amp**2) / 2)  # unit variance
    return np.stack(
        [amp, freq * np.cos(angle), freq * np.sin(angle), rng.uniform(0, 2 * np.pi, n)], 1
    )


def _eval(f: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    out = np.zeros(np.broadcast_shapes(u.shape, v.shape), np.float32)
    for a, kx, ky, p in f:
        out += np.float32(a) * np.sin(np.float32(kx) * u + np.float32(ky) * v + np.float32(p))
    return out


def _u(rng: np.random.Generator, bounds: tuple[float, float]) -> float:
    return float(rng.uniform(*bounds))


def _structure(name: str, style: str, rng: np.random.Generator) -> dict[str, Any]:
    """Parameters of one task-2 structure, in lesion coordinates."""
    malignant = style == "melanoma"
    if name in ("pigment_network", "negative_network"):
        return {
            "patch": _sines(rng, 5, 0.4, 1.2),
            # fraction of the lesion the patch covers, via a threshold on the unit-variance field
            "threshold": _u(rng, (-0.6, 0.3)),
            "spacing": _u(rng, (0.07, 0.12)),
            "angle": _u(rng, (0, np.pi)),
            "warp": _sines(rng, 4, 1.0, 3.0),
            "warp_amount": _u(rng, (0.2, 0.5)) if malignant else _u(rng, (0.05, 0.2)),
            "width": _u(rng, (0.12, 0.2)),
            "strength": _u(rng, (0.45, 0.7)),
        }
    if name == "streaks":
        centre = _u(rng, (0, 2 * np.pi))
        spread = _u(rng, (np.pi / 3, 2 * np.pi))
        n = int(rng.integers(8, 25))
        return {
            "angles": centre + rng.uniform(-spread / 2, spread / 2, n),
            "inner": rng.uniform(0.7, 0.85, n),
            "outer": rng.uniform(1.06, 1.18, n),
            "width": _u(rng, (0.012, 0.022)),
        }
    if name == "globules":
        n = int(rng.integers(6, 30 if malignant else 18))
        if malignant:  # irregular: clustered off-centre, different sizes
            rho = rng.uniform(0.25, 0.85, n)
            phi = _u(rng, (0, 2 * np.pi)) + rng.normal(0, 1.0, n)
            radius = rng.uniform(0.02, 0.05, n)
        else:  # regular: a ring of similar dots
            rho = rng.uniform(0.45, 0.75, n)
            phi = rng.uniform(0, 2 * np.pi, n)
            radius = np.full(n, _u(rng, (0.025, 0.04)))
        return {"rho": rho, "phi": phi, "radius": radius}
    if name == "milia_like_cyst":
        n = int(rng.integers(4, 16))
        return {
            "rho": np.sqrt(rng.uniform(0.0, 0.75, n)),
            "phi": rng.uniform(0, 2 * np.pi, n),
            "radius": rng.uniform(0.012, 0.03, n),
        }
    raise ValueError(f"unknown structure {name!r}; expected one of {ATTRIBUTES}")


def _feature(name: str, rng: np.random.Generator) -> dict[str, Any]:
    if name == "vessels":
        n = int(rng.integers(3, 8))
        return {"segments": _branches(rng, n), "colour": "dark_red"}
    if name == "dotted_vessels":
        n = int(rng.integers(10, 40))
        return {
            "rho": np.sqrt(rng.uniform(0, 0.7, n)),
            "phi": rng.uniform(0, 2 * np.pi, n),
            "radius": np.full(n, 0.015),
            "colour": "dark_red",
        }
    if name == "nests":
        n = int(rng.integers(2, 7))
        return {
            "rho": rng.uniform(0.1, 0.7, n),
            "phi": rng.uniform(0, 2 * np.pi, n),
            "radius": rng.uniform(0.06, 0.14, n),
            "colour": "blue_grey",
        }
    if name == "lobules":
        n = int(rng.integers(4, 10))
        return {
            "rho": rng.uniform(0.0, 0.6, n),
            "phi": rng.uniform(0, 2 * np.pi, n),
            "radius": rng.uniform(0.15, 0.3, n),
            "colour": "purple",
        }
    if name in ("scale", "keratin", "central_white", "waxy"):
        return {"field": _sines(rng, 6, 1.5, 4.0), "threshold": _u(rng, (0.2, 0.8))}
    raise ValueError(f"unknown feature {name!r}")


def _branches(rng: np.random.Generator, n: int) -> np.ndarray:
    """Arborizing vessels: ``n`` trunks with two branches each, as segments (m, 4) of u0 v0 u1 v1."""
    segments = []
    for _ in range(n):
        u0, v0 = rng.uniform(-0.6, 0.6, 2)
        a = rng.uniform(0, 2 * np.pi)
        length = rng.uniform(0.25, 0.5)
        u1, v1 = u0 + length * np.cos(a), v0 + length * np.sin(a)
        segments.append((u0, v0, u1, v1))
        for da in (-0.6, 0.6):
            b = a + da + rng.normal(0, 0.2)
            segments.append((u1, v1, u1 + 0.5 * length * np.cos(b), v1 + 0.5 * length * np.sin(b)))
    return np.array(segments, np.float32)


def sample_lesion(style: str, rng: np.random.Generator) -> Lesion:
    """Draw a lesion of ``style`` (a key of :data:`STYLES`)."""
    try:
        st = STYLES[style]
    except KeyError:
        raise ValueError(f"unknown style {style!r}; expected one of {', '.join(STYLES)}") from None
    k = np.arange(1, 25)
    amp = np.zeros(24)
    asym = _u(rng, st["asymmetry"])
    irr = _u(rng, st["irregularity"])
    amp[:3] = asym * rng.uniform(0.3, 1.0, 3) / np.sqrt(3)
    amp[3:] = irr * rng.uniform(0.3, 1.0, 21) / np.sqrt(k[3:] / 4)
    harmonics = np.stack([amp, rng.uniform(0, 2 * np.pi, 24)], 1)
    fixed, pool, (lo, hi) = st["colours"]
    n_extra = int(rng.integers(lo, hi + 1))
    names = list(fixed) + [
        str(c) for c in rng.choice(pool, size=min(n_extra, len(pool)), replace=False)
    ]
    colours = np.array([_C[c] for c in names], np.float32)
    colours *= rng.uniform(0.9, 1.1, (len(names), 1)).astype(np.float32)
    colour_fields = [_sines(rng, 5, 0.4, 1.5) for _ in names]
    colour_bias = np.concatenate(
        [np.full(len(fixed), 0.8), rng.uniform(-0.8, 0.3, len(names) - len(fixed))]
    )
    colour_bias = colour_bias.astype(np.float32)
    texture_field = _sines(rng, 8, 4.0, 9.0)
    # The structure draws happen whether or not a structure is painted, so that the same seed
    # gives the same lesion whatever the probabilities.
    structures: dict[str, dict[str, Any] | None] = {}
    for name in ATTRIBUTES:
        present = rng.uniform() < st["structures"][name]
        params = _structure(name, style, rng)
        structures[name] = params if present else None
    features = {name: _feature(name, rng) for name in st["features"]}
    return Lesion(
        style=style,
        radius=_u(rng, st["radius"]),
        elongation=_u(rng, st["elongation"]),
        harmonics=harmonics,
        edge=_u(rng, st["edge"]),
        opacity=_u(rng, st["opacity"]),
        colours=colours,
        colour_fields=colour_fields,
        colour_bias=colour_bias,
        texture=float(st["texture"]),
        texture_field=texture_field,
        structures=structures,
        features=features,
    )


def sample_view(rng: np.random.Generator) -> View:
    """Draw one view of a lesion: centre near the middle, +-10 % scale, any rotation."""
    return View(
        cx=_u(rng, (0.42, 0.58)),
        cy=_u(rng, (0.42, 0.58)),
        scale=_u(rng, (0.9, 1.1)),
        rotation=_u(rng, (0, 2 * np.pi)),
        flip=bool(rng.uniform() < 0.5),
    )


def sample_scene(
    rng: np.random.Generator,
    width: int,
    height: int,
    spec: dict[str, Any],
) -> Scene:
    """Draw skin tone, light, hair, ruler and vignetting of one image from the dataset spec."""
    tone = float(rng.beta(1.2, 2.2)) * spec["skin_tone_max"]
    brightness = _u(rng, (spec["brightness_min"], spec["brightness_max"]))
    vignetting = _u(rng, (0.3, 0.85)) if rng.uniform() < spec["vignetting"] else 0.0
    hair = int(rng.integers(3, 30)) if rng.uniform() < spec["hair"] else 0
    ruler = (
        str(rng.choice(["top", "bottom", "left", "right"])) if rng.uniform() < spec["ruler"] else ""
    )
    return Scene(
        width=width,
        height=height,
        skin_tone=tone,
        brightness=brightness,
        vignetting=vignetting,
        hair=hair,
        ruler=ruler,
        seed=int(rng.integers(0, 2**31)),
        max_render_side=int(spec["max_render_side"]),
    )


# ---------------------------------------------------------------------------------------------
# painting


@dataclass(frozen=True)
class _Geometry:
    """The map between image pixels (full resolution) and lesion coordinates."""

    cx: float
    cy: float
    radius: float  # px, full resolution
    theta: float
    elongation: float
    flip: bool

    def to_lesion(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        dx, dy = x - np.float32(self.cx), y - np.float32(self.cy)
        c, s = np.float32(math.cos(self.theta)), np.float32(math.sin(self.theta))
        u = (dx * c + dy * s) / np.float32(self.radius * self.elongation)
        v = (-dx * s + dy * c) * np.float32(self.elongation / self.radius)
        return u, (-v if self.flip else v)

    def to_pixel(self, u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        v = -v if self.flip else v
        a, b = u * self.radius * self.elongation, v * self.radius / self.elongation
        c, s = math.cos(self.theta), math.sin(self.theta)
        return self.cx + a * c - b * s, self.cy + a * s + b * c


def _geometry(lesion: Lesion, view: View, width: int, height: int) -> _Geometry:
    radius = lesion.radius * view.scale * min(width, height) / 2
    return _Geometry(
        view.cx * width, view.cy * height, radius, view.rotation, lesion.elongation, view.flip
    )


_N_PHI = 2048


def _radius_table(lesion: Lesion) -> np.ndarray:
    phi = np.linspace(-np.pi, np.pi, _N_PHI, endpoint=False)
    k = np.arange(1, 25)[:, None]
    amp, phase = lesion.harmonics[:, :1], lesion.harmonics[:, 1:]
    return (1 + np.sum(amp * np.cos(k * phi[None] + phase), 0)).astype(np.float32)


def _border(
    table: np.ndarray, u: np.ndarray, v: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rho = np.hypot(u, v)
    phi = np.arctan2(v, u)
    idx = ((phi + np.pi) * (_N_PHI / (2 * np.pi))).astype(np.int32) % _N_PHI
    return rho, phi, table[idx]


def _bbox(geom: _Geometry, extent: float, scale: float, h: int, w: int) -> tuple[slice, slice]:
    """Pixel rows/columns (at ``scale``) that can hold lesion coordinates with rho <= extent."""
    reach = extent * geom.radius * max(geom.elongation, 1 / geom.elongation) * scale + 3
    y0, y1 = int(max(0, geom.cy * scale - reach)), int(min(h, geom.cy * scale + reach + 1))
    x0, x1 = int(max(0, geom.cx * scale - reach)), int(min(w, geom.cx * scale + reach + 1))
    return slice(y0, max(y0, y1)), slice(x0, max(x0, x1))


def _grid(ys: slice, xs: slice, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Full-resolution coordinates of the centres of the pixels of a block at ``scale``."""
    y = ((np.arange(ys.start, ys.stop, dtype=np.float32) + 0.5) / scale)[:, None]
    x = ((np.arange(xs.start, xs.stop, dtype=np.float32) + 0.5) / scale)[None, :]
    return x, y


def _streak_quads(
    geom: _Geometry, params: dict[str, Any], table: np.ndarray, scale: float
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Each streak as a thin quadrilateral in pixel (row, col) coordinates at ``scale``."""
    phi = np.mod(params["angles"] + np.pi, 2 * np.pi) - np.pi
    idx = ((phi + np.pi) * (_N_PHI / (2 * np.pi))).astype(int) % _N_PHI
    r = table[idx]
    half = max(params["width"] / 2, 0.7 / max(geom.radius * scale, 1e-6))
    quads = []
    for p, ri, a, b in zip(phi, r, params["inner"], params["outer"], strict=True):
        c, s = math.cos(p), math.sin(p)
        pts_u = np.array(
            [
                a * ri * c - half * s,
                b * ri * c - half * s,
                b * ri * c + half * s,
                a * ri * c + half * s,
            ]
        )
        pts_v = np.array(
            [
                a * ri * s + half * c,
                b * ri * s + half * c,
                b * ri * s - half * c,
                a * ri * s - half * c,
            ]
        )
        x, y = geom.to_pixel(pts_u, pts_v)
        quads.append((y * scale - 0.5, x * scale - 0.5))
    return quads


def _streak_mask(
    geom: _Geometry, params: dict[str, Any], table: np.ndarray, scale: float, shape: tuple[int, int]
) -> np.ndarray:
    out = np.zeros(shape, bool)
    for rows, cols in _streak_quads(geom, params, table, scale):
        rr, cc = draw.polygon(rows, cols, shape)
        out[rr, cc] = True
    return out


def _dots(
    geom: _Geometry,
    params: dict[str, Any],
    table: np.ndarray,
    scale: float,
    shape: tuple[int, int],
    min_px: float,
) -> np.ndarray:
    """Disks at (rho * r(phi), phi) in lesion coordinates, radius in lesion units (>= min_px)."""
    out = np.zeros(shape, bool)
    phi = np.mod(params["phi"] + np.pi, 2 * np.pi) - np.pi
    idx = ((phi + np.pi) * (_N_PHI / (2 * np.pi))).astype(int) % _N_PHI
    rho = params["rho"] * table[idx]
    x, y = geom.to_pixel(rho * np.cos(phi), rho * np.sin(phi))
    for xi, yi, ri in zip(x, y, params["radius"], strict=True):
        rad = max(ri * geom.radius * scale, min_px)
        rr, cc = draw.disk((yi * scale - 0.5, xi * scale - 0.5), rad, shape=shape)
        out[rr, cc] = True
    return out


def _mix(img: np.ndarray, where: np.ndarray, colour: Any, amount: float | np.ndarray) -> None:
    """In place: img[where] = img[where] * (1 - amount) + colour * amount."""
    col = np.asarray(colour, np.float32)
    a = np.asarray(amount, np.float32)[where][:, None] if np.ndim(amount) else np.float32(amount)
    img[where] = img[where] * (1 - a) + col * a


def _smooth(
    h: int, w: int, fn: Callable[[np.ndarray, np.ndarray], np.ndarray], factor: int = 8
) -> np.ndarray:
    """A smooth field ``fn(x, y)`` (coordinates in units of the longest side) evaluated on a grid
    ``factor`` times coarser and resized up bilinearly: smooth fields need no per-pixel sines."""
    hs, ws = max(2, -(-h // factor)), max(2, -(-w // factor))
    y = ((np.arange(hs, dtype=np.float32) + 0.5) * (h / hs) / max(h, w))[:, None]
    x = ((np.arange(ws, dtype=np.float32) + 0.5) * (w / ws) / max(h, w))[None, :]
    small = np.ascontiguousarray(np.broadcast_to(fn(x, y), (hs, ws)), np.float32)
    return np.asarray(Image.fromarray(small, "F").resize((w, h), Image.Resampling.BILINEAR))


def _coarse(
    geom: _Geometry,
    ys: slice,
    xs: slice,
    scale: float,
    fn: Callable[[np.ndarray, np.ndarray], np.ndarray],
    channels: int,
    factor: int = 4,
) -> np.ndarray:
    """``fn(u, v)`` -> (..., channels) evaluated on a grid ``factor`` times coarser than the block
    ``(ys, xs)`` and resized up bilinearly to the block's size."""
    hb, wb = ys.stop - ys.start, xs.stop - xs.start
    hs, ws = max(2, -(-hb // factor)), max(2, -(-wb // factor))
    y = ((ys.start + (np.arange(hs, dtype=np.float32) + 0.5) * (hb / hs)) / scale)[:, None]
    x = ((xs.start + (np.arange(ws, dtype=np.float32) + 0.5) * (wb / ws)) / scale)[None, :]
    small = fn(*geom.to_lesion(x, y)).astype(np.float32)
    out = np.empty((hb, wb, channels), np.float32)
    for c in range(channels):
        channel = Image.fromarray(np.ascontiguousarray(small[..., c]), "F")
        out[..., c] = np.asarray(channel.resize((wb, hb), Image.Resampling.BILINEAR))
    return out


def _skin(scene: Scene, h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    t = scene.skin_tone * (len(_SKIN) - 1)
    i = min(int(t), len(_SKIN) - 2)
    base = _SKIN[i] * (1 - (t - i)) + _SKIN[i + 1] * (t - i)
    mottle_field, red_field = _sines(rng, 6, 1.0, 4.0), _sines(rng, 4, 0.7, 2.0)
    mottle = _smooth(h, w, lambda x, y: 1 + 0.035 * _eval(mottle_field, x, y))
    redness = _smooth(h, w, lambda x, y: 6 * np.clip(_eval(red_field, x, y), 0, None))
    img = mottle[..., None] * base
    img += redness[..., None] * np.array([1.0, -0.6, -0.4], np.float32)
    return img


def _honeycomb(x: np.ndarray, y: np.ndarray, spacing: float) -> np.ndarray:
    """Distance (0 on the walls, 1 at the centres) to the walls of a hexagonal mesh of cells
    ``spacing`` apart: the holes and lines of a pigment network."""
    size = np.float32(spacing / math.sqrt(3))
    cx = (np.float32(math.sqrt(3) / 3) * x - np.float32(1 / 3) * y) / size
    cz = (np.float32(2 / 3) * y) / size
    cy = -cx - cz
    rx, ry, rz = np.round(cx), np.round(cy), np.round(cz)
    ex, ey, ez = np.abs(rx - cx), np.abs(ry - cy), np.abs(rz - cz)
    fix_x = (ex > ey) & (ex > ez)
    fix_y = ~fix_x & (ey > ez)
    rx = np.where(fix_x, -ry - rz, rx)
    ry = np.where(fix_y, -rx - rz, ry)
    rz = -rx - ry
    dx, dy, dz = cx - rx, cy - ry, cz - rz
    return 1 - np.maximum(np.maximum(np.abs(dx - dy), np.abs(dy - dz)), np.abs(dz - dx))


def _network_patch(
    inside: np.ndarray, u: np.ndarray, v: np.ndarray, params: dict[str, Any]
) -> np.ndarray:
    """The part of the lesion a network covers: a smooth blob of the lesion."""
    return inside & (_eval(params["patch"], u, v) > params["threshold"])


def _paint_network(
    img: np.ndarray,
    patch: np.ndarray,
    u: np.ndarray,
    v: np.ndarray,
    params: dict[str, Any],
    negative: bool,
) -> np.ndarray:
    """A mesh of dark (or, negative, light) lines inside ``patch``; returns the patch."""
    if not patch.any():
        return patch
    c, s = np.float32(math.cos(params["angle"])), np.float32(math.sin(params["angle"]))
    wu, wv = u * c + v * s, -u * s + v * c
    warp = _eval(params["warp"], u, v) * np.float32(params["warp_amount"] * params["spacing"])
    lines = patch & (_honeycomb(wu + warp, wv - warp, params["spacing"]) < 1.2 * params["width"])
    if negative:
        _mix(img, lines, _C["white"], 0.45)
        _mix(img, patch & ~lines, _C["dark_brown"], 0.25)
    else:
        _mix(img, lines, _C["dark_brown"], params["strength"])
    return patch


def _paint_lesion(
    img: np.ndarray,
    lesion: Lesion,
    geom: _Geometry,
    table: np.ndarray,
    scale: float,
    omit: frozenset[str] | set[str],
) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Paint the lesion and its structures on ``img`` (render scale); return its mask and the
    structure masks, all at render scale; also the mask without streaks (the body)."""
    h, w = img.shape[:2]
    mask = np.zeros((h, w), bool)
    attributes = {name: np.zeros((h, w), bool) for name in ATTRIBUTES}
    ys, xs = _bbox(geom, 1.45, scale, h, w)
    if ys.stop <= ys.start or xs.stop <= xs.start:
        return mask, mask.copy(), attributes
    x, y = _grid(ys, xs, scale)
    u, v = geom.to_lesion(x, y)
    rho, _, r = _border(table, u, v)
    block = img[ys, xs]
    edge = np.float32(max(lesion.edge * scale, 0.5))
    alpha = np.clip((r - rho) * np.float32(geom.radius * scale) / edge + 0.5, 0, 1)
    inside = rho < r

    # colour: a soft partition of the lesion into colour zones, darker towards the centre
    n = len(lesion.colours)
    if n == 1:
        colour = np.broadcast_to(lesion.colours[0], block.shape).copy()
    else:

        def zones(cu: np.ndarray, cv: np.ndarray) -> np.ndarray:
            logits = np.stack([_eval(f, cu, cv) for f in lesion.colour_fields], -1)
            logits = (logits + lesion.colour_bias) * np.float32(2.5)
            logits -= logits.max(-1, keepdims=True)
            weights = np.exp(logits)
            weights /= weights.sum(-1, keepdims=True)
            return weights @ lesion.colours

        # the zones vary slowly: painted on a 4x coarser grid and resized up
        colour = _coarse(geom, ys, xs, scale, zones, 3)
    shade = 1 - 0.12 * np.clip(1 - rho / np.maximum(r, 1e-3), 0, 1)
    colour *= shade[..., None]
    if lesion.texture:
        colour *= (1 + np.float32(lesion.texture) * _eval(lesion.texture_field, u, v))[..., None]
    if "waxy" in lesion.features:  # seborrheic keratosis: yellowish, cerebriform, waxy sheen
        f = lesion.features["waxy"]
        ridges = np.sin(_eval(f["field"], u, v) * np.float32(4.0))
        colour *= (1 + 0.12 * ridges)[..., None]
        colour += (np.clip(ridges, 0, None) * 14)[..., None] * np.array([1.0, 0.9, 0.3], np.float32)
    a = (alpha * np.float32(lesion.opacity))[..., None]
    block[:] = block * (1 - a) + colour * a

    for name, params in lesion.features.items():
        if name in ("scale", "keratin", "central_white"):
            level = _eval(params["field"], u, v)
            if name == "scale":
                where = inside & (level > params["threshold"])
                _mix(block, where, _C["white"], 0.5)
            elif name == "keratin":
                where = inside & (rho < 0.5 * r) & (level > -0.5)
                _mix(block, where, (235, 220, 170), 0.6)
            else:
                where = inside & (rho < (0.45 + 0.08 * level) * r)
                _mix(block, where, _C["white"], 0.55)
        elif name in ("nests", "lobules", "dotted_vessels"):
            sub = _dots(geom, params, table, scale, (h, w), 1.0)[ys, xs] & inside
            _mix(block, sub, _C[params["colour"]], 0.7)
        elif name == "vessels":
            sub = np.zeros(block.shape[:2], bool)
            for u0, v0, u1, v1 in params["segments"]:
                x0, y0 = geom.to_pixel(np.float32(u0), np.float32(v0))
                x1, y1 = geom.to_pixel(np.float32(u1), np.float32(v1))
                rr, cc, _ = draw.line_aa(
                    int(y0 * scale) - ys.start,
                    int(x0 * scale) - xs.start,
                    int(y1 * scale) - ys.start,
                    int(x1 * scale) - xs.start,
                )
                ok = (rr >= 0) & (rr < sub.shape[0]) & (cc >= 0) & (cc < sub.shape[1])
                sub[rr[ok], cc[ok]] = True
            _mix(block, sub & inside, _C[params["colour"]], 0.75)

    mask[ys, xs] = inside
    body = mask.copy()
    # a negative network takes the part of the lesion the pigment network leaves free (they
    # rarely overlap in real lesions); decided by geometry, whether or not either is painted
    pigment = lesion.structures["pigment_network"]
    free = inside & ~_network_patch(inside, u, v, pigment) if pigment is not None else inside
    for name in ATTRIBUTES:
        params = lesion.structures[name]
        if params is None or name in omit:
            continue
        if name in ("pigment_network", "negative_network"):
            negative = name == "negative_network"
            patch = _network_patch(free if negative else inside, u, v, params)
            patch = _paint_network(block, patch, u, v, params, negative)
            attributes[name][ys, xs] = patch
        elif name == "streaks":
            painted = _streak_mask(geom, params, table, scale, (h, w))
            _mix(img, painted, _C["dark_brown"], 0.8)
            mask |= painted
            attributes[name] = ndimage.binary_dilation(painted)
        elif name == "globules":
            painted = _dots(geom, params, table, scale, (h, w), 1.5)
            _mix(
                img, painted, _C["black"] if lesion.style == "melanoma" else _C["dark_brown"], 0.75
            )
            attributes[name] = ndimage.binary_dilation(painted)
        else:  # milia-like cysts: small bright dots
            painted = _dots(geom, params, table, scale, (h, w), 1.0)
            _mix(img, painted, (246, 240, 214), 0.85)
            attributes[name] = ndimage.binary_dilation(painted)
    return mask, body, attributes


def _paint_hair(img: np.ndarray, n: int, rng: np.random.Generator) -> None:
    h, w = img.shape[:2]
    hair = np.zeros((h, w), bool)
    thick = max(1, round(max(h, w) / 400))
    for _ in range(n):
        r0, c0 = rng.uniform(0, h), rng.uniform(0, w)
        a = rng.uniform(0, 2 * np.pi)
        length = rng.uniform(0.3, 0.9) * math.hypot(h, w)
        r2, c2 = r0 + length * math.sin(a), c0 + length * math.cos(a)
        bend = rng.normal(0, 0.15) * length
        r1, c1 = (r0 + r2) / 2 - bend * math.cos(a), (c0 + c2) / 2 + bend * math.sin(a)
        rr, cc = draw.bezier_curve(
            int(r0), int(c0), int(r1), int(c1), int(r2), int(c2), 1, shape=(h, w)
        )
        for dr in range(thick):
            ok = rr + dr < h
            hair[rr[ok] + dr, cc[ok]] = True
    _mix(img, hair, (34, 27, 22), 0.85)


def _paint_ruler(img: np.ndarray, side: str, rng: np.random.Generator) -> None:
    h, w = img.shape[:2]
    work = img if side in ("top", "bottom") else img.transpose(1, 0, 2)
    if side in ("bottom", "right"):
        work = work[::-1]
    rows, cols = work.shape[:2]
    offset = int(rows * rng.uniform(0.015, 0.05))
    band = max(4, int(rows * 0.06))
    _mix(work, _rect(work.shape[:2], offset, 0, offset + band, cols), (226, 224, 214), 0.55)
    spacing = max(4.0, cols * rng.uniform(0.02, 0.035))
    lw = max(1, round(rows / 500))
    ticks = np.zeros(work.shape[:2], bool)
    for i, c in enumerate(np.arange(rng.uniform(0, spacing), cols, spacing)):
        length = band if i % 5 == 0 else band // 2
        ticks[offset : offset + length, int(c) : int(c) + lw] = True
    _mix(work, ticks, (40, 40, 44), 0.9)


def _rect(shape: tuple[int, int], r0: int, c0: int, r1: int, c1: int) -> np.ndarray:
    out = np.zeros(shape, bool)
    out[r0:r1, c0:c1] = True
    return out


def render(
    lesion: Lesion, view: View, scene: Scene, *, omit: frozenset[str] | set[str] = frozenset()
) -> Rendered:
    """Paint one image of ``lesion`` seen through ``view`` in ``scene``.

    The image is painted with its longest side at most ``scene.max_render_side`` and resized up
    to ``(scene.height, scene.width)``; the lesion mask is drawn at full size. ``omit`` leaves out
    task-2 structures (to test that a structure only changes pixels inside its mask).

    Returns
    -------
    Rendered
        ``image`` (H, W, 3) uint8, ``mask`` (H, W) bool, ``attributes`` name -> (H, W) bool:
        the region each structure was painted in (network patches; streaks and dots dilated by
        one pixel), empty when the structure is absent.
    """
    big_h, big_w = scene.height, scene.width
    scale = min(1.0, scene.max_render_side / max(big_h, big_w))
    h, w = max(1, round(big_h * scale)), max(1, round(big_w * scale))
    scale_x, scale_y = w / big_w, h / big_h
    scale = (scale_x + scale_y) / 2
    geom = _geometry(lesion, view, big_w, big_h)
    table = _radius_table(lesion)
    rngs = [np.random.default_rng([scene.seed, k]) for k in range(4)]

    img = _skin(scene, h, w, rngs[0])
    mask, body, attributes = _paint_lesion(img, lesion, geom, table, scale, omit)
    if scene.hair:
        _paint_hair(img, scene.hair, rngs[1])
    if scene.ruler:
        _paint_ruler(img, scene.ruler, rngs[2])
    if scene.vignetting:
        cx, cy = 0.5 * w / max(h, w), 0.5 * h / max(h, w)
        half_diag = np.float32(math.hypot(cx, cy))

        def light_fn(x: np.ndarray, y: np.ndarray) -> np.ndarray:
            d = np.sqrt((x - cx) ** 2 + (y - cy) ** 2) / half_diag
            dark = np.float32(scene.vignetting) * np.clip((d - 0.55) / 0.45, 0, 1) ** 2
            return np.float32(scene.brightness) * (1 - dark)

        img *= _smooth(h, w, light_fn, factor=4)[..., None]
    else:
        img *= np.float32(scene.brightness)
    # sensor noise: a seeded 64 x 64 tile repeated (invisible at this amplitude, and cheap)
    tile = rngs[3].standard_normal((64, 64, 3), dtype=np.float32) * np.float32(2.0)
    img += np.tile(tile, (-(-h // 64), -(-w // 64), 1))[:h, :w]
    image = np.clip(img + 0.5, 0, 255).astype(np.uint8)

    if (h, w) != (big_h, big_w):
        image = np.asarray(Image.fromarray(image).resize((big_w, big_h), Image.Resampling.BICUBIC))
        mask = _full_mask(lesion, geom, table, body, big_h, big_w, "streaks" not in omit)
        attributes = {
            k: _upscale(m, big_h, big_w) if m.any() else np.zeros((big_h, big_w), bool)
            for k, m in attributes.items()
        }
    return Rendered(image=image, mask=mask, attributes=attributes, radius_px=geom.radius)


def _full_mask(
    lesion: Lesion,
    geom: _Geometry,
    table: np.ndarray,
    small: np.ndarray,
    h: int,
    w: int,
    streaks: bool = True,
) -> np.ndarray:
    """The lesion mask at full resolution (border plus streaks).

    ``small`` is the mask of the body (no streaks) at render scale: resized up, it is right
    except within a couple of render pixels of its border, where the border is evaluated again at
    full size; the streaks are drawn at full size.
    """
    grow = 2
    band = ndimage.binary_dilation(small, iterations=grow) & ~ndimage.binary_erosion(
        small, iterations=grow, border_value=1
    )
    mask = _upscale(small, h, w)
    rows, cols = np.nonzero(_upscale(band, h, w))
    u, v = geom.to_lesion(cols.astype(np.float32) + 0.5, rows.astype(np.float32) + 0.5)
    rho, _, r = _border(table, u, v)
    mask[rows, cols] = rho < r
    params = lesion.structures["streaks"]
    if streaks and params is not None:
        mask |= _streak_mask(geom, params, table, 1.0, (h, w))
    return mask


def _upscale(mask: np.ndarray, h: int, w: int) -> np.ndarray:
    """Nearest-neighbour resize of a boolean mask to (h, w)."""
    image = Image.fromarray(mask.view(np.uint8)).resize((w, h), Image.Resampling.NEAREST)
    return np.asarray(image).astype(bool)
