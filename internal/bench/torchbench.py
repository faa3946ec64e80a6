"""PyTorch twin of `cyclealign bench`: the same LLaMA architecture and sizes (RMSNorm, RoPE,
grouped-query attention, SwiGLU), randomly initialised, measured on the same workloads:
teacher-forced scoring, greedy decoding with a KV cache at batch B and at batch 1, and one
PRO training step (forward, loss, backward, AdamW). Prints one JSON object.

Run by `cyclealign bench --compare-torch`, or by hand:
    python3 torchbench.py '{"hidden": 256, "layers": 8, ...}'
"""
import json
import math
import os
import resource
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class RMSNorm(nn.Module):
    def __init__(self, d, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))
        self.eps = eps

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


class Block(nn.Module):
    def __init__(self, c):
        super().__init__()
        d, h, kv, hd, i = c["hidden"], c["heads"], c["kv_heads"], c["hidden"] // c["heads"], c["intermediate"]
        self.h, self.kv, self.hd = h, kv, hd
        self.q = nn.Linear(d, h * hd, bias=False)
        self.k = nn.Linear(d, kv * hd, bias=False)
        self.v = nn.Linear(d, kv * hd, bias=False)
        self.o = nn.Linear(h * hd, d, bias=False)
        self.gate = nn.Linear(d, i, bias=False)
        self.up = nn.Linear(d, i, bias=False)
        self.down = nn.Linear(i, d, bias=False)
        self.n1, self.n2 = RMSNorm(d, 1e-6), RMSNorm(d, 1e-6)

    def forward(self, x, cos, sin, past):
        b, t, _ = x.shape
        y = self.n1(x)
        q = self.q(y).view(b, t, self.h, self.hd).transpose(1, 2)
        k = self.k(y).view(b, t, self.kv, self.hd).transpose(1, 2)
        v = self.v(y).view(b, t, self.kv, self.hd).transpose(1, 2)
        q, k = q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin
        if past is not None:
            k, v = torch.cat((past[0], k), 2), torch.cat((past[1], v), 2)
        present = (k, v)
        g = self.h // self.kv
        k, v = k.repeat_interleave(g, 1), v.repeat_interleave(g, 1)
        s = q @ k.transpose(-1, -2) / math.sqrt(self.hd)
        if t > 1:
            n = k.shape[2]
            s = s.masked_fill(torch.ones(t, n, dtype=torch.bool).triu(n - t + 1), float("-inf"))
        a = (s.softmax(-1) @ v).transpose(1, 2).reshape(b, t, self.h * self.hd)
        x = x + self.o(a)
        y = self.n2(x)
        return x + self.down(F.silu(self.gate(y)) * self.up(y)), present


class LM(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.embed = nn.Embedding(c["vocab"], c["hidden"])
        self.blocks = nn.ModuleList(Block(c) for _ in range(c["layers"]))
        self.norm = RMSNorm(c["hidden"], 1e-6)
        self.head = nn.Linear(c["hidden"], c["vocab"], bias=False)
        if c.get("tied"):
            self.head.weight = self.embed.weight
        hd = c["hidden"] // c["heads"]
        self.inv = 1.0 / (10000.0 ** (torch.arange(0, hd, 2).float() / hd))
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.normal_(p, std=0.02)

    def forward(self, tokens, start=0, past=None):
        t = tokens.shape[1]
        pos = torch.arange(start, start + t).float()
        f = torch.outer(pos, self.inv)
        emb = torch.cat((f, f), -1)
        cos, sin = emb.cos(), emb.sin()
        x = self.embed(tokens)
        presents = []
        for i, blk in enumerate(self.blocks):
            x, pr = blk(x, cos, sin, None if past is None else past[i])
            presents.append(pr)
        return self.head(self.norm(x)), presents


def rate(n, fn, min_seconds=1.0, min_reps=1):
    fn()  # warm-up
    reps, t0 = 0, time.perf_counter()
    while reps < min_reps or time.perf_counter() - t0 < min_seconds:
        fn()
        reps += 1
    return n * reps / (time.perf_counter() - t0)


def decode_rate(model, c, batch, prompt_len, steps):
    tokens = torch.randint(3, c["vocab"], (batch, prompt_len))

    def run():
        with torch.no_grad():
            logits, past = model(tokens)
            nxt = logits[:, -1].argmax(-1, keepdim=True)
            for s in range(steps):
                logits, past = model(nxt, prompt_len + s, past)
                nxt = logits[:, -1].argmax(-1, keepdim=True)

    # Time the decoding steps only, as cyclealign does: subtract the prefill.
    with torch.no_grad():
        t0 = time.perf_counter()
        model(tokens)
        prefill = time.perf_counter() - t0
    run()
    t0 = time.perf_counter()
    run()
    return batch * steps / max(1e-9, time.perf_counter() - t0 - prefill)


def pro_step_rate(model, c):
    p, n, pl, rl = c["train_prompts"], c["train_candidates"], c["train_prompt_len"], c["train_reply_len"]
    tokens = torch.randint(3, c["vocab"], (p * n, pl + rl))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5, weight_decay=0.01)

    def step():
        logits, _ = model(tokens)
        logp = logits[:, :-1].log_softmax(-1).gather(-1, tokens[:, 1:, None])[..., 0]
        s = logp[:, pl - 1:].mean(-1).view(p, n)  # length-normalised response scores, best first
        loss = 0
        for k in range(n - 1):
            loss = loss + torch.logsumexp(s[:, k:], -1) - s[:, k]
        loss = (loss - 0.5 * s[:, 0]).mean()
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    return rate(p * n * (pl + rl), step, min_seconds=2.0)


def blas_library():
    with open("/proc/self/maps") as f:
        libs = {line.split()[-1] for line in f if "blas" in line.lower() and "/" in line}
    return sorted(os.path.realpath(x) for x in libs)


def main():
    c = json.loads(sys.argv[1])
    torch.set_num_threads(c.get("threads", 2))
    torch.manual_seed(1)
    model = LM(c)
    params = sum(p.numel() for p in model.parameters())
    out = {"torch": torch.__version__, "threads": torch.get_num_threads(), "params": params}
    b, t = c["batch"], c["score_len"]
    tokens = torch.randint(3, c["vocab"], (b, t))

    def score():
        with torch.no_grad():
            logits, _ = model(tokens)
            logits[:, :-1].log_softmax(-1).gather(-1, tokens[:, 1:, None])

    out["score_tokens_per_s"] = rate(b * t, score)
    out["generate_tokens_per_s"] = decode_rate(model, c, b, c["prompt_len"], c["new_tokens"])
    out["generate_batch1_tokens_per_s"] = decode_rate(model, c, 1, c["prompt_len"], c["new_tokens"])
    if c.get("train", True):
        out["train_tokens_per_s"] = pro_step_rate(model, c)
    out["blas"] = blas_library()
    out["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(out))


if __name__ == "__main__":
    main()
