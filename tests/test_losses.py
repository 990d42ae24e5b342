"""Each distillation loss on hand-made tensors: values computed by hand, and gradients only where they belong."""
import math

import pytest
import torch

from train.core.losses import caption_ce, clip_embedding, contrastive_kd, mse_kd, token_kd


def test_caption_ce_ignores_padding():
    logits = torch.tensor([[[2.0, 0.0, 0.0], [0.0, 0.0, 5.0]]])  # vocab 3, pad id 0
    targets = torch.tensor([[1, 0]])                              # second position is padding
    expected = -math.log(math.exp(0.0) / (math.exp(2.0) + 2))     # only the first token counts
    assert float(caption_ce(logits, targets, pad_id=0)) == pytest.approx(expected, rel=1e-6)


def test_mse_value():
    s = torch.tensor([[1.0, 2.0], [0.0, 0.0]])
    t = torch.tensor([[0.0, 2.0], [2.0, 0.0]])
    assert float(mse_kd(s, t)) == pytest.approx((1 + 0 + 4 + 0) / 4)


def test_clip_embedding_masks_padding():
    frames = torch.tensor([[[1.0], [3.0], [100.0]]])
    assert float(clip_embedding(frames, torch.tensor([2]))[0, 0]) == pytest.approx(2.0)


def test_infonce_equals_hand_computed_value():
    s = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    t = torch.tensor([[1.0, 0.0], [0.6, 0.8]])  # unit vectors already
    scale = torch.tensor(math.log(2.0))          # exp(scale) = 2
    # logits = 2 * cos: [[2, 1.2], [0, 1.6]]
    row = [-math.log(math.exp(2) / (math.exp(2) + math.exp(1.2))),
           -math.log(math.exp(1.6) / (math.exp(0) + math.exp(1.6)))]
    col = [-math.log(math.exp(2) / (math.exp(2) + math.exp(0))),
           -math.log(math.exp(1.6) / (math.exp(1.2) + math.exp(1.6)))]
    expected = 0.5 * (sum(row) / 2 + sum(col) / 2)
    assert float(contrastive_kd(s, t, scale)) == pytest.approx(expected, rel=1e-6)


def test_infonce_duplicates_are_not_negatives():
    """Two rows of the same clip: with ids, each copy's loss ignores the other copy (perfect pairs -> tiny loss)."""
    s = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    t = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    scale = torch.tensor(math.log(50.0))
    with_ids = float(contrastive_kd(s, t, scale, ["a", "a", "b"]))
    without = float(contrastive_kd(s, t, scale))
    assert with_ids < 1e-6 and without > 0.4  # without ids each copy of "a" is confused with the other: ~log 2 * 2/3


def test_token_kd_zero_when_distributions_match_and_positive_otherwise():
    logits = torch.tensor([[[1.0, 2.0, 0.5]]])
    probs = logits.softmax(-1)
    top = probs.topk(3, dim=-1)
    mask = torch.ones(1, 1)
    assert float(token_kd(logits, top.indices, top.values, mask)) == pytest.approx(0.0, abs=1e-6)
    other = torch.tensor([[[0.7, 0.2, 0.1]]])
    expected = sum(p * math.log(p / q) for p, q in zip([0.7, 0.2, 0.1], probs[0, 0].tolist()))
    assert float(token_kd(logits, torch.tensor([[[0, 1, 2]]]), other, mask)) == pytest.approx(expected, rel=1e-5)


def test_gradients_flow_only_into_the_student_and_heads():
    """The teacher is frozen: encoder KD must update the student and both projections, never the teacher."""
    torch.manual_seed(0)
    teacher = torch.nn.Linear(4, 6).requires_grad_(False)
    student = torch.nn.Linear(4, 3)
    student_proj, teacher_proj = torch.nn.Linear(3, 5), torch.nn.Linear(6, 5)
    scale = torch.nn.Parameter(torch.tensor(2.0))
    x = torch.randn(8, 4)
    with torch.no_grad():
        t_frames = teacher(x)
    for loss in (mse_kd(student_proj(student(x)), teacher_proj(t_frames)),
                 contrastive_kd(student_proj(student(x)), teacher_proj(t_frames), scale)):
        for module in (student, student_proj, teacher_proj):
            module.zero_grad()
        loss.backward()
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for m in (student, student_proj, teacher_proj)
                   for p in m.parameters())
        assert all(p.grad is None for p in teacher.parameters())
    assert scale.grad is not None and scale.grad != 0
