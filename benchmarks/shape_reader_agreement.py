"""How well the evaluator's shape reading agrees with a person's, against nearest-template IoU.

    .venv/bin/python benchmarks/shape_reader_agreement.py

Regenerates the 64 held-out teacher@50 clips (guidance 4, no time shift, seeds 0-63,
`heldout_prompts(64, 0)`) whose 51 single-object ones a person labelled by eye on 2026-11-21: six frames
of each, 3x enlarged, without the prompts, each labelled circle, square, triangle, or "?" where the blob
showed none of them. Prints, for the evaluator's reader and for the template matcher it replaced:
agreement with the clear labels, accuracy against the prompts on the 64 clips, on VAE reconstructions of
200 held-out clips, and on those clips themselves. The labels belong to one teacher file: another teacher
gives other clips, so the script refuses to run on one.
"""

from __future__ import annotations

from collections import Counter
from functools import lru_cache

import numpy as np
import torch

from reelforge.engine.checkpoints import TEACHER_FILE, sha256_of
from reelforge.engine.mini import SHIPPED_WEIGHTS, MiniEngine
from reelforge.training import evaluator
from reelforge.training.clips import NUM_PHRASINGS, render, sample_specs
from reelforge.training.evaluate import generate_clips, heldout_prompts
from reelforge.training.train_vae import to_uint8, video_batch

LABELLED_TEACHER = "e3280041f96c8283aa1f64a3535ed63ade4691431e1eef2299d0a2131d227c47"
# One per single-object clip, in prompt order: c(ircle), s(quare), t(riangle), ? (no shape to name).
LABELS = "s s c s s t c s t t t c ? c t ? ? c ? ? ? c ? c ? c s ? s ? s ? s ? ? t ? ? t ? s ? ? ? ? ? t ? ? ? s"
NAMES = {"c": "circle", "s": "square", "t": "triangle"}


@lru_cache(maxsize=1)
def _templates() -> tuple[np.ndarray, ...]:
    """The replaced reader's circle, square and upright triangle, filling a 16x16 box (8x8 supersampled)."""
    n = 8 * evaluator.CROP_SIZE
    v, u = np.meshgrid((np.arange(n) + 0.5) / n * 2 - 1, (np.arange(n) + 0.5) / n * 2 - 1, indexing="ij")
    masks = [evaluator._inside(shape, u, v) for shape in evaluator.SHAPES]
    size = evaluator.CROP_SIZE
    return tuple(m.reshape(size, 8, size, 8).mean(axis=(1, 3)) for m in masks)


def template_shape(outline: np.ndarray) -> str:
    """Nearest template by soft IoU to the mean of the frames' crops: the reader before 2026-11-21."""
    mean = np.mean([evaluator._crop(frame) for frame in outline if frame.any()], axis=0)
    ious = [np.minimum(mean, t).sum() / np.maximum(mean, t).sum() for t in _templates()]
    return evaluator.SHAPES[int(np.argmax(ious))]


def readings(clips: list[np.ndarray], prompts: list[str]) -> list[tuple[str | None, ...]]:
    return [tuple(o.shape for o in evaluator.evaluate_clip(c, p).objects) for c, p in zip(clips, prompts)]


def accuracy(clips: list[np.ndarray], prompts: list[str]) -> float:
    return float(np.mean([evaluator.evaluate_clip(c, p).shape_ok for c, p in zip(clips, prompts)]))


def main() -> None:
    if sha256_of(SHIPPED_WEIGHTS / TEACHER_FILE) != LABELLED_TEACHER:
        raise SystemExit("the shipped teacher is not the one whose clips were labelled: relabel first")
    engine = MiniEngine(checkpoint=SHIPPED_WEIGHTS / TEACHER_FILE)
    engine.flow_shift = 1.0  # the labelled clips were sampled unshifted, before the weights recorded a shift
    prompts = heldout_prompts(64, 0)
    clips = generate_clips(engine, prompts, 50, 4.0, 0)
    single = [i for i, p in enumerate(prompts) if len(evaluator.parse_prompt(p).objects) == 1]
    labels = LABELS.split()
    assert len(labels) == len(single), (len(labels), len(single))
    specs = sample_specs(200, seed=1, split="heldout")
    spec_prompts = [s.caption(i % NUM_PHRASINGS) for i, s in enumerate(specs)]
    with torch.inference_mode():
        batches = [video_batch(specs[i : i + 20]) for i in range(0, len(specs), 20)]
        decoded = [to_uint8(engine.vae.decode(engine.vae.encode(b)[0])) for b in batches]
    recon = [c.permute(1, 2, 3, 0).byte().numpy() for b in decoded for c in b]  # (T, H, W, 3) each
    for name, reader in (("classifier", evaluator._shape), ("templates", template_shape)):
        evaluator._shape = reader  # type: ignore[assignment]  # the reader under test, for every call below
        read = readings([clips[i] for i in single], [prompts[i] for i in single])
        clear = [(NAMES[label], r[0]) for label, r in zip(labels, read) if label in NAMES]
        print(
            f"{name}: agrees with the person on {sum(a == b for a, b in clear)} of {len(clear)} clear labels; "
            f"reads {dict(Counter(r[0] for r in read))}; "
            f"teacher@50 {100 * accuracy(clips, prompts):.1f} % of 64; "
            f"VAE reconstructions {100 * accuracy(recon, spec_prompts):.1f} % of 200; "
            f"ground truth {100 * accuracy([render(s) for s in specs], spec_prompts):.1f} % of 200"
        )
    person = [NAMES.get(label) == evaluator.parse_prompt(prompts[i]).objects[0].shape for label, i in zip(labels, single)]
    print(f"person: names the prompt's shape on {sum(person)} of {len(single)} single-object clips")


if __name__ == "__main__":
    main()
