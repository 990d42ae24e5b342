"""`python -m train student --kd none|seq|token|seq+mse|seq+contrastive [--audio-only] [--label-fraction F]
[--shape fast|lite|slim]`

L = w_sup L_sup + w_seq L_seq + w_tok L_tok + w_enc L_enc (docs/method.md §1.4; train/core/losses.py):
- L_sup: cross-entropy on a human caption of the clip (one of its five, drawn per step);
- L_seq: cross-entropy on the teacher's beam-3 caption of the clip (sequence-level KD);
- L_tok: KL to the teacher's next-token distributions on the same human caption (decoder-level KD);
- L_enc: clip embeddings through `student_proj` / `teacher_proj`, MSE or symmetric InfoNCE (encoder-level KD).
With --audio-only, every step adds one batch from the audio-only pool with L_seq + L_enc, summed into one backward
(its captions are never used). SpecAugment on the student's log-mel. Model selection on val CIDEr-D.
"""
from __future__ import annotations

import argparse
import json
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from eacap.decoding import DecodingOptions
from eacap.models import CaptionModel
from eacap.models.presets import STUDENT_SHAPES
from train.core.config import PipelineConfig, add_training_arguments, config_from_args
from train.core.data import (
    Prefetcher,
    apply_spec_augment,
    audio_batch,
    load_split,
    pad_tokens,
    pick_caption,
    step_indices,
    token_normaliser,
    tokenize,
)
from train.core.kd_targets import pseudo_decoding, read_pseudo, read_token_targets
from train.core.losses import caption_ce, clip_embedding, contrastive_kd, mse_kd, token_kd
from train.core.models import build_student, load_run_model
from train.core.runs import (
    INIT_FILE,
    KD_CHOICES,
    MODEL_FILE,
    TARGETS_FILE,
    Recipe,
    checkpoint_run,
    command,
    student_dir,
)
from train.core.trainer import Dist, Trainer, device_for, init_distributed, validation_score
from train.corpus.datasets import item_waveform


class StudentObjective(nn.Module):
    def __init__(self, model: CaptionModel, recipe: Recipe):
        super().__init__()
        self.model, self.recipe = model, recipe
        if recipe.encoder_kd is None:  # the KD heads get no gradient: keep them out of the optimiser
            for module in (model.student_proj, model.teacher_proj):
                module.requires_grad_(False)
        if recipe.encoder_kd != "contrastive":
            model.logit_scale.requires_grad_(False)

    def encode(self, batch: dict):
        feats, frame_lengths = self.model.features(batch["waveforms"], batch["lengths"])
        if self.training:
            feats = apply_spec_augment(feats, batch["masks"])
        return self.model.encoder(feats, frame_lengths)

    def caption_loss(self, tokens: torch.Tensor, frames, lengths, normaliser: float | None = None):
        logits = self.model.decoder(tokens[:, :-1], frames, lengths)
        return caption_ce(logits, tokens[:, 1:], self.model.tokenizer.pad_id, normaliser=normaliser), logits

    def encoder_loss(self, frames, lengths, teacher_embedding, clip_ids):
        s = self.model.student_proj(clip_embedding(frames, lengths))
        t = self.model.teacher_proj(teacher_embedding)
        if self.recipe.encoder_kd == "mse":
            return mse_kd(s, t)
        return contrastive_kd(s, t, self.model.logit_scale, clip_ids)

    def forward(self, batch: dict):
        r, logs = self.recipe, {}
        labelled = batch["labelled"]
        frames, lengths = self.encode(labelled)
        loss, logits = self.caption_loss(labelled["tokens"], frames, lengths, labelled.get("token_norm"))
        logs["sup"] = loss.detach()
        loss = r.w_sup * loss
        if r.uses_seq:
            seq, _ = self.caption_loss(labelled["pseudo_tokens"], frames, lengths, labelled.get("pseudo_norm"))
            logs["seq"] = seq.detach()
            loss = loss + r.w_seq * seq
        if r.kd == "token":
            mask = (labelled["tokens"][:, 1:] != self.model.tokenizer.pad_id).float()
            n = logits.shape[1]
            tok = token_kd(logits, labelled["topk_ids"][:, :n], labelled["topk_probs"][:, :n], mask)
            logs["tok"] = tok.detach()
            loss = loss + r.w_tok * tok
        if r.encoder_kd:
            enc = self.encoder_loss(frames, lengths, labelled["teacher_embedding"], labelled["clip_ids"])
            logs["enc"] = enc.detach()
            loss = loss + r.w_enc * enc
        if "unlabelled" in batch:
            unlabelled = batch["unlabelled"]
            frames, lengths = self.encode(unlabelled)
            seq, _ = self.caption_loss(unlabelled["pseudo_tokens"], frames, lengths, unlabelled.get("pseudo_norm"))
            unsup = r.w_seq * seq
            if r.encoder_kd:
                unsup = unsup + r.w_enc * self.encoder_loss(frames, lengths, unlabelled["teacher_embedding"],
                                                            unlabelled["clip_ids"])
            logs["unsup"] = unsup.detach()
            loss = loss + unsup
        return loss, logs


def _ffn_keep(source: dict, prefix: str, hidden: int) -> torch.Tensor:
    """The `hidden` FFN units of a source layer to keep: the largest |W_in row| x |W_out column| (the unit's gain from
    input to output), in their original order."""
    score = source[f"{prefix}ffn.0.weight"].norm(dim=1) * source[f"{prefix}ffn.3.weight"].norm(dim=0)
    return score.topk(hidden).indices.sort().values


def prune_into(model: CaptionModel, source: CaptionModel) -> dict:
    """Start `model` from a trained student of another shape ("prune, then distil", as in DistilBART's shrink and
    fine-tune or Minitron): every tensor of the same name and shape is copied (CNN, KD heads, embeddings, norms,
    attention), decoder layers are the source's first ones, and a narrower FFN keeps the source's units with the
    largest gain (`_ffn_keep`). Whatever does not fit (another width) keeps its fresh initialisation. The front-end
    is the target's own: a coarser hop shows the copied CNN the same sounds at another time scale, which training
    then adapts it to. Returns what was done, for the run's `init.json`."""
    if source.config.role != "student":
        raise ValueError(f"--init-from needs a student, got a {source.config.role}")
    if source.tokenizer.tokenizer.get_vocab() != model.tokenizer.tokenizer.get_vocab():
        raise ValueError("--init-from: that student's tokenizer differs from this corpus's; start from a student "
                         "trained on the same corpus (same preset)")
    src, dst = source.state_dict(), model.state_dict()
    loaded, copied, pruned, fresh = {}, 0, [], []
    for name, target in dst.items():
        value = src.get(name)
        match = re.fullmatch(r"(decoder\.layers\.\d+\.)ffn\.(0\.weight|0\.bias|3\.weight)", name)
        if value is not None and value.shape != target.shape and match:
            prefix, part = match.groups()
            (hidden, width), (source_hidden, source_width) = (dst[f"{prefix}ffn.0.weight"].shape,
                                                              src[f"{prefix}ffn.0.weight"].shape)
            if hidden < source_hidden and width == source_width:  # a narrower FFN: keep the strongest units
                value = value.index_select(1 if part == "3.weight" else 0, _ffn_keep(src, prefix, hidden))
                pruned.append(name)
        if value is not None and value.shape == target.shape:
            loaded[name] = value
            copied += name not in pruned
        else:
            fresh.append(name)
    model.load_state_dict(loaded, strict=False)
    dropped = sorted({".".join(k.split(".")[:3]) for k in src if k.startswith("decoder.layers.") and k not in dst})
    return {"copied": copied, "pruned": pruned, "fresh": fresh, "dropped": dropped}


def run(config: PipelineConfig, recipe: Recipe, steps: int | None = None, bf16: bool = False,
        stop_after: int | None = None, group: str = "") -> dict:
    d = init_distributed()
    device_for(d)
    schedule = replace(config.student, steps=steps or config.student.steps)
    torch.manual_seed(config.seed)
    model = build_student(config, recipe.shape)
    tokenizer = model.tokenizer
    objective = StudentObjective(model, recipe)
    frontend = model.config.frontend

    all_train = load_split(config, "train")
    position = {item.audio_id: i for i, item in enumerate(all_train)}
    train_items = load_split(config, "train", recipe.label_fraction) if recipe.label_fraction else all_train
    rows = np.array([position[item.audio_id] for item in train_items])  # rows into the teacher's train caches
    need_teacher = recipe.kd != "none"
    if need_teacher:
        pseudo_train, emb_train = read_pseudo(config, "train")
    if recipe.kd == "token":
        topk_ids, topk_probs = read_token_targets(config)
    if recipe.audio_only:
        pool = load_split(config, "audio_only")
        pseudo_pool, emb_pool = read_pseudo(config, "audio_only")

    def make_batch(step: int, d: Dist) -> dict:
        idx, everything = step_indices(len(train_items), schedule.batch_size, step, config.seed, d)
        labelled = audio_batch(train_items, idx, config, step, frontend.n_mels, frontend.hop_length)
        chosen = {int(i): pick_caption(train_items[i], config.seed, step, int(i)) for i in everything}
        tokens = {i: tokenize(tokenizer, c, config.max_caption_tokens) for i, c in chosen.items()}
        labelled["tokens"] = pad_tokens([tokens[int(i)] for i in idx], tokenizer.pad_id)
        labelled["token_norm"] = token_normaliser(list(tokens.values()), d)
        if need_teacher:
            pseudo = {int(i): tokenize(tokenizer, pseudo_train[rows[i]], config.max_caption_tokens) for i in everything}
            labelled["pseudo_tokens"] = pad_tokens([pseudo[int(i)] for i in idx], tokenizer.pad_id)
            labelled["pseudo_norm"] = token_normaliser(list(pseudo.values()), d)
            labelled["teacher_embedding"] = torch.from_numpy(emb_train[rows[idx]])
        if recipe.kd == "token":
            which = [train_items[i].captions.index(chosen[int(i)]) for i in idx]
            labelled["topk_ids"] = torch.from_numpy(topk_ids[rows[idx], which].astype(np.int64))
            labelled["topk_probs"] = torch.from_numpy(topk_probs[rows[idx], which].astype(np.float32))
        batch = {"labelled": labelled}
        if recipe.audio_only:
            pidx, pall = step_indices(len(pool), schedule.batch_size, step, config.seed + 1, d)
            unlabelled = audio_batch(pool, pidx, config, step, frontend.n_mels, frontend.hop_length)
            pseudo = {int(j): tokenize(tokenizer, pseudo_pool[j], config.max_caption_tokens) for j in pall}
            unlabelled["pseudo_tokens"] = pad_tokens([pseudo[int(j)] for j in pidx], tokenizer.pad_id)
            unlabelled["pseudo_norm"] = token_normaliser(list(pseudo.values()), d)
            unlabelled["teacher_embedding"] = torch.from_numpy(emb_pool[pidx])
            batch["unlabelled"] = unlabelled
        return batch

    val_items = load_split(config, "val")[: schedule.eval_clips]
    val_waves = [item_waveform(item) for item in val_items]

    def validate() -> float:
        captions = model.caption_many(val_waves, DecodingOptions(1, config.eval_max_length), batch_size=32)
        return validation_score({item.audio_id: c.text for item, c in zip(val_items, captions)},
                                {item.audio_id: list(item.captions) for item in val_items})

    folder = student_dir(config, recipe, group)
    init = start_from(config, model, recipe.init_from, folder) if recipe.init_from else None
    if init and d.main:
        print(f"{folder.name}: starting from {init['from']} (run {init['run']}): {init['copied']} tensors copied, "
              f"{len(init['pruned'])} pruned, {len(init['fresh'])} fresh, "
              f"dropped {', '.join(init['dropped']) or 'nothing'}")
    if d.main:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / MODEL_FILE).write_text(json.dumps(model.config.to_dict(), indent=1) + "\n")
        if init:
            (folder / INIT_FILE).write_text(json.dumps(init, indent=1) + "\n")
        if need_teacher:  # how the seq-KD targets were decoded, for the run's results file
            (folder / TARGETS_FILE).write_text(json.dumps(pseudo_decoding(config)) + "\n")
    trainer = Trainer(folder, model, objective, schedule, Prefetcher(make_batch), validate,
                      seed=config.seed, d=d, bf16=bf16, stop_after=stop_after)
    return trainer.fit()


def start_from(config: PipelineConfig, model: CaptionModel, init_from: str, folder: Path) -> dict | None:
    """`prune_into` from a student run name or checkpoint folder, or None when the run resumes from its own
    checkpoint (a run started from another source is refused)."""
    recorded = folder / INIT_FILE
    if recorded.is_file():
        started = json.loads(recorded.read_text())
        if init_from not in (started["from"], started["run"]):
            raise ValueError(f"{folder} started from {started['run']} ({started['from']}), not {init_from}: resume "
                             f"it with that --init-from, or move the folder away to start anew")
        if (folder / "state.json").is_file():
            return None
    run_name = checkpoint_run(init_from) or init_from
    try:
        source = load_run_model(config, init_from)
    except FileNotFoundError as error:
        raise ValueError(f"--init-from {init_from}: {error} (or give a checkpoint folder such as "
                         "checkpoints/student)") from None
    meta = Path(init_from) / "config.json"
    if meta.is_file():  # an exported checkpoint says how it was trained
        trained_by = json.loads(meta.read_text()).get("trained_by")
    else:
        trained_by = command(config, "student", run_name)
    return {"from": init_from, "run": run_name, "trained_by": trained_by, **prune_into(model, source)}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_training_arguments(parser)
    parser.add_argument("--kd", default="seq+contrastive", choices=KD_CHOICES, help="distillation variant")
    parser.add_argument("--audio-only", action="store_true", help="add one audio-only batch per step (L_seq + L_enc)")
    parser.add_argument("--label-fraction", type=float, help="use this fraction of the captioned train set (0-1]")
    parser.add_argument("--shape", default="base", choices=STUDENT_SHAPES,
                        help="student architecture: base, fast (20 ms hop, narrow CNN, 1-layer decoder), lite (40 ms "
                             "frames, base CNN, ReLU, 2-layer d128 decoder) or slim (40 ms frames, base CNN, 1-layer "
                             "d256 FFN-512 decoder; "
                             "see `train speed-variants`); a non-base shape is added to the run name")
    parser.add_argument("--init-from", metavar="RUN_OR_FOLDER",
                        help="start from a trained student (a run name under students/, or a checkpoint folder), its "
                             "weights pruned to --shape (fewer decoder layers, a narrower FFN); the run name gets "
                             "_pruned. Default: random initialisation")
    for name in ("sup", "seq", "tok", "enc"):
        parser.add_argument(f"--w-{name}", type=float, default=1.0, help=f"weight of L_{name} (default 1)")


def recipe_from_args(args: argparse.Namespace) -> Recipe:
    return Recipe(args.kd, args.audio_only, args.label_fraction, args.w_sup, args.w_seq, args.w_tok, args.w_enc,
                  args.shape, args.init_from)


def main(args: argparse.Namespace) -> int:
    run(config_from_args(args), recipe_from_args(args), steps=args.steps, bf16=args.bf16, stop_after=args.stop_after)
    return 0
