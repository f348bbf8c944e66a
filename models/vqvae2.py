"""VQ-VAE-2 (Razavi et al., 2019) with two levels, after rosinality/vq-vae-2-pytorch.

Bottom encoder stride 4, top encoder stride 2 (latents at 1/4 and 1/8 of the input side),
codebooks updated by an exponential moving average, straight-through gradients. Two fixes
to the reference: `decay` reaches both quantisers, and the EMA counts start at 1 (the reference
starts them at 0 with the sums at the codes, so after the first batch every code it did not
pick is divided by ~eps, flies ~1e5 times further out and is never used again). Optional
`data_init` seeds the codebooks with encoder outputs of the first training batch. Images are
float NCHW in [-1, 1]; any size works (sides that are not multiples of 8 are reflect-padded
and the output cropped back).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

STRIDE = 8  # total downsampling of the top latent: every side is padded to a multiple of it


class Quantize(nn.Module):
    """Nearest-codebook quantisation of (..., dim) vectors with an EMA codebook.

    Returns (quantised vectors with straight-through gradient, commitment loss
    mean((x - sg[q])^2), code indices (...)). In training mode each call moves the codebook
    towards the mean of the vectors assigned to each code (EMA with `decay`)."""

    def __init__(self, dim: int, n_embed: int, decay: float = 0.99, eps: float = 1e-5,
                 data_init: bool = False):
        super().__init__()
        self.dim, self.n_embed, self.decay, self.eps = dim, n_embed, decay, eps
        embed = torch.randn(dim, n_embed)
        self.register_buffer("embed", embed)
        self.register_buffer("cluster_size", torch.ones(n_embed))  # embed_avg / 1 = embed
        self.register_buffer("embed_avg", embed.clone())
        # data_init: the first training batch replaces the random codebook with random inputs
        self.register_buffer("pending_init", torch.tensor(bool(data_init)))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        # Distances, codes and the EMA stay float32 when the network runs under bf16 autocast.
        with torch.autocast(x.device.type, enabled=False):
            return self._quantise(x.float())

    def _quantise(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        flat = x.reshape(-1, self.dim)
        if self.training and self.pending_init:
            self.init_from(flat.detach())
        # |x|^2 - 2 x.e + |e|^2; |x|^2 is the same for every code, so it does not change argmin
        dist = torch.addmm(self.embed.pow(2).sum(0, keepdim=True), flat, self.embed, alpha=-2)
        codes = dist.argmin(1)
        if self.training:
            self.ema_update(flat.detach(), codes)
        quantised = F.embedding(codes, self.embed.t()).view_as(x)
        commitment = (quantised.detach() - x).pow(2).mean()
        return x + (quantised - x).detach(), commitment, codes.view(x.shape[:-1])

    @torch.no_grad()
    def init_from(self, flat: torch.Tensor) -> None:
        """Codebook = n_embed vectors drawn at random from `flat` (N, dim)."""
        pick = torch.randint(len(flat), (self.n_embed,), device=flat.device)
        self.embed.copy_(flat[pick].t())
        self.embed_avg.copy_(self.embed)
        self.cluster_size.fill_(1.0)
        self.pending_init.fill_(False)

    @torch.no_grad()
    def ema_update(self, flat: torch.Tensor, codes: torch.Tensor) -> None:
        """EMA of the per-code counts and sums, then codebook = sums / Laplace-smoothed counts."""
        counts = torch.bincount(codes, minlength=self.n_embed).to(flat.dtype)
        sums = torch.zeros(self.n_embed, self.dim, dtype=flat.dtype, device=flat.device)
        sums.index_add_(0, codes, flat)
        self.cluster_size.mul_(self.decay).add_(counts, alpha=1 - self.decay)
        self.embed_avg.mul_(self.decay).add_(sums.t(), alpha=1 - self.decay)
        n = self.cluster_size.sum()
        size = (self.cluster_size + self.eps) / (n + self.n_embed * self.eps) * n
        self.embed.copy_(self.embed_avg / size.unsqueeze(0))


class ResBlock(nn.Module):
    def __init__(self, channel: int, res_channel: int):
        super().__init__()
        self.conv = nn.Sequential(
            nn.ReLU(), nn.Conv2d(channel, res_channel, 3, padding=1),
            nn.ReLU(inplace=True), nn.Conv2d(res_channel, channel, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x)


class Encoder(nn.Module):
    """(N,in,H,W) -> (N,channel,H/stride,W/stride), stride 2 or 4."""

    def __init__(self, in_channel: int, channel: int, n_res_block: int, n_res_channel: int,
                 stride: int):
        super().__init__()
        if stride == 4:
            layers = [nn.Conv2d(in_channel, channel // 2, 4, stride=2, padding=1), nn.ReLU(True),
                      nn.Conv2d(channel // 2, channel, 4, stride=2, padding=1), nn.ReLU(True),
                      nn.Conv2d(channel, channel, 3, padding=1)]
        elif stride == 2:
            layers = [nn.Conv2d(in_channel, channel // 2, 4, stride=2, padding=1), nn.ReLU(True),
                      nn.Conv2d(channel // 2, channel, 3, padding=1)]
        else:
            raise ValueError(f"encoder stride must be 2 or 4, got {stride}")
        layers += [ResBlock(channel, n_res_channel) for _ in range(n_res_block)]
        self.blocks = nn.Sequential(*layers, nn.ReLU(True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(x)


class Decoder(nn.Module):
    """(N,in,h,w) -> (N,out,h*stride,w*stride), stride 2 or 4."""

    def __init__(self, in_channel: int, out_channel: int, channel: int, n_res_block: int,
                 n_res_channel: int, stride: int):
        super().__init__()
        layers = [nn.Conv2d(in_channel, channel, 3, padding=1)]
        layers += [ResBlock(channel, n_res_channel) for _ in range(n_res_block)]
        layers.append(nn.ReLU(True))
        if stride == 4:
            layers += [nn.ConvTranspose2d(channel, channel // 2, 4, stride=2, padding=1),
                       nn.ReLU(True),
                       nn.ConvTranspose2d(channel // 2, out_channel, 4, stride=2, padding=1)]
        elif stride == 2:
            layers.append(nn.ConvTranspose2d(channel, out_channel, 4, stride=2, padding=1))
        else:
            raise ValueError(f"decoder stride must be 2 or 4, got {stride}")
        self.blocks = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(x)


class VQVAE2(nn.Module):
    """forward(x) -> (reconstruction, commitment loss (top + bottom), (top codes, bottom codes)).

    x: float (N,in_channel,H,W) in [-1, 1]; the reconstruction has the same shape. Codes are
    long tensors (N,H'/8,W'/8) and (N,H'/4,W'/4) for the input padded to H', W'."""

    def __init__(self, in_channel: int = 3, channel: int = 128, n_res_block: int = 2,
                 n_res_channel: int = 32, embed_dim: int = 64, n_embed: int = 512,
                 decay: float = 0.99, data_init: bool = False):
        super().__init__()
        self.enc_b = Encoder(in_channel, channel, n_res_block, n_res_channel, stride=4)
        self.enc_t = Encoder(channel, channel, n_res_block, n_res_channel, stride=2)
        self.quantize_conv_t = nn.Conv2d(channel, embed_dim, 1)
        self.quantize_t = Quantize(embed_dim, n_embed, decay, data_init=data_init)
        self.dec_t = Decoder(embed_dim, embed_dim, channel, n_res_block, n_res_channel, stride=2)
        self.quantize_conv_b = nn.Conv2d(embed_dim + channel, embed_dim, 1)
        self.quantize_b = Quantize(embed_dim, n_embed, decay, data_init=data_init)
        self.upsample_t = nn.ConvTranspose2d(embed_dim, embed_dim, 4, stride=2, padding=1)
        self.dec = Decoder(2 * embed_dim, in_channel, channel, n_res_block, n_res_channel, stride=4)

    def forward(self, x: torch.Tensor):
        h, w = x.shape[-2:]
        pad_h, pad_w = -h % STRIDE, -w % STRIDE
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h), mode="reflect")
        quant_t, quant_b, commitment, codes = self.encode(x)
        return self.decode(quant_t, quant_b)[..., :h, :w], commitment, codes

    def encode(self, x: torch.Tensor):
        """(N,C,H,W), sides multiples of 8 -> (quant_t, quant_b, commitment, (codes_t, codes_b))."""
        enc_b = self.enc_b(x)
        enc_t = self.enc_t(enc_b)
        quant_t, diff_t, codes_t = self.quantize_t(self.quantize_conv_t(enc_t).permute(0, 2, 3, 1))
        quant_t = quant_t.permute(0, 3, 1, 2)
        enc_b = torch.cat([self.dec_t(quant_t), enc_b], 1)
        quant_b, diff_b, codes_b = self.quantize_b(self.quantize_conv_b(enc_b).permute(0, 2, 3, 1))
        return quant_t, quant_b.permute(0, 3, 1, 2), diff_t + diff_b, (codes_t, codes_b)

    def decode(self, quant_t: torch.Tensor, quant_b: torch.Tensor) -> torch.Tensor:
        return self.dec(torch.cat([self.upsample_t(quant_t), quant_b], 1))
