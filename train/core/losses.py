"""The distillation losses (docs/method.md §1.4): L = w_sup L_sup + w_seq L_seq + w_tok L_tok + w_enc L_enc.

- `caption_ce`: teacher-forced cross-entropy on a caption, padding masked. It is L_sup on human captions and
  L_seq (sequence-level KD) on the teacher's beam-3 captions: the same loss, different targets.
- `token_kd`: decoder-level KD, KL from the teacher's next-token distributions (shared tokenizer) to the student's.
- `mse_kd` / `contrastive_kd`: encoder-level KD on clip embeddings (`clip_embedding`: the length-masked time-mean
  of the encoder frames, the one pooling of train/), after `student_proj` and `teacher_proj` map both into one space.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from eacap.models.yamnet import clip_embedding  # noqa: F401  (the one pooling, shared with eacap's teacher memory)


def caption_ce(logits: torch.Tensor, targets: torch.Tensor, pad_id: int, label_smoothing: float = 0.0,
               normaliser: float | None = None) -> torch.Tensor:
    """logits [B, L, V] predicting targets [B, L] (the caption shifted left); mean over non-padding tokens.

    `normaliser` replaces this batch's own token count: data-parallel ranks divide by (global tokens / ranks), so
    the averaged gradients equal those of one process on the whole batch."""
    total = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1),
                            ignore_index=pad_id, label_smoothing=label_smoothing, reduction="sum")
    count = normaliser if normaliser is not None else (targets != pad_id).sum().clamp_min(1)
    return total / count


def token_kd(logits: torch.Tensor, teacher_ids: torch.Tensor, teacher_probs: torch.Tensor, mask: torch.Tensor,
             temperature: float = 1.0) -> torch.Tensor:
    """KL(teacher || student) per token, with the teacher's distribution given as its top-k (ids, probs) [B, L, k]
    (renormalised: the cached top-k holds nearly all of the mass). mask [B, L] marks real tokens."""
    log_q = (logits.float() / temperature).log_softmax(-1).gather(-1, teacher_ids)
    p = teacher_probs.float() / teacher_probs.float().sum(-1, keepdim=True).clamp_min(1e-12)
    kl = (p * (p.clamp_min(1e-12).log() - log_q)).sum(-1)
    return (kl * mask).sum() / mask.sum().clamp_min(1) * temperature ** 2


def mse_kd(student: torch.Tensor, teacher: torch.Tensor, normalise: bool = False) -> torch.Tensor:
    """MSE between projected clip embeddings [B, D] (mean over batch and dimensions)."""
    if normalise:
        student, teacher = F.normalize(student, dim=-1), F.normalize(teacher, dim=-1)
    return F.mse_loss(student.float(), teacher.float())


def contrastive_kd(student: torch.Tensor, teacher: torch.Tensor, logit_scale: torch.Tensor,
                   clip_ids: list[str] | None = None) -> torch.Tensor:
    """Symmetric InfoNCE between projected clip embeddings [B, D]: the student's embedding of a clip must pick
    the teacher's embedding of the same clip among the batch, and vice versa. Logits are cosine similarities times
    exp(logit_scale) (CLIP's learnable temperature). When a clip appears twice in a batch, its copies are not
    negatives of each other: those entries are masked out of the softmax (`clip_ids` names each row's clip)."""
    s, t = F.normalize(student.float(), dim=-1), F.normalize(teacher.float(), dim=-1)
    logits = logit_scale.exp().clamp(max=100.0) * s @ t.T
    if clip_ids is not None:
        index = {cid: i for i, cid in enumerate(dict.fromkeys(clip_ids))}
        ids = torch.tensor([index[c] for c in clip_ids], device=logits.device)
        same = ids[:, None] == ids[None, :]
        false_negative = same & ~torch.eye(len(ids), dtype=torch.bool, device=logits.device)
        logits = logits.masked_fill(false_negative, float("-inf"))
    target = torch.arange(logits.shape[0], device=logits.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))
