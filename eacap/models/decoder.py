"""The caption decoder: a pre-LN Transformer decoder over encoder frames, with tied word embeddings.

Teacher and student use this same module with different sizes. `forward` is teacher-forced training;
`start` + `step` decode one token at a time with a key/value cache (cross-attention keys and values are
computed once per clip, self-attention keys and values grow by one position per step), which is what makes
beam search cheap enough to time both models fairly through the same code.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .fast import Linear, linear


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
        return self.split(k), self.split(v)

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
        self.ffn = nn.Sequential(Linear(w, config.ffn), nn.GELU(), nn.Dropout(config.dropout), Linear(config.ffn, w))
        self.drop = nn.Dropout(config.dropout)

    def forward(self, x, memory_kv, memory_mask, self_mask=None, cache=None):
        h = self.self_norm(x)
        if cache is None:  # teacher forcing: the whole sequence at once, causal
            k, v = self.self_attn.keys_values(h)
            x = x + self.drop(self.self_attn.attend(h, k, v, self_mask, causal=self_mask is None))
        else:  # one new position: attend to everything cached so far plus itself
            k, v = self.self_attn.keys_values(h)
            if "k" in cache:
                k, v = torch.cat([cache["k"], k], dim=2), torch.cat([cache["v"], v], dim=2)
            cache["k"], cache["v"] = k, v
            x = x + self.self_attn.attend(h, k, v, None)
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

    def memory(self, frames: torch.Tensor, lengths: torch.Tensor):
        """Project encoder frames once; returns per-layer cross-attention (k, v) and the key padding mask."""
        memory = self.memory_proj(frames)
        return [layer.cross_attn.keys_values(memory) for layer in self.layers], self.memory_mask(lengths, frames.shape[1])

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

    def step(self, tokens: torch.Tensor, position: int, memory_kv, memory_mask, caches: list[dict]) -> torch.Tensor:
        """One decoding step: tokens [N, 1] at `position` -> logits [N, V]; `caches` is updated in place."""
        x = self.embed_tokens(tokens, offset=position)
        for layer, kv, cache in zip(self.layers, memory_kv, caches):
            x = layer(x, kv, memory_mask, cache=cache)
        return self.logits(x)[:, -1]
