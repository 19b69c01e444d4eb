#!/usr/bin/env python3
"""PNG charts from a merged results file (bench/merge_results.py output, shared/RESULTS.md).

    plot_results.py bench/results/h100-executor.json --out-dir bench/results/plots

Charts (each only when the file has data for it; titles carry the GPU name):
  speedup_vs_<baseline>.png  per preset, grouped bars over KV length: the speedup of every library
                             method (summary rows) and every peer over <baseline>, for baseline
                             sdpa_flash, sdpa_cudnn and the library's dense row;
  latency_breakdown.png      per preset, stacked bars of selection time and attention time (and
                             any rest of total_ms) of the rows that carry select_ms (chunked
                             prefill);
  tflops_vs_density.png      per preset, TFLOP/s of the attention actually computed against the
                             density of the selection (executor rows), one line per KV length and
                             page size, dense peers at density 1 and block-sparse peers at theirs.

Headless (matplotlib's Agg backend). `plot_results.py --self-test` renders synthetic data.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from typing import Any

PEER_BASELINES = ("sdpa_flash", "sdpa_cudnn")
PEER_EXACT_MASK = {"flex_block_sparse": "block_sparse_causal_lower_right"}
SHAPE_KEYS = ("batch", "hq", "hkv", "head_dim", "chunk", "kv_len")


class InputError(Exception):
    pass


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def load(path: str) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except FileNotFoundError:
        raise InputError(f"{path} does not exist")
    except (OSError, json.JSONDecodeError) as e:
        raise InputError(f"cannot read {path}: {e}")
    if not isinstance(doc, dict) or not isinstance(doc.get("summary"), list):
        raise InputError(f"{path}: no 'summary' array; pass a file written by merge_results.py")
    peers = doc.get("peers", [])
    if not isinstance(peers, list):
        raise InputError(f"{path}: 'peers' is not a list")
    for i, s in enumerate(doc["summary"]):
        if not isinstance(s, dict) or any(k not in s for k in ("method", "preset", "kv_len", "ms")):
            raise InputError(f"{path}: summary[{i}] lacks method/preset/kv_len/ms")
    return doc


def gpu_of(doc: dict[str, Any]) -> str:
    ctx = doc.get("context") if isinstance(doc.get("context"), dict) else {}
    if ctx.get("gpu"):
        return str(ctx["gpu"])
    names = {p.get("gpu") for p in doc.get("peers", []) if isinstance(p, dict) and p.get("gpu")}
    return names.pop() if len(names) == 1 else "unknown GPU"


def label_of(s: dict[str, Any], families: set[str]) -> str:
    """Series name of a summary row: method, with the family when several are plotted and the page
    when the row has one."""
    name = s["method"]
    if len(families) > 1:
        name = f"{s.get('family', '?')}/{name}"
    if "page" in s:
        name += f" p{s['page']}"
    return name


def _exact_peers(doc: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for p in doc.get("peers", []):
        if not isinstance(p, dict) or "error" in p or not isinstance(p.get("ms"), (int, float)):
            continue
        if p.get("mask", "causal_lower_right") != PEER_EXACT_MASK.get(p.get("name"),
                                                                      "causal_lower_right"):
            continue
        out.append(p)
    return out


def _best_peer(peers: list[dict[str, Any]], name: str, shape: dict[str, Any],
               variant: str | None = None) -> dict[str, Any] | None:
    c = [p for p in peers if p.get("name") == name and all(p.get(k) == shape.get(k)
                                                            for k in SHAPE_KEYS)
         and (variant is None or p.get("variant") == variant)]
    return min(c, key=lambda p: p["ms"]) if c else None


def _chunk_ms(s: dict[str, Any]) -> float | None:
    """Per-chunk time of a summary row (as merge_results.py compares rows with peers)."""
    if isinstance(s.get("last_chunk_ms"), (int, float)):
        return s["last_chunk_ms"]
    return None if "total_ms" in s else s["ms"]


def _presets(summary: list[dict[str, Any]]) -> list[str]:
    return sorted({s["preset"] for s in summary}, key=lambda p: (p != "tp2", p))


def _kv_label(kv: int) -> str:
    return f"{kv // 1024}K" if kv % 1024 == 0 else str(kv)


def _grouped_bars(ax, groups: list[int], series: dict[str, dict[int, float]], ylabel: str):
    import numpy as np

    names = list(series)
    width = 0.8 / max(1, len(names))
    x = np.arange(len(groups))
    cmap = _pyplot().get_cmap("tab20")
    for i, name in enumerate(names):
        vals = [series[name].get(g, float("nan")) for g in groups]
        bars = ax.bar(x - 0.4 + width * (i + 0.5), vals, width, label=name, color=cmap(i % 20))
        for b, v in zip(bars, vals):
            if v == v:  # not NaN
                ax.annotate(f"{v:.1f}", (b.get_x() + b.get_width() / 2, v), ha="center",
                            va="bottom", fontsize=6, rotation=90, xytext=(0, 2),
                            textcoords="offset points")
    finite = [v for d in series.values() for v in d.values() if v == v]
    if finite:
        ax.set_ylim(0, max(finite) * 1.18)
    ax.set_xticks(x, [_kv_label(g) for g in groups])
    ax.set_xlabel("KV length (chunk at the end)")
    ax.set_ylabel(ylabel)
    ax.grid(axis="y", alpha=0.3)


def plot_speedups(doc: dict[str, Any], out_dir: str, families: list[str] | None) -> list[str]:
    plt = _pyplot()
    summary = [s for s in doc["summary"] if not families or s.get("family") in families]
    fams = {s.get("family") for s in summary}
    peers = _exact_peers(doc)
    gpu = gpu_of(doc)
    written = []
    for base in PEER_BASELINES + ("dense",):
        key = f"speedup_vs_{base}"
        rows = [s for s in summary if isinstance(s.get(key), (int, float))]
        if not rows:
            continue
        presets = _presets(rows)
        fig, axes = plt.subplots(1, len(presets), figsize=(7 * len(presets), 6.0), squeeze=False)
        for ax, preset in zip(axes[0], presets):
            pr = [s for s in rows if s["preset"] == preset]
            kvs = sorted({s["kv_len"] for s in pr})
            series: dict[str, dict[int, float]] = {}
            for s in pr:
                series.setdefault(label_of(s, fams), {})[s["kv_len"]] = s[key]
            # Peers against the same baseline (peers time one chunk: the dense baseline is the
            # fastest per-chunk time of the library's dense rows at that shape).
            for kv in kvs:
                shape = next(s for s in pr if s["kv_len"] == kv)
                if base == "dense":
                    times = [_chunk_ms(s) for s in summary if s["method"] == "dense"
                             and all(s.get(k) == shape.get(k) for k in SHAPE_KEYS)]
                    times = [t for t in times if t is not None]
                    base_ms = min(times) if times else None
                else:
                    bp = _best_peer(peers, base, shape)
                    base_ms = bp["ms"] if bp else None
                if base_ms is None:
                    continue
                for p in peers:
                    if p["name"] == base or not all(p.get(k) == shape.get(k) for k in SHAPE_KEYS):
                        continue
                    name = p["name"] + (f" ({p['variant']})" if p.get("variant") else "")
                    series.setdefault("peer " + name, {})[kv] = base_ms / p["ms"]
            _grouped_bars(ax, kvs, series, f"speedup over {base} (x)")
            ax.axhline(1.0, color="black", lw=0.8)
            ax.set_title(f"{preset}")
            ax.legend(fontsize=7, ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.16))
        title = {"dense": "the library's dense kernel"}.get(base, f"torch SDPA {base}")
        fig.suptitle(f"Speedup over {title} per context length - {gpu}")
        fig.tight_layout()
        path = os.path.join(out_dir, f"speedup_vs_{base}.png")
        fig.savefig(path, dpi=130)
        plt.close(fig)
        written.append(path)
    return written


def plot_breakdown(doc: dict[str, Any], out_dir: str) -> list[str]:
    plt = _pyplot()
    rows = [s for s in doc["summary"] if isinstance(s.get("select_ms"), (int, float))]
    if not rows:
        print("plot_results.py: no rows with select_ms: latency breakdown skipped")
        return []
    import numpy as np

    fams = {s.get("family") for s in rows}
    presets = _presets(rows)
    fig, axes = plt.subplots(1, len(presets), figsize=(7 * len(presets), 4.8), squeeze=False)
    for ax, preset in zip(axes[0], presets):
        pr = sorted([s for s in rows if s["preset"] == preset],
                    key=lambda s: (s["kv_len"], s.get("chunk", 0), label_of(s, fams)))
        # Name the chunk size only where the preset has several (else it is in every label).
        chunks = {s.get("chunk") for s in pr}
        labels = [f"{label_of(s, fams)}\n{_kv_label(s['kv_len'])}"
                  + (f"/{s.get('chunk')}" if len(chunks) > 1 else "") for s in pr]
        sel = np.array([s["select_ms"] for s in pr], dtype=float)
        attn = np.array([s.get("attn_ms", s["ms"] - s["select_ms"]) for s in pr], dtype=float)
        total = np.array([s.get("total_ms", s["ms"]) for s in pr], dtype=float)
        rest = np.clip(total - sel - attn, 0, None)
        x = np.arange(len(pr))
        ax.bar(x, sel, 0.6, label="selection (select_ms)", color="tab:orange")
        ax.bar(x, attn, 0.6, bottom=sel, label="attention (attn_ms)", color="tab:blue")
        if (rest > 1e-9 * total.max()).any():
            ax.bar(x, rest, 0.6, bottom=sel + attn, label="other", color="tab:gray")
        for xi, t in zip(x, total):
            ax.annotate(f"{t:.1f}", (xi, t), ha="center", va="bottom", fontsize=7)
        ax.set_xticks(x, labels, fontsize=7, rotation=45 if len(pr) > 10 else 0,
                      ha="right" if len(pr) > 10 else "center")
        ax.set_ylabel("ms" + (" (total_ms)" if any("total_ms" in s for s in pr) else ""))
        ax.set_title(preset)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"Latency breakdown: selection vs attention - {gpu_of(doc)}")
    fig.tight_layout()
    path = os.path.join(out_dir, "latency_breakdown.png")
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return [path]


def plot_tflops_density(doc: dict[str, Any], out_dir: str) -> list[str]:
    plt = _pyplot()
    rows = [s for s in doc["summary"] if isinstance(s.get("tflops"), (int, float))
            and isinstance(s.get("density"), (int, float))]
    if not rows:
        print("plot_results.py: no rows with tflops and density: TFLOP/s vs density skipped")
        return []
    peers = _exact_peers(doc)
    presets = _presets(rows)
    fig, axes = plt.subplots(1, len(presets), figsize=(7 * len(presets), 4.8), squeeze=False)
    cmap = plt.get_cmap("viridis")
    markers = {"sdpa_flash": "*", "sdpa_cudnn": "D", "flex_block_sparse": "s"}
    for ax, preset in zip(axes[0], presets):
        pr = [s for s in rows if s["preset"] == preset]
        kvs = sorted({s["kv_len"] for s in pr})
        color = {kv: cmap(i / max(1, len(kvs) - 1) * 0.85) for i, kv in enumerate(kvs)}
        lines: dict[tuple, list[dict[str, Any]]] = {}
        for s in pr:
            lines.setdefault((s.get("family"), s["kv_len"], s.get("page")), []).append(s)
        pages = [p for (_, _, p) in lines if p is not None]
        first_page = min(pages) if pages else None
        for (fam, kv, page), pts in sorted(lines.items(), key=lambda x: str(x[0])):
            pts.sort(key=lambda s: s["density"])
            style = "-" if page in (None, first_page) else "--"
            ax.plot([s["density"] for s in pts], [s["tflops"] for s in pts], style, marker="o",
                    color=color[kv], label=f"{fam} {_kv_label(kv)}" + (f" p{page}" if page else ""))
        shapes = {tuple(s.get(k) for k in SHAPE_KEYS): s for s in pr}
        seen = set()
        for p in peers:
            key = tuple(p.get(k) for k in SHAPE_KEYS)
            if key not in shapes:
                continue
            x = p.get("density", 1.0) if p["name"] == "flex_block_sparse" else 1.0
            lab = f"peer {p['name']}"
            ax.scatter([x], [p["tflops"]], marker=markers.get(p["name"], "^"), s=60,
                       color=color[p["kv_len"]], edgecolors="black", linewidths=0.5,
                       label=None if lab in seen else lab, zorder=3)
            seen.add(lab)
        ax.set_xlabel("density (share of causal blocks computed)")
        ax.set_ylabel("TFLOP/s of the attention actually computed")
        ax.set_xlim(0, 1.05)
        ax.set_ylim(bottom=0)
        ax.set_title(preset)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"Executor throughput vs density - {gpu_of(doc)}")
    fig.tight_layout()
    path = os.path.join(out_dir, "tflops_vs_density.png")
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return [path]


def plot_all(path: str, out_dir: str, families: list[str] | None = None) -> list[str]:
    doc = load(path)
    os.makedirs(out_dir, exist_ok=True)
    written = plot_speedups(doc, out_dir, families)
    written += plot_breakdown(doc, out_dir)
    written += plot_tflops_density(doc, out_dir)
    for w in written:
        print(f"plot_results.py: wrote {w}")
    if not written:
        print("plot_results.py: nothing to plot (no speedups, select_ms or tflops in the summary)")
    return written


# ------------------------------------------------------------------------------------------------
# Self-test
# ------------------------------------------------------------------------------------------------

def _synthetic() -> dict[str, Any]:
    gpu = "NVIDIA H100 80GB HBM3"
    summary, peers = [], []
    for preset, (b, hq, hkv) in (("tp2", (8, 16, 4)), ("tp1", (1, 32, 8))):
        shape0 = {"batch": b, "hq": hq, "hkv": hkv, "head_dim": 128, "chunk": 1024}
        for kv in (32768, 65536, 131072):
            shape = dict(shape0, kv_len=kv)
            dense = kv / 131072 * (20.0 if preset == "tp2" else 5.0)
            flash, cudnn = dense * 1.2, dense * 1.1
            peers += [dict(shape, name="sdpa_flash", ms=flash, tflops=300.0, gpu=gpu,
                           mask="causal_lower_right"),
                      dict(shape, name="sdpa_cudnn", ms=cudnn, tflops=330.0, gpu=gpu,
                           mask="causal_lower_right"),
                      dict(shape, name="flex_block_sparse", variant="random:0.10", ms=flash / 5,
                           tflops=150.0, density=0.12, gpu=gpu,
                           mask="block_sparse_causal_lower_right")]
            for method, frac in (("dense", 1.0), ("random:0.50", 0.5), ("random:0.10", 0.1)):
                ms = dense * (frac + 0.02)
                summary.append(dict(shape, method=method, family="PagedFlash", preset=preset,
                                    page=16, ms=ms, density=frac + 0.02,
                                    tflops=400 - 100 * (1 - frac),
                                    dense_ms=dense, speedup_vs_dense=dense / ms,
                                    speedup_vs_sdpa_flash=flash / ms,
                                    speedup_vs_sdpa_cudnn=cudnn / ms))
            summary.append(dict(shape, method="compact", family="ChunkedPrefill", preset=preset,
                                ms=dense * 40, total_ms=dense * 40, select_ms=dense * 6,
                                attn_ms=dense * 30, last_chunk_ms=dense * 0.3, density=0.12,
                                speedup_vs_dense=3.0, speedup_vs_sdpa_flash=flash / (dense * 0.3),
                                speedup_vs_sdpa_cudnn=None))
    return {"context": {"gpu": gpu}, "benchmarks": [], "peers": peers, "summary": summary}


def self_test() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        doc = _synthetic()
        src = os.path.join(tmp, "merged.json")
        with open(src, "w") as f:
            json.dump(doc, f)
        out = os.path.join(tmp, "plots")
        written = plot_all(src, out)
        names = sorted(os.path.basename(w) for w in written)
        assert names == ["latency_breakdown.png", "speedup_vs_dense.png",
                         "speedup_vs_sdpa_cudnn.png", "speedup_vs_sdpa_flash.png",
                         "tflops_vs_density.png"], names
        for w in written:
            with open(w, "rb") as f:
                head = f.read(8)
            assert head == b"\x89PNG\r\n\x1a\n" and os.path.getsize(w) > 10_000, w
        # Executor-only results without peers: no breakdown, no peer speedups, no crash.
        doc2 = {"context": {}, "benchmarks": [], "peers": [],
                "summary": [dict(s, speedup_vs_sdpa_flash=None, speedup_vs_sdpa_cudnn=None)
                            for s in doc["summary"] if s["family"] == "PagedFlash"]}
        src2 = os.path.join(tmp, "merged2.json")
        with open(src2, "w") as f:
            json.dump(doc2, f)
        names = sorted(os.path.basename(w) for w in plot_all(src2, os.path.join(tmp, "p2")))
        assert names == ["speedup_vs_dense.png", "tflops_vs_density.png"], names
        # Malformed input: exit code 2 with a message.
        bad = os.path.join(tmp, "bad.json")
        with open(bad, "w") as f:
            json.dump({"benchmarks": []}, f)
        r = subprocess.run([sys.executable, os.path.abspath(__file__), bad, "--out-dir", tmp],
                           capture_output=True, text=True)
        assert r.returncode == 2 and "summary" in r.stderr, (r.returncode, r.stderr)
    print("plot_results.py self-test: passed")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="plot_results.py",
        description="Write PNG charts (speedups per context length, latency breakdown, TFLOP/s vs "
                    "density) from a results JSON written by bench/merge_results.py.")
    p.add_argument("results", nargs="?",
                   help="merged results JSON (bench/results/<gpu>-<what>.json)")
    p.add_argument("--out-dir", help="folder for the PNGs (default: <results without .json>-plots)")
    p.add_argument("--families", help="comma list of summary families to plot in the speedup "
                                      "charts (default all), e.g. PagedFlash")
    p.add_argument("--self-test", action="store_true", help="render synthetic data and check it")
    args = p.parse_args(argv)
    if args.self_test:
        return self_test()
    if not args.results:
        p.error("give the results JSON")
    out_dir = args.out_dir or os.path.splitext(args.results)[0] + "-plots"
    fams = ([f.strip().removeprefix("BM_") for f in args.families.split(",")]
            if args.families else None)
    try:
        plot_all(args.results, out_dir, fams)
    except InputError as e:
        print(f"plot_results.py: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
