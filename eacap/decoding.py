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

    def __call__(self, logp: torch.Tensor, history: torch.Tensor, t: int | torch.Tensor) -> torch.Tensor:
        if torch.is_tensor(t):
            return self._static(logp, history, t)
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
        return ban(logp, follows, match)

    def _static(self, logp: torch.Tensor, history: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The same rule with the step `t` a one-element tensor (a captured step, `eacap.graphs`): every window of
        the whole history is compared, and those not wholly before the last n-1 tokens are left out by a mask
        rather than by slicing, so the shapes never change."""
        n, width = self.n, history.shape[1]
        if width < n:
            return logp
        windows = torch.arange(width - n + 1, device=history.device)
        before = windows <= t - n                                        # window j ends before the last n-1 tokens
        follows = history[:, n - 1:]
        if n == 1:
            match = before.expand(history.shape[0], -1)
        else:
            last = history.index_select(1, (t - n + 1 + torch.arange(n - 1, device=history.device)).clamp(min=0))
            match = (history.unfold(1, n - 1, 1)[:, : width - n + 1] == last[:, None]).all(-1) & before
        return ban(logp, follows, match)


def ban(logp: torch.Tensor, tokens: torch.Tensor, hit: torch.Tensor) -> torch.Tensor:
    """`logp` [rows, vocab] with -inf, in place, at each token of `tokens` [rows, k] where `hit` [rows, k]; every
    other score keeps its bits."""
    if torch.compiler.is_compiling():
        # Compiled steps (`eacap.graphs`): one accumulating write per token, -inf at the hits and 0 at the misses
        # (x + 0 is x, -inf plus anything here is -inf, and the order of the additions cannot matter, so a token
        # listed twice, hit once and missed once, still ends at -inf), which Inductor turns into k writes per row.
        # The mask below becomes loops of scalar loads and boolean conversions over [rows, vocab] there: with the
        # sound rule's, a fifth of a compiled student step at batch 32. One operation at a time, the mask is faster.
        rows = torch.arange(tokens.shape[0], device=tokens.device)[:, None].expand_as(tokens)
        return logp.index_put_((rows, tokens), torch.zeros(tokens.shape, dtype=logp.dtype, device=logp.device)
                               .masked_fill_(hit, float("-inf")), accumulate=True)
    return logp.masked_fill_(token_mask(tokens, hit, logp.shape[1]), float("-inf"))


def token_mask(tokens: torch.Tensor, hit: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """[rows, vocab] bool: True at each token of `tokens` [rows, k] where `hit` [rows, k]. Misses are written to a
    spare column past the vocabulary, so every scattered value is True and duplicates cannot disagree."""
    mask = torch.zeros(tokens.shape[0], vocab_size + 1, dtype=torch.bool, device=tokens.device)
    return mask.scatter_(1, tokens.masked_fill(~hit, vocab_size), True)[:, :vocab_size]


class NoRepeatSounds:
    """No sound named again in a later clause, nor by the same keyword twice (`SoundWords.block_named`)."""

    def __init__(self, sounds: SoundWords, device):
        self.sounds = sounds.to(device)

    def __call__(self, logp: torch.Tensor, history: torch.Tensor, t: int | torch.Tensor) -> torch.Tensor:
        if torch.is_tensor(t):
            # A captured step reads the whole history: the positions not yet written hold <pad>, which names no
            # sound and starts no clause, so they change nothing `block_named` finds.
            return self.sounds.block_named(logp, history)
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


class Background:
    """How many builds run in background threads now (`eacap.graphs`: compiled decoding steps, fused encoder
    traces). They share the cores with everything else, so a time taken meanwhile is not a fair sample."""
    running = 0
    lock = threading.Lock()

    @classmethod
    def add(cls, count: int) -> None:
        with cls.lock:
            cls.running += count


@dataclass
class FasterChoice:
    """Which of a few ways of running the same work is fastest here, found by timing them: the first calls
    alternate between the `candidates`, `TRIALS` each, and the one with the lowest median wins from then on.

    Used where the answer depends on the machine, the model and the batch in ways no rule gets right: the intra-op
    thread count of a decoder's steps at one number of rows (`StepThreads`: a step at a few rows is many operations
    of a few microseconds each, where waking a second thread can cost more than it saves), and compiled against
    eager steps on a CPU (`eacap.graphs`: compiled steps win at a few rows and can lose at many). The same rule
    applies to every model; each gets its own choice.
    """
    candidates: tuple
    samples: dict = field(default_factory=dict)
    chosen: object = None
    TRIALS = 4

    def next(self):
        if self.chosen is None and len(self.candidates) == 1:
            self.chosen = self.candidates[0]
        if self.chosen is not None:
            return self.chosen
        return min(self.candidates, key=lambda c: len(self.samples.get(c, ())))

    def record(self, candidate, seconds: float) -> None:
        if self.chosen is not None or Background.running:   # a build in the background would skew the sample
            return
        self.samples.setdefault(candidate, []).append(seconds)
        if all(len(self.samples.get(c, ())) >= self.TRIALS for c in self.candidates):
            self.chosen = min(self.candidates, key=lambda c: statistics.median(self.samples[c]))


class StepThreads:
    """`with StepThreads(state, rows) as steps: for position in steps.range(n): ...` runs each step at the thread
    count `FasterChoice` picks for this decoder and row count (kept with the decoder's step plan, so it lasts as
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
            self.choice = FasterChoice((self.caller,))
            return
        choices = state.plan.thread_choices
        key = (rows, self.caller)
        if key not in choices:
            choices[key] = FasterChoice(tuple(sorted({self.caller, 1}, reverse=True)))
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
            threads = self.choice.next()
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
    `options.no_repeat_sounds`. Once a call signature has been seen, its steps replay as captured CUDA graphs on
    a GPU, or run compiled on a CPU (`eacap.graphs`) where that is on; before, and elsewhere, they run one operation
    at a time."""
    from . import graphs  # graphs builds on this module

    options.validate(decoder.config.max_length)
    search_kind = GreedySearch if options.beam_size == 1 else BeamSearch
    if graphs.enabled(frames.device) or graphs.compiled(frames.device):
        captured = graphs.decode(search_kind, decoder, frames, lengths, special, options, sounds)
        if captured is not None:
            return captured
    return eager_decode(search_kind, decoder, frames, lengths, special, options, sounds)


def eager_decode(search_kind: type["Search"], decoder: CaptionDecoder, frames: torch.Tensor, lengths: torch.Tensor,
                 special: dict[str, int], options: DecodingOptions, sounds: SoundWords | None) -> Hypotheses:
    """`decode` one operation at a time (called by it, in inference mode)."""
    search = search_kind(decoder, frames, lengths, special, options, sounds)
    every = _check_every(frames.device)
    with StepThreads(search.state, search.rows) as steps:
        for position in steps.range(options.max_length):
            search.step(position)
            if (position + 1) % every == 0 and search.finished():
                break
    return search.result()


def _reads_are_free(device: torch.device) -> bool:
    """Whether reading a tensor back to Python costs no wait: on a CPU every operation has finished when it returns;
    a GPU queues them, and a read waits for the whole queue."""
    return device.type == "cpu"


# How many steps run between two checks that every clip has finished. On a CPU a check costs a few operations, less
# than a wasted step; on a GPU it stalls the queue of launched steps. Steps after a clip has finished change nothing
# it returns, so the interval changes no caption.
def _check_every(device: torch.device) -> int:
    return 1 if _reads_are_free(device) else 4


def _normalise(score: torch.Tensor, length: int | torch.Tensor, penalty: float) -> torch.Tensor:
    return score / (length ** penalty if penalty else 1.0)


class Search:
    """One decoding call's search over a batch: `step(position)` for position 0, 1, ... until `finished()`, then
    `result()`. The greedy and beam searches below share this frame.

    A step is the decoder's next-token log-probabilities, the score filters, then the search's bookkeeping. It is
    written once for two ways of running it:
    - eager (`position` an int): shapes follow the caption's length, tensors that change are rebound, and a CPU
      skips work whose result it can see is not needed;
    - static (`static=True`, `position` a one-element long tensor on the device): every shape is the same at
      every step and nothing is read back to the host, so a CUDA graph can capture the step, or a compiled loop
      run it (`eacap.graphs`). Tensors that change are updated in place and no attribute is rebound; the two
      pairs of buffers a beam step reads one of and writes the other (the history and the key/value cache) take
      turns, named by the step's `parity`: the step is captured or traced once each way round. `reset` loads a
      new batch into the same buffers. The arithmetic is the same; attention and the filters read the whole
      preallocated history under a mask instead of a slice of it, which can change the last bits of a score
      (tested: the same captions).
    """

    def __init__(self, decoder: CaptionDecoder, frames: torch.Tensor, lengths: torch.Tensor, special: dict[str, int],
                 options: DecodingOptions, sounds: SoundWords | None, static: bool = False, length: int | None = None):
        self.decoder, self.special, self.options, self.static = decoder, special, options, static
        self.group = options.beam_size
        self.batch, self.rows = frames.shape[0], frames.shape[0] * options.beam_size
        self.device = frames.device
        self.filters = score_filters(options, decoder.config.vocab_size, special, self.device, sounds)
        # `length`: positions the buffers hold, at least max_length. A static search run in fixed chunks of steps
        # (`eacap.graphs`) may step past the last position: every hypothesis has ended there (only </s> may follow
        # the last token), so those steps change nothing a result reads.
        length = max(length or options.max_length, options.max_length)
        self.state = decoder.start(frames, lengths, group=self.group, static=static, length=length)
        if self.state.cache.shape[4] < length:
            raise ValueError(f"a search of {length} positions exceeds the decoder's maximum of "
                             f"{decoder.config.max_length}")
        self.last = options.max_length - 1
        self.tokens = torch.empty((self.rows, 1), dtype=torch.long, device=self.device)
        self.history = torch.empty((self.rows, length), dtype=torch.long, device=self.device)
        self.allocate()
        self.reset()

    def allocate(self) -> None:
        """The search's own buffers (called once)."""

    def reset(self, cross: list | None = None, share: bool = False) -> None:
        """Start over, on the same clips, or (static) on those of `cross`, a `CaptionDecoder.cross_attention` of
        the same shapes (`share`: any number of frames, see `DecodeState.load`)."""
        if cross is not None:
            self.state.load(cross, share)
        self.tokens.fill_(self.special["bos"])
        self.history.fill_(self.special["pad"])

    def next_logp(self, position: int | torch.Tensor, history: torch.Tensor, parity: int | None = None) -> torch.Tensor:
        logp = self.decoder.step(self.tokens, position, self.state, parity).float().log_softmax(-1)
        for keep_out in self.filters:
            logp = keep_out(logp, history, position)
        return logp

    def set(self, name: str, value: torch.Tensor) -> None:
        """self.<name> = value: rebound when eager, copied into the same buffer when static."""
        if self.static:
            getattr(self, name).copy_(value)
        else:
            setattr(self, name, value)

    def write_history(self, position: int | torch.Tensor, tokens: torch.Tensor, history: torch.Tensor) -> None:
        if self.static:
            history.index_copy_(1, position, tokens)
        else:
            history[:, position: position + 1] = tokens

    def is_last(self, position: int | torch.Tensor) -> bool | torch.Tensor:
        return position == self.last


class GreedySearch(Search):
    def allocate(self) -> None:
        self.score = torch.empty(self.batch, device=self.device)
        self.n_tokens = torch.empty(self.batch, device=self.device)
        self.done = torch.empty(self.batch, dtype=torch.bool, device=self.device)

    def reset(self, cross: list | None = None, share: bool = False) -> None:
        super().reset(cross, share)
        self.score.zero_()
        self.n_tokens.zero_()
        self.done.zero_()

    def step(self, position: int | torch.Tensor, parity: int | None = None) -> None:
        """One step; greedy search keeps every hypothesis in its row, so `parity` (see `BeamSearch.step`) is
        always 0 here."""
        logp, eos, done = self.next_logp(position, self.history, 0), self.special["eos"], self.done
        if self.static:  # the caption must end at the last step
            next_token = torch.where(self.is_last(position), eos, logp.argmax(-1))
        elif position == self.last:
            next_token = torch.full_like(done, eos, dtype=torch.long)
        else:
            next_token = logp.argmax(-1)
        # In place, never rebinding an attribute (a compiled loop of steps may not, `eacap.graphs`)
        self.score.add_(logp.gather(1, next_token[:, None])[:, 0].masked_fill(done, 0.0))
        self.n_tokens.add_(~done)
        self.write_history(position, next_token.masked_fill(done, self.special["pad"])[:, None], self.history)
        if self.static:
            self.state.advance(position)
        done.logical_or_(next_token == eos)
        self.set("tokens", next_token[:, None])

    def unfinished(self) -> torch.Tensor:
        return ~self.done.all()

    def finished(self) -> bool:
        return not bool(self.unfinished())

    def result(self) -> Hypotheses:
        return Hypotheses([_strip(row, self.special) for row in self.history.tolist()],
                          _normalise(self.score, self.n_tokens, self.options.length_penalty).tolist())


class BeamSearch(Search):
    """Each clip's frames are projected once and its `beam` hypotheses attend to them together (consecutive rows),
    so all beams decode as one batch without copies of the memory."""

    def allocate(self) -> None:
        batch, beam, device, minus_inf = self.batch, self.group, self.device, float("-inf")
        vocab, eos = self.decoder.config.vocab_size, self.special["eos"]
        self.scores = torch.empty((batch, beam), device=device)
        self.best_score = torch.empty(batch, device=device)
        self.best_tokens = torch.empty((batch, self.history.shape[1]), dtype=torch.long, device=device)
        self.active = torch.empty(batch, dtype=torch.bool, device=device)
        self.spare_history = torch.empty_like(self.history)
        self.offsets = torch.arange(batch, device=device) * beam
        self.within_beam = (torch.arange(2 * beam, device=device) < beam)[None, :]
        self.only_eos = torch.full((vocab,), minus_inf, device=device)
        self.only_eos[eos] = 0.0
        self.reads_free = _reads_are_free(device) and not self.static

    def reset(self, cross: list | None = None, share: bool = False) -> None:
        super().reset(cross, share)
        # At the start all beams are the same <s>: only the first may expand, or the beam fills with copies.
        self.scores.fill_(float("-inf"))
        self.scores[:, 0] = 0.0
        self.best_score.fill_(float("-inf"))
        self.best_tokens.fill_(self.special["pad"])
        self.active.fill_(True)

    def step(self, position: int | torch.Tensor, parity: int | None = None) -> None:
        """One step. The beams' token histories, like the decoder's key/value caches (`DecodeState`), are a pair
        of buffers that take turns: the step reads one and writes the reordered beams into the other. `parity`
        says which it reads (0: `history`, 1: `spare_history`); eager steps follow the decoder state's turn. A
        static step is traced with its parity fixed, and never rebinds an attribute, so a compiled loop can run
        it (`eacap.graphs`)."""
        batch, beam, vocab = self.batch, self.group, self.decoder.config.vocab_size
        penalty, minus_inf, eos = self.options.length_penalty, float("-inf"), self.special["eos"]
        turn = self.state.current if parity is None else parity
        history, reordered = (self.history, self.spare_history) if turn == 0 else (self.spare_history, self.history)
        logp = self.next_logp(position, history, turn)
        if self.static:  # last slot: only </s> may follow
            logp = torch.where(self.is_last(position), logp + self.only_eos, logp)
        elif position == self.last:
            logp = logp + self.only_eos
        candidates = (self.scores.reshape(-1, 1) + logp).view(batch, beam * vocab)
        top_scores, top_index = candidates.topk(2 * beam, dim=1)  # 2*beam: enough to refill after </s> exits
        top_beam, top_token = top_index.div(vocab, rounding_mode="floor"), top_index.remainder(vocab)
        is_eos = top_token == eos
        length = position + 1

        # Most steps end no hypothesis. Where reading a flag back costs no wait (an eager CPU step), those steps
        # skip the finished-hypothesis bookkeeping, exactly: with no </s> among the candidates it would change
        # nothing. On a GPU the read would stall the queue of launched steps, so the bookkeeping runs every step.
        if not self.reads_free or bool(is_eos.any()):
            # Hypotheses ending now: keep each clip's best, normalised by its length (</s> included). Only
            # candidates ranked within the first `beam` may finish, as in standard beam search. Normalising
            # divides every candidate of a step by the same length, so the best is picked first.
            may_end = is_eos & self.within_beam & self.active[:, None]
            cand_best, cand_index = top_scores.masked_fill(~may_end, minus_inf).max(dim=1)
            cand_best = _normalise(cand_best, length, penalty)
            improved = cand_best > self.best_score
            ended_rows = self.offsets + top_beam.gather(1, cand_index[:, None])[:, 0]
            self.set("best_tokens",
                     torch.where(improved[:, None], history.index_select(0, ended_rows), self.best_tokens))
            self.set("best_score", torch.maximum(cand_best, self.best_score))
            # The live beams: the best non-</s> candidates.
            scores, order = top_scores.masked_fill(is_eos, minus_inf).topk(beam, dim=1)
            chosen_beam, chosen_token = top_beam.gather(1, order), top_token.gather(1, order)
        else:  # no </s>: the live beams are the first `beam` of the sorted candidates
            scores, chosen_beam, chosen_token = top_scores[:, :beam], top_beam[:, :beam], top_token[:, :beam]
        self.set("scores", scores)
        # Stop a clip once its best live beam, normalised at the current length, no longer beats its best
        # finished hypothesis. A heuristic (with length_penalty > 0 a longer caption could still raise its
        # mean), the same one Hugging Face's generate() uses without early_stopping. Until a hypothesis has
        # finished, best_score is -inf, so only a dead beam (-inf) stops a clip.
        self.active.logical_and_((self.best_score < _normalise(scores[:, 0], length, penalty)) &
                                 (scores[:, 0] > minus_inf))

        rows = (self.offsets[:, None] + chosen_beam).view(self.rows)
        self.set("tokens", chosen_token.reshape(self.rows, 1))
        torch.index_select(history, 0, rows, out=reordered)
        self.write_history(position, self.tokens, reordered)
        if self.static:
            self.state.advance(position, rows, turn)
        else:
            self.state.reorder(rows)   # the turn passes to the other buffers

    def unfinished(self) -> torch.Tensor:
        return self.active.any()

    def finished(self) -> bool:
        return not bool(self.unfinished())

    def result(self) -> Hypotheses:
        return Hypotheses([_strip(t, self.special) for t in self.best_tokens.tolist()], self.best_score.tolist())


def _strip(tokens: list[int], special: dict[str, int]) -> list[int]:
    out = []
    for token in tokens:
        if token == special["eos"]:
            break
        if token != special["pad"]:
            out.append(token)
    return out
