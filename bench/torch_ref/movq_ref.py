"""A PyTorch reference implementation of CogVideo's MOVQDecoder3D / NewDecoder3D.

Written for this project from ../shared/spec/movq-spec.md (sections 1-8), not copied from
upstream. Module names and parameter names match the upstream state dict, so a movq weights
file loads with `load_state_dict(strict=True)`. Developer tool only: benchmarks and fixtures.
"""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


class CausalConv3d(nn.Module):
    """Causal 3D conv with the upstream pad modes, including the "constant" pad-order quirk."""

    def __init__(self, chan_in, chan_out, kernel_size, pad_mode="constant", stride=1, dilation=1):
        super().__init__()
        k = kernel_size
        self.pad_mode = pad_mode
        self.time_pad = dilation * (k - 1) + (1 - stride)
        self.height_pad = k // 2
        self.width_pad = k // 2
        self.conv = nn.Conv3d(chan_in, chan_out, k, stride=(stride, 1, 1), dilation=(dilation, 1, 1))

    def forward(self, x):
        tp, hp, wp = self.time_pad, self.height_pad, self.width_pad
        if self.pad_mode == "constant":
            # The tuple is read from the last axis: W (tp, 0), H (wp, wp), T (hp, hp).
            x = F.pad(x, (tp, 0, wp, wp, hp, hp))
        elif self.pad_mode == "first":
            x = torch.cat([x[:, :, :1]] * tp + [x], dim=2)
            x = F.pad(x, (wp, wp, hp, hp, 0, 0))
        elif self.pad_mode == "reflect":
            t = x.shape[2]
            frames = [x[:, :, i : i + 1] for i in range(min(tp, t - 1), 0, -1)]
            zeros = [torch.zeros_like(x[:, :, :1])] * (tp - len(frames))
            x = torch.cat(zeros + frames + [x], dim=2)
            x = F.pad(x, (wp, wp, hp, hp, 0, 0))
        else:
            raise ValueError(f"pad_mode {self.pad_mode}")
        return self.conv(x)


class SpatialNorm3D(nn.Module):
    def __init__(self, f_channels, zq_channels, add_conv=False):
        super().__init__()
        self.norm_layer = nn.GroupNorm(32, f_channels, eps=1e-6, affine=True)
        if add_conv:
            self.conv = CausalConv3d(zq_channels, zq_channels, 3, pad_mode="constant")
        self.add_conv = add_conv
        self.conv_y = CausalConv3d(zq_channels, f_channels, 1, pad_mode="constant")
        self.conv_b = CausalConv3d(zq_channels, f_channels, 1, pad_mode="constant")

    def forward(self, f, zq):
        tf, hf, wf = f.shape[-3:]
        if zq.shape[2] > 1:
            first = F.interpolate(zq[:, :, :1], size=(1, hf, wf), mode="nearest")
            rest = F.interpolate(zq[:, :, 1:], size=(tf - 1, hf, wf), mode="nearest")
            zq = torch.cat([first, rest], dim=2)
        else:
            zq = F.interpolate(zq, size=(tf, hf, wf), mode="nearest")
        if self.add_conv:
            zq = self.conv(zq)
        return self.norm_layer(f) * self.conv_y(zq) + self.conv_b(zq)


class ResnetBlock3D(nn.Module):
    def __init__(self, in_channels, out_channels, zq_ch, add_conv, pad_mode):
        super().__init__()
        self.norm1 = SpatialNorm3D(in_channels, zq_ch, add_conv)
        self.conv1 = CausalConv3d(in_channels, out_channels, 3, pad_mode)
        self.norm2 = SpatialNorm3D(out_channels, zq_ch, add_conv)
        self.conv2 = CausalConv3d(out_channels, out_channels, 3, pad_mode)
        if in_channels != out_channels:
            self.nin_shortcut = nn.Conv3d(in_channels, out_channels, 1)
        self.has_shortcut = in_channels != out_channels

    def forward(self, x, zq):
        h = self.conv1(F.silu(self.norm1(x, zq)))
        h = self.conv2(F.silu(self.norm2(h, zq)))
        if self.has_shortcut:
            x = self.nin_shortcut(x)
        return x + h


class AttnBlock2D(nn.Module):
    def __init__(self, c, zq_ch, add_conv):
        super().__init__()
        self.norm = SpatialNorm3D(c, zq_ch, add_conv)
        self.q = nn.Conv2d(c, c, 1)
        self.k = nn.Conv2d(c, c, 1)
        self.v = nn.Conv2d(c, c, 1)
        self.proj_out = nn.Conv2d(c, c, 1)

    def forward(self, x, zq):
        b, c, t, h, w = x.shape
        hn = self.norm(x, zq).permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w)
        q = self.q(hn).reshape(b * t, c, h * w)
        k = self.k(hn).reshape(b * t, c, h * w)
        v = self.v(hn).reshape(b * t, c, h * w)
        s = torch.bmm(q.transpose(1, 2), k) * (int(c) ** (-0.5))
        p = torch.softmax(s, dim=2)
        out = torch.bmm(v, p.transpose(1, 2)).reshape(b * t, c, h, w)
        out = self.proj_out(out).reshape(b, t, c, h, w).permute(0, 2, 1, 3, 4)
        return x + out


class Upsample3D(nn.Module):
    def __init__(self, c, with_conv, compress_time):
        super().__init__()
        self.with_conv = with_conv
        self.compress_time = compress_time
        if with_conv:
            self.conv = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x):
        b, c, t, h, w = x.shape
        if self.compress_time and t > 1:
            first = F.interpolate(x[:, :, 0], scale_factor=2.0, mode="nearest").unsqueeze(2)
            rest = F.interpolate(x[:, :, 1:], scale_factor=2.0, mode="nearest")
            x = torch.cat([first, rest], dim=2)
        else:
            x = x.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w)
            x = F.interpolate(x, scale_factor=2.0, mode="nearest")
            x = x.reshape(b, t, c, 2 * h, 2 * w).permute(0, 2, 1, 3, 4)
        if self.with_conv:
            b, c, t, h, w = x.shape
            y = x.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w)
            x = self.conv(y).reshape(b, t, c, h, w).permute(0, 2, 1, 3, 4)
        return x


class Level(nn.Module):
    pass


class Mid(nn.Module):
    pass


class Decoder3D(nn.Module):
    """MOVQDecoder3D, or NewDecoder3D when cls == "NewDecoder3D"."""

    def __init__(self, cfg):
        super().__init__()
        cls = cfg.get("class", "MOVQDecoder3D")
        ch, ch_mult = cfg["ch"], list(cfg.get("ch_mult", (1, 2, 4, 8)))
        nrb, attn_res = cfg["num_res_blocks"], list(cfg["attn_resolutions"])
        z_channels = cfg["z_channels"]
        zq_ch = cfg.get("zq_ch") or z_channels
        add_conv = cfg.get("add_conv", False)
        pm = cfg.get("pad_mode", "first")
        tcl = int(math.log2(cfg.get("temporal_compress_times", 4)))
        L = len(ch_mult)
        self.give_pre_end = cfg.get("give_pre_end", False)
        block_in = ch * ch_mult[-1]
        curr_res = cfg["resolution"] // 2 ** (L - 1)
        self.pqc = cls == "NewDecoder3D" and cfg.get("post_quant_conv", False)
        if self.pqc:
            self.post_quant_conv = CausalConv3d(zq_ch, z_channels, 3, pm)
        self.conv_in = CausalConv3d(z_channels, block_in, 3, pm)
        self.mid = Mid()
        self.mid.block_1 = ResnetBlock3D(block_in, block_in, zq_ch, add_conv, pm)
        self.mid.block_2 = ResnetBlock3D(block_in, block_in, zq_ch, add_conv, pm)
        levels = [None] * L
        for i in reversed(range(L)):
            lv = Level()
            lv.block = nn.ModuleList()
            lv.attn = nn.ModuleList()
            block_out = ch * ch_mult[i]
            for _ in range(nrb + 1):
                lv.block.append(ResnetBlock3D(block_in, block_out, zq_ch, add_conv, pm))
                block_in = block_out
                if curr_res in attn_res:
                    lv.attn.append(AttnBlock2D(block_in, zq_ch, add_conv))
            if i != 0:
                lv.upsample = Upsample3D(block_in, cfg.get("resamp_with_conv", True), i >= L - tcl)
                curr_res *= 2
            levels[i] = lv
        self.up = nn.ModuleList(levels)
        self.norm_out = SpatialNorm3D(ch * ch_mult[0], zq_ch, add_conv)
        self.conv_out = CausalConv3d(ch * ch_mult[0], cfg["out_ch"], 3, pm)

    def forward(self, z):
        zq = z
        h = self.conv_in(self.post_quant_conv(z) if self.pqc else z)
        h = self.mid.block_2(self.mid.block_1(h, zq), zq)
        for i in reversed(range(len(self.up))):
            lv = self.up[i]
            for j, blk in enumerate(lv.block):
                h = blk(h, zq)
                if len(lv.attn) > 0:
                    h = lv.attn[j](h, zq)
            if i != 0:
                h = lv.upsample(h)
        if self.give_pre_end:
            return h
        return self.conv_out(F.silu(self.norm_out(h, zq)))
