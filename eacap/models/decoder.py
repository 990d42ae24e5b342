"""The caption decoder: a pre-LN Transformer decoder over encoder frames, with tied word embeddings.

Teacher and student use this same module with different sizes. `forward` is teacher-forced training;
`start` + `step` decode one token at a time with key/value caches: cross-attention keys and values are computed
once per clip and shared by all of its hypotheses; self-attention keys and values live in one tensor allocated for
the longest caption, written one position per step. Beam search (eacap.decoding) drives both.

`step` is the inference twin of `DecoderLayer.forward` for one new position: the same arithmetic written as
direct tensor calls on weights gathered once per decoding call (`StepPlan`), with the self-attention's query,
key and value products fused into one. At batch x beam rows every layer call is a few microseconds of work:
what a step costs is mostly how many operations it dispatches, so the plan keeps that number small. `step` is
tested against `forward` (same logits to float rounding).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from .activations import activation
from .packed_linear import Linear, PackedLinear, cached_by_weights, choose_products, linear


@dataclass(frozen=True)
class DecoderConfig:
    vocab_size: int
    memory_dim: int          # width of the encoder frames
    width: int = 256
    layers: int = 2
    heads: int = 4
    ffn: int = 1024
    dropout: float = 0.2
    max_length: int = 48     # longest caption in tokens, <s> and </s> included
    activation: str = "gelu"  # the FFN's: "gelu", or "relu" (cheaper per call on a CPU; the "lite" student)

    def to_dict(self) -> dict:
        return asdict(self)


def sinusoid_table(length: int, width: int) -> torch.Tensor:
    position = torch.arange(length)[:, None]
    div = torch.exp(torch.arange(0, width, 2) * (-math.log(10000.0) / width))
    table = torch.zeros(length, width)
    table[:, 0::2] = torch.sin(position * div)
    table[:, 1::2] = torch.cos(position * div)
    return table


class Attention(nn.Module):
    def __init__(self, width: int, heads: int, dropout: float):
        super().__init__()
        self.heads = heads
        self.q = Linear(width, width)
        self.kv = Linear(width, 2 * width)
        self.out = Linear(width, width)
        self.dropout = dropout

    def split(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        return x.view(b, t, self.heads, -1).transpose(1, 2)  # [B, H, T, head_dim]

    def keys_values(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        k, v = self.kv(x).chunk(2, dim=-1)
        # Contiguous [B, H, T, head_dim]: attention would otherwise copy the transposed view on every call, which
        # for the cross-attention memory is every decoding step.
        return self.split(k).contiguous(), self.split(v).contiguous()

    def attend(self, x: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None,
               causal: bool = False) -> torch.Tensor:
        q = self.split(self.q(x))
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal,
                                           dropout_p=self.dropout if self.training else 0.0)
        b, _, t, _ = y.shape
        return self.out(y.transpose(1, 2).reshape(b, t, -1))


class DecoderLayer(nn.Module):
    def __init__(self, config: DecoderConfig):
        super().__init__()
        w = config.width
        self.self_norm, self.self_attn = nn.LayerNorm(w), Attention(w, config.heads, config.dropout)
        self.cross_norm, self.cross_attn = nn.LayerNorm(w), Attention(w, config.heads, config.dropout)
        self.ffn_norm = nn.LayerNorm(w)
        self.ffn = nn.Sequential(Linear(w, config.ffn), activation(config.activation)[0](), nn.Dropout(config.dropout),
                                 Linear(config.ffn, w))
        self.drop = nn.Dropout(config.dropout)

    def forward(self, x, memory_kv, memory_mask):
        """Teacher forcing: the whole sequence at once, causal (`CaptionDecoder.step` is the one-position twin)."""
        h = self.self_norm(x)
        x = x + self.drop(self.self_attn.attend(h, *self.self_attn.keys_values(h), None, causal=True))
        x = x + self.drop(self.cross_attn.attend(self.cross_norm(x), *memory_kv, memory_mask))
        return x + self.drop(self.ffn(self.ffn_norm(x)))


class CaptionDecoder(nn.Module):
    def __init__(self, config: DecoderConfig):
        super().__init__()
        self.config = config
        self.memory_proj = nn.Sequential(Linear(config.memory_dim, config.width), nn.LayerNorm(config.width))
        self.embed = nn.Embedding(config.vocab_size, config.width)
        nn.init.normal_(self.embed.weight, std=config.width ** -0.5)
        self.register_buffer("positions", sinusoid_table(config.max_length, config.width), persistent=False)
        self.layers = nn.ModuleList(DecoderLayer(config) for _ in range(config.layers))
        self.norm = nn.LayerNorm(config.width)
        self.drop = nn.Dropout(config.dropout)

    def embed_tokens(self, tokens: torch.Tensor, offset: int = 0) -> torch.Tensor:
        if offset + tokens.shape[1] > self.config.max_length:
            raise ValueError(f"caption of {offset + tokens.shape[1]} tokens exceeds the decoder's maximum of "
                             f"{self.config.max_length}")
        x = self.embed(tokens) * math.sqrt(self.config.width)
        return self.drop(x + self.positions[offset: offset + tokens.shape[1]])

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return linear(self.norm(x), self.embed, self.embed.weight)  # tied input/output embeddings

    @staticmethod
    def memory_mask(memory_lengths: torch.Tensor, max_len: int) -> torch.Tensor | None:
        valid = torch.arange(max_len, device=memory_lengths.device)[None, :] < memory_lengths[:, None]
        return None if bool(valid.all()) else valid[:, None, None, :]

    def memory(self, frames: torch.Tensor, lengths: torch.Tensor, always_mask: bool = False):
        """Project encoder frames once; returns per-layer cross-attention (k, v) and the key padding mask (None
        where no clip is padded, unless `always_mask`: finding that out reads a flag back from the device)."""
        memory = self.memory_proj(frames)
        keys_values = [layer.cross_attn.keys_values(memory) for layer in self.layers]
        if always_mask:
            valid = torch.arange(frames.shape[1], device=lengths.device)[None, :] < lengths[:, None]
            return keys_values, valid[:, None, None, :]
        return keys_values, self.memory_mask(lengths, frames.shape[1])

    def forward(self, tokens: torch.Tensor, frames: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Teacher forcing: tokens [B, L] (starting with <s>) -> next-token logits [B, L, V].

        Padding tokens sit after each caption's end, so the causal mask alone keeps them from influencing any
        real position; only the loss needs to ignore them.
        """
        memory_kv, memory_mask = self.memory(frames, lengths)
        x = self.embed_tokens(tokens)
        for layer, kv in zip(self.layers, memory_kv):
            x = layer(x, kv, memory_mask)
        return self.logits(x)

    def step_plan(self) -> "StepPlan":
        """The weights arranged for `step`, built once and kept until they change."""
        return cached_by_weights(self, "_step_plan", lambda: StepPlan.build(self))

    def cross_attention(self, frames: torch.Tensor, lengths: torch.Tensor, group: int = 1,
                        static: bool = False) -> list["ProjectedCross | AbsorbedCross"]:
        """Each layer's cross-attention over `frames`, for `group` hypotheses per clip. `static`: built without
        reading anything back from the device (the padding mask is always made), so a CUDA graph can capture it."""
        memory_kv, memory_mask = self.memory(frames, lengths, always_mask=static)
        plan, heads = self.step_plan(), self.config.heads
        cross_kind = self.cross_kind(frames.shape[0], frames.shape[1])
        return [cross_kind(layer, k, v, memory_mask, heads, group) for layer, (k, v) in zip(plan.layers, memory_kv)]

    def cross_kind(self, clips: int, frames: int) -> type["ProjectedCross | AbsorbedCross"]:
        """How `cross_attention` attends to `clips` clips of `frames` encoder frames (see `AbsorbedCross`)."""
        return AbsorbedCross if clips * self.config.heads * frames <= self.config.width else ProjectedCross

    def start(self, frames: torch.Tensor, lengths: torch.Tensor, group: int = 1, static: bool = False,
              length: int | None = None) -> "DecodeState":
        """Begin decoding `group` hypotheses per clip (rows b*group ... b*group+group-1 belong to clip b), for
        captions of up to `length` tokens (default: the decoder's maximum). `static`: for steps whose position is a
        tensor (`step`), which a CUDA graph can capture."""
        length = min(length or self.config.max_length, self.config.max_length)
        cross = self.cross_attention(frames, lengths, group, static)
        rows, heads, width = frames.shape[0] * group, self.config.heads, self.config.width
        if frames.device.type == "cpu":   # which library multiplies `rows` rows fastest here, timed once per count
            from .. import graphs  # eacap.graphs builds on the decoder
            choose_products(self.step_plan().linears(), rows, compiled=graphs.compiled(frames.device))
        # Every layer's self-attention keys and values for every position a caption can reach, allocated once:
        # a step writes one position in place, and beam search reorders all layers in one call.
        shape = (len(self.layers), 2, rows, heads, length, width // heads)
        state = DecodeState(self.step_plan(), cross, group, frames.new_empty(shape), frames.new_empty(shape))
        if static:
            state.visible_from = torch.arange(length, device=frames.device)
            state.fresh = frames.new_empty((len(self.layers), 2, rows, heads, 1, width // heads))
            state.load(cross)
        return state

    def step(self, tokens: torch.Tensor, position: int | torch.Tensor, state: "DecodeState",
             parity: int | None = None) -> torch.Tensor:
        """One decoding step: tokens [N, 1] at `position` -> logits [N, V]; `state` gains this position.

        `position` is an int, or a one-element long tensor on the model's device with a state from
        `start(..., static=True)`: then every shape is the same at every step (attention reads the whole cache,
        positions not yet written masked out), so a CUDA graph can capture the step once and replay it; the step's
        own keys and values wait in `state.fresh` until the caller's `DecodeState.advance` writes them in.
        `parity`: which of the state's two caches holds the hypotheses' keys and values (`DecodeState`); by default
        the one its last `reorder` wrote."""
        static = torch.is_tensor(position)
        if not static and position >= state.cache.shape[4]:
            raise ValueError(f"caption of {position + 1} tokens exceeds the {state.cache.shape[4]} this decoding "
                             f"was started for (the decoder's maximum: {self.config.max_length})")
        plan, n = state.plan, tokens.shape[0]
        heads, width = self.config.heads, self.config.width
        if static:
            x = plan.embed.index_select(0, tokens.view(n)) + self.positions.index_select(0, position)
            before = (state.visible_from < position)[None]             # [1, max_length]: positions written
        else:
            x = plan.embed.index_select(0, tokens.view(n)) + self.positions[position]
            state.length = position + 1
        for i, (layer, cross) in enumerate(zip(plan.layers, state.cross)):
            h = F.layer_norm(x, (width,), *layer.self_norm)
            qkv = layer.qkv(h).view(n, 3, heads, 1, -1)
            kv = state.buffers(parity)[0][i]                          # [2, N, H, max_length, head_dim]
            if static:
                # The new position's keys and values are kept apart (`state.fresh`) and attended to beside the
                # cache; `DecodeState.advance` writes them in. Writing them into the cache here made the compiled
                # code copy the whole cache first, at every step.
                state.fresh[i].copy_(qkv[:, 1:].transpose(0, 1))
                y = fresh_attention(qkv[:, 0], kv[0], kv[1], before, qkv[:, 1], qkv[:, 2])
            else:
                kv[:, :, :, position: position + 1] = qkv[:, 1:].transpose(0, 1)
                y = F.scaled_dot_product_attention(qkv[:, 0], kv[0, :, :, : position + 1],
                                                   kv[1, :, :, : position + 1])
            x = x + layer.self_out(y.view(n, width))
            x = x + cross(F.layer_norm(x, (width,), *layer.cross_norm))
            h = F.layer_norm(x, (width,), *layer.ffn_norm)
            x = x + layer.ffn_out(plan.activation(layer.ffn_in(h)))
        return plan.logits(F.layer_norm(x, (width,), *plan.norm))


def step_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """`F.scaled_dot_product_attention(q, k, v, attn_mask=mask)` (boolean mask) for a decoding step. While
    `torch.compile` traces it (compiled steps, `eacap.graphs`), written out as products and a softmax, which
    Inductor fuses into loops of its own: the library kernel is built for long sequences and costs more in set-up
    than a step's few dozen keys need. (PyTorch holds its compiling flag for the whole process while a compile runs,
    so a decode in another thread then takes this form too: the same numbers to float rounding.)"""
    if not torch.compiler.is_compiling():
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    scores = (q * q.shape[-1] ** -0.5) @ k.transpose(-1, -2)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return scores.softmax(-1) @ v


def fresh_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, before: torch.Tensor, k_new: torch.Tensor,
                    v_new: torch.Tensor) -> torch.Tensor:
    """A static step's self-attention: q [N, H, 1, D] over the cached positions `before` [1, L] (k, v [N, H, L, D])
    and the step's own key and value (k_new, v_new [N, H, 1, D]), which are not in the cache yet. The softmax over
    both is written out (a shared maximum, one sum), equal to attending to the cache with the new position written
    in, to float rounding."""
    q = q * q.shape[-1] ** -0.5
    cached = (q @ k.transpose(-1, -2)).masked_fill(~before, float("-inf"))     # [N, H, 1, L]
    own = (q * k_new).sum(-1, keepdim=True)                                     # [N, H, 1, 1]
    top = torch.maximum(cached.amax(-1, keepdim=True), own)
    cached, own = (cached - top).exp(), (own - top).exp()
    return (cached @ v + own * v_new) / (cached.sum(-1, keepdim=True) + own)


class ProjectedCross:
    """A layer's cross-attention over fixed clips for decoding steps, as in training: q = W_q h, attention over the
    clip's keys and values (shared by its `group` hypotheses, which attend together), then W_o."""

    def __init__(self, layer: "LayerPlan", keys: torch.Tensor, values: torch.Tensor, mask: torch.Tensor | None,
                 heads: int, group: int):
        self.layer, self.keys, self.values, self.mask, self.heads, self.group = layer, keys, values, mask, heads, group

    def tensors(self) -> list[torch.Tensor]:
        """What depends on the clips (`DecodeState.load` copies them)."""
        return [self.keys, self.values] + ([] if self.mask is None else [self.mask])

    def frame_dims(self) -> list[tuple[torch.Tensor, int]]:
        """Each tensor of `tensors` with the dimension whose size follows the number of frames."""
        return [(self.keys, 2), (self.values, 2)] + ([] if self.mask is None else [(self.mask, 3)])

    def __call__(self, h: torch.Tensor) -> torch.Tensor:
        n, width = h.shape
        q = self.layer.cross_q(h).view(n // self.group, self.group, self.heads, -1).transpose(1, 2)
        y = step_attention(q, self.keys, self.values, self.mask)
        return self.layer.cross_out(y.transpose(1, 2).reshape(n, width))


class AbsorbedCross:
    """The same cross-attention with W_q and W_o folded into each clip's keys and values once per decoding call:
    score(h, k) = h . (W_q^T k) + b_q . k and output = sum p (W_o v) + b_o, so a step costs two products of
    heads x frames per clip instead of two of width x width. Chosen when clips x heads x frames <= width: a compact
    encoder output (the student's 8 frames per 10 s) at small batch. At many clips the per-clip products lose to the
    projections' single GEMM over all rows, hence the clip count in the rule (docs/performance.md has the numbers).
    Equal to `ProjectedCross` to float rounding (tested)."""

    def __init__(self, layer: "LayerPlan", keys: torch.Tensor, values: torch.Tensor, mask: torch.Tensor | None,
                 heads: int, group: int):
        clips, _, frames, head_dim = keys.shape
        width, scale = heads * head_dim, head_dim ** -0.5
        q_weight, q_bias = layer.cross_q.weight.view(heads, head_dim, width), layer.cross_q.bias.view(heads, head_dim)
        self.score_weight = torch.einsum("bhtd,hdw->bwht", keys, q_weight * scale).reshape(clips, width, heads * frames)
        score_bias = torch.einsum("bhtd,hd->bht", keys, q_bias * scale)
        if mask is not None:  # padding frames of shorter clips: never attended
            score_bias = score_bias.masked_fill(~mask.view(clips, 1, frames), float("-inf"))
        self.score_bias = score_bias.reshape(clips, 1, heads * frames)
        out_weight = layer.cross_out.weight.view(width, heads, head_dim)
        self.value_out = torch.einsum("bhtd,whd->bhtw", values, out_weight).reshape(clips, heads * frames, width)
        self.out_bias, self.heads, self.group = layer.cross_out.bias, heads, group

    def tensors(self) -> list[torch.Tensor]:
        """What depends on the clips (`DecodeState.load` copies them)."""
        return [self.score_weight, self.score_bias, self.value_out]

    def frame_dims(self) -> list[tuple[torch.Tensor, int]]:
        """Each tensor of `tensors` with the dimension whose size follows the number of frames."""
        return [(self.score_weight, 2), (self.score_bias, 2), (self.value_out, 1)]

    def __call__(self, h: torch.Tensor) -> torch.Tensor:
        n, width = h.shape
        clips = n // self.group
        if torch.compiler.is_compiling():  # the biases added in Inductor's loops (`packed_linear.compiled_affine`)
            scores = torch.bmm(h.view(clips, self.group, width), self.score_weight) + self.score_bias
            weights = scores.view(clips, self.group, self.heads, -1).softmax(-1)
            return (torch.bmm(weights.view(clips, self.group, -1), self.value_out) + self.out_bias).view(n, width)
        scores = torch.baddbmm(self.score_bias, h.view(clips, self.group, width), self.score_weight)
        weights = scores.view(clips, self.group, self.heads, -1).softmax(-1)
        return torch.baddbmm(self.out_bias, weights.view(clips, self.group, -1), self.value_out).view(n, width)


@dataclass
class LayerPlan:
    self_norm: tuple
    qkv: PackedLinear          # self-attention q, k, v in one product
    self_out: PackedLinear
    cross_norm: tuple
    cross_q: PackedLinear
    cross_out: PackedLinear
    ffn_norm: tuple
    ffn_in: PackedLinear
    ffn_out: PackedLinear


def _graph_cache():
    from ..graphs import GraphCache  # eacap.graphs builds on the decoder
    return GraphCache()


@dataclass
class StepPlan:
    """A decoder's weights arranged for `step`; cached on the decoder until its weights change."""
    embed: torch.Tensor        # embedding table already scaled by sqrt(width)
    layers: list[LayerPlan]
    norm: tuple
    logits: PackedLinear       # tied to the embedding
    activation: object         # the FFN's activation function
    thread_choices: dict = field(default_factory=dict)  # eacap.decoding.FasterChoice per (rows, caller's threads)
    graphs: object = field(default_factory=lambda: _graph_cache())  # captured decoding steps (eacap.graphs)

    def linears(self) -> list[PackedLinear]:
        """Every product of a step, in the order a step runs them."""
        return [linear for layer in self.layers for linear in (layer.qkv, layer.self_out, layer.cross_q,
                                                                 layer.cross_out, layer.ffn_in, layer.ffn_out)] \
            + [self.logits]

    @staticmethod
    def build(decoder: CaptionDecoder) -> "StepPlan":
        def norm(module: nn.LayerNorm) -> tuple:
            return module.weight.detach(), module.bias.detach(), module.eps

        layers = []
        for layer in decoder.layers:
            sa, ca, ffn = layer.self_attn, layer.cross_attn, layer.ffn
            qkv = PackedLinear(torch.cat([sa.q.weight, sa.kv.weight]), torch.cat([sa.q.bias, sa.kv.bias]))
            layers.append(LayerPlan(
                norm(layer.self_norm), qkv, PackedLinear(sa.out.weight, sa.out.bias),
                norm(layer.cross_norm), PackedLinear(ca.q.weight, ca.q.bias), PackedLinear(ca.out.weight, ca.out.bias),
                norm(layer.ffn_norm), PackedLinear(ffn[0].weight, ffn[0].bias),
                PackedLinear(ffn[3].weight, ffn[3].bias)))
        embed = decoder.embed.weight.detach()
        return StepPlan(embed * math.sqrt(decoder.config.width), layers, norm(decoder.norm), PackedLinear(embed),
                        activation(decoder.config.activation)[1])


@dataclass
class DecodeState:
    """One decoding call's cache: each layer's cross-attention over the clips' encoder frames (computed once and
    shared by each clip's `group` hypotheses) and every layer's self-attention keys/values, preallocated as
    [layers, 2, N, heads, max_length, head_dim] of which the first `length` positions are written. `spare` has the
    same shape: reordering gathers the written positions from one into the other, so the two take turns (`parity`
    0: `cache` holds the hypotheses, 1: `spare`). An eager decode lets `current` follow the turns; a captured or
    compiled step names its parity, so the same step traced twice, once each way round, covers every step without
    rebinding anything (a compiled loop may not). A static state (`visible_from` set, for captured steps) has
    every position counted as written."""
    plan: StepPlan
    cross: list[ProjectedCross | AbsorbedCross]
    group: int
    cache: torch.Tensor
    spare: torch.Tensor
    length: int = 0
    visible_from: torch.Tensor | None = None   # static states: positions 0 .. max_length - 1
    fresh: torch.Tensor | None = None          # static states: the last step's keys and values [layers, 2, N, H, 1, D]
    current: int = 0                           # the parity eager steps read

    def buffers(self, parity: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(the cache that holds the hypotheses at `parity`, the one a reorder writes)."""
        parity = self.current if parity is None else parity
        return (self.cache, self.spare) if parity == 0 else (self.spare, self.cache)

    def reorder(self, rows: torch.Tensor, parity: int | None = None) -> None:
        """Hypothesis i continues hypothesis rows[i] (beam search keeps the best and drops the rest). Without a
        `parity`, the turn passes to the other cache."""
        written = slice(0, self.length)
        read, write = self.buffers(parity)
        torch.index_select(read[:, :, :, :, written], 2, rows, out=write[:, :, :, :, written])
        if parity is None:
            self.current ^= 1

    def advance(self, position: torch.Tensor, rows: torch.Tensor | None = None, parity: int = 0) -> None:
        """A static step's end: its keys and values (`fresh`) written at `position`, and, with `rows` (beam search),
        hypothesis i continuing hypothesis rows[i], in one pass into the other cache of the pair; without, in
        place."""
        read, write = self.buffers(parity)
        at = (self.visible_from == position).view(1, 1, 1, 1, -1, 1)
        if rows is None:
            read.copy_(torch.where(at, self.fresh, read))
        else:
            torch.where(at, self.fresh.index_select(2, rows), read.index_select(2, rows), out=write)

    def load(self, cross: list[ProjectedCross | AbsorbedCross], share: bool = False) -> None:
        """Take the clips of `cross` (from `CaptionDecoder.cross_attention`) into this static state and forget
        every position written. By default their tensors are copied into this state's, in place (the same shapes:
        a CUDA graph reads the same memory at every replay); `share` takes `cross` itself, of any number of frames
        (compiled steps read their inputs afresh at every call). Positions not yet written are masked out of
        attention, but a masked value still meets a zero weight: memory left as it was could hold NaN, and
        0 x NaN is NaN, so the cache is zeroed."""
        if share:
            self.cross = cross
        else:
            for mine, theirs in zip(self.cross, cross):
                for a, b in zip(mine.tensors(), theirs.tensors(), strict=True):
                    if a is not b:
                        a.copy_(b)
        self.cache.zero_()
        self.current = 0
        # A static step reorders every position: those not written yet are zeros, and stay masked.
        self.length = self.cache.shape[4]
