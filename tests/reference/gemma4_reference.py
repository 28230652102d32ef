#!/usr/bin/env python3
"""Reference logits for a garnet-produced Gemma 4 GGUF, computed by transformers in float32.

Reads a GGUF whose tensors are F32 / F16 / BF16 (a small pure-Python reader below; the `gguf`
pip package is not needed), builds the matching `transformers` Gemma 4 text model
(`Gemma4TextConfig` + `Gemma4ForCausalLM`, config from the GGUF metadata, weights mapped by
name), runs it in float32 with eager attention on fixed token ids and writes:

  OUT.logits   garnet fixture (see FIXTURE FORMAT): token ids, logits [T, V], and a greedy
               continuation with the reference's top-1/top-2 gap at each step
  OUT.npy      the same logits as a numpy array [T, V] (float32)

Usage (on a machine with torch + transformers >= 5.17):
  garnet-mkmodel --preset tiny --type f32 --out tiny.gguf
  python3 tests/reference/gemma4_reference.py --gguf tiny.gguf --out tests/engine/fixtures/tiny \
      --n-tokens 64 --greedy 64 [--device cuda]

The token ids are deterministic (an LCG seeded by --seed, bos first) unless --tokens is given.

FIXTURE FORMAT (little-endian):
  char[4] "GLOG"; u32 version = 1; u32 n_tokens; u32 n_vocab;
  i32 tokens[n_tokens]; f32 logits[n_tokens * n_vocab];
  u32 n_greedy; i32 greedy[n_greedy]; f32 gap[n_greedy]   (top1 - top2 logit of each step)

Math and names: ../../../shared/docs/gemma4.md (§2 forward pass, §3.3 tensor names). Mapping:
GGUF stores ggml ne = [in, out(, experts)]; numpy/torch shapes are ne reversed, which is exactly
HF's Linear [out, in] and experts [E, 2I, H] / [E, H, I].
"""

import argparse
import json
import struct
import sys

# ---------------------------------------------------------------------------------------------
# Minimal GGUF reader (format: gemma4.md §3.1)
# ---------------------------------------------------------------------------------------------

GGUF_MAGIC = b"GGUF"
T_U8, T_I8, T_U16, T_I16, T_U32, T_I32, T_F32, T_BOOL, T_STR, T_ARR, T_U64, T_I64, T_F64 = range(13)
SCALAR_FMT = {
    T_U8: "<B", T_I8: "<b", T_U16: "<H", T_I16: "<h", T_U32: "<I", T_I32: "<i", T_F32: "<f",
    T_BOOL: "<?", T_U64: "<Q", T_I64: "<q", T_F64: "<d",
}
GGML_F32, GGML_F16, GGML_BF16 = 0, 1, 30


class GgufError(Exception):
    pass


class Gguf:
    def __init__(self, path):
        self.path = path
        with open(path, "rb") as f:
            self.buf = f.read()
        self.pos = 0
        if self.buf[:4] != GGUF_MAGIC:
            raise GgufError(f"{path}: not a GGUF file (magic {self.buf[:4]!r})")
        self.pos = 4
        self.version = self._u32()
        if self.version not in (2, 3):
            raise GgufError(f"{path}: unsupported GGUF version {self.version}")
        n_tensors = self._u64()
        n_kv = self._u64()
        self.kv = {}
        for _ in range(n_kv):
            key = self._str()
            vtype = self._u32()
            self.kv[key] = self._value(vtype)
        self.tensors = {}
        for _ in range(n_tensors):
            name = self._str()
            n_dims = self._u32()
            ne = [self._u64() for _ in range(n_dims)]
            ttype = self._u32()
            offset = self._u64()
            self.tensors[name] = (ne, ttype, offset)
        align = int(self.kv.get("general.alignment", 32))
        self.data_start = (self.pos + align - 1) // align * align

    def _read(self, fmt):
        size = struct.calcsize(fmt)
        if self.pos + size > len(self.buf):
            raise GgufError(f"{self.path}: truncated at offset {self.pos}")
        v = struct.unpack_from(fmt, self.buf, self.pos)[0]
        self.pos += size
        return v

    def _u32(self):
        return self._read("<I")

    def _u64(self):
        return self._read("<Q")

    def _str(self):
        n = self._u64()
        if self.pos + n > len(self.buf):
            raise GgufError(f"{self.path}: string of {n} bytes runs past the end at {self.pos}")
        s = self.buf[self.pos:self.pos + n].decode("utf-8", errors="replace")
        self.pos += n
        return s

    def _value(self, vtype):
        if vtype == T_STR:
            return self._str()
        if vtype == T_ARR:
            etype = self._u32()
            n = self._u64()
            if etype == T_STR:
                return [self._str() for _ in range(n)]
            if etype not in SCALAR_FMT:
                raise GgufError(f"{self.path}: unsupported array element type {etype}")
            fmt = SCALAR_FMT[etype]
            size = struct.calcsize(fmt)
            out = list(struct.unpack_from("<" + fmt[1] * n, self.buf, self.pos))
            self.pos += size * n
            return out
        if vtype not in SCALAR_FMT:
            raise GgufError(f"{self.path}: unsupported value type {vtype}")
        return self._read(SCALAR_FMT[vtype])

    def has(self, name):
        return name in self.tensors

    def tensor(self, name):
        """numpy float32 array with shape = ne reversed."""
        import numpy as np
        if name not in self.tensors:
            raise GgufError(f"tensor {name} missing")
        ne, ttype, offset = self.tensors[name]
        n = 1
        for d in ne:
            n *= d
        start = self.data_start + offset
        if ttype == GGML_F32:
            a = np.frombuffer(self.buf, dtype="<f4", count=n, offset=start)
        elif ttype == GGML_F16:
            a = np.frombuffer(self.buf, dtype="<f2", count=n, offset=start).astype(np.float32)
        elif ttype == GGML_BF16:
            raw = np.frombuffer(self.buf, dtype="<u2", count=n, offset=start).astype(np.uint32)
            a = (raw << 16).view(np.float32)
        else:
            raise GgufError(
                f"tensor {name} has ggml type {ttype}; the reference needs F32/F16/BF16 weights "
                "(make the model with --type f32)")
        return a.reshape(list(reversed(ne))).astype(np.float32, copy=True)


# ---------------------------------------------------------------------------------------------
# Config from metadata
# ---------------------------------------------------------------------------------------------

def per_layer(value, n_layer, key):
    if isinstance(value, list):
        if len(value) != n_layer:
            raise GgufError(f"{key}: {len(value)} entries, want {n_layer}")
        return [int(v) for v in value]
    return [int(value)] * n_layer


def build_config_dict(g):
    arch = g.kv.get("general.architecture")
    if arch != "gemma4":
        raise GgufError(f"general.architecture is {arch!r}, want 'gemma4'")
    k = lambda s: "gemma4." + s  # noqa: E731
    H = int(g.kv[k("embedding_length")])
    L = int(g.kv[k("block_count")])
    n_head = int(g.kv[k("attention.head_count")])
    kv_heads = per_layer(g.kv[k("attention.head_count_kv")], L, "head_count_kv")
    ffn = per_layer(g.kv[k("feed_forward_length")], L, "feed_forward_length")
    pattern = g.kv[k("attention.sliding_window_pattern")]
    if not isinstance(pattern, list):
        raise GgufError("attention.sliding_window_pattern: want a bool array")
    sliding = [bool(v) for v in pattern]
    if len(sliding) != L:
        raise GgufError(f"sliding_window_pattern has {len(sliding)} entries, want {L}")
    layer_types = ["sliding_attention" if s else "full_attention" for s in sliding]
    hd_full = int(g.kv[k("attention.key_length")])
    hd_swa = int(g.kv.get(k("attention.key_length_swa"), hd_full))
    n_shared = int(g.kv.get(k("attention.shared_kv_layers"), 0))
    P = int(g.kv.get(k("embedding_length_per_layer_input"), 0))
    n_expert = int(g.kv.get(k("expert_count"), 0))
    V = g.tensors["token_embd.weight"][0][1]

    swa_idx = [i for i in range(L) if sliding[i]]
    full_idx = [i for i in range(L) if not sliding[i]]
    kv_swa = kv_heads[swa_idx[0]] if swa_idx else kv_heads[0]
    kv_full = kv_heads[full_idx[0]] if full_idx else kv_swa
    for i in range(L):
        want = kv_swa if sliding[i] else kv_full
        if kv_heads[i] != want:
            raise GgufError(f"layer {i}: head_count_kv {kv_heads[i]} differs from others of its type")
    first_shared = L - n_shared
    k_eq_v = any(not g.has(f"blk.{i}.attn_v.weight") for i in full_idx if i < first_shared)
    if k_eq_v and any(g.has(f"blk.{i}.attn_v.weight") for i in full_idx if i < first_shared):
        raise GgufError("some full layers have attn_v and others not; transformers needs one rule")
    if not k_eq_v and kv_full != kv_swa:
        raise GgufError(
            f"full layers use {kv_full} KV heads and sliding layers {kv_swa} without K=V: "
            "transformers cannot express this (gemma4.md §8)")

    base_ffn = ffn[0]
    double_wide = False
    for i in range(L):
        if ffn[i] == base_ffn:
            continue
        if ffn[i] == 2 * base_ffn and i >= first_shared > 0:
            double_wide = True
            continue
        raise GgufError(f"layer {i}: feed_forward_length {ffn[i]} is neither {base_ffn} nor the "
                        "double-wide width of a KV-shared layer")
    if double_wide and any(ffn[i] != 2 * base_ffn for i in range(first_shared, L)):
        raise GgufError("double-wide MLP must cover every KV-shared layer")

    # Partial rotary factor of full layers from rope_freqs ([1]*n_rot ++ [1e30]*rest).
    rope_dims = int(g.kv.get(k("rope.dimension_count"), hd_full))
    partial = 1.0
    if g.has("rope_freqs.weight"):
        ff = g.tensor("rope_freqs.weight").reshape(-1)
        n_rot = 0
        while n_rot < len(ff) and ff[n_rot] == 1.0:
            n_rot += 1
        if not all(v > 1e20 for v in ff[n_rot:]):
            raise GgufError("rope_freqs is not of the form [1]*n ++ [1e30]*rest; "
                            f"first values {list(ff[:8])}")
        if rope_dims != hd_full or len(ff) * 2 != hd_full:
            raise GgufError(f"rope.dimension_count {rope_dims} / rope_freqs length {len(ff)} "
                            f"do not match the full head dim {hd_full}")
        partial = 2.0 * n_rot / hd_full
    elif rope_dims != hd_full:
        partial = rope_dims / hd_full

    cfg = dict(
        vocab_size=V,
        hidden_size=H,
        intermediate_size=base_ffn,
        num_hidden_layers=L,
        num_attention_heads=n_head,
        num_key_value_heads=kv_swa,
        head_dim=hd_swa,
        global_head_dim=hd_full,
        num_global_key_value_heads=kv_full,
        attention_k_eq_v=k_eq_v,
        hidden_activation="gelu_pytorch_tanh",
        max_position_embeddings=int(g.kv[k("context_length")]),
        rms_norm_eps=float(g.kv.get(k("attention.layer_norm_rms_epsilon"), 1e-6)),
        sliding_window=int(g.kv.get(k("attention.sliding_window"), 512)),
        layer_types=layer_types,
        final_logit_softcapping=(float(g.kv[k("final_logit_softcapping")])
                                 if float(g.kv.get(k("final_logit_softcapping"), 0)) > 0 else None),
        rope_parameters={
            "sliding_attention": {"rope_type": "default",
                                  "rope_theta": float(g.kv[k("rope.freq_base_swa")])},
            "full_attention": {"rope_type": "proportional", "partial_rotary_factor": partial,
                               "rope_theta": float(g.kv[k("rope.freq_base")])},
        },
        hidden_size_per_layer_input=P,
        vocab_size_per_layer_input=V,
        num_kv_shared_layers=n_shared,
        use_double_wide_mlp=double_wide,
        enable_moe_block=n_expert > 0,
        num_experts=n_expert if n_expert > 0 else None,
        top_k_experts=int(g.kv[k("expert_used_count")]) if n_expert > 0 else None,
        moe_intermediate_size=int(g.kv[k("expert_feed_forward_length")]) if n_expert > 0 else None,
        tie_word_embeddings=True,
        pad_token_id=int(g.kv.get("tokenizer.ggml.padding_token_id", 0)),
        bos_token_id=int(g.kv.get("tokenizer.ggml.bos_token_id", 2)),
        eos_token_id=int(g.kv.get("tokenizer.ggml.eos_token_id", 1)),
        use_cache=False,
    )
    return cfg


# ---------------------------------------------------------------------------------------------
# Weights: GGUF name -> HF name (gemma4.md §3.3)
# ---------------------------------------------------------------------------------------------

GLOBAL_MAP = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "per_layer_token_embd.weight": "model.embed_tokens_per_layer.weight",
    "per_layer_model_proj.weight": "model.per_layer_model_projection.weight",
    "per_layer_proj_norm.weight": "model.per_layer_projection_norm.weight",
}
BLOCK_MAP = {
    "attn_norm.weight": "input_layernorm.weight",
    "attn_q.weight": "self_attn.q_proj.weight",
    "attn_q_norm.weight": "self_attn.q_norm.weight",
    "attn_k.weight": "self_attn.k_proj.weight",
    "attn_k_norm.weight": "self_attn.k_norm.weight",
    "attn_v.weight": "self_attn.v_proj.weight",
    "attn_output.weight": "self_attn.o_proj.weight",
    "post_attention_norm.weight": "post_attention_layernorm.weight",
    "ffn_norm.weight": "pre_feedforward_layernorm.weight",
    "post_ffw_norm.weight": "post_feedforward_layernorm.weight",
    "ffn_gate.weight": "mlp.gate_proj.weight",
    "ffn_up.weight": "mlp.up_proj.weight",
    "ffn_down.weight": "mlp.down_proj.weight",
    "layer_output_scale.weight": "layer_scalar",
    "inp_gate.weight": "per_layer_input_gate.weight",
    "proj.weight": "per_layer_projection.weight",
    "post_norm.weight": "post_per_layer_input_norm.weight",
    "ffn_gate_inp.weight": "router.proj.weight",
    "ffn_gate_inp.scale": "router.scale",
    "ffn_down_exps.scale": "router.per_expert_scale",
    "pre_ffw_norm_2.weight": "pre_feedforward_layernorm_2.weight",
    "post_ffw_norm_1.weight": "post_feedforward_layernorm_1.weight",
    "post_ffw_norm_2.weight": "post_feedforward_layernorm_2.weight",
    "ffn_gate_up_exps.weight": "experts.gate_up_proj",
    "ffn_down_exps.weight": "experts.down_proj",
}
KV_ONLY = ("attn_k.weight", "attn_k_norm.weight", "attn_v.weight")


def build_state_dict(g, cfg):
    import numpy as np
    import torch
    L = cfg["num_hidden_layers"]
    first_shared = L - cfg["num_kv_shared_layers"]
    sd = {}
    used = set()
    for name in g.tensors:
        if name == "rope_freqs.weight":
            used.add(name)
            continue
        if name in GLOBAL_MAP:
            sd[GLOBAL_MAP[name]] = g.tensor(name)
            used.add(name)
            continue
        if not name.startswith("blk."):
            continue
        _, idx, suffix = name.split(".", 2)
        il = int(idx)
        if suffix in KV_ONLY and il >= first_shared:
            used.add(name)  # stray K/V of a KV-shared layer: unused by the model
            continue
        if suffix in ("ffn_gate_exps.weight", "ffn_up_exps.weight"):
            continue  # fused below
        if suffix not in BLOCK_MAP:
            continue
        sd[f"model.layers.{il}.{BLOCK_MAP[suffix]}"] = g.tensor(name)
        used.add(name)
    # Unfused expert gate/up -> gate_up_proj [E, 2I, H] (gate rows first).
    for il in range(L):
        gn, un = f"blk.{il}.ffn_gate_exps.weight", f"blk.{il}.ffn_up_exps.weight"
        if g.has(gn) and g.has(un):
            sd[f"model.layers.{il}.experts.gate_up_proj"] = np.concatenate(
                [g.tensor(gn), g.tensor(un)], axis=1)
            used.update([gn, un])
    unused = sorted(set(g.tensors) - used)
    if unused:
        print(f"warning: GGUF tensors not mapped: {unused}", file=sys.stderr)
    return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in sd.items()}


def load_model(g, cfg_dict, device):
    import torch
    from transformers.models.gemma4 import Gemma4ForCausalLM, Gemma4TextConfig
    cfg = Gemma4TextConfig(**cfg_dict)
    cfg._attn_implementation = "eager"
    # Show what transformers made of the per-layer settings.
    torch.manual_seed(0)
    model = Gemma4ForCausalLM(cfg).to(torch.float32)
    model.eval()
    sd = build_state_dict(g, cfg_dict)
    own = model.state_dict()
    problems = []
    for k, v in sd.items():
        if k not in own:
            problems.append(f"unexpected (GGUF has it, model does not): {k} {tuple(v.shape)}")
        elif tuple(own[k].shape) != tuple(v.shape):
            problems.append(f"shape mismatch {k}: GGUF {tuple(v.shape)} vs model {tuple(own[k].shape)}")
    for k in own:
        if k not in sd and k != "lm_head.weight" and not k.endswith("inv_freq") \
                and not k.endswith("embed_scale"):
            problems.append(f"missing (model has it, GGUF does not): {k} {tuple(own[k].shape)}")
    if problems:
        print("name/shape problems:\n  " + "\n  ".join(problems), file=sys.stderr)
        raise SystemExit(2)
    missing, unexpected = model.load_state_dict(sd, strict=False)
    missing = [m for m in missing if m != "lm_head.weight"]
    if unexpected or missing:
        print(f"load_state_dict: missing {missing}, unexpected {unexpected}", file=sys.stderr)
    with torch.no_grad():
        model.lm_head.weight = model.model.embed_tokens.weight  # tied output head
    for i, layer in enumerate(model.model.layers):
        att = layer.self_attn
        print(f"layer {i}: {cfg.layer_types[i]:17s} head_dim {att.head_dim} "
              f"q {att.q_proj.weight.shape[0]} shared {att.is_kv_shared_layer} "
              f"mlp {layer.mlp.intermediate_size}", file=sys.stderr)
    return model.to(device)


def make_tokens(n, vocab, seed, bos):
    x = seed & 0xFFFFFFFFFFFFFFFF
    out = [bos]
    while len(out) < n:
        x = (x * 6364136223846793005 + 1442695040888963407) & 0xFFFFFFFFFFFFFFFF
        out.append(4 + (x >> 33) % (vocab - 4))
    return out[:n]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--gguf", required=True)
    ap.add_argument("--out", required=True, help="output path prefix (writes .logits and .npy)")
    ap.add_argument("--n-tokens", type=int, default=64)
    ap.add_argument("--tokens", default="", help="comma-separated ids (overrides --n-tokens)")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--greedy", type=int, default=64, help="greedy continuation length")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()

    import numpy as np
    import torch
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False

    g = Gguf(args.gguf)
    cfg = build_config_dict(g)
    print("config:", json.dumps(cfg, default=str), file=sys.stderr)
    model = load_model(g, cfg, args.device)
    V = cfg["vocab_size"]
    if args.tokens:
        ids = [int(t) for t in args.tokens.split(",")]
    else:
        ids = make_tokens(args.n_tokens, V, args.seed, cfg["bos_token_id"])

    def forward(seq):
        with torch.no_grad():
            t = torch.tensor([seq], dtype=torch.long, device=args.device)
            return model(input_ids=t, use_cache=False).logits[0].float().cpu().numpy()

    logits = forward(ids)
    print(f"logits {logits.shape}, max |logit| {np.abs(logits).max():.4f}", file=sys.stderr)
    greedy, gaps = [], []
    seq = list(ids)
    last = logits[-1]
    for _ in range(args.greedy):
        order = np.argsort(-last, kind="stable")
        tok = int(order[0])
        greedy.append(tok)
        gaps.append(float(last[order[0]] - last[order[1]]))
        seq.append(tok)
        if len(seq) > cfg["max_position_embeddings"]:
            break
        last = forward(seq)[-1]
    np.save(args.out + ".npy", logits.astype(np.float32))
    with open(args.out + ".logits", "wb") as f:
        f.write(b"GLOG")
        f.write(struct.pack("<III", 1, len(ids), V))
        f.write(struct.pack(f"<{len(ids)}i", *ids))
        f.write(logits.astype("<f4").tobytes())
        f.write(struct.pack("<I", len(greedy)))
        f.write(struct.pack(f"<{len(greedy)}i", *greedy))
        f.write(struct.pack(f"<{len(gaps)}f", *gaps))
    print(f"wrote {args.out}.logits ({len(ids)} tokens, {len(greedy)} greedy): "
          f"greedy {greedy[:16]}...", file=sys.stderr)


if __name__ == "__main__":
    main()
