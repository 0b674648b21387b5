"""The grounding loss of train_dit (TokenCompose's token loss): which DiT tokens each object covers,
which prompt tokens name it, and the loss on the cross-attention between them."""

from __future__ import annotations

import pytest
import torch

from reelforge.engine.text_encoder import TextEncoder
from reelforge.training.clips import ClipSpec, ObjectSpec
from reelforge.training.train_dit import clause_tokens, grounding_loss, token_regions

CELL = (4, 8, 8)  # what one token of the shipped DiT sees: VAE 4x time and space, then 1x2x2 patches
PAIR = ClipSpec("circle", "orange", "right", "fast", "gray", 4, ObjectSpec("triangle", "cyan", "still", None))


def _token(frame: int, y: float, x: float) -> int:
    """The t-major index of the DiT token holding pixel (y, x) of video frame `frame`."""
    return (frame // 4) * 64 + int(y) // 8 * 8 + int(x) // 8


def test_regions_follow_each_object_through_the_clip() -> None:
    regions = token_regions(PAIR, CELL)  # (2, 256)
    assert regions.shape == (2, 4 * 8 * 8) and regions.dtype == torch.bool
    grid = regions.view(2, 4, 8, 8)
    columns = torch.arange(8.0)
    mean_column = [(grid[0, t] * columns).sum() / grid[0, t].sum() for t in range(4)]
    assert all(a < b for a, b in zip(mean_column, mean_column[1:]))  # the fast orange circle goes right
    assert torch.equal(grid[1, 0], grid[1, 3])  # the cyan triangle stays still
    for k in range(2):  # every object covers a few tokens per latent frame, never most of the frame
        assert all(1 <= int(grid[k, t].sum()) <= 16 for t in range(4)), grid[k]
    single = token_regions(ClipSpec("square", "red", "still", None, "black", 9), CELL)
    assert single[0].any() and not single[1].any()  # no second object, no second region


def test_regions_hold_the_token_at_each_object_s_centre() -> None:
    from reelforge.training.clips import _paths

    regions = token_regions(PAIR, CELL)
    for k, path in enumerate(_paths(PAIR, 16, 64)):
        for frame in (1, 6, 10, 15):
            assert regions[k, _token(frame, path.y[frame], path.x[frame])], (k, frame)


@pytest.fixture(scope="module")
def encoder() -> TextEncoder:
    return TextEncoder()


@pytest.mark.parametrize("phrasing", range(6))
def test_clause_tokens_are_the_word_pieces_of_each_object_s_words(encoder: TextEncoder, phrasing: int) -> None:
    caption = PAIR.caption(phrasing)
    words = clause_tokens(encoder, caption, PAIR, phrasing)  # (2, 32)
    ids = encoder.tokenizer(caption, padding="max_length", max_length=32)["input_ids"]
    for k, (start, end) in enumerate(PAIR.object_spans(phrasing)):
        pieces = encoder.tokenizer.convert_ids_to_tokens([ids[i] for i in range(32) if words[k, i]])
        expected = encoder.tokenizer.tokenize(caption[start:end])
        assert pieces == expected, (caption, k)
    assert not (words[0] & words[1]).any()
    assert not words[:, 0].any()  # [CLS], [SEP] and padding belong to no object


def test_grounding_loss_is_zero_on_the_object_and_grows_off_it() -> None:
    n, length = 16, 4
    regions = torch.zeros(1, 2, n, dtype=torch.bool)
    regions[0, 0, :4], regions[0, 1, 8:10] = True, True
    words = torch.zeros(1, 2, length, dtype=torch.bool)
    words[0, 0, 1], words[0, 1, 2] = True, True
    placed = torch.zeros(1, 1, n, length)  # (B, heads, N, L): each word read only on its own object
    placed[0, 0, :, 0] = 1.0
    placed[0, 0, :4, 0], placed[0, 0, :4, 1] = 0.0, 1.0
    placed[0, 0, 8:10, 0], placed[0, 0, 8:10, 2] = 0.0, 1.0
    assert grounding_loss([placed], regions, words) == 0
    swapped = placed.clone()  # object 0's word read on object 1 and the reverse
    swapped[0, 0, :4, 1], swapped[0, 0, 8:10, 1] = 0.0, 1.0
    swapped[0, 0, 8:10, 2], swapped[0, 0, :4, 2] = 0.0, 1.0
    assert grounding_loss([swapped], regions, words) == pytest.approx(1.0)
    uniform = torch.full((1, 2, n, length), 1 / length)  # two heads, every word read everywhere
    expected = ((1 - 4 / n) ** 2 + (1 - 2 / n) ** 2) / 2  # the mean over the two (object, word) pairs
    assert grounding_loss([uniform, placed], regions, words) == pytest.approx(expected / 2)
    assert grounding_loss([uniform], regions, torch.zeros_like(words)) == 0  # no word, no loss


def test_grounding_loss_gradient_moves_attention_onto_the_object() -> None:
    torch.manual_seed(0)
    logits = torch.randn(1, 1, 16, 4, requires_grad=True)
    regions = torch.zeros(1, 1, 16, dtype=torch.bool)
    regions[0, 0, 5:8] = True
    words = torch.tensor([[[False, True, False, False]]])
    optimizer = torch.optim.SGD([logits], lr=5.0)
    before = grounding_loss([logits.softmax(-1)], regions, words).item()
    for _ in range(50):
        optimizer.zero_grad()
        grounding_loss([logits.softmax(-1)], regions, words).backward()
        optimizer.step()
    assert grounding_loss([logits.softmax(-1)], regions, words).item() < 0.25 * before
