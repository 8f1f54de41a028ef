"""Built-in synthetic signatures: the default data set, and a source of pretraining data.

A spline model in the spirit of the neuromotor approach (Ferrer et al., TPAMI 2015):
- a signer's *action plan* is a sequence of target points (letters of one or two words and an
  optional flourish) with the signer's own slant, letter shapes, proportions and pen width;
- each *genuine* execution perturbs the plan slightly (shape), and varies slant, size, rotation,
  pen width and timing (pen speed along a stroke thins the line, as in a lognormal speed profile);
- a *skilled forgery* starts from the same plan but deviates as forgers do: letter proportions and
  shape details drift, the line trembles, and strokes break where the forger hesitates. Pen width,
  size and ink come from the same distributions as the genuine ones, so image statistics (ink
  amount, darkness, bounding box) do not give the forgeries away.
Images are grayscale PNG, dark ink on light paper, written with a ``manifest.csv``.

Two styles (``STYLES``). ``classic``: the forger deviates freely (shape noise four times the
genuine's), so forgeries look like another person's signature. ``skilled``: the forger follows the
genuine trajectory closely and makes the errors of careful imitation: slower strokes (no thinning
where a fluent writer speeds up), blunt starts and ends where the pen rests, pen lifts with retouched
joins, small proportion and slant drift, simplified flourishes; every image of that style (genuine
too) also gets pen pressure along the strokes, paper texture and scanner blur and noise.
"""
from __future__ import annotations

import math
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from sigverify.data.manifest import Record, write_manifest
from sigverify.labels import FORGERY, GENUINE

SUPERSAMPLE = 2  # draw at 2x and downsample: anti-aliased strokes of fractional width
UNIT_PX = 44.0  # letter height in pixels at scale 1


@dataclass(frozen=True)
class SignerPlan:
    strokes: tuple[np.ndarray, ...]  # control points per pen-down stroke, letter-height units
    slant: float
    pen_width: float
    rotation: float
    flourish: bool = False  # the last stroke is a flourish


@dataclass(frozen=True)
class SynthVariability:
    """How much executions differ. Raising ``forgery_*`` makes forgeries easier to spot."""

    genuine_shape: float = 0.05  # control-point jitter, letter heights
    genuine_size: float = 0.15  # +- relative size
    genuine_slant: float = 0.06
    forgery_shape: float = 0.22
    forgery_proportion: float = 0.22  # +- per-letter width/height change
    forgery_tremor: float = 0.05  # tremor amplitude, letter heights
    forgery_breaks: float = 0.5  # chance that a stroke is broken by a hesitation
    forgery_slant: float = 0.12  # the forger's own slant habit (sd)
    forgery_slowness: float = 0.0  # 1: no fast, thin mid-stroke (a forger draws slowly and evenly)
    forgery_blunt: float = 0.0  # chance that a stroke starts and ends in a blot (the pen rests)
    forgery_retouch: float = 0.0  # chance that a pen lift is joined by a retouch (overlapping, offset)
    forgery_simplify: float = 0.0  # chance that the flourish is simplified (fewer turns, smaller)
    scan: bool = False  # pen pressure, paper texture, scanner blur and noise (every image)


STYLES = {
    "classic": SynthVariability(),
    # Between the two measured extremes (docs/benchmarks.md, "Synthetic generator"): classic's free
    # forgeries, and a first skilled setting (shape 0.07, proportion 0.08, tremor 0.035, slant 0.05)
    # so close to the genuine that a 1x64x128 network never learned it (validation EER 44 %).
    "skilled": SynthVariability(forgery_shape=0.12, forgery_proportion=0.14, forgery_tremor=0.05,
                                forgery_breaks=0.5, forgery_slant=0.08, forgery_slowness=0.8, forgery_blunt=0.6,
                                forgery_retouch=0.6, forgery_simplify=0.7, scan=True),
}


def make_plan(rng: np.random.Generator) -> SignerPlan:
    """A new signer: one or two words of 3-7 cursive letters, perhaps a flourish."""
    strokes, x = [], 0.0
    for _ in range(rng.integers(1, 3)):
        word, x = _word(rng, x, int(rng.integers(3, 8)))
        strokes.append(word)
        x += rng.uniform(0.4, 0.9)
    flourish = rng.random() < 0.6
    if flourish:
        strokes.append(_flourish(rng, x))
    return SignerPlan(tuple(strokes), slant=rng.uniform(-0.45, 0.35), pen_width=rng.uniform(1.6, 3.6),
                      rotation=rng.uniform(-4, 4), flourish=flourish)


def _word(rng: np.random.Generator, x: float, letters: int) -> tuple[np.ndarray, float]:
    points = [(x, 0.0)]
    for i in range(letters):
        width = rng.uniform(0.45, 1.0)
        tall = rng.random() < 0.3 or i == 0  # capitals and ascenders
        height = rng.uniform(1.2, 1.9) if tall else rng.uniform(0.55, 1.0)
        depth = rng.uniform(0.3, 0.8) if rng.random() < 0.15 else 0.0  # descenders
        loop = rng.random() < 0.5
        points += _letter(rng, x, width, height, depth, loop)
        x += width
    return np.array(points), x


def _letter(rng, x, width, height, depth, loop) -> list[tuple[float, float]]:
    up = (x + width * rng.uniform(0.3, 0.7), -height)
    pts = [(x + width * rng.uniform(0.0, 0.3), -height * rng.uniform(0.2, 0.5)), up]
    if loop:
        pts.append((x + width * rng.uniform(0.0, 0.4), -height * rng.uniform(0.4, 0.8)))
    if depth:
        pts.append((x + width * rng.uniform(0.4, 0.8), depth))
    pts.append((x + width, rng.uniform(-0.15, 0.05)))
    return pts


def _flourish(rng: np.random.Generator, end_x: float) -> np.ndarray:
    n = int(rng.integers(3, 6))
    xs = np.sort(rng.uniform(-0.3, end_x + 0.5, n))[:: 1 if rng.random() < 0.5 else -1]
    ys = rng.uniform(0.1, 0.7, n)
    return np.stack([xs, ys], axis=1)


def execute(plan: SignerPlan, rng: np.random.Generator, forged: bool, var: SynthVariability) -> np.ndarray:
    """Render one signature by the plan's owner (genuine) or by a forger imitating it."""
    planned = list(plan.strokes)
    # Draws only where a style uses them: the classic style's random stream, hence its images, stay as they were.
    if forged and plan.flourish and var.forgery_simplify and rng.random() < var.forgery_simplify:
        planned[-1] = _simplify(planned[-1])
    strokes = [_perturb_stroke(s, rng, forged, var) for s in planned]
    strokes = [_catmull_rom(s) for s in strokes]
    if forged:
        strokes = [_tremble(s, rng, var.forgery_tremor) for s in strokes]
        strokes = [piece for s in strokes for piece in _hesitate(s, rng, var.forgery_breaks, var.forgery_retouch)]
    slant = plan.slant + rng.normal(0, var.genuine_slant) + (rng.normal(0, var.forgery_slant) if forged else 0.0)
    rotation = plan.rotation + rng.normal(0, 2.0)
    size = UNIT_PX * (1 + rng.uniform(-var.genuine_size, var.genuine_size))
    strokes = [_transform(s, slant, rotation, size) for s in strokes]
    pen = plan.pen_width * rng.uniform(0.8, 1.2)
    slowness = var.forgery_slowness if forged else 0.0
    blunt = var.forgery_blunt if forged else 0.0
    return _render(strokes, pen, rng, slowness, blunt, var.scan)


def _simplify(flourish: np.ndarray) -> np.ndarray:
    """A forger's flourish: every other turn, and a third smaller around its middle line."""
    kept = flourish[::2] if len(flourish) > 3 else flourish
    middle = kept[:, 1].mean()
    return np.stack([kept[:, 0], middle + 0.67 * (kept[:, 1] - middle)], axis=1)


def _perturb_stroke(points, rng, forged, var):
    sigma = var.forgery_shape if forged else var.genuine_shape
    pts = points + rng.normal(0, sigma, points.shape)
    if forged:  # proportions drift letter by letter: stretch locally along x and y
        segments = max(1, len(pts) // 4)
        sx = np.repeat(1 + rng.uniform(-var.forgery_proportion, var.forgery_proportion, segments), 4)[: len(pts)]
        sx = np.pad(sx, (0, len(pts) - len(sx)), mode="edge")
        sy = 1 + rng.uniform(-var.forgery_proportion, var.forgery_proportion, len(pts))
        dx = np.diff(pts[:, 0], prepend=pts[0, 0]) * sx
        pts = np.stack([pts[0, 0] + np.cumsum(dx) - dx[0], pts[:, 1] * sy], axis=1)
    return pts


def _catmull_rom(points: np.ndarray, samples: int = 10) -> np.ndarray:
    """A smooth pen path through the control points (centripetal-free uniform Catmull-Rom)."""
    if len(points) < 2:
        return points
    p = np.vstack([points[0], points, points[-1]])
    t = np.linspace(0, 1, samples, endpoint=False)[:, None]
    t2, t3 = t * t, t * t * t
    out = []
    for i in range(1, len(p) - 2):
        p0, p1, p2, p3 = p[i - 1], p[i], p[i + 1], p[i + 2]
        out.append(0.5 * (2 * p1 + (-p0 + p2) * t + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t2 + (-p0 + 3 * p1 - 3 * p2 + p3) * t3))
    out.append(points[-1:])
    return np.vstack(out)


def _tremble(path: np.ndarray, rng: np.random.Generator, amplitude: float) -> np.ndarray:
    """Slow, careful drawing: small high-frequency wobble perpendicular-ish to the path."""
    noise = rng.normal(0, amplitude, path.shape)
    kernel = np.ones(3) / 3
    smooth = np.stack([np.convolve(noise[:, d], kernel, mode="same") for d in range(2)], axis=1)
    return path + smooth


def _hesitate(path: np.ndarray, rng: np.random.Generator, chance: float, retouch: float = 0.0) -> list[np.ndarray]:
    """Pen lifts where the forger stops to look: the stroke breaks, with a small gap; or, retouched,
    the pen comes down again a little before the break and slightly off the line."""
    if len(path) < 12 or rng.random() >= chance:
        return [path]
    cut = int(rng.integers(4, len(path) - 4))
    if retouch and rng.random() < retouch:
        back = int(rng.integers(1, 4))
        return [path[:cut], path[cut - back:] + rng.normal(0, 0.03, 2)]
    return [path[:cut], path[cut + 1 :]]


def _transform(path: np.ndarray, slant: float, rotation_deg: float, size: float) -> np.ndarray:
    sheared = np.stack([path[:, 0] - slant * path[:, 1], path[:, 1]], axis=1)
    a = math.radians(rotation_deg)
    rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    return sheared @ rot.T * size


def _render(strokes: list[np.ndarray], pen: float, rng: np.random.Generator, slowness: float = 0.0,
            blunt: float = 0.0, scan: bool = False) -> np.ndarray:
    allpts = np.vstack(strokes)
    lo = allpts.min(axis=0)
    margin = rng.uniform(10, 30, 2)
    size = np.ceil(allpts.max(axis=0) - lo + 2 * margin).astype(int)
    canvas = np.zeros((size[1] * SUPERSAMPLE, size[0] * SUPERSAMPLE), np.uint8)
    for stroke in strokes:
        _draw_stroke(canvas, (stroke - lo + margin) * SUPERSAMPLE, pen * SUPERSAMPLE, rng, slowness, blunt, scan)
    ink = cv2.resize(canvas, (size[0], size[1]), interpolation=cv2.INTER_AREA).astype(np.float32) / 255
    paper = rng.uniform(232, 250) + rng.normal(0, 2.5, ink.shape)
    if scan:  # paper fibre and uneven lighting: low-frequency texture
        texture = cv2.GaussianBlur(rng.normal(0, 1, ink.shape).astype(np.float32), (0, 0), rng.uniform(3, 8))
        paper = paper + texture / (texture.std() + 1e-6) * rng.uniform(1.5, 4.0)
    darkness = rng.uniform(150, 215)
    image = paper - ink * darkness
    if scan:  # the scanner's optics and sensor
        image = cv2.GaussianBlur(image.astype(np.float32), (0, 0), rng.uniform(0.3, 0.8)) + rng.normal(0, 1.5, ink.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def _draw_stroke(canvas: np.ndarray, path: np.ndarray, pen: float, rng: np.random.Generator, slowness: float = 0.0,
                 blunt: float = 0.0, pressure: bool = False) -> None:
    """Draw in chunks whose width follows a lognormal-like speed profile: fast mid-stroke = thinner
    (``slowness`` flattens it: a slow, careful hand keeps the width). ``blunt``: the chance of a blot
    where the pen starts and stops; ``pressure``: ink intensity varies smoothly along the stroke."""
    n = len(path)
    u = (np.arange(n) + 0.5) / n
    speed = np.exp(-((np.log(u * 2 + 0.2)) ** 2) / (2 * 0.5**2)) * (1.0 - slowness)
    width = pen * (1.15 - 0.35 * speed / max(speed.max(), 1e-6) * (1.0 - slowness)) * rng.uniform(0.9, 1.1)
    level = np.full(n, 255.0)
    if pressure:
        level = 255 * np.clip(0.85 + np.cumsum(rng.normal(0, 0.03, n)), 0.6, 1.0)
    for start in range(0, n - 1, 6):
        chunk = np.round(path[start : start + 7]).astype(np.int32)
        thickness = max(1, int(round(width[min(start + 3, n - 1)])))
        cv2.polylines(canvas, [chunk], False, int(level[start]), thickness=thickness, lineType=cv2.LINE_AA)
    if blunt and rng.random() < blunt:
        for end in (path[0], path[-1]):
            cv2.circle(canvas, tuple(int(v) for v in np.round(end)), max(1, int(round(0.75 * pen))), 255, -1,
                       lineType=cv2.LINE_AA)


def synthesize_signer(signer: int, genuine: int, forgeries: int, seed: int,
                      var: SynthVariability | str = "classic") -> list[tuple[str, np.ndarray, int]]:
    """All images of one signer as (label, image, index); independent of other signers. ``var``: a
    style name (``STYLES``) or the variability itself."""
    var = style(var) if isinstance(var, str) else var
    rng = np.random.default_rng((seed, signer))
    plan = make_plan(rng)
    out = [(GENUINE, execute(plan, rng, False, var), i + 1) for i in range(genuine)]
    out += [(FORGERY, execute(plan, rng, True, var), i + 1) for i in range(forgeries)]
    return out


def style(name: str) -> SynthVariability:
    if name not in STYLES:
        raise ValueError(f"unknown synthetic style {name!r}; valid: {', '.join(STYLES)}")
    return STYLES[name]


def style_fingerprint(name: str) -> str:
    """A short hash of a style's settings (names the generated set's folder)."""
    import hashlib
    from dataclasses import asdict

    return hashlib.sha256(repr(sorted(asdict(style(name)).items())).encode()).hexdigest()[:8]


def _write_signer(args) -> list[Record]:
    out, signer, genuine, forgeries, seed, style_name = args
    folder = Path(out) / f"s{signer:04d}"
    folder.mkdir(parents=True, exist_ok=True)
    records = []
    for label, image, index in synthesize_signer(signer, genuine, forgeries, seed, style_name):
        path = folder / f"{label[0]}_{index:02d}.png"
        cv2.imwrite(str(path), image, [cv2.IMWRITE_PNG_COMPRESSION, 1])
        records.append(Record(path.resolve(), str(signer), label, index))
    return records


# The built-in set's size when nothing says otherwise (data.synthetic, `sigverify data synth`).
SYNTHETIC_DEFAULTS = {"signers": 60, "genuine": 12, "forgeries": 12}


def synthesize_dataset(out: str | Path, signers: int = SYNTHETIC_DEFAULTS["signers"],
                       genuine: int = SYNTHETIC_DEFAULTS["genuine"], forgeries: int = SYNTHETIC_DEFAULTS["forgeries"],
                       seed: int = 0, workers: int = 0, style_name: str = "classic") -> Path:
    """Write a synthetic data set and its ``manifest.csv`` into ``out``; return the manifest path."""
    if signers < 1 or genuine < 1 or forgeries < 0:
        raise ValueError(f"need signers >= 1, genuine >= 1, forgeries >= 0; got {signers}, {genuine}, {forgeries}")
    style(style_name)
    out = Path(out)
    jobs = [(str(out), s, genuine, forgeries, seed, style_name) for s in range(1, signers + 1)]
    if workers and workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            parts = list(pool.map(_write_signer, jobs, chunksize=4))
    else:
        parts = [_write_signer(j) for j in jobs]
    return write_manifest([r for part in parts for r in part], out / "manifest.csv")
