#!/usr/bin/env python3
"""Peer attention timings for CompactAttention's benchmarks (shared/RESULTS.md, bench/README.md).

Times PyTorch's attention kernels on the problem the library solves for one chunked-prefill step:
queries q[B, Hq, chunk, D] against the whole KV cache k/v[B, Hkv, kv_len, D], the chunk's queries
sitting at the END of the KV (bottom-right causal alignment: query t of the chunk, at absolute
position kv_len - chunk + t, sees keys 0 .. kv_len - chunk + t), grouped-query attention
(query head h reads KV head h / (Hq / Hkv)).

Peers (--backends):
  sdpa_flash         torch SDPA forced to SDPBackend.FLASH_ATTENTION (FlashAttention-2) with
                     attn_mask=causal_lower_right(chunk, kv_len) and enable_gqa=True.
  sdpa_cudnn         torch SDPA forced to SDPBackend.CUDNN_ATTENTION. torch's dense cuDNN path has
                     no native bottom-right causal mask (is_causal=True is top-left there, and a
                     CausalBias falls back to a materialized mask when flash is disabled), so every
                     form in --cudnn-modes is timed, each one's output is checked against an fp32
                     reference of the bottom-right problem, and the fastest exact one is reported;
                     all forms, with their time or error, are kept under "alternatives".
  flex_block_sparse  torch.compile'd flex_attention with a BlockMask built from a block selection
                     (128-token blocks): a selection file from the library, or a random selection
                     with the same structure as the executor benchmark's random:F tables.

Every timed call is also run once more and checked (sampled rows of the real output against an
fp32 reference with the intended mask), and the CUDA kernels it launched are recorded, so an
entry never silently times a different problem or a different backend. Times are medians of
--reps CUDA-event-timed runs after --warmup runs, like bench/common/bench_common.cuh; a short GPU
spin before each timed run hides Python's dispatch time, so peers are timed as device time.

TFLOP/s count the attention actually computed: 4 * D * (attended (query, key) pairs) * Hq * B,
the pairs being those of bottom-right causality (bench_common.cuh's dense_pairs()), of the
non-causal problem for a non-causal fallback, or of the selected blocks for flex_block_sparse.

PyTorch is imported only when timing; `peers.py --self-test` checks the FLOP counts, selection
handling, argument parsing and JSON schema without it.
"""
from __future__ import annotations

import argparse
import gc
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable

PRESETS: dict[str, dict[str, int]] = {
    # LLaMA-3.1-8B per GPU (bench_common.cuh's kTP2 / kTP1).
    "tp2": {"batch": 8, "hq": 16, "hkv": 4, "head_dim": 128},
    "tp1": {"batch": 1, "hq": 32, "hkv": 8, "head_dim": 128},
}
BACKENDS = ("sdpa_flash", "sdpa_cudnn", "flex_block_sparse")
CUDNN_MODES = ("causal_lower_right", "is_causal", "bias", "split", "noncausal")
DTYPES = ("bf16", "fp16")
BLOCK = 128  # block size of selections and of the BlockMask (the library's Bq = Bk)

# Mask names recorded in the JSON ("mask"): the problem an entry solved.
MASK_LOWER_RIGHT = "causal_lower_right"
MASK_NONE = "none"
MASK_BLOCK_SPARSE = "block_sparse_causal_lower_right"

REQUIRED_PEER_KEYS = ("name", "batch", "hq", "hkv", "head_dim", "chunk", "kv_len")
TIMED_PEER_KEYS = ("ms", "tflops", "dtype", "mask", "gpu")


def log(msg: str) -> None:
    print(f"[peers] {msg}", flush=True)


# ------------------------------------------------------------------------------------------------
# Work counted (no torch)
# ------------------------------------------------------------------------------------------------

def causal_pairs_per_head(kv_len: int, chunk: int) -> int:
    """(query, key) pairs of one head under bottom-right causality: sum over the chunk's rows t of
    (kv_len - chunk + t + 1). Equals bench_common.cuh's dense_pairs() for one head."""
    if not 0 < chunk <= kv_len:
        raise ValueError(f"need 0 < chunk <= kv_len, got chunk={chunk}, kv_len={kv_len}")
    return chunk * (kv_len - chunk) + chunk * (chunk + 1) // 2


def noncausal_pairs_per_head(kv_len: int, chunk: int) -> int:
    """(query, key) pairs of one head when every query sees every key."""
    return chunk * kv_len


def attention_tflops(total_pairs: float, head_dim: int, ms: float) -> float:
    """TFLOP/s of 4 * D FLOPs (QK^T and PV) per attended (query, key) pair, heads included."""
    return 4.0 * head_dim * total_pairs / (ms * 1e-3) / 1e12


def tile_visible_pairs(kv_len: int, chunk: int, block: int = BLOCK):
    """Matrix V[qb, kb] (numpy int64): (query, key) pairs of query block qb (rows counted from the
    chunk's first token) and KV block kb (keys counted from position 0) that bottom-right
    causality lets attend. V == rows * keys marks a full tile, 0 < V < rows * keys a tile cut by
    the diagonal, V == 0 a tile in the future."""
    import numpy as np

    causal_pairs_per_head(kv_len, chunk)  # validates
    nqb = -(-chunk // block)
    nkb = -(-kv_len // block)
    offset = kv_len - chunk
    k0 = np.arange(nkb, dtype=np.int64) * block
    k1 = np.minimum(k0 + block, kv_len)
    out = np.zeros((nqb, nkb), dtype=np.int64)
    for qb in range(nqb):
        rows = np.arange(qb * block, min(chunk, (qb + 1) * block), dtype=np.int64)
        p = offset + rows  # absolute positions
        # pairs = sum over rows of max(0, min(k1, p + 1) - k0)
        vis = np.minimum(k1[None, :], p[:, None] + 1) - k0[None, :]
        out[qb] = np.clip(vis, 0, None).sum(axis=0)
    return out


def tile_capacity(kv_len: int, chunk: int, block: int = BLOCK):
    """Matrix C[qb, kb]: rows x keys of each tile (what V equals on full tiles)."""
    import numpy as np

    nqb = -(-chunk // block)
    nkb = -(-kv_len // block)
    rows = np.minimum(np.arange(1, nqb + 1) * block, chunk) - np.arange(nqb) * block
    keys = np.minimum(np.arange(1, nkb + 1) * block, kv_len) - np.arange(nkb) * block
    return rows[:, None].astype(np.int64) * keys[None, :].astype(np.int64)


def selection_pairs(sel, kv_len: int, chunk: int, block: int = BLOCK) -> int:
    """Attended pairs of a selection sel[B, Hq, nqb, nkb] (bool), all heads and sequences."""
    import numpy as np

    vis = tile_visible_pairs(kv_len, chunk, block)
    return int((sel.astype(np.int64) * vis[None, None]).sum())


def selection_density(sel, kv_len: int, chunk: int, block: int = BLOCK) -> float:
    """Share of the causal (query block, KV block) tiles that the selection keeps, all heads. For a
    union-layout selection this is slightly below the library's table_density(), which counts a
    group's table once for the whole chunk (the chunk's later blocks included)."""
    import numpy as np

    causal = tile_visible_pairs(kv_len, chunk, block) > 0
    kept = np.logical_and(sel, causal[None, None]).sum()
    return float(kept) / float(causal.sum() * sel.shape[0] * sel.shape[1])


# ------------------------------------------------------------------------------------------------
# Block selections (numpy)
# ------------------------------------------------------------------------------------------------

def random_union_selection(batch: int, hq: int, hkv: int, kv_len: int, chunk: int,
                           fraction: float, seed: int, block: int = BLOCK):
    """A selection shaped like the executor benchmark's random:F BlockUnion tables: per (sequence,
    KV group), the chunk's own blocks plus round(F * prefix blocks) of the earlier blocks drawn at
    random, shared by every query block and every query head of the group. Future blocks of a
    query block are removed later by causality (their visible pairs are 0)."""
    import numpy as np

    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"random selection fraction must be in [0, 1], got {fraction}")
    nqb = -(-chunk // block)
    nkb = -(-kv_len // block)
    chunk_kb = (kv_len - chunk) // block  # first KV block that holds a chunk token
    group = hq // hkv
    rng = np.random.default_rng(seed)
    sel = np.zeros((batch, hq, nqb, nkb), dtype=bool)
    keep = int(fraction * chunk_kb + 0.5)
    for b in range(batch):
        for g in range(hkv):
            row = np.zeros(nkb, dtype=bool)
            row[rng.permutation(chunk_kb)[:keep]] = True
            row[chunk_kb:] = True
            sel[b, g * group:(g + 1) * group, :, :] = row[None, None, :]
    return sel


def _expand_heads(sel, hq: int, hkv: int, what: str):
    """Broadcasts a selection given per KV group (or once for all heads) to per query head."""
    import numpy as np

    h = sel.shape[1]
    if h == hq:
        return sel
    if h == hkv:
        return np.repeat(sel, hq // hkv, axis=1)
    if h == 1:
        return np.repeat(sel, hq, axis=1)
    raise ValueError(f"{what}: head dimension {h} is neither Hq={hq}, Hkv={hkv} nor 1")


def load_selection(path: str, batch: int, hq: int, hkv: int, kv_len: int, chunk: int,
                   block: int = BLOCK):
    """Reads a block selection and returns (sel[B, Hq, nqb, nkb] bool, meta dict).

    Formats:
      .npy   bool/integer array [B, H, nqb, nkb] (H = Hq per head, Hkv per KV group, or 1),
             nonzero = selected; nqb = ceil(chunk / 128), nkb = ceil(kv_len / 128).
      .json  {"block_size": 128, "kv_len": L, "chunk": n, "method": "compact",
              "blocks": [b][h][qb] -> [kv block ids]   (per query block), or
              "blocks": [b][h]     -> [kv block ids]   (one list shared by all query blocks)}
             with h over Hq, Hkv or 1 as above; "kv_len", "chunk", "method" optional.
    Blocks in a query block's future are allowed in the file and dropped by causality.
    """
    import numpy as np

    nqb = -(-chunk // block)
    nkb = -(-kv_len // block)
    meta: dict[str, Any] = {"source": os.path.basename(path)}
    if path.endswith(".npy"):
        arr = np.load(path, allow_pickle=False)
        if arr.ndim != 4:
            raise ValueError(f"{path}: expected a 4-D array [B, H, nqb, nkb], "
                             f"got shape {arr.shape}")
        sel = arr != 0
    elif path.endswith(".json"):
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
        if not isinstance(doc, dict) or "blocks" not in doc:
            raise ValueError(f"{path}: expected an object with a 'blocks' array")
        bs = doc.get("block_size", block)
        if bs != block:
            raise ValueError(f"{path}: block_size {bs}, this script builds {block}-token blocks")
        for key, want in (("kv_len", kv_len), ("chunk", chunk)):
            if key in doc and doc[key] != want:
                raise ValueError(f"{path}: {key} {doc[key]} does not match the shape's {want}")
        if "method" in doc:
            meta["method"] = str(doc["method"])
        blocks = doc["blocks"]
        if not isinstance(blocks, list) or len(blocks) != batch:
            raise ValueError(f"{path}: 'blocks' must list {batch} sequences")
        heads = {len(x) for x in blocks if isinstance(x, list)}
        if len(heads) != 1:
            raise ValueError(f"{path}: every sequence must list the same number of heads")
        h = heads.pop()
        sel = np.zeros((batch, h, nqb, nkb), dtype=bool)
        for b, per_seq in enumerate(blocks):
            for hh, entry in enumerate(per_seq):
                if not isinstance(entry, list):
                    raise ValueError(f"{path}: blocks[{b}][{hh}] is not a list")
                per_q = all(isinstance(x, list) for x in entry) and len(entry) > 0
                lists = entry if per_q else [entry] * nqb
                if per_q and len(entry) != nqb:
                    raise ValueError(f"{path}: blocks[{b}][{hh}] lists {len(entry)} query blocks, "
                                     f"expected {nqb}")
                for qb, ids in enumerate(lists):
                    for kb in ids:
                        if not isinstance(kb, int) or isinstance(kb, bool) or not 0 <= kb < nkb:
                            raise ValueError(f"{path}: blocks[{b}][{hh}]: bad KV block id {kb!r} "
                                             f"(valid 0..{nkb - 1})")
                        sel[b, hh, qb, kb] = True
    else:
        raise ValueError(f"{path}: selection files are .npy or .json")
    if sel.shape[0] != batch or sel.shape[2] != nqb or sel.shape[3] != nkb:
        raise ValueError(f"{path}: selection shape {tuple(sel.shape)} does not match "
                         f"[B={batch}, H, nqb={nqb}, nkb={nkb}]")
    return _expand_heads(sel, hq, hkv, path), meta


def block_mask_lists(sel, kv_len: int, chunk: int, block: int = BLOCK):
    """Splits a selection into the BlockMask lists of flex_attention: (partial_num, partial_idx,
    full_num, full_idx), numpy int32, num [B, H, nqb] and idx [B, H, nqb, nkb] with the ids of
    each list first in ascending order. Full tiles need no mask_mod; partial tiles (cut by the
    diagonal) get the bottom-right causal mask_mod; future tiles are dropped."""
    import numpy as np

    vis = tile_visible_pairs(kv_len, chunk, block)
    cap = tile_capacity(kv_len, chunk, block)
    full = np.logical_and(sel, (vis == cap)[None, None])
    part = np.logical_and(sel, ((vis > 0) & (vis < cap))[None, None])

    def lists(mask):
        num = mask.sum(axis=-1).astype(np.int32)
        idx = np.argsort(~mask, axis=-1, kind="stable").astype(np.int32)
        return num, idx

    pn, pi = lists(part)
    fn, fi = lists(full)
    return pn, pi, fn, fi


# ------------------------------------------------------------------------------------------------
# Arguments and records
# ------------------------------------------------------------------------------------------------

def _int_list(text: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}")
    if not values or any(v <= 0 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def _name_list(allowed: tuple[str, ...]) -> Callable[[str], list[str]]:
    def parse(text: str) -> list[str]:
        names = [x.strip() for x in text.split(",") if x.strip()]
        bad = [x for x in names if x not in allowed]
        if bad or not names:
            raise argparse.ArgumentTypeError(f"unknown {bad or text!r}; "
                                             f"choose from {', '.join(allowed)}")
        return names
    return parse


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="peers.py",
        description="Time PyTorch attention peers (SDPA flash / cuDNN, FlexAttention block-sparse) "
                    "on CompactAttention's chunked-prefill shapes; writes a JSON list of peer "
                    "objects in the format of shared/RESULTS.md.",
        epilog="Example: PYTHONUNBUFFERED=1 python3 bench/peers.py --preset tp2 "
               "--kv-lens 32768,65536,131072 --chunk 1024 --out out/peers_tp2.json")
    shape = p.add_argument_group("shape")
    shape.add_argument("--preset", choices=sorted(PRESETS),
                       help="tp2: B=8 Hq=16 Hkv=4 D=128; tp1: B=1 Hq=32 Hkv=8 D=128")
    shape.add_argument("--batch", type=int, help="sequences B (overrides the preset)")
    shape.add_argument("--hq", type=int, help="query heads (overrides the preset)")
    shape.add_argument("--hkv", type=int, help="KV heads (overrides the preset)")
    shape.add_argument("--head-dim", type=int, help="head dim D (overrides the preset)")
    shape.add_argument("--kv-lens", type=_int_list, default=[32768, 65536, 131072],
                       help="KV lengths, chunk included (default 32768,65536,131072)")
    shape.add_argument("--chunk", type=int, default=1024,
                       help="queries per sequence (default 1024)")
    shape.add_argument("--dtype", choices=DTYPES, default="bf16",
                       help="element type (default bf16)")
    shape.add_argument("--layout", choices=("bshd", "bhsd"), default="bshd",
                       help="memory layout of q/k/v: bshd (token-major, as a projection or a paged "
                            "cache writes it; default) or bhsd (head-major contiguous)")
    run = p.add_argument_group("peers")
    run.add_argument("--backends", type=_name_list(BACKENDS), default=list(BACKENDS),
                     help=f"comma list of {', '.join(BACKENDS)} (default all)")
    run.add_argument("--cudnn-modes", type=_name_list(CUDNN_MODES),
                     default=list(CUDNN_MODES),
                     help="forms of the bottom-right problem tried on cuDNN: causal_lower_right "
                          "(CausalBias; materializes the mask per call under cuDNN), is_causal "
                          "(kept only if the check shows bottom-right semantics), bias (additive "
                          "0/-inf mask built once), split (prefix without mask + the chunk's "
                          "square causal diagonal, merged by LSE; private aten cuDNN op), "
                          "noncausal (is_causal=False: a superset problem, used only when no exact "
                          "form works, recorded with mask 'none'). Default: all")
    run.add_argument("--flex-selection", default="random:0.10",
                     help="comma list of selections for flex_block_sparse: random:F (random "
                          "union-layout blocks, fraction F of the prefix, like the executor "
                          "benchmark's random:F rows) or a .json/.npy file path; the path may "
                          "contain {preset}, {kv_len}, {chunk} (default random:0.10)")
    run.add_argument("--seed", type=int, default=2026, help="seed of inputs and random selections")
    run.add_argument("--warmup", type=int, default=3, help="untimed runs first (default 3)")
    run.add_argument("--reps", type=int, default=10,
                     help="timed runs, median reported (default 10)")
    run.add_argument("--host-lead-cycles", type=int, default=2_000_000,
                     help="GPU spin (torch.cuda._sleep cycles, ~1 ms) before each timed run so the "
                          "host's dispatch time is hidden; 0 disables (default 2000000)")
    run.add_argument("--check-tol", type=float, default=2e-2,
                     help="max relative L2 error of checked rows vs the fp32 reference "
                          "(default 2e-2)")
    run.add_argument("--no-check", action="store_true",
                     help="skip the output check (entries then carry check: null; not recommended)")
    run.add_argument("--no-kernel-names", action="store_true",
                     help="do not record the CUDA kernels launched (torch.profiler)")
    run.add_argument("--prefill-total", type=int, default=0, metavar="PROMPT",
                     help="time every chunk of a PROMPT-token prefill (kv lengths chunk, 2 chunk, "
                          "..., PROMPT; overrides --kv-lens) and write one whole-prompt record per "
                          "peer (mode 'prefill_total': ms summed over the chunks, last_chunk_ms) "
                          "instead of one record per shape")
    p.add_argument("--out", default="peers.json", help="output JSON list (default peers.json)")
    p.add_argument("--self-test", action="store_true",
                   help="check FLOP counts, selections, argument parsing and schema (no torch)")
    return p


def resolve_shape(args: argparse.Namespace) -> dict[str, Any]:
    """The (batch, hq, hkv, head_dim) to run, from --preset and/or explicit flags; raises
    ValueError with a message naming the problem."""
    base = dict(PRESETS[args.preset]) if args.preset else {}
    explicit = {"batch": args.batch, "hq": args.hq, "hkv": args.hkv, "head_dim": args.head_dim}
    overridden = False
    for key, value in explicit.items():
        if value is not None:
            overridden = overridden or base.get(key, value) != value
            base[key] = value
    missing = [k for k in explicit if k not in base]
    if missing:
        raise ValueError("give --preset or all of --batch --hq --hkv --head-dim (missing: "
                         + ", ".join("--" + m.replace("_", "-") for m in missing) + ")")
    for key in explicit:
        if base[key] <= 0:
            raise ValueError(f"--{key.replace('_', '-')} must be positive, got {base[key]}")
    if base["hq"] % base["hkv"]:
        raise ValueError(f"--hq {base['hq']} must be a multiple of --hkv {base['hkv']}")
    if args.chunk <= 0:
        raise ValueError(f"--chunk must be positive, got {args.chunk}")
    bad = [kv for kv in args.kv_lens if kv < args.chunk]
    if bad:
        raise ValueError(f"every KV length must hold the chunk ({args.chunk}); got {bad}")
    if args.warmup < 0 or args.reps < 1:
        raise ValueError("--warmup must be >= 0 and --reps >= 1")
    base["preset"] = args.preset if args.preset and not overridden else None
    return base


def base_record(name: str, shape: dict[str, Any], chunk: int, kv_len: int, dtype: str,
                gpu: str) -> dict[str, Any]:
    """The shape fields every entry carries (errors included), in RESULTS.md's order."""
    rec: dict[str, Any] = {"name": name, "batch": shape["batch"], "hq": shape["hq"],
                           "hkv": shape["hkv"], "head_dim": shape["head_dim"], "chunk": chunk,
                           "kv_len": kv_len}
    rec.update({"dtype": dtype, "gpu": gpu})
    if shape.get("preset"):
        rec["preset"] = shape["preset"]
    return rec


def validate_peer(obj: Any) -> list[str]:
    """Problems of one peer entry against the schema (empty list: valid)."""
    if not isinstance(obj, dict):
        return ["entry is not an object"]
    problems = []
    for key in REQUIRED_PEER_KEYS:
        if key not in obj:
            problems.append(f"missing '{key}'")
    if not isinstance(obj.get("name", ""), str):
        problems.append("'name' is not a string")
    for key in REQUIRED_PEER_KEYS[1:]:
        v = obj.get(key)
        if key in obj and (not isinstance(v, int) or isinstance(v, bool) or v <= 0):
            problems.append(f"'{key}' is not a positive integer: {v!r}")
    if "error" in obj:
        if not isinstance(obj["error"], str) or not obj["error"]:
            problems.append("'error' must be a non-empty string")
    else:
        for key in TIMED_PEER_KEYS:
            if key not in obj:
                problems.append(f"missing '{key}' (an entry without 'error' must be timed)")
        for key in ("ms", "tflops"):
            v = obj.get(key)
            if key in obj and (not isinstance(v, (int, float)) or isinstance(v, bool)
                               or not math.isfinite(v) or v <= 0):
                problems.append(f"'{key}' is not a positive number: {v!r}")
    return problems


def _finite(obj: Any) -> Any:
    """JSON-safe copy: non-finite floats (a NaN error of a broken form) become null."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


KEY_ORDER = REQUIRED_PEER_KEYS + ("ms", "tflops", "dtype", "mask", "gpu", "preset", "variant")


def ordered(rec: dict[str, Any]) -> dict[str, Any]:
    """Entry with RESULTS.md's keys first, in its order, then the rest as they came."""
    out = {k: rec[k] for k in KEY_ORDER if k in rec}
    out.update((k, v) for k, v in rec.items() if k not in out)
    return out


def write_json(path: str, entries: list[dict[str, Any]]) -> None:
    """Writes atomically (a crash mid-run leaves the last complete file)."""
    entries = [ordered(_finite(e)) for e in entries]
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".peers.", suffix=".json", dir=directory)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(entries, f, indent=2)
        f.write("\n")
    os.replace(tmp, path)


# ------------------------------------------------------------------------------------------------
# Timing with torch
# ------------------------------------------------------------------------------------------------

def import_torch():
    try:
        import torch  # noqa: F401
        import torch.nn.functional  # noqa: F401
    except Exception as e:  # ImportError, or a broken install
        raise SystemExit(f"peers.py: error: PyTorch is needed to time peers but could not be "
                         f"imported ({type(e).__name__}: {e}). Run it where torch is installed "
                         f"(the device machine); `peers.py --self-test` runs without torch.")
    if not torch.cuda.is_available():
        raise SystemExit("peers.py: error: torch.cuda.is_available() is False: no CUDA device.")
    return torch


class Runner:
    """Holds the inputs of one shape and times / checks callables on them."""

    def __init__(self, torch, args, shape, kv_len):
        self.torch = torch
        self.args = args
        self.shape = shape
        self.kv_len = kv_len
        self.chunk = args.chunk
        self.offset = kv_len - args.chunk
        self.group = shape["hq"] // shape["hkv"]
        self.dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float16
        self.scale = 1.0 / math.sqrt(shape["head_dim"])
        B, Hq, Hkv, D = shape["batch"], shape["hq"], shape["hkv"], shape["head_dim"]
        gen = torch.Generator(device="cuda")
        gen.manual_seed(args.seed + kv_len)

        def make(heads, seq):
            if args.layout == "bshd":  # token-major memory, viewed as [B, H, S, D]
                t = torch.randn(B, seq, heads, D, device="cuda", dtype=self.dtype, generator=gen)
                return t.transpose(1, 2)
            return torch.randn(B, heads, seq, D, device="cuda", dtype=self.dtype, generator=gen)

        self.q = make(Hq, self.chunk)
        self.k = make(Hkv, kv_len)
        self.v = make(Hkv, kv_len)
        torch.cuda.synchronize()

    def time(self, fn) -> dict[str, float]:
        torch = self.torch
        for _ in range(self.args.warmup):
            fn()
        torch.cuda.synchronize()
        start = torch.cuda.Event(enable_timing=True)
        stop = torch.cuda.Event(enable_timing=True)
        times = []
        lead = self.args.host_lead_cycles if hasattr(torch.cuda, "_sleep") else 0
        for _ in range(self.args.reps):
            if lead > 0:
                torch.cuda._sleep(lead)
            start.record()
            fn()
            stop.record()
            stop.synchronize()
            times.append(start.elapsed_time(stop))
        return {"ms": statistics.median(times), "ms_min": min(times), "ms_max": max(times)}

    def kernel_names(self, fn) -> list[str] | None:
        if self.args.no_kernel_names:
            return None
        torch = self.torch
        try:
            from torch.profiler import ProfilerActivity, profile

            with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
                fn()
                torch.cuda.synchronize()
            names: list[str] = []
            for evt in prof.events():
                if str(getattr(evt, "device_type", "")).endswith("CUDA") and evt.name not in names:
                    names.append(evt.name)
            return [n[:160] for n in names[:12]]
        except Exception as e:  # informational only
            return [f"(profiler failed: {type(e).__name__}: {e})"]

    def check(self, out, expected: str, sel=None) -> dict[str, Any] | None:
        """Relative L2 error of sampled output rows against an fp32 reference with the expected
        mask, plus the errors against the other masks (which tells what a form really computed)."""
        if self.args.no_check:
            return None
        torch = self.torch
        B, Hq = self.shape["batch"], self.shape["hq"]
        n, L = self.chunk, self.kv_len
        rows = sorted({0, 1, 2, min(127, n - 1), min(128, n - 1), n // 2, n - 2, n - 1} - {-1})
        rows = [r for r in rows if 0 <= r < n]
        samples = sorted({(0, 0), (B - 1, Hq - 1), (B // 2, Hq // 2)})
        t = torch.tensor(rows, device="cuda")
        j = torch.arange(L, device="cuda")
        masks = {"causal_lower_right": j[None, :] <= (self.offset + t)[:, None],
                 "causal_upper_left": j[None, :] <= t[:, None],
                 "none": torch.ones(len(rows), L, dtype=torch.bool, device="cuda")}
        errors: dict[str, float] = {}
        for b, h in samples:
            qh = self.q[b, h, rows].float()
            kh = self.k[b, h // self.group].float()
            vh = self.v[b, h // self.group].float()
            s = (qh @ kh.T) * self.scale
            got = out[b, h, rows].float()
            cases = dict(masks)
            if sel is not None:
                blk = torch.from_numpy(sel[b, h][[r // BLOCK for r in rows]]).to("cuda")
                keymask = blk[:, j // BLOCK]  # [rows, L]: is the key's block selected
                cases[MASK_BLOCK_SPARSE] = masks["causal_lower_right"] & keymask
            for name, m in cases.items():
                p = torch.softmax(s.masked_fill(~m, float("-inf")), dim=-1)
                ref = torch.nan_to_num(p, nan=0.0) @ vh  # a row that sees nothing outputs 0
                err = ((got - ref).norm(dim=-1) / ref.norm(dim=-1).clamp_min(1e-30)).max().item()
                errors[name] = max(errors.get(name, 0.0), err)
        passed = errors[expected] <= self.args.check_tol and math.isfinite(errors[expected])
        return {"expected": expected, "max_rel_err": errors[expected], "passed": passed,
                "rows": len(rows), "heads_sampled": [list(x) for x in samples],
                "rel_err_by_mask": {k: float(f"{v:.3g}") for k, v in errors.items()}}

    def measure(self, fn, expected: str, sel=None) -> dict[str, Any]:
        """Checks, times and lists the kernels of one callable; raises on failure."""
        out = fn()
        self.torch.cuda.synchronize()
        chk = self.check(out, expected, sel)
        del out
        res = self.time(fn)
        res["check"] = chk
        res["kernels"] = self.kernel_names(fn)
        return res


def _kv_for_gqa(runner: Runner, native_ok: bool):
    """K/V as passed to the kernel: the GQA tensors themselves, or repeated to Hq heads (done here,
    outside any timed region)."""
    if native_ok:
        return runner.k, runner.v
    g = runner.group
    return runner.k.repeat_interleave(g, dim=1), runner.v.repeat_interleave(g, dim=1)


def run_with_gqa(runner: Runner, make_fn, expected: str, sel=None) -> dict[str, Any]:
    """Runs a form with enable_gqa=True on the Hkv-head K/V; if that raises or gives a wrong output,
    again with K/V repeated to Hq heads beforehand (recorded in "gqa"). make_fn(k, v, enable_gqa)
    returns the callable. A wrong output of both is returned as it is (the caller rejects it)."""
    note = None
    failed_check = None
    last_error: Exception | None = None
    for native in (True, False):
        if not native and runner.group == 1:
            break
        try:
            k, v = _kv_for_gqa(runner, native)
            res = runner.measure(make_fn(k, v, native and runner.group > 1), expected, sel)
        except Exception as e:
            first_line = str(e).splitlines()[0][:300] if str(e) else ""
            note = note or f"enable_gqa failed: {type(e).__name__}: {first_line}"
            last_error = e
            try:
                runner.torch.cuda.synchronize()
            except Exception:
                pass
            continue
        finally:
            gc.collect()
        if runner.group == 1:
            res["gqa"] = "not needed (Hq == Hkv)"
        else:
            res["gqa"] = ("native (K/V keep their Hkv heads; enable_gqa=True where the API "
                          "takes it)" if native else
                          "K/V repeat_interleave'd to Hq heads before timing")
        if note and not native:
            res["gqa_note"] = note
        chk = res.get("check")
        if chk is not None and not chk["passed"] and native and runner.group > 1:
            failed_check = res  # maybe a head-mapping problem: try the repeated K/V
            note = f"enable_gqa gave a wrong output (rel err {chk['max_rel_err']:.3g})"
            continue
        return res
    if failed_check is not None:
        return failed_check
    assert last_error is not None
    raise last_error


def time_sdpa_flash(runner: Runner) -> dict[str, Any]:
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.nn.attention.bias import causal_lower_right

    bias = causal_lower_right(runner.chunk, runner.kv_len)

    def make(k, v, gqa):
        kw = {"enable_gqa": True} if gqa else {}
        return lambda: F.scaled_dot_product_attention(runner.q, k, v, attn_mask=bias, **kw)

    with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
        res = run_with_gqa(runner, make, MASK_LOWER_RIGHT)
    res.update(mask=MASK_LOWER_RIGHT,
               mask_impl="attn_mask=causal_lower_right(chunk, kv_len) (CausalBias: flash kernel "
                         "with its bottom-right causal mask)")
    return res


def cudnn_form(runner: Runner, mode: str):
    """(make_fn, mask, mask_impl) of one cuDNN form of the problem."""
    torch = runner.torch
    import torch.nn.functional as F
    from torch.nn.attention.bias import causal_lower_right

    n, L, off = runner.chunk, runner.kv_len, runner.offset
    q = runner.q

    if mode == "causal_lower_right":
        bias = causal_lower_right(n, L)

        def make(k, v, gqa):
            kw = {"enable_gqa": True} if gqa else {}
            return lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=bias, **kw)
        return make, MASK_LOWER_RIGHT, ("attn_mask=causal_lower_right(chunk, kv_len); with only "
                                        "cuDNN enabled, CausalBias materializes a [chunk, kv_len] "
                                        "boolean mask on every call (inside the timed region)")
    if mode == "is_causal":
        def make(k, v, gqa):
            kw = {"enable_gqa": True} if gqa else {}
            return lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True, **kw)
        return make, MASK_LOWER_RIGHT, ("is_causal=True (accepted only because the output check "
                                        "showed bottom-right alignment)")
    if mode == "bias":
        rows = off + torch.arange(n, device="cuda")
        keep = torch.arange(L, device="cuda")[None, :] <= rows[:, None]
        add = torch.zeros(n, L, device="cuda", dtype=runner.dtype)
        add.masked_fill_(~keep, float("-inf"))
        add = add.view(1, 1, n, L)
        del keep

        def make(k, v, gqa):
            kw = {"enable_gqa": True} if gqa else {}
            return lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=add, **kw)
        return make, MASK_LOWER_RIGHT, ("attn_mask = additive 0/-inf bottom-right mask "
                                        "[1, 1, chunk, kv_len] built once before timing")
    if mode == "split":
        op = torch.ops.aten._scaled_dot_product_cudnn_attention

        def attend(k, v, causal):
            r = op(q, k, v, None, True, 0.0, causal, False, scale=runner.scale)
            o, lse = r[0], r[1]
            B, H = q.shape[0], q.shape[1]
            if lse.numel() != B * H * n:
                raise RuntimeError(f"unexpected cuDNN LSE shape {tuple(lse.shape)}")
            return o, lse.reshape(B, H, n, 1).float()

        def make(k, v, gqa):
            if off == 0:
                return lambda: attend(k, v, True)[0]
            kp, vp, kd, vd = k[:, :, :off], v[:, :, :off], k[:, :, off:], v[:, :, off:]

            def fn():
                o1, l1 = attend(kp, vp, False)  # every query sees the whole prefix
                o2, l2 = attend(kd, vd, True)   # square chunk x chunk block: causal either way
                m = torch.maximum(l1, l2)
                w1, w2 = torch.exp(l1 - m), torch.exp(l2 - m)
                return ((o1.float() * w1 + o2.float() * w2) / (w1 + w2)).to(q.dtype)
            return fn
        return make, MASK_LOWER_RIGHT, ("split: prefix [0, kv_len - chunk) without mask + the "
                                        "chunk's own square causal block, two calls of the private "
                                        "aten._scaled_dot_product_cudnn_attention with LSE, merged "
                                        "by an unfused log-sum-exp combine (inside the timed "
                                        "region)")
    if mode == "noncausal":
        def make(k, v, gqa):
            kw = {"enable_gqa": True} if gqa else {}
            return lambda: F.scaled_dot_product_attention(q, k, v, is_causal=False, **kw)
        return make, MASK_NONE, ("is_causal=False: every query sees all kv_len keys, a superset "
                                 "of the bottom-right problem (chunk*(chunk-1)/2 extra pairs per "
                                 "head)")
    raise ValueError(mode)


def time_sdpa_cudnn(runner: Runner) -> dict[str, Any]:
    from torch.nn.attention import SDPBackend, sdpa_kernel

    alternatives = []
    for mode in runner.args.cudnn_modes:
        alt: dict[str, Any] = {"mode": mode}
        try:
            make, mask, impl = cudnn_form(runner, mode)
            alt.update(mask=mask, mask_impl=impl)
            expected = MASK_LOWER_RIGHT if mask == MASK_LOWER_RIGHT else MASK_NONE
            with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
                res = run_with_gqa(runner, make, expected)
            alt.update(res)
            chk = res.get("check")
            if chk is not None and not chk["passed"]:
                worst = chk["rel_err_by_mask"]
                alt["rejected"] = (f"output does not match the {expected} reference "
                                   f"(rel err by mask: {worst})")
            elif chk is None and mode == "is_causal":
                alt["rejected"] = "its causal alignment cannot be verified with --no-check"
        except Exception as e:
            alt["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:400] if str(e) else ''}"
        finally:
            gc.collect()
            runner.torch.cuda.empty_cache()
        status = (f"{alt['ms']:.3f} ms" if "ms" in alt else "error") + (
            " (rejected)" if "rejected" in alt else "")
        log(f"    cudnn form {mode}: {status}")
        alternatives.append(alt)

    def ok(a, mask):
        return "ms" in a and "rejected" not in a and "error" not in a and a.get("mask") == mask

    exact = [a for a in alternatives if ok(a, MASK_LOWER_RIGHT)]
    pool = exact or [a for a in alternatives if ok(a, MASK_NONE)]
    if not pool:
        raise RuntimeError("no cuDNN form ran and passed the check: " + "; ".join(
            f"{a['mode']}: {a.get('error') or a.get('rejected')}" for a in alternatives))
    best = dict(min(pool, key=lambda a: a["ms"]))
    if not exact:
        best["note"] = ("no exact bottom-right form worked on cuDNN; timed is_causal=False over "
                        "the whole KV instead (a superset problem, mask 'none')")
    best["alternatives"] = [{k: v for k, v in a.items() if k not in ("kernels",)}
                            for a in alternatives]
    best.pop("mode", None)
    best["cudnn_form"] = min(pool, key=lambda a: a["ms"])["mode"]
    return best


_COMPILED_FLEX = None


def time_flex(runner: Runner, sel, label: str) -> dict[str, Any]:
    global _COMPILED_FLEX
    torch = runner.torch
    from torch.nn.attention.flex_attention import BlockMask, flex_attention

    if _COMPILED_FLEX is None:
        _COMPILED_FLEX = torch.compile(flex_attention, dynamic=False)
    off = runner.offset
    pn, pi, fn_, fi = block_mask_lists(sel, runner.kv_len, runner.chunk)

    def causal_mod(b, h, q_idx, kv_idx):
        return kv_idx <= q_idx + off

    dev = [torch.from_numpy(x).to("cuda") for x in (pn, pi, fn_, fi)]
    kwargs = dict(BLOCK_SIZE=BLOCK, mask_mod=causal_mod, seq_lengths=(runner.chunk, runner.kv_len))
    try:
        bm = BlockMask.from_kv_blocks(dev[0], dev[1], dev[2], dev[3], **kwargs)
    except TypeError:  # releases without seq_lengths
        kwargs.pop("seq_lengths")
        bm = BlockMask.from_kv_blocks(dev[0], dev[1], dev[2], dev[3], **kwargs)

    def make(k, v, gqa):
        kw = {"enable_gqa": True} if gqa else {}
        return lambda: _COMPILED_FLEX(runner.q, k, v, block_mask=bm, scale=runner.scale, **kw)

    t0 = time.time()
    res = run_with_gqa(runner, make, MASK_BLOCK_SPARSE, sel)
    res.update(mask=MASK_BLOCK_SPARSE, variant=label,
               mask_impl=(f"BlockMask.from_kv_blocks, {BLOCK}-token blocks: full tiles without "
                          f"mask_mod, tiles on the diagonal with kv_idx <= q_idx + kv_len - chunk; "
                          f"torch.compile(flex_attention, dynamic=False)"),
               compile_and_run_s=round(time.time() - t0, 1))
    return res


def selections_for(args, shape, kv_len):
    """(label, sel or None, meta, error) for each --flex-selection item at this shape."""
    items = [x.strip() for x in args.flex_selection.split(",") if x.strip()]
    out = []
    for item in items:
        try:
            if item.startswith("random:"):
                frac = float(item.split(":", 1)[1])
                label = f"random:{frac:.2f}"
                sel = random_union_selection(shape["batch"], shape["hq"], shape["hkv"], kv_len,
                                             args.chunk, frac, args.seed + 7)
                meta = {"selection": f"random union layout (per sequence x KV group, shared by "
                                     f"query blocks), prefix fraction {frac}, seed {args.seed + 7}"}
            else:
                path = item.format(preset=shape.get("preset") or "custom", kv_len=kv_len,
                                   chunk=args.chunk)
                if not os.path.exists(path):
                    out.append((item, None, {}, f"selection file {path} not found"))
                    continue
                sel, meta = load_selection(path, shape["batch"], shape["hq"], shape["hkv"],
                                           kv_len, args.chunk)
                label = meta.get("method", os.path.splitext(os.path.basename(path))[0])
                meta = {"selection": f"file {path}"}
            out.append((label, sel, meta, None))
        except Exception as e:
            out.append((item, None, {}, f"{type(e).__name__}: {e}"))
    return out


def run_peers(args: argparse.Namespace, shape: dict[str, Any]) -> int:
    torch = import_torch()
    gpu = torch.cuda.get_device_name()
    versions = {"torch": torch.__version__, "cuda": torch.version.cuda,
                "cudnn": torch.backends.cudnn.version()}
    log(f"{gpu}; torch {versions['torch']}, CUDA {versions['cuda']}, cuDNN {versions['cudnn']}")
    B, Hq, Hkv, D = shape["batch"], shape["hq"], shape["hkv"], shape["head_dim"]
    elem = 2
    entries: list[dict[str, Any]] = []
    failures = 0
    for kv_len in args.kv_lens:
        n = args.chunk
        log(f"shape {shape.get('preset') or 'custom'}: B={B} Hq={Hq} Hkv={Hkv} D={D} chunk={n} "
            f"kv_len={kv_len} {args.dtype}")
        need = elem * D * (2 * B * Hq * n + 2 * B * Hkv * kv_len)
        free, _total = torch.cuda.mem_get_info()
        runner = None
        shape_error = None
        if need > 0.9 * free:
            shape_error = (f"inputs need {need / 2**30:.2f} GiB, only {free / 2**30:.2f} GiB free: "
                           f"skipped")
        else:
            try:
                runner = Runner(torch, args, shape, kv_len)
            except Exception as e:
                shape_error = f"allocating inputs failed: {type(e).__name__}: {e}"
        causal = causal_pairs_per_head(kv_len, n) * Hq * B
        full = noncausal_pairs_per_head(kv_len, n) * Hq * B

        jobs: list[tuple[str, Callable[[], dict[str, Any]], Any, str | None]] = []
        if "sdpa_flash" in args.backends:
            jobs.append(("sdpa_flash", lambda: time_sdpa_flash(runner), None, None))
        if "sdpa_cudnn" in args.backends:
            jobs.append(("sdpa_cudnn", lambda: time_sdpa_cudnn(runner), None, None))
        if "flex_block_sparse" in args.backends:
            for label, sel, meta, err in selections_for(args, shape, kv_len):
                jobs.append(("flex_block_sparse",
                             (lambda sel=sel, label=label: time_flex(runner, sel, label)),
                             (label, sel, meta), err))

        for name, job, flex, pre_error in jobs:
            rec = base_record(name, shape, n, kv_len, args.dtype, gpu)
            rec["versions"] = versions
            if flex is not None:
                rec["variant"] = flex[0]
                rec.update(flex[2])
            error = shape_error or pre_error
            if error is None:
                try:
                    res = job()
                except Exception as e:
                    msg = str(e).splitlines()[0][:500] if str(e) else ""
                    error = f"{type(e).__name__}: {msg}"
                    if isinstance(e, torch.cuda.OutOfMemoryError):
                        error = "does not fit in memory: " + error
            if error is not None:
                rec["error"] = error
                failures += 1
                log(f"  {name}{' ' + rec.get('variant', '') if flex else ''}: ERROR {error}")
            else:
                if flex is not None:
                    pairs = selection_pairs(flex[1], kv_len, n)
                    rec["density"] = round(selection_density(flex[1], kv_len, n), 6)
                else:
                    pairs = causal if res["mask"] == MASK_LOWER_RIGHT else full
                rec["ms"] = res.pop("ms")
                rec["tflops"] = attention_tflops(pairs, D, rec["ms"])
                rec["mask"] = res.pop("mask")
                rec["pairs"] = pairs
                rec["warmup"], rec["reps"] = args.warmup, args.reps
                for key in ("mask_impl", "gqa", "gqa_note", "note", "cudnn_form", "ms_min",
                            "ms_max", "check", "kernels", "alternatives", "compile_and_run_s",
                            "variant"):
                    if key in res:
                        rec[key] = res[key]
                chk = rec.get("check")
                chk_txt = (f"check rel err {chk['max_rel_err']:.2g}" if chk else "unchecked")
                log(f"  {name}{' ' + rec.get('variant', '') if flex else ''}: {rec['ms']:.3f} ms, "
                    f"{rec['tflops']:.0f} TFLOP/s, mask {rec['mask']}, {chk_txt}")
                if chk is not None and not chk["passed"]:
                    # The chosen form must have passed; a failure here means a bug in this script.
                    rec = {k: v for k, v in rec.items() if k not in ("ms", "tflops")}
                    rec["error"] = f"output check failed: {chk}"
                    failures += 1
            entries.append(rec)
            gc.collect()
            torch.cuda.empty_cache()
        runner = None  # frees this shape's inputs before the next one
        gc.collect()
        torch.cuda.empty_cache()
        write_json(args.out, entries)
    log(f"wrote {len(entries)} entries ({failures} with errors) to {args.out}")
    return 0


# ------------------------------------------------------------------------------------------------
# Self-test (no torch)
# ------------------------------------------------------------------------------------------------

def self_test() -> int:
    try:
        import numpy as np
    except ImportError:
        raise SystemExit(f"peers.py: error: --self-test needs numpy, which {sys.executable} "
                         f"cannot import")

    def brute_pairs(kv_len, chunk):
        return sum(kv_len - chunk + t + 1 for t in range(chunk))

    # 1. Dense pair counts: brute force and bench_common.cuh's formula.
    for kv_len, chunk in [(1, 1), (5, 3), (300, 300), (1000, 128), (4097, 1000), (131072, 1024)]:
        p = causal_pairs_per_head(kv_len, chunk)
        assert p == brute_pairs(kv_len, chunk), (kv_len, chunk)
        bench_common = (kv_len - chunk + 1 + kv_len) * 0.5 * chunk  # dense_pairs(), one head
        assert abs(p - bench_common) < 1e-6 * p, (p, bench_common)
    assert noncausal_pairs_per_head(10, 4) == 40
    tf = attention_tflops(causal_pairs_per_head(131072, 1024) * 16 * 8, 128, 25.0)
    expected = 4 * 128 * (1024 * 130048 + 1024 * 1025 // 2) * 128 / 25e-3 / 1e12
    assert abs(tf - expected) < 1e-9 * expected, (tf, expected)
    for bad in [(10, 0), (10, 11)]:
        try:
            causal_pairs_per_head(*bad)
        except ValueError:
            pass
        else:
            raise AssertionError(f"accepted {bad}")

    # 2. Tiles: all-selected equals dense; classification matches a brute-force mask.
    for kv_len, chunk, block in [(1024, 256, 128), (1000, 300, 128), (517, 517, 64),
                                 (4096, 1024, 128)]:
        vis = tile_visible_pairs(kv_len, chunk, block)
        assert vis.sum() == causal_pairs_per_head(kv_len, chunk), (kv_len, chunk)
        cap = tile_capacity(kv_len, chunk, block)
        assert cap.sum() == kv_len * chunk and (vis <= cap).all()
        dense = np.ones((1, 1) + vis.shape, dtype=bool)
        assert selection_pairs(dense, kv_len, chunk, block) == vis.sum()
        assert abs(selection_density(dense, kv_len, chunk, block) - 1.0) < 1e-12

    # 3. BlockMask lists reproduce selection & causality exactly (brute force over tokens).
    rng = np.random.default_rng(1)
    kv_len, chunk, block = 1000, 300, 128
    nqb, nkb = -(-chunk // block), -(-kv_len // block)
    sel = rng.random((2, 3, nqb, nkb)) < 0.5
    pn, pi, fn_, fi = block_mask_lists(sel, kv_len, chunk, block)
    off = kv_len - chunk
    want = np.zeros((2, 3, chunk, kv_len), dtype=bool)
    got = np.zeros_like(want)
    for b in range(2):
        for h in range(3):
            for t in range(chunk):
                for kb in range(nkb):
                    keys = np.arange(kb * block, min(kv_len, (kb + 1) * block))
                    if sel[b, h, t // block, kb]:
                        want[b, h, t, keys] = keys <= off + t
                qb = t // block
                for kb in fi[b, h, qb, :fn_[b, h, qb]]:
                    keys = np.arange(kb * block, min(kv_len, (kb + 1) * block))
                    assert (keys <= off + t).all() or t // block != qb
                    got[b, h, t, keys] = True
                for kb in pi[b, h, qb, :pn[b, h, qb]]:
                    keys = np.arange(kb * block, min(kv_len, (kb + 1) * block))
                    got[b, h, t, keys] = keys <= off + t
            for qb in range(nqb):  # ascending ids, no overlap between full and partial
                f = list(fi[b, h, qb, :fn_[b, h, qb]])
                p = list(pi[b, h, qb, :pn[b, h, qb]])
                assert f == sorted(f) and p == sorted(p) and not set(f) & set(p)
    assert (want == got).all(), "BlockMask lists disagree with selection + causality"
    assert selection_pairs(sel, kv_len, chunk, block) == int(want.sum())

    # 4. Random union selection: structure of the executor benchmark's random:F tables.
    sel = random_union_selection(2, 8, 2, 8192, 1024, 0.1, seed=3)
    chunk_kb = (8192 - 1024) // BLOCK
    assert sel.shape == (2, 8, 8, 64)
    for b in range(2):
        for g in range(2):
            grp = sel[b, g * 4:(g + 1) * 4]
            assert (grp == grp[0:1, 0:1]).all(), "not shared by the group's heads and query blocks"
            assert grp[0, 0, chunk_kb:].all()
            assert grp[0, 0, :chunk_kb].sum() == round(0.1 * chunk_kb)
    assert (random_union_selection(1, 2, 1, 4096, 1024, 1.0, 0) == True).all()  # noqa: E712

    # 5. Selection files: JSON (per query block, shared, per group) and .npy, plus malformed ones.
    with tempfile.TemporaryDirectory() as tmp:
        B, Hq, Hkv, L, n = 2, 4, 2, 1024, 256  # nqb 2, nkb 8
        per_q = {"block_size": 128, "kv_len": L, "chunk": n, "method": "compact",
                 "blocks": [[[[0, 6], [0, 7]] for _ in range(Hq)] for _ in range(B)]}
        shared = {"blocks": [[[1, 6, 7] for _ in range(Hkv)] for _ in range(B)]}
        paths = {}
        for name, doc in (("perq.json", per_q), ("shared.json", shared)):
            paths[name] = os.path.join(tmp, name)
            with open(paths[name], "w") as f:
                json.dump(doc, f)
        s1, m1 = load_selection(paths["perq.json"], B, Hq, Hkv, L, n)
        assert m1["method"] == "compact" and s1.shape == (B, Hq, 2, 8)
        assert s1[1, 3, 0].tolist() == [True] + [False] * 5 + [True, False]
        s2, _ = load_selection(paths["shared.json"], B, Hq, Hkv, L, n)
        assert s2.shape == (B, Hq, 2, 8) and s2[:, :, :, [1, 6, 7]].all()
        assert s2.sum() == B * Hq * 2 * 3
        npy = os.path.join(tmp, "sel.npy")
        np.save(npy, s2[:, ::2].astype(np.uint8))  # per KV group
        s3, _ = load_selection(npy, B, Hq, Hkv, L, n)
        assert (s3 == s2).all()
        bad_docs = {"badid.json": {"blocks": [[[99]] * Hkv] * B},
                    "badlen.json": {"kv_len": 2048, "blocks": [[[0]] * Hkv] * B},
                    "badb.json": {"blocks": [[[0]] * Hkv]},
                    "badh.json": {"blocks": [[[0]] * 3] * B},
                    "badq.json": {"blocks": [[[[0], [1], [2]]] * Hkv] * B}}
        for name, doc in bad_docs.items():
            path = os.path.join(tmp, name)
            with open(path, "w") as f:
                json.dump(doc, f)
            try:
                load_selection(path, B, Hq, Hkv, L, n)
            except ValueError:
                pass
            else:
                raise AssertionError(f"{name} accepted")

    # 6. Arguments.
    parser = build_parser()
    a = parser.parse_args(["--preset", "tp2"])
    s = resolve_shape(a)
    assert (s["batch"], s["hq"], s["hkv"], s["head_dim"], s["preset"]) == (8, 16, 4, 128, "tp2")
    assert a.kv_lens == [32768, 65536, 131072] and a.chunk == 1024 and a.backends == list(BACKENDS)
    a = parser.parse_args(["--preset", "tp1", "--kv-lens", "4096", "--backends", "sdpa_flash"])
    s = resolve_shape(a)
    assert (s["batch"], s["hq"], s["hkv"]) == (1, 32, 8) and a.backends == ["sdpa_flash"]
    a = parser.parse_args(["--preset", "tp1", "--batch", "4"])
    assert resolve_shape(a)["preset"] is None and resolve_shape(a)["batch"] == 4
    a = parser.parse_args("--batch 2 --hq 8 --hkv 2 --head-dim 64 --chunk 512".split())
    assert resolve_shape(a)["head_dim"] == 64
    for bad in ["--batch 2 --hq 8 --hkv 3 --head-dim 64", "--hq 8", "--preset tp2 --chunk 70000",
                "--preset tp2 --reps 0"]:
        try:
            resolve_shape(parser.parse_args(bad.split()))
        except ValueError:
            pass
        else:
            raise AssertionError(f"accepted {bad}")
    with open(os.devnull, "w") as null:
        saved = sys.stderr
        sys.stderr = null
        try:
            for bad in (["--backends", "sdpa_magic"], ["--kv-lens", "12,x"], ["--dtype", "fp8"]):
                try:
                    parser.parse_args(bad)
                except SystemExit as e:
                    assert e.code != 0
                else:
                    raise AssertionError(f"parsed {bad}")
        finally:
            sys.stderr = saved

    # 7. Schema: the RESULTS.md example entry, errors, malformed entries.
    shape = {"batch": 8, "hq": 16, "hkv": 4, "head_dim": 128, "preset": "tp2"}
    rec = base_record("sdpa_flash", shape, 1024, 131072, "bf16", "NVIDIA H100 80GB HBM3")
    rec.update(ms=25.3, tflops=348.0, mask=MASK_LOWER_RIGHT)
    assert validate_peer(rec) == [], validate_peer(rec)
    assert list(rec)[:7] == list(REQUIRED_PEER_KEYS)
    json.loads(json.dumps(rec))
    err = base_record("sdpa_cudnn", shape, 1024, 131072, "bf16", "x")
    err["error"] = "RuntimeError: no kernel"
    assert validate_peer(err) == []
    assert validate_peer({**rec, "ms": -1.0})
    assert validate_peer({k: v for k, v in rec.items() if k != "kv_len"})
    assert validate_peer({k: v for k, v in rec.items() if k != "tflops"})
    assert validate_peer({**rec, "batch": "8"}) and validate_peer([rec])
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "sub", "peers.json")
        write_json(out, [rec, err])
        with open(out) as f:
            assert json.load(f) == [rec, err]

    # 8. Without torch, timing fails loudly with a clear message.
    import importlib.util

    have_torch = importlib.util.find_spec("torch") is not None
    if not have_torch:
        with tempfile.TemporaryDirectory() as tmp:
            r = subprocess.run([sys.executable, os.path.abspath(__file__), "--preset", "tp2",
                                "--out", os.path.join(tmp, "p.json")],
                               capture_output=True, text=True)
            assert r.returncode != 0 and "PyTorch" in r.stderr, (r.returncode, r.stderr)
    # 9. Whole-prompt totals: sums over every chunk; a failed or missing chunk, or chunks that
    # solved different masks, give an error record instead of a total.
    def chunk_rec(name, kv, ms, mask="causal_lower_right", **extra):
        r = base_record(name, {"batch": 1, "hq": 2, "hkv": 1, "head_dim": 64}, 512, kv, "bf16",
                        "test")
        r.update(ms=ms, tflops=1.0, mask=mask, pairs=kv * 10, **extra)
        return r
    entries = [chunk_rec("sdpa_flash", kv, kv / 512.0) for kv in (512, 1024, 1536)]
    entries += [chunk_rec("sdpa_cudnn", 512, 1.0), chunk_rec("sdpa_cudnn", 1024, 1.0, mask="none"),
                chunk_rec("sdpa_cudnn", 1536, 1.0)]
    broken = chunk_rec("flex_block_sparse", 512, 1.0)
    entries += [broken, {k: v for k, v in chunk_rec("flex_block_sparse", 1024, 1.0).items()
                         if k not in ("ms", "tflops")} | {"error": "OOM"}]
    totals = {t["name"]: t for t in prefill_totals(entries, 1536, 512)}
    flash = totals["sdpa_flash"]
    assert flash["mode"] == "prefill_total" and flash["kv_len"] == 1536 and flash["chunks"] == 3
    assert flash["ms"] == 1.0 + 2.0 + 3.0 and flash["last_chunk_ms"] == 3.0, flash
    assert flash["pairs"] == (512 + 1024 + 1536) * 10 and not validate_peer(flash)
    assert "different masks" in totals["sdpa_cudnn"]["error"]
    assert "2 of 3 chunks failed or missing" in totals["flex_block_sparse"]["error"]
    assert not validate_peer(totals["flex_block_sparse"])
    print("peers.py self-test: 9 groups passed" + ("" if not have_torch else
                                                     " (torch present: no-torch path not run)"))
    return 0


def prefill_totals(entries: list[dict[str, Any]], prompt: int, chunk: int) -> list[dict[str, Any]]:
    """One 'prefill_total' record per (peer, variant) that ran every chunk of the prompt without
    error: ms and pairs summed over the chunks, the last chunk's ms, and the per-chunk record of
    the last chunk's settings (mask, form). Peers with a failed chunk get an error record."""
    want = list(range(chunk, prompt + 1, chunk))
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for e in entries:
        groups.setdefault((e["name"], e.get("variant", "")), []).append(e)
    out = []
    for (name, variant), recs in groups.items():
        by_kv = {r["kv_len"]: r for r in recs}
        last = by_kv.get(prompt, recs[-1])
        rec = {k: v for k, v in last.items()
               if k not in ("ms", "tflops", "pairs", "check", "kernels", "alternatives", "ms_min",
                            "ms_max", "error")}
        rec["mode"] = "prefill_total"
        rec["kv_len"] = prompt
        rec["chunks"] = len(want)
        bad = [kv for kv in want if kv not in by_kv or "error" in by_kv[kv]]
        masks = {by_kv[kv].get("mask") for kv in want if kv in by_kv and "error" not in by_kv[kv]}
        if bad:
            first = by_kv.get(bad[0], {})
            rec["error"] = (f"{len(bad)} of {len(want)} chunks failed or missing (first at kv "
                            f"{bad[0]}: {first.get('error', 'missing')})")
        elif len(masks) > 1:
            rec["error"] = f"chunks solved different masks {sorted(map(str, masks))}"
        else:
            rec["ms"] = sum(by_kv[kv]["ms"] for kv in want)
            rec["last_chunk_ms"] = by_kv[prompt]["ms"]
            rec["pairs"] = sum(by_kv[kv]["pairs"] for kv in want)
            rec["tflops"] = attention_tflops(rec["pairs"], rec["head_dim"], rec["ms"])
            rec["mask"] = masks.pop()
        out.append(ordered(rec))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.self_test:
        return self_test()
    try:
        shape = resolve_shape(args)
    except ValueError as e:
        parser.error(str(e))
    if args.prefill_total:
        if args.prefill_total % args.chunk:
            parser.error(f"--prefill-total {args.prefill_total} must be a multiple of --chunk "
                         f"{args.chunk}")
        args.kv_lens = list(range(args.chunk, args.prefill_total + 1, args.chunk))
    rc = run_peers(args, shape)
    if args.prefill_total:
        with open(args.out) as fh:
            entries = json.load(fh)
        totals = prefill_totals(entries, args.prefill_total, args.chunk)
        write_json(args.out, totals)
        for t in totals:
            log(f"prefill total {t['name']} {t.get('variant', '')}: "
                + (f"{t['ms']:.1f} ms over {t['chunks']} chunks" if "ms" in t else t["error"]))
    return rc


if __name__ == "__main__":
    sys.exit(main())
