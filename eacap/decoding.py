"""Batched greedy and beam-search decoding over a `CaptionDecoder`, with a key/value cache.

Beam search keeps `beam_size` live hypotheses per clip. A hypothesis that emits </s> leaves the beam and is
scored by its length-normalised log-probability (sum / length ** length_penalty); the best finished one per
clip wins. A clip stops once its best live hypothesis no longer beats its best finished one, or at `max_length`.
"""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field

import torch

from .models.decoder import CaptionDecoder, DecodeState
from .sounds import SoundWords


@dataclass(frozen=True)
class DecodingOptions:
    beam_size: int = 3
    max_length: int = 30          # generated tokens, </s> included
    length_penalty: float = 1.0   # 0: raw log-probability (favours short captions); 1: mean per token
    # No word sequence of this many tokens occurs twice in a caption (0: off). Captions a person writes do not say
    # "a rain shower pours down while a rain shower pours down".
    # 2 by default: on the cross-source split it cuts the captions that name a sound twice from 19.9% to 0.5%
    # (teacher) and 41.9% to 1.0% (student), naming every sound as often within a clip (train/RESULTS.md).
    no_repeat_ngram_size: int = 2
    # No sound is named again in a later clause, by the same word or a synonym ("a songbird chirps steadily as a
    # bird is chirping", "a frog croaks as a toad croaks"), nor by the same keyword twice. Needs the model's sound
    # keywords (`SoundWords`, carried by the checkpoint); without them it does nothing.
    no_repeat_sounds: bool = True

    def validate(self, decoder_max: int) -> None:
        if not 1 <= self.beam_size <= 16:
            raise ValueError(f"beam_size must be between 1 and 16, got {self.beam_size}")
        if not 0 <= self.no_repeat_ngram_size <= decoder_max:
            raise ValueError(f"no_repeat_ngram_size must be 0 (off) or a positive n-gram length, "
                             f"got {self.no_repeat_ngram_size}")
        if not 1 <= self.max_length <= decoder_max - 1:
            raise ValueError(f"max_length must be between 1 and {decoder_max - 1} (the decoder's limit), "
                             f"got {self.max_length}")


@dataclass
class Hypotheses:
    tokens: list[list[int]]   # per clip, without <s> and </s>
    scores: list[float]       # length-normalised log-probabilities


def _blocked(vocab_size: int, special: dict[str, int], device) -> torch.Tensor:
    """Tokens never generated: padding, <s>, and unknown words (a caption with <unk> is no caption), as a row added
    to the log-probabilities: -inf for them, 0 elsewhere. The same result as masking them to -inf (x + 0 is x), in
    one addition instead of a masked copy (~20 us per step at a few rows)."""
    bias = torch.zeros(vocab_size, device=device)
    for name in ("pad", "bos", "unk"):
        bias[special[name]] = float("-inf")
    return bias


def block_repeats(logp: torch.Tensor, history: torch.Tensor, n: int) -> torch.Tensor:
    """Set to -inf, in place, every token of `logp` [rows, vocab] that would complete an n-gram already in that
    row's `history` [rows, t] (the generated tokens so far), and return `logp`. Each earlier (n-1)-gram is compared
    with the row's last n-1 tokens and the token that followed each match is blocked: a few small tensor operations
    per step whatever the number of rows (a step of the small student is ~0.5 ms, so this must stay cheap)."""
    t = history.shape[1]
    if n <= 0 or t < n:  # a repeat needs one whole n-gram before it
        return logp
    follows = history[:, n - 1:]                                      # [rows, t-n+1]: the token after each window
    if n == 1:
        match = torch.ones_like(follows, dtype=torch.bool)
    elif n == 2:
        match = history[:, :-1] == history[:, -1:]
    else:
        match = (history.unfold(1, n - 1, 1)[:, : t - n + 1] == history[:, None, t - n + 1:]).all(-1)
    rows, cols = match.nonzero(as_tuple=True)
    if rows.numel():
        logp[rows, follows[rows, cols]] = float("-inf")
    return logp


@dataclass
class ThreadChoice:
    """Which intra-op thread count runs a decoder's steps fastest at one number of rows (batch x beam).

    A step at a few rows is many operations of a few microseconds each, where waking a second thread can cost more
    than it saves (measured here: the small student decodes a clip 20% faster on one thread, the teacher 25% faster
    on two, and at batch 32 both prefer two). So the first steps at a new row count alternate between the caller's
    thread count and one thread, `TRIALS` each, and the faster (median step time) is used from then on. The same
    rule applies to every model; each gets its own faster setting.
    """
    candidates: tuple[int, ...]
    samples: dict[int, list[float]] = field(default_factory=dict)
    chosen: int | None = None
    TRIALS = 4

    def next_threads(self) -> int:
        if self.chosen is None and len(self.candidates) == 1:
            self.chosen = self.candidates[0]
        if self.chosen is not None:
            return self.chosen
        return min(self.candidates, key=lambda c: len(self.samples.get(c, ())))

    def record(self, threads: int, seconds: float) -> None:
        if self.chosen is not None:
            return
        self.samples.setdefault(threads, []).append(seconds)
        if all(len(self.samples.get(c, ())) >= self.TRIALS for c in self.candidates):
            self.chosen = min(self.candidates, key=lambda c: statistics.median(self.samples[c]))


class StepThreads:
    """`with StepThreads(state, rows) as steps: for position in steps.range(n): ...` runs each step at the thread
    count `ThreadChoice` picks for this decoder and row count (kept with the decoder's step plan, so it lasts as
    long as the weights do), and restores the caller's."""

    def __init__(self, state: DecodeState, rows: int):
        self.caller = torch.get_num_threads()
        choices = state.plan.thread_choices
        key = (rows, self.caller)
        if key not in choices:
            choices[key] = ThreadChoice(tuple(sorted({self.caller, 1}, reverse=True)))
        self.choice = choices[key]

    def __enter__(self) -> "StepThreads":
        return self

    def __exit__(self, *exc) -> None:
        if torch.get_num_threads() != self.caller:
            torch.set_num_threads(self.caller)

    def range(self, count: int):
        for position in range(count):
            threads = self.choice.next_threads()
            if threads != torch.get_num_threads():
                torch.set_num_threads(threads)
            start = time.perf_counter()
            yield position
            if position:  # the first step of a call also pays for one-off work (the weight plan): not a fair sample
                self.choice.record(threads, time.perf_counter() - start)


@torch.inference_mode()
def decode(decoder: CaptionDecoder, frames: torch.Tensor, lengths: torch.Tensor, special: dict[str, int],
           options: DecodingOptions = DecodingOptions(), sounds: SoundWords | None = None) -> Hypotheses:
    """Captions for a batch of encoder frames. `sounds` (the model's `SoundWords`) enables
    `options.no_repeat_sounds`."""
    options.validate(decoder.config.max_length)
    rules = _Rules(options, sounds if options.no_repeat_sounds else None)
    if options.beam_size == 1:
        return _greedy(decoder, frames, lengths, special, options, rules)
    return _beam(decoder, frames, lengths, special, options, rules)


@dataclass
class _Rules:
    """What a caption may not say next, given what it said so far."""
    options: DecodingOptions
    sounds: SoundWords | None

    def apply(self, logp: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
        if self.options.no_repeat_ngram_size:
            logp = block_repeats(logp, history, self.options.no_repeat_ngram_size)
        if self.sounds is not None:
            logp = self.sounds.block_named(logp, history)
        return logp


def _normalise(score: torch.Tensor, length: int | torch.Tensor, penalty: float) -> torch.Tensor:
    return score / (length ** penalty if penalty else 1.0)


def _greedy(decoder, frames, lengths, special, options, rules: _Rules) -> Hypotheses:
    batch, device = frames.shape[0], frames.device
    state = decoder.start(frames, lengths)
    blocked = _blocked(decoder.config.vocab_size, special, device)
    tokens = torch.full((batch, 1), special["bos"], dtype=torch.long, device=device)
    out = torch.full((batch, options.max_length), special["pad"], dtype=torch.long, device=device)
    score = torch.zeros(batch, device=device)
    n_tokens = torch.zeros(batch, device=device)
    done = torch.zeros(batch, dtype=torch.bool, device=device)
    with StepThreads(state, batch) as steps:
        for position in steps.range(options.max_length):
            logp = decoder.step(tokens, position, state).float().log_softmax(-1)
            logp = logp + blocked
            logp = rules.apply(logp, out[:, :position])
            if position == options.max_length - 1:
                next_token = torch.full_like(done, special["eos"], dtype=torch.long)  # the caption must end here
            else:
                next_token = logp.argmax(-1)
            step_logp = logp.gather(1, next_token[:, None])[:, 0]
            score += torch.where(done, 0.0, step_logp)
            n_tokens += (~done).float()
            out[:, position] = torch.where(done, special["pad"], next_token)
            done |= next_token == special["eos"]
            if bool(done.all()):
                break
            tokens = next_token[:, None]
    return Hypotheses([_strip(row, special) for row in out.tolist()],
                      _normalise(score, n_tokens, options.length_penalty).tolist())


def _beam(decoder, frames, lengths, special, options, rules: _Rules) -> Hypotheses:
    batch, beam, device = frames.shape[0], options.beam_size, frames.device
    vocab = decoder.config.vocab_size
    eos = special["eos"]
    # Each clip's frames are projected once and its `beam` hypotheses attend to them together (consecutive rows),
    # so all beams decode as one batch without copies of the memory.
    state = decoder.start(frames, lengths, group=beam)
    blocked = _blocked(vocab, special, device)

    tokens = torch.full((batch * beam, 1), special["bos"], dtype=torch.long, device=device)
    history = torch.empty((batch * beam, 0), dtype=torch.long, device=device)
    # At the start all beams are the same <s>: only the first may expand, or the beam fills with copies.
    scores = torch.full((batch, beam), float("-inf"), device=device)
    scores[:, 0] = 0.0
    best_score = torch.full((batch,), float("-inf"), device=device)
    best_tokens: list[list[int]] = [[] for _ in range(batch)]
    active = torch.ones(batch, dtype=torch.bool, device=device)
    any_finished = False
    offsets = (torch.arange(batch, device=device) * beam)[:, None]

    with StepThreads(state, batch * beam) as steps:
        for position in steps.range(options.max_length):
            logp = decoder.step(tokens, position, state).float().log_softmax(-1)
            logp = logp + blocked
            logp = rules.apply(logp, history)
            if position == options.max_length - 1:  # last slot: only </s> may follow
                only_eos = torch.full_like(logp, float("-inf"))
                only_eos[:, eos] = logp[:, eos]
                logp = only_eos
            candidates = (scores.reshape(-1, 1) + logp).view(batch, beam * vocab)
            top_scores, top_index = candidates.topk(2 * beam, dim=1)  # 2*beam: enough to refill after </s> exits
            top_beam, top_token = top_index // vocab, top_index % vocab
            is_eos = top_token == eos
            # Most steps end no hypothesis: one check skips the bookkeeping of finished ones (exactly: with no </s>
            # among the candidates it changes nothing), which at a few rows is a real share of a step's time.
            any_eos = bool(is_eos.any())

            # Hypotheses ending now: keep each clip's best, normalised by its length (</s> included).
            if any_eos:
                finished = _normalise(top_scores, position + 1, options.length_penalty)
                finished = finished.masked_fill(~is_eos | ~active[:, None], float("-inf"))
                # Only candidates ranked within the first `beam` may finish, as in standard beam search.
                finished[:, beam:] = float("-inf")
                cand_best, cand_index = finished.max(dim=1)
                improved = cand_best > best_score
                if bool(improved.any()):
                    for b in improved.nonzero()[:, 0].tolist():
                        row = int(offsets[b, 0] + top_beam[b, cand_index[b]])
                        best_tokens[b] = history[row].tolist()
                    best_score = torch.where(improved, cand_best, best_score)
                    any_finished = True

            # The live beams: the best non-</s> candidates (without </s>, the first `beam` of the sorted top-k).
            if any_eos:
                live_scores, order = top_scores.masked_fill(is_eos, float("-inf")).topk(beam, dim=1)
                chosen_beam, chosen_token = top_beam.gather(1, order), top_token.gather(1, order)
            else:
                live_scores, chosen_beam, chosen_token = top_scores[:, :beam], top_beam[:, :beam], top_token[:, :beam]
            scores = live_scores
            # Stop a clip once its best live beam, normalised at the current length, no longer beats its best
            # finished hypothesis. A heuristic (with length_penalty > 0 a longer caption could still raise its
            # mean), the same one Hugging Face's generate() uses without early_stopping. Until a hypothesis has
            # finished, best_score is -inf and only a dead beam (-inf) stops a clip, which isfinite covers.
            if any_finished:
                active &= ~(best_score >= _normalise(scores[:, 0], position + 1, options.length_penalty))
            active &= scores[:, 0] > float("-inf")  # log-probabilities: a dead beam is -inf (one op, isfinite is 3)
            if not bool(active.any()):
                break

            rows = (offsets + chosen_beam).reshape(-1)
            history = torch.cat([history[rows], chosen_token.reshape(-1, 1)], dim=1)
            state.reorder(rows)
            tokens = chosen_token.reshape(-1, 1)

    return Hypotheses([_strip(t, special) for t in best_tokens], best_score.tolist())


def _strip(tokens: list[int], special: dict[str, int]) -> list[int]:
    out = []
    for token in tokens:
        if token == special["eos"]:
            break
        if token != special["pad"]:
            out.append(token)
    return out
