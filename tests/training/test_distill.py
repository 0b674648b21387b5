"""distill.grown (a first student deeper than its teacher starts as exactly the teacher) and distill.draw_steps
(uniform, as the shipped recipe, or steered by weights)."""

from __future__ import annotations

import pytest
import torch

from reelforge.engine.dit import DiTConfig, VideoDiT
from reelforge.training.distill import draw_steps, grown

CONFIG = DiTConfig(hidden=32, depth=2, heads=2, text_len=6)


def _inputs(batch: int = 2) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(batch, CONFIG.latent_channels, 2, 4, 4, generator=g)  # (B, Z, T', H', W')
    t = torch.rand(batch, generator=g)  # (B,)
    text = torch.randn(batch, CONFIG.text_len, CONFIG.text_dim, generator=g)  # (B, L, 384)
    mask = torch.ones(batch, CONFIG.text_len, dtype=torch.bool)
    mask[0, 4:] = False  # padding on one prompt
    return x, t, text, mask


def _trained_teacher() -> VideoDiT:
    """A teacher whose AdaLN gates are not zero, so its blocks compute something (as a trained one's do)."""
    torch.manual_seed(0)
    teacher = VideoDiT(CONFIG)
    with torch.no_grad():
        for p in teacher.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return teacher.eval()


def test_the_grown_student_computes_exactly_what_its_teacher_does() -> None:
    teacher = _trained_teacher()
    student = grown(teacher, depth=4, seed=3).eval()
    assert student.config.depth == len(student.blocks) == 4
    assert student.config == DiTConfig(**{**CONFIG.__dict__, "depth": 4})
    for name, value in teacher.state_dict().items():  # the teacher's own blocks, embedders and head
        assert torch.equal(student.state_dict()[name], value), name
    with torch.no_grad():
        expected = teacher(*_inputs())
        assert expected.abs().mean() > 0.01  # the check below means something
        torch.testing.assert_close(student(*_inputs()), expected, rtol=0, atol=1e-6)


def test_the_new_blocks_learn_from_the_first_step() -> None:
    teacher = _trained_teacher()
    student = grown(teacher, depth=3, seed=3)
    x, t, text, mask = _inputs()
    student(x, t, text, mask).square().mean().backward()
    new = student.blocks[2]
    # Zeroed, the gates and the output projection still get gradients (their inputs are not zero) ...
    assert new.adaLN_modulation[-1].weight.grad.abs().sum() > 0
    assert new.cross.proj.weight.grad.abs().sum() > 0
    # ... and after one step the block is no longer the identity.
    with torch.no_grad():
        for p in new.parameters():
            if p.grad is not None:
                p.sub_(0.1 * p.grad)
        assert not torch.allclose(student(x, t, text, mask), teacher(x, t, text, mask), atol=1e-6)


def test_growing_is_deterministic_by_seed_and_leaves_the_global_generator_alone() -> None:
    teacher = _trained_teacher()
    torch.manual_seed(11)
    before = torch.random.get_rng_state()
    a, b, c = grown(teacher, 3, seed=5), grown(teacher, 3, seed=5), grown(teacher, 3, seed=6)
    assert torch.equal(torch.random.get_rng_state(), before)
    weight = "blocks.2.mlp.0.weight"  # a new block's randomly initialised weight
    assert torch.equal(a.state_dict()[weight], b.state_dict()[weight])
    assert not torch.equal(a.state_dict()[weight], c.state_dict()[weight])


def test_a_student_shallower_than_its_teacher_is_refused() -> None:
    with pytest.raises(ValueError, match="student depth 1 is below the teacher's 2"):
        grown(_trained_teacher(), depth=1, seed=0)
    same = grown(_trained_teacher(), depth=2, seed=0)  # equal depth: a plain copy
    assert len(same.blocks) == 2


def test_uniform_draws_are_the_shipped_recipes_and_weights_steer_them() -> None:
    # Uniform draws are exactly what the shipped students were distilled with (2 * randint was the step).
    assert torch.equal(
        draw_steps(16, 64, torch.Generator().manual_seed(5)),
        torch.randint(16, (64,), generator=torch.Generator().manual_seed(5)),
    )
    only_third = torch.zeros(4).index_fill_(0, torch.tensor([2]), 1.0)
    assert draw_steps(4, 32, torch.Generator().manual_seed(5), only_third).eq(2).all()
    weights = torch.tensor([0.7, 0.1, 0.1, 0.1])
    counts = torch.bincount(draw_steps(4, 4000, torch.Generator().manual_seed(5), weights), minlength=4)
    assert 2500 < counts[0] < 3100 and all(250 < c < 550 for c in counts[1:].tolist()), counts
    with pytest.raises(ValueError, match="one per student step, 4"):
        draw_steps(4, 8, torch.Generator(), torch.ones(3))
