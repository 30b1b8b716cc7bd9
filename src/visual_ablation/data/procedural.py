"""Procedural sources: shapes drawn from a seed, with their nuisance factors as labels, and
the cue-conflict set built on them. Each is a pure function of its spec."""

from __future__ import annotations

import colorsys
from collections.abc import Iterator
from typing import Any

import numpy as np

from visual_ablation.data.decode import (
    DatasetError,
    batches,
    fail_on_bad_image,
)
from visual_ablation.data.source import (
    Source,
    register,
)

SHAPES = ("circle", "square", "triangle", "star", "cross", "ring", "hexagon", "heart")
TEXTURES = ("stripes", "checker", "flat")
# a colour's hue sextant: which channel is largest, which second (hue 0-60 degrees, ...)
HUES = ("red-yellow", "yellow-green", "green-cyan", "cyan-blue", "blue-magenta", "magenta-red")
POSITIONS = tuple(
    f"{row}-{col}" for row in ("top", "middle", "bottom") for col in ("left", "centre", "right")
)
SCALES = ("small", "medium", "large")
ROTATIONS = ("0-90", "90-180", "180-270", "270-360")


def hue_sextant(rgb: np.ndarray) -> np.ndarray:
    """Which sixth of the hue circle each colour [..., 3] is in (HUES): the order of its
    channels. Uniform RGB colours fall in each sextant equally often."""
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    return np.select(
        [
            (r >= g) & (g >= b),
            (g > r) & (r >= b),
            (g >= b) & (b > r),
            (b > g) & (g > r),
            (b > r) & (r >= g),
        ],
        [0, 1, 2, 3, 4],
        5,
    )


def _tertile(u: np.ndarray) -> np.ndarray:
    return np.minimum((np.asarray(u) * 3).astype(np.int64), 2)


@register
class ShapesSource(Source):
    """Procedural shapes: label = shape; colour, texture, position, scale and rotation are
    random nuisance factors, each also stored as its own label (`factors`, binned where
    continuous: hue sextants, tertiles of position and scale, quadrants of rotation, the
    last decodable only up to each shape's symmetry). Image i depends only on (seed, i), so
    any n is a prefix of a larger n and generation needs no memory beyond a batch."""

    name = "synthetic-shapes"
    draws_n = True
    renders = True
    factor_names = ("colour", "background", "texture", "position", "scale", "rotation")
    # 6 x 6 x 3 = 108 types, each in about n / 108 images: enough repeats to be learnable
    control_factors = ("colour", "background", "texture")

    @classmethod
    def open(cls, spec: dict[str, Any]) -> Source:
        return cls(int(spec["n"]), int(spec.get("seed", 0)))

    def __init__(self, n: int, seed: int) -> None:
        self.seed = seed
        # the draws at size 1 (relative position and scale): labels and factors, no pixels
        draws = [self._draws(i, 1) for i in range(n)]
        labels = np.array([d["shape"] for d in draws], dtype=np.int64)
        super().__init__(labels, list(SHAPES), self._describe(), self._factors(draws))

    def _describe(self) -> str:
        return f"synthetic-shapes(seed={self.seed})"

    def _factors(self, draws: list[dict[str, Any]]) -> dict[str, tuple[np.ndarray, list[str]]]:
        def column(key: str) -> np.ndarray:
            return np.array([d[key] for d in draws], dtype=np.float64)

        scale = column("scale")
        # the centre's place within the range it was drawn from, per axis
        free = np.maximum(1.0 - 2.0 * scale, 1e-12)
        col = _tertile((column("cx") - scale) / free)
        row = _tertile((column("cy") - scale) / free)
        out = {
            "colour": (hue_sextant(np.stack([d["fg"] for d in draws])), list(HUES)),
            "background": (hue_sextant(np.stack([d["bg"] for d in draws])), list(HUES)),
            "texture": (column("texture").astype(np.int64), list(TEXTURES)),
            "position": (row * 3 + col, list(POSITIONS)),
            "scale": (_tertile((scale - 0.22) / 0.2), list(SCALES)),
            "rotation": (
                np.minimum((column("angle") / (np.pi / 2)).astype(np.int64), 3),
                list(ROTATIONS),
            ),
        }
        return {name: (labels.astype(np.int64), names) for name, (labels, names) in out.items()}

    def _rng(self, i: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, int(i)])

    def _draws(self, i: int, size: int) -> dict[str, Any]:
        """Image i's random draws, in the generator's order (its noise comes after):
        shape, scale, centre, rotation, colours, texture. `_draw` renders them."""
        rng = self._rng(i)
        shape = int(rng.integers(len(SHAPES)))
        scale = rng.uniform(0.22, 0.42) * size
        cx, cy = rng.uniform(scale, size - scale, size=2)
        angle = rng.uniform(0, 2 * np.pi)
        fg, bg = rng.uniform(0, 1, size=3), rng.uniform(0, 1, size=3)
        texture = int(rng.integers(len(TEXTURES)))
        freq, noise_amp = rng.uniform(0.15, 0.6), rng.uniform(0.02, 0.12)
        return {
            "rng": rng,
            "shape": shape,
            "scale": scale,
            "cx": cx,
            "cy": cy,
            "angle": angle,
            "fg": fg,
            "bg": bg,
            "texture": texture,
            "freq": freq,
            "noise_amp": noise_amp,
        }

    @staticmethod
    def _mask(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        """Inside-test in the shape's own frame, coordinates scaled to about [-1, 1]."""
        r = np.hypot(u, v)
        theta = np.arctan2(v, u)
        if shape == "circle":
            return r <= 1.0
        if shape == "square":
            return np.maximum(abs(u), abs(v)) <= 0.8
        if shape == "triangle":
            return (v >= -0.6) & (v <= 0.9 - 1.73 * abs(u)) & (v <= 0.9)
        if shape == "star":
            return r <= 0.45 + 0.5 * (0.5 + 0.5 * np.cos(5 * theta)) ** 3
        if shape == "cross":
            return ((abs(u) <= 0.3) & (abs(v) <= 0.95)) | ((abs(v) <= 0.3) & (abs(u) <= 0.95))
        if shape == "ring":
            return (r <= 1.0) & (r >= 0.55)
        if shape == "hexagon":
            return np.maximum(abs(v) * 0.866 + abs(u) * 0.5, abs(u)) <= 0.9
        if shape == "heart":
            x, y = u * 1.2, v * 1.2 + 0.25
            return (x**2 + y**2 - 1) ** 3 - x**2 * y**3 <= 0
        raise ValueError(shape)

    def _silhouette(self, d: dict[str, Any], size: int) -> np.ndarray:
        """The shape's pixels [size, size] (bool) from its draws."""
        scale, angle = d["scale"], d["angle"]
        yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) + 0.5
        dx, dy = (xx - d["cx"]) / scale, (yy - d["cy"]) / scale
        u = dx * np.cos(angle) + dy * np.sin(angle)
        v = -dx * np.sin(angle) + dy * np.cos(angle)
        return self._mask(SHAPES[d["shape"]], u, v)

    def silhouette(self, i: int, size: int) -> np.ndarray:
        """Image i's shape mask: the known answer a representation can be checked against
        (benchmarks/edges.py scores edge maps against its contour)."""
        return self._silhouette(self._draws(i, size), size)

    def _colour(self, d: dict[str, Any], size: int) -> np.ndarray:
        """The shape's pixels' colour [size, size, 3]: its colour, brighter on its texture."""
        yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) + 0.5
        freq = d["freq"]
        if d["texture"] == 0:  # stripes
            pattern = 0.5 + 0.5 * np.sign(np.sin(freq * (xx + yy)))[..., None]
        elif d["texture"] == 1:  # checker
            pattern = ((np.floor(xx * freq / 2) + np.floor(yy * freq / 2)) % 2)[..., None]
        else:  # flat
            pattern = np.ones((size, size, 1))
        return d["fg"] * (0.6 + 0.4 * pattern)

    def _draw(self, i: int, size: int) -> np.ndarray:
        d = self._draws(i, size)
        inside = self._silhouette(d, size)[..., None]
        image = np.where(inside, self._colour(d, size), d["bg"])
        image = image + d["rng"].normal(0, d["noise_amp"], size=image.shape)
        return (np.clip(image, 0, 1) * 255).round().astype(np.uint8)

    def decode(self, indices, size, on_bad=fail_on_bad_image) -> Iterator[np.ndarray]:
        for chunk in batches(indices):
            yield np.stack([self._draw(int(i), size) for i in chunk])


CUE_TEXTURES = (
    "stripes-0",
    "stripes-45",
    "stripes-90",
    "stripes-135",
    "checker",
    "dots",
    "rings",
    "grid",
)


@register
class CueConflictSource(ShapesSource):
    """Shapes whose class a second cue signals too, for measuring shape bias (Geirhos et
    al. 2019): the shape's `texture` (one of 8 patterns, CUE_TEXTURES) or its `colour` (one
    of 8 hues) stands for a class. In train and validation images the cue signals the
    shape's own class with probability `agreement` (else another class, at random); a
    fixed `conflict` share of the images, the test split of every run, has a cue of
    another class, so that each test decision follows the shape, the cue, or neither.
    The cue's class is the factor `cue`; `colour` (hue sextant) and `texture` are what the
    image shows (one of them the cue's rendering, the other a random nuisance as in
    synthetic-shapes), decodable on conflict images only from the cue itself, not from
    the shape it usually comes with. The factor `shape` is the class again, as a target
    decoded on the conflict images (where the cue does not give it away), like every
    factor target of a source that fixes its test images."""

    name = "synthetic-cue-conflict"
    factor_names = (
        "shape",
        "cue",
        "colour",
        "texture",
        "background",
        "position",
        "scale",
        "rotation",
    )
    # the cue (colour or texture) signals the class: only factors drawn apart from it
    control_factors = ("background", "position")
    fixes_test = True
    defaults = {"cue": "texture", "agreement": 1.0, "conflict": 0.2}
    version = 2  # 2: the shape factor

    @classmethod
    def open(cls, spec: dict[str, Any]) -> Source:
        return cls(
            int(spec["n"]),
            int(spec.get("seed", 0)),
            cue=spec["cue"],
            agreement=float(spec["agreement"]),
            conflict=float(spec["conflict"]),
        )

    @classmethod
    def coinciding(cls, spec: dict[str, Any]) -> list[tuple[str, str]]:
        # the cue is drawn as the texture's pattern (or the colour's hue, which its sextant
        # factor bins differently): `texture` is then the cue under another name
        return [("cue", "texture")] if spec["cue"] == "texture" else []

    def __init__(self, n: int, seed: int, cue: str, agreement: float, conflict: float) -> None:
        if cue not in ("texture", "colour"):
            raise DatasetError(f"{self.name}: cue {cue!r} is neither 'texture' nor 'colour'")
        self.cue, self.agreement, self.conflict = cue, agreement, conflict
        super().__init__(n, seed)
        self.fixed_test = np.array([self._role(i)[0] for i in range(n)], dtype=bool)

    def _describe(self) -> str:
        return (
            f"synthetic-cue-conflict(seed={self.seed}, cue={self.cue}, "
            f"agreement={self.agreement}, conflict={self.conflict})"
        )

    def _role(self, i: int) -> tuple[bool, int]:
        """(in the conflict test set, the cue's offset from the shape's class: 0 = agrees),
        from the image's own second stream (the shapes' draws stay as they are)."""
        rng = np.random.default_rng([self.seed, int(i), 1])
        conflict = bool(rng.random() < self.conflict)
        agrees = not conflict and bool(rng.random() < self.agreement)
        return conflict, 0 if agrees else int(rng.integers(1, len(SHAPES)))

    def _draws(self, i: int, size: int) -> dict[str, Any]:
        d = super()._draws(i, size)
        d["cue"] = (d["shape"] + self._role(i)[1]) % len(SHAPES)
        if self.cue == "colour":
            # the cue's hue, a little jitter, a saturated and bright colour
            jitter = np.random.default_rng([self.seed, int(i), 2]).uniform(-0.03, 0.03)
            hsv = (
                (d["cue"] / len(SHAPES) + jitter) % 1.0,
                0.6 + 0.4 * d["fg"][1],
                0.6 + 0.4 * d["fg"][2],
            )
            d["fg"] = np.array(colorsys.hsv_to_rgb(*hsv))
        return d

    def _factors(self, draws: list[dict[str, Any]]) -> dict[str, tuple[np.ndarray, list[str]]]:
        shared = super()._factors(draws)
        cue = np.array([d["cue"] for d in draws], dtype=np.int64)
        if self.cue == "texture":  # the texture drawn is the cue's pattern
            shared["texture"] = (cue, list(CUE_TEXTURES))
        shape = np.array([d["shape"] for d in draws], dtype=np.int64)
        own = {"shape": (shape, list(SHAPES)), "cue": (cue, list(SHAPES))}
        return own | {name: shared[name] for name in self.factor_names if name not in own}

    def _colour(self, d: dict[str, Any], size: int) -> np.ndarray:
        if self.cue == "colour":
            return super()._colour(d, size)
        yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) + 0.5
        period = max(3.0, size / 10.0)
        u, v = xx / period, yy / period
        kind = CUE_TEXTURES[d["cue"]]
        if kind.startswith("stripes"):
            theta = np.deg2rad(float(kind.split("-")[1]))
            pattern = np.sin(2 * np.pi * (u * np.cos(theta) + v * np.sin(theta))) > 0
        elif kind == "checker":
            pattern = (np.floor(u) + np.floor(v)) % 2 == 0
        elif kind == "dots":
            pattern = np.hypot(u % 1 - 0.5, v % 1 - 0.5) < 0.3
        elif kind == "rings":
            pattern = np.sin(2 * np.pi * np.hypot(xx - d["cx"], yy - d["cy"]) / period) > 0
        else:  # grid
            pattern = (u % 1 < 0.25) | (v % 1 < 0.25)
        return d["fg"] * (0.35 + 0.65 * pattern[..., None])
