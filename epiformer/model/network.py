"""The Epiformer network: a convolutional tower, a relative-position transformer and a
pointwise head, predicting per-bin accessibility for every target.

Module and parameter names follow the original code so its ``state_dict`` loads unchanged.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from epiformer.model.config import ModelConfig

ATTENTION_MODES = ("fast", "reference")
TOWER_MODES = ("fused", "reference")
FUSED_TILE_BINS = 128          # output bins per tile of the fused tower (16,384 bp at 128 bp bins)


class Residual(nn.Module):
    """``x + module(x)``."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.module(x)


def conv_block(c_in: int, c_out: int, kernel_size: int) -> nn.Sequential:
    """BatchNorm -> GELU -> Conv1d (pre-activation)."""
    return nn.Sequential(
        nn.BatchNorm1d(c_in),
        nn.GELU(),
        nn.Conv1d(c_in, c_out, kernel_size, padding=kernel_size // 2),
    )


class ConvTower(nn.Module):
    """Stem plus ``num_cnn_layer`` blocks; each halves the length: (B, 4, L) -> (B, E, L / bin_size).

    In eval mode ``mode`` ``fused`` (the default) computes the same function faster
    (:meth:`fused`); ``reference`` runs the modules one by one, as training always does.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        channels = cfg.tower_channels
        self.stem = nn.Sequential(
            nn.Conv1d(4, channels[0], 15, padding=7),
            Residual(conv_block(channels[0], channels[0], 1)),
            nn.MaxPool1d(2),
        )
        self.tower = nn.Sequential(*[
            nn.Sequential(
                conv_block(c_in, c_out, 5),
                Residual(conv_block(c_out, c_out, 1)),
                nn.MaxPool1d(2),
            )
            for c_in, c_out in zip(channels[:-1], channels[1:])
        ])
        self.bin_size = cfg.bin_size
        self.halo_bins = -(-cfg.tower_radius // cfg.bin_size)    # tower outputs a base can reach
        self.mode = "fused"
        self.tile_bins = FUSED_TILE_BINS

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training or self.mode == "reference":
            return self.tower(self.stem(x))
        return self.fused(x)

    def fused(self, x: torch.Tensor) -> torch.Tensor:
        """The tower in eval mode, one window and ``tile_bins`` output bins at a time, so that the
        activations of a tile stay in cache. Each tile reads ``halo_bins`` more bins of input on
        either side (all that reaches its outputs; at the window's ends, the zero padding the
        whole window has), so the result equals the whole-window tower up to float rounding.
        Returns (B, E, bins) with channels-last strides: the transformer's (B, bins, E) is then a
        free transpose."""
        bin_size, halo, tile = self.bin_size, self.halo_bins, self.tile_bins
        bins = x.shape[-1] // bin_size
        if x.shape[-1] % bin_size or bins <= tile + 2 * halo:    # off the grid, or short (the incremental path's slices)
            return self.fused_tile(x)
        out = None
        for b0 in range(0, bins, tile):
            lo, hi = max(0, b0 - halo), min(bins, b0 + tile + halo)
            b1 = min(bins, b0 + tile)
            for row in range(len(x)):
                piece = self.fused_tile(x[row: row + 1, :, lo * bin_size: hi * bin_size])
                if out is None:
                    out = piece.new_empty((len(x), bins, piece.shape[1]))
                out[row, b0:b1] = piece[0, :, b0 - lo: b1 - lo].T
        return out.transpose(1, 2)

    def fused_tile(self, x: torch.Tensor) -> torch.Tensor:
        """The whole tower on (B, 4, L) in eval mode, channels-last: activations are (B, C, 1, L)
        tensors stored as (B, L, C), where oneDNN and cuDNN convolve fastest, and each BatchNorm
        is one multiply-add with its running statistics."""
        stem_conv, stem_residual, _ = self.stem
        h = _conv2d(x[:, :, None, :].contiguous(memory_format=torch.channels_last), stem_conv)
        h = F.max_pool2d(h + _fused_block(h, stem_residual.module), (1, 2))
        for block, residual, _ in self.tower:
            h = _fused_block(h, block)
            h = F.max_pool2d(h + _fused_block(h, residual.module), (1, 2))
        return h[:, :, 0, :]


def _conv2d(h: torch.Tensor, conv: nn.Conv1d) -> torch.Tensor:
    """A Conv1d applied to (B, C, 1, L) as a (1, k) Conv2d."""
    return F.conv2d(h, conv.weight[:, :, None, :], conv.bias, padding=(0, conv.padding[0]))


def _fused_block(h: torch.Tensor, block: nn.Sequential) -> torch.Tensor:
    """:func:`conv_block` (BatchNorm -> GELU -> Conv1d) in eval mode on (B, C, 1, L)."""
    norm, _, conv = block
    scale = norm.weight * torch.rsqrt(norm.running_var + norm.eps)
    shift = norm.bias - norm.running_mean * scale
    affine = torch.addcmul(shift.to(h.dtype)[:, None, None], h, scale.to(h.dtype)[:, None, None])
    return _conv2d(F.gelu(affine), conv)


def sinusoidal_encoding(max_len: int, dim: int) -> torch.Tensor:
    """(max_len, dim) table: sin on even features, cos on odd, base 10000."""
    position = torch.arange(max_len, dtype=torch.float32)[:, None]
    div_term = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    table = torch.zeros(max_len, dim)
    table[:, 0::2] = torch.sin(position * div_term)
    table[:, 1::2] = torch.cos(position * div_term)
    return table


class RelativeMultiheadAttention(nn.Module):
    """Multi-head self-attention with a learned relative-key term.

    score(i, j) = (q_i . k_j + q_i . R[i - j + E - 1]) / sqrt(head_dim), with R shared by the
    heads of the layer. Heads are concatenated; there is no output projection.
    """

    def __init__(self, embed_size: int, num_heads: int, dropout: float) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = embed_size // num_heads
        self.max_offset = embed_size - 1
        self.query = nn.Linear(embed_size, embed_size)
        self.key = nn.Linear(embed_size, embed_size)
        self.value = nn.Linear(embed_size, embed_size)
        self.distance_embedding = nn.Embedding(2 * embed_size - 1, self.head_dim)
        self.dropout = dropout
        self.mode = "fast"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, embed = x.shape
        q, k, v = (
            proj(x).view(batch, length, self.num_heads, self.head_dim).transpose(1, 2)
            for proj in (self.query, self.key, self.value)
        )
        if self.mode == "fast":
            out = self._fast(q, k, v)
        else:
            out = self._reference(q, k, v)
        return out.transpose(1, 2).reshape(batch, length, embed)

    def relative_logits(self, q: torch.Tensor) -> torch.Tensor:
        """q_i . R[i - j + E - 1] for all i, j, without building the (L, L, head_dim) tensor.

        Multiply q by the 2L-1 table rows that can occur, ordered by j - i, then read the
        (L, L) result out of the (L, 2L-1) product as a view (a relative shift): entry (i, j)
        sits at flat position i(2L-2) + j + L-1 of each head's product.
        """
        length = q.shape[-2]
        rows = self.distance_embedding.weight[self.max_offset - length + 1: self.max_offset + length]
        logits = torch.matmul(q, rows.flip(0).transpose(0, 1).to(q.dtype)).contiguous()
        if length == 1:
            return logits
        flat = logits.flatten(-2)[..., length - 1: length - 1 + length * (2 * length - 2)]
        return flat.unflatten(-1, (length, 2 * length - 2))[..., :length]

    def _fast(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        bias = self.relative_logits(q) * (self.head_dim ** -0.5)
        dropout = self.dropout if self.training else 0.0
        return F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=dropout)

    def _reference(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """The literal formula: materialise R[i - j + E - 1] as (L, L, head_dim)."""
        length = q.shape[-2]
        pos = torch.arange(length, device=q.device)
        distance = self.distance_embedding(pos[:, None] - pos[None, :] + self.max_offset).to(q.dtype)
        scores = torch.matmul(q, k.transpose(-1, -2)) + torch.einsum("bhid,ijd->bhij", q, distance)
        attn = torch.softmax(scores / math.sqrt(self.head_dim), dim=-1)
        attn = F.dropout(attn, self.dropout, self.training)
        return torch.matmul(attn, v)


class XSiLU(nn.Module):
    """x * silu(x), the feed-forward activation of the original (which calls it SwiGLU)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * F.silu(x)


class EncoderLayer(nn.Module):
    """Post-LayerNorm transformer block with relative attention."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.mha = RelativeMultiheadAttention(cfg.embed_size, cfg.num_heads, cfg.att_dropout)
        self.linear_net = nn.Sequential(
            nn.Linear(cfg.embed_size, cfg.dim_feedforward),
            nn.Dropout(cfg.enc_dropout),
            XSiLU(),
            nn.Linear(cfg.dim_feedforward, cfg.embed_size),
        )
        self.norm1 = nn.LayerNorm(cfg.embed_size)
        self.norm2 = nn.LayerNorm(cfg.embed_size)
        self.dropout = nn.Dropout(cfg.enc_dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm1(x + self.dropout(self.mha(x)))
        return self.norm2(x + self.dropout(self.linear_net(x)))


class Transformer(nn.Module):
    """Sinusoidal absolute positions plus ``num_encoder_layers`` encoder blocks on (B, bins, E)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.add_positional_encoding = cfg.add_positional_encoding
        self.register_buffer("positional_encoding",
                             sinusoidal_encoding(cfg.max_len, cfg.embed_size), persistent=False)
        self.layers = nn.ModuleList([EncoderLayer(cfg) for _ in range(cfg.num_encoder_layers)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.add_positional_encoding:
            x = x + self.positional_encoding[: x.shape[1]].to(x.dtype)
        for layer in self.layers:
            x = layer(x)
        return x


class PointwiseHead(nn.Module):
    """BatchNorm -> GELU -> Conv1d(E, 2E, 1) -> Dropout -> Linear(2E, targets) -> Dropout -> Softplus."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        width = 2 * cfg.embed_size
        self.conv = nn.Sequential(
            nn.BatchNorm1d(cfg.embed_size),
            nn.GELU(),
            nn.Conv1d(cfg.embed_size, width, 1),
            nn.Dropout(cfg.ptw_dropout),
        )
        self.linear = nn.Sequential(
            nn.Linear(width, cfg.multiout_dim),
            nn.Dropout(cfg.ptw_dropout),
            nn.Softplus(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.conv(x).transpose(1, 2)).transpose(1, 2)


class Epiformer(nn.Module):
    """(batch, 4, seq_len) encoded DNA -> (batch, targets, output bins) non-negative accessibility.

    ``target_names`` lists what each output row is; ``config`` is the :class:`ModelConfig`;
    ``uses_conservation`` says whether inputs are scaled by exp(conservation) (the original's
    ``if_cons``; checkpoints record it).
    """

    def __init__(self, config: ModelConfig, target_names: list[str] | None = None) -> None:
        super().__init__()
        self.config = config
        self.target_names = list(target_names) if target_names else [
            f"target_{i}" for i in range(config.multiout_dim)]
        if len(self.target_names) != config.multiout_dim:
            raise ValueError(f"{len(self.target_names)} target names for multiout_dim "
                             f"{config.multiout_dim}")
        self.uses_conservation = True
        self.conv = ConvTower(config)
        self.trans = Transformer(config)
        self.ptw = PointwiseHead(config)

    @property
    def attention(self) -> str:
        """``fast`` (relative shift + scaled_dot_product_attention) or ``reference`` (literal)."""
        return self.trans.layers[0].mha.mode

    @attention.setter
    def attention(self, mode: str) -> None:
        if mode not in ATTENTION_MODES:
            raise ValueError(f"attention must be one of {ATTENTION_MODES}, got {mode!r}")
        for layer in self.trans.layers:
            layer.mha.mode = mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        if x.ndim != 3 or x.shape[1] != 4 or x.shape[2] != cfg.seq_len:
            raise ValueError(f"expected input (batch, 4, {cfg.seq_len}), got {tuple(x.shape)}")
        return self.from_tower(self.conv(x))

    def from_tower(self, features: torch.Tensor) -> torch.Tensor:
        """The rest of the network after the convolutional tower: (batch, E, bins) -> outputs."""
        x = self.trans(features.transpose(1, 2)).transpose(1, 2)
        if self.config.crop_size:
            x = x[:, :, self.config.crop_size: -self.config.crop_size]
        return self.ptw(x)

    def compile_for_inference(self) -> None:
        """Compile the eval-mode forward pass with ``torch.compile``: the fused tower's tiles, the
        transformer and the head (each new input shape compiles once, tens of seconds, on first
        use). The state_dict and the outputs (up to float rounding) stay the same."""
        self.conv.fused_tile = torch.compile(self.conv.fused_tile, dynamic=False)
        self.trans.compile(dynamic=False)
        self.ptw.compile(dynamic=False)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
