"""VideoDiT: shapes over the served latent sizes, the null prompt, and what the prompt mask hides."""

from __future__ import annotations

import pytest
import torch

from reelforge.engine.dit import DiT_Mini, VideoDiT, rope_3d


@pytest.fixture(scope="module")
def dit() -> VideoDiT:
    torch.manual_seed(0)
    model = DiT_Mini().eval()
    with torch.no_grad():  # AdaLN-Zero starts as the identity; perturb it so outputs depend on inputs
        for name, p in model.named_parameters():
            if "adaLN_modulation" in name or "final_layer.linear" in name:
                p.normal_(std=0.02)
    return model


@pytest.mark.parametrize("latent", [(16, 4, 16, 16), (16, 8, 32, 32), (16, 6, 32, 16), (16, 1, 2, 2)])
def test_velocity_has_the_latent_shape(dit: VideoDiT, latent: tuple[int, int, int, int]) -> None:
    x = torch.randn(2, *latent)
    text, mask = dit.null_prompt(2)
    with torch.no_grad():
        v = dit(x, torch.tensor([0.3, 0.9]), text, mask)
    assert v.shape == x.shape
    assert torch.isfinite(v).all()


def test_untrained_model_predicts_zero_velocity() -> None:
    torch.manual_seed(0)
    model = DiT_Mini().eval()
    text, mask = model.null_prompt(1)
    with torch.no_grad():
        v = model(torch.randn(1, 16, 4, 8, 8), torch.tensor([0.5]), text, mask)
    assert torch.count_nonzero(v) == 0


def test_null_prompt_shape(dit: VideoDiT) -> None:
    text, mask = dit.null_prompt(3)
    assert text.shape == (3, dit.config.text_len, dit.config.text_dim)
    assert mask.shape == (3, dit.config.text_len) and bool(mask.all())


def test_prompt_changes_output_but_masked_tokens_do_not(dit: VideoDiT) -> None:
    x, t = torch.randn(1, 16, 2, 8, 8), torch.tensor([0.5])
    text = torch.randn(1, 32, 384)
    mask = torch.zeros(1, 32, dtype=torch.bool)
    mask[:, :5] = True
    padded = text.clone()
    padded[:, 5:] = torch.randn(1, 27, 384)
    other = torch.randn(1, 32, 384)
    with torch.no_grad():
        v = dit(x, t, text, mask)
        torch.testing.assert_close(dit(x, t, padded, mask), v)
        assert not torch.allclose(dit(x, t, other, mask), v)


def test_rope_angles_cover_each_token_and_half_the_head() -> None:
    angles = rope_3d((3, 4, 5), head_dim=64, theta=10000.0, device=torch.device("cpu"))
    assert angles.shape == (3 * 4 * 5, 32)
    assert angles.unique(dim=0).shape[0] == 60  # no two (t, h, w) positions rotate alike


def test_attention_weights_are_the_ones_cross_attention_applies(dit: VideoDiT) -> None:
    """What the grounding loss reads (training/train_dit.grounding_loss) must be what forward uses."""
    cross = dit.blocks[1].cross
    x, text = torch.randn(2, 64, 256), torch.randn(2, 32, 256)
    mask = torch.ones(2, 32, dtype=torch.bool)
    mask[1, 10:] = False  # a short prompt: its padding gets no attention
    with torch.no_grad():
        weights = cross.attention_weights(x, text, mask)  # (B, heads, N, L)
        v = cross.kv(text).unflatten(-1, (2, cross.heads, -1)).permute(2, 0, 3, 1, 4)[1]  # (B, heads, L, d)
        by_hand = cross.proj((weights @ v).transpose(1, 2).flatten(2))  # (B, N, D)
        expected = cross(x, text, mask)
    assert weights.shape == (2, 4, 64, 32)
    assert torch.allclose(weights.sum(-1), torch.ones(2, 4, 64), atol=1e-5)
    assert weights[1, :, :, 10:].abs().max() == 0
    assert torch.allclose(by_hand, expected, atol=1e-5)
