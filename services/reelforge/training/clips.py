"""Seeded generator of captioned clips: the built-in model's training data and its held-out prompts.

A clip shows one object (sometimes two) of a shape, colour, motion and speed on a plain background.
Everything about a clip follows from its ClipSpec, seed included, so data is regenerated, never stored:
`render(spec)` is a pure function of the spec and the clip format.

Motion is defined per clip, not per second: a moving object crosses a fixed fraction of the distance it
has room for (slow 40 %, fast 90 %), from a start chosen so the whole path stays inside the frame. So a
clip never leaves the frame whatever its length, "fast" and "slow" stay far apart at any size, and the
frame rate is playback metadata only (DEFAULT_FPS is what encoders and the model are told).

Held-out split, by prompt content: a (shape, colour, motion, background) combination is held out when
the sha256 of its name falls in the lowest HELDOUT_PERCENT of 100 buckets. Held-out clips are built
around such a combination and train clips contain none, so "held-out prompts" are prompts the model has
never seen in any phrasing, at any speed or position: a test of composing known words, not of
memorising captions. (A split by seed range would put the same prompts on both sides.) Every single
shape, colour, motion and background still appears in train, so nothing held out is a new word.

Rendering is vectorised over frames and exact where it is cheap: each shape is a signed distance to its
edge, evaluated on broadcast (T, 1, W) and (T, H, 1) axes, turned into 1-pixel-wide anti-aliased
coverage quantised to COVERAGE_LEVELS, and composited through a small colour lookup table.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, replace
from itertools import product
from typing import Literal

import numpy as np

SHAPES = ("circle", "square", "triangle")
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (225, 35, 35),
    "green": (40, 200, 60),
    "blue": (40, 90, 245),
    "yellow": (245, 220, 40),
    "white": (245, 245, 245),
    "purple": (150, 60, 200),
    "orange": (250, 140, 30),
    "cyan": (40, 215, 225),
}
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "black": (10, 10, 10),
    "gray": (115, 115, 115),
    "navy": (15, 25, 95),
    "dark green": (20, 80, 35),
}
MOTIONS = ("left", "right", "up", "down", "still")
SPEEDS = ("slow", "fast")

DEFAULT_FRAMES = 16
DEFAULT_SIZE = 64
DEFAULT_FPS = 8  # playback rate only: motion is defined over the whole clip (module docstring)

HELDOUT_PERCENT = 10  # about 48 of the 480 combinations: enough for >= 200 distinct held-out clips
TWO_OBJECT_FRACTION = 0.25  # mostly single objects: the evaluator's main case and the easier one to learn

COVERAGE_LEVELS = 64  # anti-aliasing levels; 64 x 64 entries keep the two-object lookup table tiny
_TRAVEL = {"slow": 0.4, "fast": 0.9}  # fraction of the free span crossed over the clip
_HALF_SIZE = {1: (0.11, 0.17), 2: (0.08, 0.12)}  # object half-size / frame size, by object count
_MARGIN = 1.0  # px between an object's edge and the frame border: room for its anti-aliased edge
_GAP = 2.0  # px kept between the boxes of two objects on every frame, so neither hides the other
_PLACEMENT_TRIES = 200
_DIRECTION = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1), "still": (0, 0)}

Split = Literal["train", "heldout"]


@dataclass(frozen=True)
class ObjectSpec:
    shape: str
    colour: str
    motion: str
    speed: str | None  # None exactly when motion is "still"

    def __post_init__(self) -> None:
        for value, allowed in ((self.shape, SHAPES), (self.colour, tuple(COLOURS)), (self.motion, MOTIONS)):
            if value not in allowed:
                raise ValueError(f"unknown {value!r}: choose one of {', '.join(allowed)}")
        if (self.motion == "still") != (self.speed is None):
            raise ValueError("speed must be None for a still object and 'slow' or 'fast' for a moving one")
        if self.speed is not None and self.speed not in SPEEDS:
            raise ValueError(f"unknown speed {self.speed!r}: choose one of {', '.join(SPEEDS)}")


@dataclass(frozen=True)
class ClipSpec:
    """One clip: the main object, an optional second one of another colour, the background, and the seed
    that fixes sizes and positions."""

    shape: str
    colour: str
    motion: str
    speed: str | None
    background: str
    seed: int
    second: ObjectSpec | None = None

    def __post_init__(self) -> None:
        self.main  # noqa: B018  (validates the main object's fields)
        if self.background not in BACKGROUNDS:
            choices = ", ".join(BACKGROUNDS)
            raise ValueError(f"unknown background {self.background!r}: choose one of {choices}")
        if self.second is not None and self.second.colour == self.colour:
            raise ValueError("the two objects must differ in colour, which is how captions tell them apart")

    @property
    def main(self) -> ObjectSpec:
        return ObjectSpec(self.shape, self.colour, self.motion, self.speed)

    @property
    def objects(self) -> tuple[ObjectSpec, ...]:
        return (self.main,) if self.second is None else (self.main, self.second)

    def caption(self, phrasing_index: int = 0) -> str:
        """The caption in one of the NUM_PHRASINGS phrasings; phrasing 0 names no speed."""
        if not 0 <= phrasing_index < NUM_PHRASINGS:
            raise ValueError(f"phrasing_index must be in [0, {NUM_PHRASINGS}), got {phrasing_index}")
        phrasing = _PHRASINGS[phrasing_index]
        objects = " and ".join(_describe(obj, phrasing) for obj in self.objects)
        return _articles(phrasing.scene.format(objects=objects, bg=self.background))

    def object_spans(self, phrasing_index: int = 0) -> tuple[tuple[int, int], ...]:
        """(start, end) character span of each object's words in caption(phrasing_index), in `objects`
        order: what says which words describe which object."""
        caption, phrasing = self.caption(phrasing_index), _PHRASINGS[phrasing_index]
        spans, start = [], 0
        for obj in self.objects:
            words = _articles(_describe(obj, phrasing))
            start = caption.index(words, start)
            spans.append((start, start + len(words)))
            start += len(words)
        return tuple(spans)


@dataclass(frozen=True)
class _Phrasing:
    moving: str  # fields: colour, shape, dir, dir_to, adv, adj, verb
    still: str  # fields: colour, shape
    scene: str  # fields: objects, bg


_PHRASINGS = (
    _Phrasing(
        moving="a {colour} {shape} moving {dir}",
        still="a {colour} {shape} staying still",
        scene="{objects} on a {bg} background",
    ),
    _Phrasing(
        moving="a {colour} {shape} moving {dir} {adv}",
        still="a {colour} {shape} that stays still",
        scene="{objects} on a {bg} background",
    ),
    _Phrasing(
        moving="{colour} {shape} {verb} {dir_to}",
        still="{colour} {shape}, motionless",
        scene="{objects}, {bg} backdrop",
    ),
    _Phrasing(
        moving="a {adj} {colour} {shape} goes {dir}",
        still="a {colour} {shape} stays still",
        scene="on a {bg} background, {objects}",
    ),
    _Phrasing(
        moving="a {colour} {shape} sliding {dir} {adv}",
        still="a {colour} {shape} that does not move",
        scene="{bg} background with {objects}",
    ),
    _Phrasing(
        moving="a {shape} in {colour} moving {dir_to} {adv}",
        still="a stationary {shape} in {colour}",
        scene="{objects} against a {bg} background",
    ),
)
NUM_PHRASINGS = len(_PHRASINGS)
_DIR_TO = {"left": "to the left", "right": "to the right", "up": "upward", "down": "downward"}
_ADVERB = {"slow": "slowly", "fast": "quickly"}
_VERB = {"slow": "drifting", "fast": "darting"}


def _articles(text: str) -> str:
    return re.sub(r"\ba (?=[aeiou])", "an ", text)


def _describe(obj: ObjectSpec, phrasing: _Phrasing) -> str:
    if obj.speed is None:
        return phrasing.still.format(colour=obj.colour, shape=obj.shape)
    return phrasing.moving.format(
        colour=obj.colour,
        shape=obj.shape,
        dir=obj.motion,
        dir_to=_DIR_TO[obj.motion],
        adv=_ADVERB[obj.speed],
        adj=obj.speed,
        verb=_VERB[obj.speed],
    )


# ---- held-out split ------------------------------------------------------------------------------


def is_heldout_combination(shape: str, colour: str, motion: str, background: str) -> bool:
    digest = hashlib.sha256(f"{shape}/{colour}/{motion}/{background}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % 100 < HELDOUT_PERCENT


def split_of(spec: ClipSpec) -> Split:
    """A clip is held out when any of its objects forms a held-out combination with the background."""
    held = any(is_heldout_combination(o.shape, o.colour, o.motion, spec.background) for o in spec.objects)
    return "heldout" if held else "train"


_ALL_COMBINATIONS = list(product(SHAPES, COLOURS, MOTIONS, BACKGROUNDS))
_HELDOUT_COMBINATIONS = [c for c in _ALL_COMBINATIONS if is_heldout_combination(*c)]
_TRAIN_COMBINATIONS = [c for c in _ALL_COMBINATIONS if not is_heldout_combination(*c)]


def sample_specs(
    n: int,
    seed: int,
    split: Split = "train",
    two_object_fraction: float = TWO_OBJECT_FRACTION,
    reading_order: bool = False,
) -> list[ClipSpec]:
    """n specs drawn uniformly over the split's combinations. The same arguments give the same specs
    under the same numpy (its Generator streams are not frozen across versions; the tests pin a digest).

    reading_order: in two-object clips the object the caption names first is, on average over the clip,
    left of the other (at the default clip format; the clip seed is redrawn until it is), as captions
    written left to right name objects; otherwise which object is named first says nothing about where
    it is. (The average, not the start: a fast object moving left starts further right than a fast one
    moving right can.)"""
    if split not in ("train", "heldout"):
        raise ValueError(f"split must be 'train' or 'heldout', not {split!r}")
    if not 0.0 <= two_object_fraction <= 1.0:
        raise ValueError(f"two_object_fraction {two_object_fraction} must be in [0, 1]")
    rng = np.random.default_rng([seed, 0 if split == "train" else 1])
    main_pool = _TRAIN_COMBINATIONS if split == "train" else _HELDOUT_COMBINATIONS
    # A held-out clip is already held out through its main object, so its second one may be anything.
    second_pool = _TRAIN_COMBINATIONS if split == "train" else _ALL_COMBINATIONS
    specs = []
    for _ in range(n):
        shape, colour, motion, background = main_pool[rng.integers(len(main_pool))]
        speed = None if motion == "still" else SPEEDS[rng.integers(len(SPEEDS))]
        second = None
        if rng.random() < two_object_fraction:
            pool = [c for c in second_pool if c[3] == background and c[1] != colour]
            s_shape, s_colour, s_motion, _ = pool[rng.integers(len(pool))]
            s_speed = None if s_motion == "still" else SPEEDS[rng.integers(len(SPEEDS))]
            second = ObjectSpec(s_shape, s_colour, s_motion, s_speed)
        spec = ClipSpec(shape, colour, motion, speed, background, int(rng.integers(2**63)), second)
        if reading_order and second is not None:
            spec = _named_left_to_right(spec)
        specs.append(spec)
    return specs


def _named_left_to_right(spec: ClipSpec) -> ClipSpec:
    """spec, or spec with a new seed (drawn from its own, so the other specs do not change) under which
    its first object is the left one."""
    rng = np.random.default_rng([spec.seed, 3])
    for _ in range(_PLACEMENT_TRIES):
        first, second = _paths(spec, DEFAULT_FRAMES, DEFAULT_SIZE)
        if first.x.mean() < second.x.mean():
            return spec
        spec = replace(spec, seed=int(rng.integers(2**63)))
    raise AssertionError(f"no seed in {_PLACEMENT_TRIES} puts {spec.colour} left of {spec.second.colour}")


# ---- rendering -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Path:
    half: float  # half the object's width and height, px
    x: np.ndarray  # (T,) centre per frame, px
    y: np.ndarray  # (T,)


def _place(obj: ObjectSpec, count: int, frames: int, size: int, rng: np.random.Generator) -> _Path:
    half = size * rng.uniform(*_HALF_SIZE[count])
    lo, hi = half + _MARGIN, size - half - _MARGIN
    travel = 0.0 if obj.speed is None else _TRAVEL[obj.speed] * (hi - lo)
    progress = np.linspace(0.0, 1.0, frames) if frames > 1 else np.zeros(1)
    centres = []
    for step in _DIRECTION[obj.motion]:
        start = rng.uniform(lo + travel * (step < 0), hi - travel * (step > 0))
        centres.append(start + step * travel * progress)
    return _Path(half, centres[0], centres[1])


def _overlap(a: _Path, b: _Path) -> bool:
    reach = a.half + b.half + _GAP
    return bool(np.any((np.abs(a.x - b.x) < reach) & (np.abs(a.y - b.y) < reach)))


def _paths(spec: ClipSpec, frames: int, size: int) -> list[_Path]:
    rng = np.random.default_rng(spec.seed)
    count = len(spec.objects)
    for _ in range(_PLACEMENT_TRIES):
        paths = [_place(obj, count, frames, size, rng) for obj in spec.objects]
        if count == 1 or not _overlap(*paths):
            return paths
    raise ValueError(f"no room for two objects that never overlap in {size}x{size} frames: use a larger size")


def _coverage(shape: str, path: _Path, work: np.ndarray) -> np.ndarray:
    """(T, H, W) uint8 coverage in [0, COVERAGE_LEVELS): a 1-px anti-aliasing ramp across the edge.

    Every full-size step writes into `work`, (T, H, W) float32: fresh arrays of this size cost more in
    page faults than the arithmetic does."""
    top = COVERAGE_LEVELS - 1
    pixel = np.arange(work.shape[-1], dtype=np.float32) + 0.5  # pixel centres
    dx = pixel[None, :] - path.x[:, None].astype(np.float32)  # (T, W)
    dy = pixel[None, :] - path.y[:, None].astype(np.float32)  # (T, H)
    r = np.float32(path.half)
    if shape == "square":  # exact box-filtered coverage: a product of two 1-D coverages
        cx = np.clip(r + 0.5 - np.abs(dx), 0, 1) * top  # (T, W)
        cy = np.clip(r + 0.5 - np.abs(dy), 0, 1)  # (T, H)
        np.multiply(cy[:, :, None], cx[:, None, :], out=work)
    elif shape == "circle":  # inside distance r - |p| ~ (r^2 - |p|^2) / 2r near the edge, no sqrt
        scale = top / (2 * r)
        inside_x = top / 2 + scale * r * r - scale * dx**2  # (T, W)
        np.subtract(inside_x[:, None, :], (scale * dy**2)[:, :, None], out=work)
    else:  # upright triangle, apex at the top of its box: the nearer of the two slants, cut to the box
        # (whose bottom is the base), without which the slants' ramps would flare past the acute corners
        scale = top / np.sqrt(np.float32(5))
        np.subtract((scale * (dy + r) + top / 2)[:, :, None], (2 * scale * np.abs(dx))[:, None, :], out=work)
        np.minimum(work, (top * (r - np.abs(dy)) + top / 2)[:, :, None], out=work)
        np.minimum(work, (top * (r - np.abs(dx)) + top / 2)[:, None, :], out=work)
    np.clip(work, 0, top, out=work)
    work += 0.5  # round, not truncate, on the cast
    return work.astype(np.uint8)


def _palette(colours: list[tuple[int, int, int]], background: tuple[int, int, int]) -> np.ndarray:
    """Lookup table from combined coverage levels to RGB: (L, 3) for one object, (L * L, 3) for two."""
    alpha = np.arange(COVERAGE_LEVELS, dtype=np.float32) / (COVERAGE_LEVELS - 1)  # (L,)
    table = np.asarray(background, np.float32)[None, :]  # (1, 3)
    for colour in colours:  # each object is composited over everything before it
        target = np.asarray(colour, np.float32)
        table = table[:, None, :] + alpha[None, :, None] * (target - table[:, None, :])  # (prior, L, 3)
        table = table.reshape(-1, 3)
    return (table + 0.5).astype(np.uint8)


def object_coverage(spec: ClipSpec, frames: int = DEFAULT_FRAMES, size: int = DEFAULT_SIZE) -> np.ndarray:
    """(objects, frames, size, size) float32 in [0, 1]: how much of each pixel each object covers in
    render(spec), in `spec.objects` order (objects never overlap, so neither hides the other)."""
    work = np.empty((frames, size, size), np.float32)
    paths = _paths(spec, frames, size)
    levels = [_coverage(obj.shape, path, work) for obj, path in zip(spec.objects, paths)]
    return np.stack(levels).astype(np.float32) / (COVERAGE_LEVELS - 1)


def render(spec: ClipSpec, frames: int = DEFAULT_FRAMES, size: int = DEFAULT_SIZE) -> np.ndarray:
    """The clip as (frames, size, size, 3) uint8 RGB."""
    if frames < 1 or size < 8:
        raise ValueError(f"need at least 1 frame and 8 pixels, got {frames} frames of {size}x{size}")
    paths = _paths(spec, frames, size)
    work = np.empty((frames, size, size), np.float32)
    index = _coverage(spec.shape, paths[0], work)  # (T, H, W)
    if spec.second is not None:
        index = index.astype(np.uint16) * COVERAGE_LEVELS + _coverage(spec.second.shape, paths[1], work)
    table = _palette([COLOURS[o.colour] for o in spec.objects], BACKGROUNDS[spec.background])
    return np.take(table, index, axis=0)  # (T, H, W, 3)
