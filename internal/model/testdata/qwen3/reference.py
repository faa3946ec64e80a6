"""Reference outputs for cyclealign's qwen3 description.

A tiny Qwen3 causal LM written in PyTorch from transformers' modeling_qwen3.py (Qwen3RMSNorm,
Qwen3Attention with q_norm/k_norm on the head dimension before RoPE, rotate_half RoPE, grouped-query
eager attention, Qwen3MLP, tied or untied lm_head), with random weights. It writes config.json and
model.safetensors (float32), and reference.json: per-token log-probabilities of a few sequences,
greedy continuations, and the gradient of the summed log-probabilities for some tensors.

Run with Debian's python3-torch:  /usr/bin/python3 reference.py  (in this directory)
"""
import json
import struct

import torch

torch.manual_seed(0)
CFG = {
    "architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", "vocab_size": 300, "hidden_size": 64,
    "intermediate_size": 96, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
    "head_dim": 24,  # not hidden_size / heads (16): Qwen3 states it explicitly
    "max_position_embeddings": 128, "rms_norm_eps": 1e-6, "rope_theta": 1000000.0, "attention_bias": False,
    "tie_word_embeddings": False, "hidden_act": "silu", "use_sliding_window": False, "torch_dtype": "float32",
    "bos_token_id": 1, "eos_token_id": 2,
}
D, H, KV, HD, I, V, L = (CFG[k] for k in ("hidden_size", "num_attention_heads", "num_key_value_heads", "head_dim",
                                          "intermediate_size", "vocab_size", "num_hidden_layers"))
EPS, THETA = CFG["rms_norm_eps"], CFG["rope_theta"]


def rand(*shape, std=0.08):
    return torch.randn(*shape) * std


W = {"model.embed_tokens.weight": rand(V, D), "model.norm.weight": 1 + rand(D, std=0.2), "lm_head.weight": rand(V, D)}
for l in range(L):
    p = f"model.layers.{l}."
    W[p + "input_layernorm.weight"] = 1 + rand(D, std=0.2)
    W[p + "post_attention_layernorm.weight"] = 1 + rand(D, std=0.2)
    W[p + "self_attn.q_proj.weight"] = rand(H * HD, D)
    W[p + "self_attn.k_proj.weight"] = rand(KV * HD, D)
    W[p + "self_attn.v_proj.weight"] = rand(KV * HD, D)
    W[p + "self_attn.o_proj.weight"] = rand(D, H * HD)
    W[p + "self_attn.q_norm.weight"] = 1 + rand(HD, std=0.3)
    W[p + "self_attn.k_norm.weight"] = 1 + rand(HD, std=0.3)
    W[p + "mlp.gate_proj.weight"] = rand(I, D)
    W[p + "mlp.up_proj.weight"] = rand(I, D)
    W[p + "mlp.down_proj.weight"] = rand(D, I)


def rms_norm(x, w):
    x32 = x.to(torch.float32)
    return w * (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + EPS))


def rotate_half(x):
    return torch.cat((-x[..., x.shape[-1] // 2:], x[..., : x.shape[-1] // 2]), dim=-1)


def forward(W, ids):
    """Logits [T, V] of one sequence ids [T]."""
    T = ids.shape[0]
    inv_freq = 1.0 / (THETA ** (torch.arange(0, HD, 2, dtype=torch.int64).float() / HD))
    freqs = torch.arange(T).float()[:, None] @ inv_freq[None, :]
    emb = torch.cat((freqs, freqs), dim=-1)
    cos, sin = emb.cos()[None], emb.sin()[None]  # [1, T, HD]
    mask = torch.full((T, T), float("-inf")).triu(1)
    x = W["model.embed_tokens.weight"][ids]
    for l in range(L):
        p = f"model.layers.{l}."
        h = rms_norm(x, W[p + "input_layernorm.weight"])
        q = rms_norm((h @ W[p + "self_attn.q_proj.weight"].T).view(T, H, HD), W[p + "self_attn.q_norm.weight"]).transpose(0, 1)
        k = rms_norm((h @ W[p + "self_attn.k_proj.weight"].T).view(T, KV, HD), W[p + "self_attn.k_norm.weight"]).transpose(0, 1)
        v = (h @ W[p + "self_attn.v_proj.weight"].T).view(T, KV, HD).transpose(0, 1)
        q, k = q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin
        k, v = k.repeat_interleave(H // KV, dim=0), v.repeat_interleave(H // KV, dim=0)
        att = torch.softmax(q @ k.transpose(1, 2) * HD ** -0.5 + mask, dim=-1, dtype=torch.float32)
        a = (att @ v).transpose(0, 1).reshape(T, H * HD)
        x = x + a @ W[p + "self_attn.o_proj.weight"].T
        h = rms_norm(x, W[p + "post_attention_layernorm.weight"])
        gate, up = h @ W[p + "mlp.gate_proj.weight"].T, h @ W[p + "mlp.up_proj.weight"].T
        x = x + (torch.nn.functional.silu(gate) * up) @ W[p + "mlp.down_proj.weight"].T
    return rms_norm(x, W["model.norm.weight"]) @ W["lm_head.weight"].T


def token_logprobs(W, seq):
    ids = torch.tensor(seq)
    lp = torch.log_softmax(forward(W, ids), dim=-1)
    return lp[torch.arange(len(seq) - 1), ids[1:]]


def write_safetensors(path, tensors):
    header, blobs, off = {}, [], 0
    for name in sorted(tensors):
        data = tensors[name].contiguous().to(torch.float32).numpy().tobytes()
        header[name] = {"dtype": "F32", "shape": list(tensors[name].shape), "data_offsets": [off, off + len(data)]}
        blobs.append(data)
        off += len(data)
    header["__metadata__"] = {"format": "pt"}
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


gen = torch.Generator().manual_seed(1)
seqs = [torch.randint(0, V, (n,), generator=gen).tolist() for n in (2, 7, 19, 40)]
ref = {"sequences": seqs, "logprobs": [], "greedy": [], "grad_tensors": [
    "model.layers.0.self_attn.q_norm.weight", "model.layers.0.self_attn.k_norm.weight",
    "model.layers.1.self_attn.q_proj.weight", "model.layers.1.input_layernorm.weight"]}
with torch.no_grad():
    for s in seqs:
        ref["logprobs"].append(token_logprobs(W, s).tolist())
    for s in seqs[1:3]:  # greedy decoding of 8 new tokens after a prompt
        out = list(s)
        for _ in range(8):
            out.append(int(forward(W, torch.tensor(out))[-1].argmax()))
        ref["greedy"].append({"prompt": s, "tokens": out[len(s):]})
params = {n: t.clone().requires_grad_(n in ref["grad_tensors"]) for n, t in W.items()}
total = sum(token_logprobs(params, s).sum() for s in seqs)
total.backward()
ref["grads"] = {n: params[n].grad.flatten().tolist() for n in ref["grad_tensors"]}
ref["torch"] = torch.__version__

with open("config.json", "w") as f:
    json.dump(CFG, f, indent=2)
write_safetensors("model.safetensors", W)
with open("reference.json", "w") as f:
    json.dump(ref, f)
