"""Batched greedy and beam-search decoding over a `CaptionDecoder`: the one decode loop of every model.

Beam search keeps `beam_size` live hypotheses per clip. A hypothesis that emits </s> leaves the beam and is
scored by its length-normalised log-probability (sum / length ** length_penalty); the best finished one per
clip wins. A clip stops once its best live hypothesis no longer beats its best finished one, or at `max_length`.

A step is: the decoder's next-token log-probabilities (`CaptionDecoder.step`), the score filters that say what a
caption may not say next (`BlockedTokens`, `NoRepeatNgram`, `NoRepeatSounds`), then the search's bookkeeping, all
as tensor operations on preallocated buffers. Nothing inside a step reads a result back to Python: finished
hypotheses are kept with `torch.where`, not by looping over clips, and whether every clip is done is read only
every `_check_every` steps. Models this small are bound by how many operations they dispatch, not by arithmetic,
so the loop is written to dispatch few.
"""
from __future__ import annotations

import statistics
import threading
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
    # "a rain shower pours down while a rain shower pours down"; 2 blocks repeated word pairs (the README has what
    # each rule changes on the cross-source split).
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


# -- score filters: what a caption may not say next ------------------------------------------------------------
# Each filter takes next-token log-probabilities [rows, vocab] (modified in place and returned), the rows' tokens
# so far [rows, t] and t. They are plain tensor operations with no data-dependent shapes and no host round-trip,
# so a step never waits on its own results.


class BlockedTokens:
    """Tokens never generated: padding, <s> and unknown words (a caption with <unk> is no caption). One added row:
    -inf for them, 0 elsewhere (x + 0 is x)."""

    def __init__(self, vocab_size: int, special: dict[str, int], device):
        self.bias = torch.zeros(vocab_size, device=device)
        for name in ("pad", "bos", "unk"):
            self.bias[special[name]] = float("-inf")

    def __call__(self, logp: torch.Tensor, history: torch.Tensor, t: int) -> torch.Tensor:
        return logp.add_(self.bias)


class NoRepeatNgram:
    """No word sequence of `n` tokens twice in a caption: every token that would complete an n-gram already in the
    row's history is set to -inf. Each earlier (n-1)-gram is compared with the row's last n-1 tokens, and the token
    that followed each match is blocked."""

    def __init__(self, n: int):
        self.n = n

    def __call__(self, logp: torch.Tensor, history: torch.Tensor, t: int) -> torch.Tensor:
        n = self.n
        if t < n:  # a repeat needs one whole n-gram before it
            return logp
        follows = history[:, n - 1: t]                                   # the token after each window
        if n == 1:
            match = torch.ones_like(follows, dtype=torch.bool)
        elif n == 2:
            match = history[:, : t - 1] == history[:, t - 1: t]
        else:
            match = (history[:, :t].unfold(1, n - 1, 1)[:, : t - n + 1] == history[:, None, t - n + 1: t]).all(-1)
        return logp.masked_fill_(token_mask(follows, match, logp.shape[1]), float("-inf"))


def token_mask(tokens: torch.Tensor, hit: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """[rows, vocab] bool: True at each token of `tokens` [rows, k] where `hit` [rows, k]. Misses are written to a
    spare column past the vocabulary, so every scattered value is True and duplicates cannot disagree."""
    mask = torch.zeros(tokens.shape[0], vocab_size + 1, dtype=torch.bool, device=tokens.device)
    return mask.scatter_(1, tokens.masked_fill(~hit, vocab_size), True)[:, :vocab_size]


class NoRepeatSounds:
    """No sound named again in a later clause, nor by the same keyword twice (`SoundWords.block_named`)."""

    def __init__(self, sounds: SoundWords, device):
        self.sounds = sounds.to(device)

    def __call__(self, logp: torch.Tensor, history: torch.Tensor, t: int) -> torch.Tensor:
        return logp if t == 0 else self.sounds.block_named(logp, history[:, :t])


def block_repeats(logp: torch.Tensor, history: torch.Tensor, n: int) -> torch.Tensor:
    """`NoRepeatNgram(n)` over a whole history [rows, t]: in place on `logp`, which is returned."""
    return NoRepeatNgram(n)(logp, history, history.shape[1]) if n > 0 else logp


def score_filters(options: DecodingOptions, vocab_size: int, special: dict[str, int], device,
                  sounds: SoundWords | None) -> list:
    """The filters `options` asks for, in the order they apply."""
    filters: list = [BlockedTokens(vocab_size, special, device)]
    if options.no_repeat_ngram_size:
        filters.append(NoRepeatNgram(options.no_repeat_ngram_size))
    if options.no_repeat_sounds and sounds is not None:
        filters.append(NoRepeatSounds(sounds, device))
    return filters


@dataclass
class ThreadChoice:
    """Which intra-op thread count runs a decoder's steps fastest at one number of rows (batch x beam).

    A step at a few rows is many operations of a few microseconds each, where waking a second thread can cost more
    than it saves, and which way it goes differs by model and batch (docs/performance.md). So the first steps of a
    CPU decode at a new row count alternate between the caller's
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
    long as the weights do), and restores the caller's.

    The thread count is the process's, not the calling thread's: while another decode runs at the same time (the
    app serves several requests at once, live captions decode in threads of their own), a decode leaves it as it is,
    so no decode changes another's threads under it and the one that changed it sets it back."""

    _running = 0                  # decodes in progress, in any thread
    _lock = threading.Lock()

    def __init__(self, state: DecodeState, rows: int):
        self.caller = torch.get_num_threads()
        self.changed = False
        if state.cache.device.type != "cpu":  # a GPU's steps do not run on these threads: nothing to choose
            self.choice = ThreadChoice((self.caller,))
            return
        choices = state.plan.thread_choices
        key = (rows, self.caller)
        if key not in choices:
            choices[key] = ThreadChoice(tuple(sorted({self.caller, 1}, reverse=True)))
        self.choice = choices[key]

    def __enter__(self) -> "StepThreads":
        with StepThreads._lock:
            StepThreads._running += 1
        return self

    def __exit__(self, *exc) -> None:
        with StepThreads._lock:
            StepThreads._running -= 1
            if self.changed:
                torch.set_num_threads(self.caller)

    def range(self, count: int):
        for position in range(count):
            threads = self.choice.next_threads()
            with StepThreads._lock:
                alone = StepThreads._running == 1
                if alone and threads != torch.get_num_threads():
                    torch.set_num_threads(threads)
                    self.changed = True
            start = time.perf_counter()
            yield position
            # The first step of a call also pays for one-off work (the weight plan), and a step beside another
            # decode is slowed by it: neither is a fair sample.
            if position and alone:
                self.choice.record(threads, time.perf_counter() - start)


@torch.inference_mode()
def decode(decoder: CaptionDecoder, frames: torch.Tensor, lengths: torch.Tensor, special: dict[str, int],
           options: DecodingOptions = DecodingOptions(), sounds: SoundWords | None = None) -> Hypotheses:
    """Captions for a batch of encoder frames. `sounds` (the model's `SoundWords`) enables
    `options.no_repeat_sounds`."""
    options.validate(decoder.config.max_length)
    filters = score_filters(options, decoder.config.vocab_size, special, frames.device, sounds)
    search = _greedy if options.beam_size == 1 else _beam
    return search(decoder, frames, lengths, special, options, filters)


def _reads_are_free(device: torch.device) -> bool:
    """Whether reading a tensor back to Python costs no wait: on a CPU every operation has finished when it returns;
    a GPU queues them, and a read waits for the whole queue."""
    return device.type == "cpu"


# How many steps run between two checks that every clip has finished. On a CPU a check costs a few operations, less
# than a wasted step; on a GPU it stalls the queue of launched steps. Steps after a clip has finished change nothing
# it returns, so the interval changes no caption.
def _check_every(device: torch.device) -> int:
    return 1 if _reads_are_free(device) else 4


def _next_logp(decoder, tokens, position, state, filters, history) -> torch.Tensor:
    logp = decoder.step(tokens, position, state).float().log_softmax(-1)
    for keep_out in filters:
        logp = keep_out(logp, history, position)
    return logp


def _normalise(score: torch.Tensor, length: int | torch.Tensor, penalty: float) -> torch.Tensor:
    return score / (length ** penalty if penalty else 1.0)


def _greedy(decoder, frames, lengths, special, options, filters) -> Hypotheses:
    batch, device = frames.shape[0], frames.device
    eos, pad, last = special["eos"], special["pad"], options.max_length - 1
    state = decoder.start(frames, lengths)
    tokens = torch.full((batch, 1), special["bos"], dtype=torch.long, device=device)
    out = torch.full((batch, options.max_length), pad, dtype=torch.long, device=device)
    score = torch.zeros(batch, device=device)
    n_tokens = torch.zeros(batch, device=device)
    done = torch.zeros(batch, dtype=torch.bool, device=device)
    every = _check_every(device)
    with StepThreads(state, batch) as steps:
        for position in steps.range(options.max_length):
            logp = _next_logp(decoder, tokens, position, state, filters, out)
            if position == last:
                next_token = torch.full_like(done, eos, dtype=torch.long)  # the caption must end here
            else:
                next_token = logp.argmax(-1)
            step_logp = logp.gather(1, next_token[:, None])[:, 0]
            score += step_logp.masked_fill(done, 0.0)
            n_tokens += ~done
            out[:, position] = next_token.masked_fill(done, pad)
            done |= next_token == eos
            if (position + 1) % every == 0 and bool(done.all()):
                break
            tokens = next_token[:, None]
    return Hypotheses([_strip(row, special) for row in out.tolist()],
                      _normalise(score, n_tokens, options.length_penalty).tolist())


def _beam(decoder, frames, lengths, special, options, filters) -> Hypotheses:
    batch, beam, device = frames.shape[0], options.beam_size, frames.device
    vocab, eos, pad, last = decoder.config.vocab_size, special["eos"], special["pad"], options.max_length - 1
    penalty, minus_inf = options.length_penalty, float("-inf")
    # Each clip's frames are projected once and its `beam` hypotheses attend to them together (consecutive rows),
    # so all beams decode as one batch without copies of the memory.
    state = decoder.start(frames, lengths, group=beam)
    rows_total = batch * beam
    tokens = torch.full((rows_total, 1), special["bos"], dtype=torch.long, device=device)
    history = torch.full((rows_total, options.max_length), pad, dtype=torch.long, device=device)
    spare_history = torch.empty_like(history)
    # At the start all beams are the same <s>: only the first may expand, or the beam fills with copies.
    scores = torch.full((batch, beam), minus_inf, device=device)
    scores[:, 0] = 0.0
    best_score = torch.full((batch,), minus_inf, device=device)
    best_tokens = torch.full((batch, options.max_length), pad, dtype=torch.long, device=device)
    active = torch.ones(batch, dtype=torch.bool, device=device)
    offsets = torch.arange(batch, device=device) * beam
    within_beam = (torch.arange(2 * beam, device=device) < beam)[None, :]
    only_eos = torch.full((vocab,), minus_inf, device=device)
    only_eos[eos] = 0.0
    every, reads_free = _check_every(device), _reads_are_free(device)

    with StepThreads(state, rows_total) as steps:
        for position in steps.range(options.max_length):
            logp = _next_logp(decoder, tokens, position, state, filters, history)
            if position == last:  # last slot: only </s> may follow
                logp = logp + only_eos
            candidates = (scores.reshape(-1, 1) + logp).view(batch, beam * vocab)
            top_scores, top_index = candidates.topk(2 * beam, dim=1)  # 2*beam: enough to refill after </s> exits
            top_beam, top_token = top_index.div(vocab, rounding_mode="floor"), top_index.remainder(vocab)
            is_eos = top_token == eos

            # Most steps end no hypothesis. Where reading a flag back costs no wait (a CPU), those steps skip the
            # finished-hypothesis bookkeeping, exactly: with no </s> among the candidates it would change nothing.
            # On a GPU the read would stall the queue of launched steps, so the bookkeeping runs every step.
            if not reads_free or bool(is_eos.any()):
                # Hypotheses ending now: keep each clip's best, normalised by its length (</s> included). Only
                # candidates ranked within the first `beam` may finish, as in standard beam search. Normalising
                # divides every candidate of a step by the same length, so the best is picked first.
                may_end = is_eos & within_beam & active[:, None]
                cand_best, cand_index = top_scores.masked_fill(~may_end, minus_inf).max(dim=1)
                cand_best = _normalise(cand_best, position + 1, penalty)
                improved = cand_best > best_score
                ended_rows = offsets + top_beam.gather(1, cand_index[:, None])[:, 0]
                best_tokens = torch.where(improved[:, None], history.index_select(0, ended_rows), best_tokens)
                best_score = torch.maximum(cand_best, best_score)
                # The live beams: the best non-</s> candidates.
                scores, order = top_scores.masked_fill(is_eos, minus_inf).topk(beam, dim=1)
                chosen_beam, chosen_token = top_beam.gather(1, order), top_token.gather(1, order)
            else:  # no </s>: the live beams are the first `beam` of the sorted candidates
                scores, chosen_beam, chosen_token = top_scores[:, :beam], top_beam[:, :beam], top_token[:, :beam]
            # Stop a clip once its best live beam, normalised at the current length, no longer beats its best
            # finished hypothesis. A heuristic (with length_penalty > 0 a longer caption could still raise its
            # mean), the same one Hugging Face's generate() uses without early_stopping. Until a hypothesis has
            # finished, best_score is -inf, so only a dead beam (-inf) stops a clip.
            active &= (best_score < _normalise(scores[:, 0], position + 1, penalty)) & (scores[:, 0] > minus_inf)
            if (position + 1) % every == 0 and not bool(active.any()):
                break

            rows = (offsets[:, None] + chosen_beam).view(rows_total)
            tokens = chosen_token.reshape(rows_total, 1)
            torch.index_select(history, 0, rows, out=spare_history)
            history, spare_history = spare_history, history
            history[:, position: position + 1] = tokens
            state.reorder(rows)

    return Hypotheses([_strip(t, special) for t in best_tokens.tolist()], best_score.tolist())


def _strip(tokens: list[int], special: dict[str, int]) -> list[int]:
    out = []
    for token in tokens:
        if token == special["eos"]:
            break
        if token != special["pad"]:
            out.append(token)
    return out
