"""Which reading of a clip a teacher's decoder follows, chosen at evaluation time (`train realworld` and `train
evaluate`, `--tokens-only` and `--ensemble-with`).

- `--tokens-only`: a teacher with a tagger (`eacap.models.yamnet`) reads its tag tokens alone, its encoder frames
  hidden: how much the tagger alone names.
- `--ensemble-with NAME --ensemble-weight W`: two captioners as one. At every step of the beam search the next-token
  log-probabilities of both, each decoder attending to its own reading of the clip, are averaged, NAME's with
  weight W (a product of experts, renormalised by the search's log-softmax). Two readings that name different
  clips can only add up this way if each is confident where it is right; this measures whether they do, without
  training anything. Not a model the app ships: it runs two encoders and two decoders per caption. `train pseudo`
  decodes the same way (`pair_decode`) to make a student's targets from a preset's teacher and its `ensemble_with`.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

from eacap.decoding import BeamSearch, DecodingOptions, GreedySearch, Hypotheses, eager_decode
from eacap.models import CaptionModel
from eacap.models.caption_model import Caption, pad_batch
from train.core.models import load_run_model
from train.core.runs import checkpoint_run


def add_reading_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tokens-only", action="store_true",
                        help="a teacher with a tagger reads its tag tokens alone, its encoder frames hidden (a "
                             "diagnosis: how much the tagger alone names; results file suffix _tokens_only)")
    parser.add_argument("--ensemble-with", metavar="NAME",
                        help="average the model's next-token log-probabilities with those of NAME ('teacher', a "
                             "student run or a checkpoint folder) at every step of the search (a diagnosis; results "
                             "file suffix _with_<NAME>_w<W>)")
    parser.add_argument("--ensemble-weight", type=float, default=0.5, metavar="W",
                        help="weight of --ensemble-with's log-probabilities, the model's being 1 - W (default 0.5)")


def load_reading(config, name: str, args: argparse.Namespace):
    """The model named `name`, read as `args` asks (`add_reading_arguments`), and the suffix its results files
    take."""
    model, tag = load_run_model(config, name), ""
    if args.tokens_only:
        if model.tagger is None:
            raise SystemExit(f"--tokens-only: {name} has no tagger (only a teacher of the yamnet presets has one)")
        model.tagger.frames_hidden, tag = True, "_tokens_only"
    if args.ensemble_with:
        partner = load_run_model(config, args.ensemble_with)
        model = Ensemble(model, partner, args.ensemble_weight)
        tag += f"_with_{Path(checkpoint_run(args.ensemble_with) or args.ensemble_with).name}_w{args.ensemble_weight:g}"
    return model, tag


class _PairState:
    """Both decoders' `DecodeState`s, reordered together; the first one's cache stands for the pair where the
    search asks for it (its device, its length, its decoder's thread choice)."""

    def __init__(self, first, second):
        self.first, self.second = first, second
        self.cache, self.plan = first.cache, first.plan

    @property
    def current(self) -> int:
        return self.first.current

    def reorder(self, rows: torch.Tensor, parity: int | None = None) -> None:
        self.first.reorder(rows, parity)
        self.second.reorder(rows, parity)


class _PairDecoder:
    """Steps two caption decoders together: the search passes the first one's memory, the second's is given."""

    def __init__(self, first, second, second_memory: tuple[torch.Tensor, torch.Tensor], weight: float):
        self.first, self.second, self.second_memory, self.weight = first, second, second_memory, weight
        self.config = first.config

    def start(self, frames, lengths, group: int = 1, static: bool = False, length: int | None = None) -> _PairState:
        if static:
            raise ValueError("an ensemble decodes one operation at a time")
        return _PairState(self.first.start(frames, lengths, group, length=length),
                          self.second.start(*self.second_memory, group, length=length))

    def step(self, tokens, position, state: _PairState, parity: int | None = None) -> torch.Tensor:
        first = self.first.step(tokens, position, state.first, parity).float().log_softmax(-1)
        second = self.second.step(tokens, position, state.second, parity).float().log_softmax(-1)
        return torch.lerp(first, second, self.weight)


class Ensemble:
    """Two captioners with the same tokenizer as one (module docstring): `caption_batch`, `caption_many` and
    `num_parameters` as a `CaptionModel` has them, for the evaluation stages."""

    caption_batches = CaptionModel.caption_batches
    caption_many = CaptionModel.caption_many

    def __init__(self, first: CaptionModel, second: CaptionModel, weight: float):
        if not 0.0 <= weight <= 1.0:
            raise ValueError(f"the ensemble weight is the share of the second model's log-probabilities, between 0 "
                             f"and 1; got {weight}")
        if first.tokenizer.tokenizer.get_vocab() != second.tokenizer.tokenizer.get_vocab():
            raise ValueError("an ensemble averages next-token scores, so both models need the same tokenizer; these "
                             "two have different vocabularies")
        self.first, self.second, self.weight = first, second, weight
        self.role = first.role

    def num_parameters(self) -> int:
        return self.first.num_parameters() + self.second.num_parameters()

    @staticmethod
    def _memory(model: CaptionModel, waveforms: torch.Tensor, lengths: torch.Tensor):
        features, feature_lengths = model.features(waveforms, lengths)
        frames, frame_lengths = model.run_encoder(features, feature_lengths)
        return model.memory(waveforms, lengths, frames, frame_lengths).joined

    @torch.inference_mode()
    def caption_batch(self, waveforms, options: DecodingOptions = DecodingOptions()) -> list[Caption]:
        first, second = self.first, self.second
        batch, lengths = pad_batch(waveforms, first.device)
        hyps = pair_decode(first, self._memory(first, batch, lengths), second, self._memory(second, batch, lengths),
                           self.weight, options)
        return [Caption(first.tokenizer.decode(tokens), tokens, score, float(n) / 16000, {})
                for tokens, score, n in zip(hyps.tokens, hyps.scores, lengths.tolist())]


def pair_decode(first: CaptionModel, first_memory: tuple[torch.Tensor, torch.Tensor], second: CaptionModel,
                second_memory: tuple[torch.Tensor, torch.Tensor], weight: float,
                options: DecodingOptions) -> Hypotheses:
    """Captions of a batch by two models at once: each decoder reads its own (memory, lengths), and the search
    follows the weighted mean of their next-token log-probabilities (`weight`: the second's share), with the first
    model's tokens and decoding rules."""
    decoder = _PairDecoder(first.decoder, second.decoder, second_memory, weight)
    options.validate(min(first.decoder.config.max_length, second.decoder.config.max_length))
    search = GreedySearch if options.beam_size == 1 else BeamSearch
    return eager_decode(search, decoder, *first_memory, first.tokenizer.special, options, first.sound_words)
