#!/usr/bin/env python3
"""Merges Google Benchmark JSON and peer timings into one results file (shared/RESULTS.md).

    merge_results.py --gb out/executor_gb.json [more.json ...] --peers out/peers_tp2.json
                     out/peers_tp1.json --out bench/results/h100-executor.json
                     --markdown bench/results/h100-executor.md

The output is the first Google Benchmark file's "context" and every file's "benchmarks"
(concatenated, untouched), plus two arrays:

  "peers"    every peer entry of the --peers files (bench/peers.py), errors included;
  "summary"  one row per library benchmark that times attention, with its shape, time counters
             and speedups against the library's own dense row and against the peers.

Benchmark names are paths: BM_<Family>/<method>/<preset>/<key>:<value>/..., e.g.
BM_PagedFlash/random:0.10/tp2/kv:131072/chunk:1024/page:16 (Google Benchmark's own suffixes such
as /iterations:1 and /manual_time are dropped). The first segment after the family is the method
(it may contain a colon), a segment tp1/tp2 names the preset (batch and heads), key:value segments
are parameters (kv = KV length, chunk = queries per sequence), other segments are tags.

Which families get summary rows is read from the data: a family whose rows carry a tflops,
attn_ms, total_ms or last_chunk_ms counter, or that has a "dense" method, times attention
(BM_PagedFlash, BM_ChunkedPrefill); the others (BM_Union, BM_Mask: selection components) are
listed in the markdown only. --attention-families overrides the detection.

Summary row fields: family, method, preset, batch, hq, hkv, head_dim, kv_len, chunk, the other
parameters (page, ...), ms, the counters present among select_ms, attn_ms, total_ms,
last_chunk_ms, plan_host_ms, density, tflops, dense_equiv_tflops; dense_ms, speedup_vs_dense,
dense_ref;
<peer>_ms and speedup_vs_<peer> for sdpa_flash, sdpa_cudnn and every other peer name present
(null when there is nothing to compare with, the reason in "missing"); peer_basis; benchmark.

Comparison rules:
  * speedup_vs_dense = dense time / row time. The dense row is the same family's "dense" method
    with the same preset and parameters; else the same family's dense row with the same preset,
    KV length and chunk (the same page if there is one, else the fastest); else the fastest dense
    row of any family at that preset, KV length and chunk, compared per chunk (below).
  * Peers time ONE chunk at kv_len. A row is compared with them through its per-chunk time:
    last_chunk_ms when the row has it (end-to-end chunked prefill), else ms, except that a row
    with total_ms but no last_chunk_ms is not compared (its ms may span every chunk).
  * A peer matches a row when batch, hq, hkv, head_dim, chunk, kv_len and dtype (--dtype) agree,
    it has no error, and it solved the exact problem (mask causal_lower_right; for
    flex_block_sparse, mask block_sparse_causal_lower_right and variant == the row's method).
    Peers timed with another mask are reported, not compared, unless --allow-inexact-peers.
    Several matching entries: the fastest is used.

Malformed input (unreadable JSON, missing keys, wrong types, a bad key:value number, an unknown
preset, a benchmark name present in two files) stops the script with exit code 2 and a message.
`merge_results.py --self-test` runs the script on synthetic data and checks the numbers.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import subprocess
import sys
import tempfile
from typing import Any

PRESETS: dict[str, dict[str, int]] = {
    # bench/common/bench_common.cuh: kTP2, kTP1 (LLaMA-3.1-8B per GPU, D = 128).
    "tp2": {"batch": 8, "hq": 16, "hkv": 4, "head_dim": 128},
    "tp1": {"batch": 1, "hq": 32, "hkv": 8, "head_dim": 128},
}
PRESET_RE = re.compile(r"^tp\d+$")
# Google Benchmark appends these to a registered name.
GB_SUFFIX_KEYS = {"iterations", "repeats", "threads", "min_time", "min_warmup_time"}
GB_SUFFIX_WORDS = {"manual_time", "real_time", "process_time"}
INT_PARAMS = {"kv", "chunk", "page", "batch", "hq", "hkv", "d", "head_dim", "bq", "bk"}
PARAM_NAMES = {"kv": "kv_len"}  # key in the name -> field in the summary
REQUIRED_PEERS = ("sdpa_flash", "sdpa_cudnn")
EXACT_MASK = {"flex_block_sparse": "block_sparse_causal_lower_right"}
DEFAULT_EXACT_MASK = "causal_lower_right"
COUNTERS = ("select_ms", "attn_ms", "total_ms", "last_chunk_ms", "plan_host_ms", "density",
            "tflops", "dense_equiv_tflops")
ATTENTION_MARKERS = ("tflops", "attn_ms", "total_ms", "last_chunk_ms")
TIME_UNITS = {"ns": 1e-6, "us": 1e-3, "ms": 1.0, "s": 1e3}
# Fields Google Benchmark writes itself; every other numeric field of a run is a user counter.
GB_FIELDS = {"name", "family_index", "per_family_instance_index", "run_name", "run_type",
             "repetitions", "repetition_index", "threads", "iterations", "real_time", "cpu_time",
             "time_unit", "aggregate_name", "aggregate_unit", "error_occurred", "error_message",
             "skipped", "skip_message", "label", "ms"}


class InputError(Exception):
    """Malformed input: reported with exit code 2."""


# ------------------------------------------------------------------------------------------------
# Reading
# ------------------------------------------------------------------------------------------------

def read_json(path: str, what: str) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise InputError(f"{what} file {path} does not exist")
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"cannot read {what} file {path}: {e}")
    except json.JSONDecodeError as e:
        raise InputError(f"{what} file {path} is not valid JSON: {e}")


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def parse_name(name: str) -> dict[str, Any]:
    """Splits a benchmark name into family, method, preset, params and tags; raises InputError on
    a malformed path (empty segment, bad number in a known integer parameter, unknown preset)."""
    if not isinstance(name, str) or not name:
        raise InputError(f"benchmark name {name!r} is not a non-empty string")
    segs = name.split("/")
    if any(s == "" for s in segs):
        raise InputError(f"benchmark name {name!r} has an empty path segment")
    while len(segs) > 1 and (segs[-1] in GB_SUFFIX_WORDS or
                             segs[-1].split(":", 1)[0] in GB_SUFFIX_KEYS and ":" in segs[-1]):
        segs.pop()
    # The method is the first segment after the family, unless the name has none and goes straight
    # to the preset (BM_AppendKV/tp2/kv:131072/chunk:1024).
    has_method = len(segs) > 1 and not PRESET_RE.match(segs[1])
    info: dict[str, Any] = {"family": segs[0], "method": segs[1] if has_method else None,
                            "preset": None, "params": {}, "tags": [], "clean": "/".join(segs)}
    for seg in segs[2 if has_method else 1:]:
        if PRESET_RE.match(seg):
            if seg not in PRESETS:
                raise InputError(f"benchmark {name!r}: unknown preset {seg!r} (known: "
                                 f"{', '.join(sorted(PRESETS))}; add it to PRESETS)")
            if info["preset"] is not None:
                raise InputError(f"benchmark {name!r} names two presets")
            info["preset"] = seg
        elif ":" in seg:
            key, value = seg.split(":", 1)
            if not key or not value:
                raise InputError(f"benchmark {name!r}: malformed key:value segment {seg!r}")
            if key in info["params"]:
                raise InputError(f"benchmark {name!r} repeats the parameter {key!r}")
            if key in INT_PARAMS:
                try:
                    parsed: Any = int(value)
                except ValueError:
                    raise InputError(f"benchmark {name!r}: {key}:{value} is not an integer")
                if parsed <= 0:
                    raise InputError(f"benchmark {name!r}: {key}:{value} must be positive")
            else:
                try:
                    parsed = int(value)
                except ValueError:
                    try:
                        parsed = float(value)
                    except ValueError:
                        parsed = value
            info["params"][key] = parsed
        else:
            info["tags"].append(seg)
    return info


def load_gb(path: str) -> dict[str, Any]:
    doc = read_json(path, "Google Benchmark")
    if not isinstance(doc, dict):
        raise InputError(f"{path}: expected a JSON object with 'context' and 'benchmarks'")
    if not isinstance(doc.get("context"), dict):
        raise InputError(f"{path}: missing or non-object 'context' (run the benchmark with "
                         f"--benchmark_out_format=json)")
    if not isinstance(doc.get("benchmarks"), list):
        raise InputError(f"{path}: missing or non-list 'benchmarks'")
    for i, b in enumerate(doc["benchmarks"]):
        if not isinstance(b, dict) or not isinstance(b.get("name"), str):
            raise InputError(f"{path}: benchmarks[{i}] is not an object with a string 'name'")
        for key, value in b.items():
            if key in ("ms",) + COUNTERS and not _number(value):
                raise InputError(f"{path}: benchmark {b['name']!r}: counter {key} is not a finite "
                                 f"number: {value!r}")
    return doc


def load_peers(path: str) -> list[dict[str, Any]]:
    doc = read_json(path, "peers")
    if isinstance(doc, dict) and isinstance(doc.get("peers"), list):
        doc = doc["peers"]  # a merged results file
    if not isinstance(doc, list):
        raise InputError(f"{path}: expected a JSON list of peer objects (bench/peers.py --out)")
    for i, p in enumerate(doc):
        problems = peer_problems(p)
        if problems:
            raise InputError(f"{path}: peers[{i}]: " + "; ".join(problems))
    return doc


def peer_problems(obj: Any) -> list[str]:
    """Schema problems of one peer entry (the same rules as bench/peers.py's validate_peer)."""
    if not isinstance(obj, dict):
        return ["not an object"]
    problems = []
    if not isinstance(obj.get("name"), str) or not obj.get("name"):
        problems.append("missing or non-string 'name'")
    for key in ("batch", "hq", "hkv", "head_dim", "chunk", "kv_len"):
        v = obj.get(key)
        if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
            problems.append(f"'{key}' missing or not a positive integer ({v!r})")
    if "error" in obj:
        if not isinstance(obj["error"], str) or not obj["error"]:
            problems.append("'error' must be a non-empty string")
    else:
        for key in ("ms", "tflops"):
            if not _number(obj.get(key)) or obj.get(key) <= 0:
                problems.append(f"'{key}' missing or not a positive number ({obj.get(key)!r})")
    return problems


# ------------------------------------------------------------------------------------------------
# Rows
# ------------------------------------------------------------------------------------------------

def _time_ms(b: dict[str, Any]) -> tuple[float | None, str | None]:
    if "ms" in b:
        return float(b["ms"]), None
    unit = b.get("time_unit", "ns")
    if _number(b.get("real_time")) and unit in TIME_UNITS:
        return float(b["real_time"]) * TIME_UNITS[unit], "no 'ms' counter: real_time used"
    return None, "no 'ms' counter and no usable real_time"


def collect_rows(gb_docs: list[tuple[str, dict[str, Any]]],
                 notes: list[str]) -> list[dict[str, Any]]:
    """One row per benchmark run (repetitions reduced to their median), errored runs dropped with
    a note. Each row: name, file, parsed name fields, ms, counters."""
    groups: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    origin: dict[str, str] = {}
    for path, doc in gb_docs:
        for b in doc["benchmarks"]:
            run = b.get("run_name") if isinstance(b.get("run_name"), str) else b["name"]
            if run in origin and origin[run] != path:
                raise InputError(f"benchmark {run!r} appears in both {origin[run]} and {path}")
            origin[run] = path
            groups.setdefault(run, []).append((path, b))
    rows = []
    for run, items in groups.items():
        info = parse_name(run)
        errored = [b for _, b in items if b.get("error_occurred") or b.get("skipped")]
        if errored:
            msg = errored[0].get("error_message") or errored[0].get("skip_message") or "skipped"
            notes.append(f"{run}: not run ({msg})")
            continue
        medians = [b for _, b in items if b.get("run_type") == "aggregate"
                   and b.get("aggregate_name") == "median"]
        iterations = [b for _, b in items if b.get("run_type", "iteration") == "iteration"]
        if medians:
            chosen = medians[0]
        elif iterations:
            timed = sorted(iterations, key=lambda b: _time_ms(b)[0] if _time_ms(b)[0] is not None
                           else math.inf)
            chosen = timed[(len(timed) - 1) // 2]
            if len(iterations) > 1:
                notes.append(f"{run}: {len(iterations)} repetitions without a median aggregate; "
                             f"the median repetition is used")
        else:
            continue  # only mean/stddev aggregates: nothing representative
        ms, why = _time_ms(chosen)
        if ms is None or ms <= 0:
            raise InputError(f"benchmark {run!r}: {why or 'non-positive ms'}")
        if why:
            notes.append(f"{run}: {why}")
        row = dict(info)
        row.update(name=run, file=items[0][0], ms=ms,
                   counters={k: float(v) for k, v in chosen.items()
                             if k not in GB_FIELDS and _number(v)})
        rows.append(row)
    return rows


def attention_families(rows: list[dict[str, Any]], override: list[str] | None) -> set[str]:
    if override:
        return set(override)
    fams = set()
    for r in rows:
        if any(k in r["counters"] for k in ATTENTION_MARKERS) or r["method"] == "dense":
            fams.add(r["family"])
    return fams


def shape_of(row: dict[str, Any]) -> dict[str, Any] | None:
    """batch/hq/hkv/head_dim/kv_len/chunk of a row, or None when the name lacks them."""
    if row["preset"] is None or "kv" not in row["params"] or "chunk" not in row["params"]:
        return None
    s = dict(PRESETS[row["preset"]])
    for key in ("batch", "hq", "hkv", "head_dim"):
        if key in row["params"]:
            s[key] = row["params"][key]
    s["kv_len"] = row["params"]["kv"]
    s["chunk"] = row["params"]["chunk"]
    return s


def chunk_time(row: dict[str, Any]) -> tuple[float | None, str]:
    """Time of one chunk at kv_len, comparable with a peer: last_chunk_ms, else ms unless the row
    only has a whole-prefill total."""
    c = row["counters"]
    if "last_chunk_ms" in c:
        return c["last_chunk_ms"], "last_chunk_ms"
    if "total_ms" in c:
        return None, "total_ms only"
    return row["ms"], "ms"


# ------------------------------------------------------------------------------------------------
# Summary
# ------------------------------------------------------------------------------------------------

def _params_key(row: dict[str, Any]) -> tuple:
    return tuple(sorted((k, str(v)) for k, v in row["params"].items())) + tuple(row["tags"])


def find_dense(row: dict[str, Any], rows: list[dict[str, Any]]):
    """(dense row, basis) per the rules in the module docstring; basis 'ms' or 'chunk'."""
    if row["method"] == "dense":
        return row, "ms"
    s = shape_of(row)
    dense = [r for r in rows if r["method"] == "dense" and r["preset"] == row["preset"]
             and shape_of(r) is not None and shape_of(r)["kv_len"] == s["kv_len"]
             and shape_of(r)["chunk"] == s["chunk"]]
    same_fam = [r for r in dense if r["family"] == row["family"]]
    exact = [r for r in same_fam if _params_key(r) == _params_key(row)]
    if exact:
        return exact[0], "ms"
    if same_fam:
        page = row["params"].get("page")
        same_page = [r for r in same_fam if page is not None and r["params"].get("page") == page]
        return min(same_page or same_fam, key=lambda r: r["ms"]), "ms"
    timed = [r for r in dense if chunk_time(r)[0] is not None]
    if timed:
        return min(timed, key=lambda r: chunk_time(r)[0]), "chunk"
    return None, None


def peer_matches(peers: list[dict[str, Any]], name: str, shape: dict[str, Any], dtype: str,
                 method: str, mode: str | None = None) -> list[dict[str, Any]]:
    """Peers of `name` at the row's shape: per-chunk timings (mode None) or whole-prompt totals
    (mode 'prefill_total', kv_len = the prompt length)."""
    keys = ("batch", "hq", "hkv", "head_dim", "chunk", "kv_len")
    out = []
    for p in peers:
        if p.get("name") != name or any(p.get(k) != shape[k] for k in keys):
            continue
        if p.get("mode") != mode:
            continue
        if p.get("dtype", dtype) != dtype:
            continue
        if name == "flex_block_sparse" and p.get("variant") != method:
            continue
        out.append(p)
    return out


def _r(x: float | None, digits: int = 4) -> float | None:
    return None if x is None else round(x, digits)


def build_summary(rows: list[dict[str, Any]], peers: list[dict[str, Any]], families: set[str],
                  dtype: str, allow_inexact: bool, notes: list[str]) -> list[dict[str, Any]]:
    peer_names = list(REQUIRED_PEERS) + sorted({p["name"] for p in peers} - set(REQUIRED_PEERS))
    summary = []
    unsummarized = 0
    for row in rows:
        if row["family"] not in families:
            continue
        shape = shape_of(row)
        if shape is None or row["method"] is None:
            unsummarized += 1
            notes.append(f"{row['name']}: no method/preset/kv/chunk in the name: not summarized")
            continue
        s: dict[str, Any] = {"method": row["method"], "family": row["family"].removeprefix("BM_"),
                             "preset": row["preset"]}
        s.update(shape)
        for key, value in row["params"].items():
            if key not in ("kv", "chunk", "batch", "hq", "hkv", "head_dim"):
                s[PARAM_NAMES.get(key, key)] = value
        if row["tags"]:
            s["tags"] = row["tags"]
        s["ms"] = row["ms"]
        for key in COUNTERS:
            if key in row["counters"]:
                s[key] = row["counters"][key]
        missing: list[str] = []
        where = f"{row['preset']} kv {shape['kv_len']} chunk {shape['chunk']}"

        dense, basis = find_dense(row, rows)
        s["dense_ms"] = s["speedup_vs_dense"] = s["dense_ref"] = None
        if dense is None:
            missing.append(f"no library dense row at {where}")
        else:
            if basis == "ms":
                num, den = dense["ms"], row["ms"]
            else:
                num, den = chunk_time(dense)[0], chunk_time(row)[0]
            if den is None:
                missing.append(f"dense row {dense['clean']} is per chunk, this row has no "
                               f"per-chunk time (last_chunk_ms)")
            else:
                s["dense_ms"] = num
                s["speedup_vs_dense"] = _r(num / den)
                s["dense_ref"] = dense["clean"]

        def compare(name: str, t: float, mode: str | None) -> tuple[float | None, str | None]:
            """(peer ms, problem) of the best usable peer for time t; problem None when found."""
            cands = peer_matches(peers, name, shape, dtype, row["method"], mode)
            timed = [p for p in cands if "error" not in p]
            want = EXACT_MASK.get(name, DEFAULT_EXACT_MASK)
            exact = [p for p in timed if p.get("mask", want) == want]
            usable = exact or (timed if allow_inexact else [])
            what = f"{name}{' prefill total' if mode else ''} at {where}"
            if not usable:
                if timed:
                    return None, (f"{what} solved mask {timed[0].get('mask')!r}, not {want!r}: "
                                  f"not compared (--allow-inexact-peers to compare)")
                if cands:
                    return None, f"{what} failed: {cands[0]['error']}"
                kind = "prefill total" if mode else "peer"
                return None, f"no {name} {kind} at {where} ({dtype})"
            best = min(usable, key=lambda p: p["ms"])
            if best not in exact:
                missing.append(f"{what} compared although it solved mask {best.get('mask')!r}")
            return best["ms"], None

        t, s["peer_basis"] = chunk_time(row)
        total = row["counters"].get("total_ms")
        for name in peer_names:
            s[f"{name}_ms"] = s[f"speedup_vs_{name}"] = None
            has_any = any(p.get("name") == name for p in peer_matches(peers, name, shape, dtype,
                                                                       row["method"])) or any(
                p.get("name") == name for p in peer_matches(peers, name, shape, dtype,
                                                            row["method"], "prefill_total"))
            if name not in REQUIRED_PEERS and not has_any:
                continue  # optional peers (flex_block_sparse) match only their own variant
            if total is not None:
                # Whole prefill: against the peer's sum over the same chunks.
                ms, problem = compare(name, total, "prefill_total")
                if problem is None:
                    s[f"{name}_ms"] = ms
                    s[f"speedup_vs_{name}"] = _r(ms / total)
                    s["peer_basis"] = "total_ms"
                else:
                    missing.append(problem)
                if t is not None:
                    ms, problem = compare(name, t, None)
                    s[f"last_chunk_{name}_ms"] = ms
                    s[f"last_chunk_speedup_vs_{name}"] = None if ms is None else _r(ms / t)
                    if problem is not None:
                        missing.append(problem)
                continue
            if t is None:
                missing.append(f"{name}: row has total_ms but no last_chunk_ms; peers time one "
                               f"chunk")
                continue
            ms, problem = compare(name, t, None)
            if problem is None:
                s[f"{name}_ms"] = ms
                s[f"speedup_vs_{name}"] = _r(ms / t)
            else:
                missing.append(problem)
        s["benchmark"] = row["clean"]
        s["missing"] = missing
        summary.append(s)
    order = {p: i for i, p in enumerate(sorted(PRESETS, reverse=True))}
    summary.sort(key=lambda s: (s["family"], order.get(s["preset"], 99), s["kv_len"], s["chunk"],
                                str(s.get("page", "")), s["method"] != "dense", s["method"]))
    return summary


# ------------------------------------------------------------------------------------------------
# Markdown
# ------------------------------------------------------------------------------------------------

def _fmt(x: Any, kind: str) -> str:
    if x is None:
        return "—"
    if kind == "ms":
        return f"{x:.3f}"
    if kind == "x":
        return f"{x:.2f}x"
    if kind == "density":
        return f"{x:.3f}"
    if kind == "tflops":
        return f"{x:.0f}"
    return f"{x:.4g}" if isinstance(x, float) else str(x)


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return out


def gpu_name(context: dict[str, Any], peers: list[dict[str, Any]]) -> str | None:
    if isinstance(context.get("gpu"), str) and context["gpu"]:
        return context["gpu"]
    names = {p.get("gpu") for p in peers if isinstance(p.get("gpu"), str)}
    return names.pop() if len(names) == 1 else None


def write_markdown(path: str, merged: dict[str, Any], rows: list[dict[str, Any]],
                   families: set[str], sources: dict[str, list[str]], notes: list[str]) -> None:
    ctx, summary, peers = merged["context"], merged["summary"], merged["peers"]
    gpu = gpu_name(ctx, peers)
    lines = [f"# Results on {gpu or 'an unknown GPU'}", ""]
    facts = []
    if gpu is None:
        notes.append("the benchmark context names no GPU (no 'gpu' key) and the peers do not agree "
                     "on one")
    for key, label in (("gpu_compute_capability", "compute capability"),
                       ("gpu_sm_count", "SMs"), ("gpu_max_sm_clock_mhz", "max SM clock MHz"),
                       ("gpu_max_mem_clock_mhz", "max memory clock MHz"), ("date", "date"),
                       ("host_name", "host"), ("library_build_type", "benchmark library build")):
        if key in ctx:
            facts.append(f"{label} {ctx[key]}")
    if facts:
        lines += ["GPU and run: " + ", ".join(str(f) for f in facts) + ".", ""]
    versions = {json.dumps(p["versions"], sort_keys=True) for p in peers
                if isinstance(p.get("versions"), dict)}
    for v in sorted(versions):
        lines += ["Peers: " + ", ".join(f"{k} {val}" for k, val in json.loads(v).items()) + ".", ""]
    lines += ["Sources: " + ", ".join(os.path.basename(x) for x in sources["gb"])
              + ("; peers: " + ", ".join(os.path.basename(x) for x in sources["peers"])
                 if sources["peers"] else "; no peers") + ".", ""]

    if summary:
        opt = [k for k in ("page", "select_ms", "attn_ms", "total_ms", "last_chunk_ms", "density",
                           "tflops") if any(k in s for s in summary)]
        titles = {"tflops": "TFLOP/s", "select_ms": "select ms", "attn_ms": "attn ms",
                  "total_ms": "total ms", "last_chunk_ms": "last chunk ms"}
        peer_cols = [k[len("speedup_vs_"):] for k in summary[0] if k.startswith("speedup_vs_")
                     and k != "speedup_vs_dense"]
        header = ["family", "method", "preset", "KV", "chunk"] + (["page"] if "page" in opt else [])
        header += ["ms"] + [titles.get(k, k) for k in opt if k != "page"] + ["vs dense"]
        header += [f"vs {p}" for p in peer_cols]
        body = []
        for s in summary:
            # A pinned code path (arch:80 in the name) is part of the method's label.
            method = s["method"] + (f" (sm{s['arch']} path)" if s.get("arch") is not None else "")
            r = [s["family"], method, s["preset"], str(s["kv_len"]), str(s["chunk"])]
            if "page" in opt:
                r.append(str(s.get("page", "—")))
            r.append(_fmt(s["ms"], "ms"))
            for k in opt:
                if k == "page":
                    continue
                kind = "ms" if k.endswith("_ms") else k
                r.append(_fmt(s.get(k), kind))
            r.append(_fmt(s["speedup_vs_dense"], "x"))
            r += [_fmt(s.get(f"speedup_vs_{p}"), "x") for p in peer_cols]
            body.append(r)
        lines += ["## Attention: library vs dense and peers", "",
                  "Speedup = other time / this row's time (> 1: this row is faster). "
                  "Peers time one "
                  "chunk at the KV length; rows are compared through their per-chunk time "
                  "(last_chunk_ms where present).", ""]
        lines += _table(header, body) + [""]
    else:
        lines += ["## Attention", "", "No attention benchmark rows to summarize.", ""]

    if peers:
        body = []
        for p in sorted(peers, key=lambda p: (p["name"], -p["batch"], p["kv_len"],
                                              str(p.get("variant", "")))):
            shape = f"B={p['batch']} Hq={p['hq']} Hkv={p['hkv']} D={p['head_dim']}"
            if "error" in p:
                body.append([p["name"], shape, str(p["kv_len"]), str(p["chunk"]), "—", "—",
                             "error: " + p["error"][:120].replace("|", "/"), "", ""])
                continue
            form = p.get("cudnn_form", "")
            body.append([p["name"] + (f" ({p['variant']})" if p.get("variant") else ""), shape,
                         str(p["kv_len"]), str(p["chunk"]), _fmt(p["ms"], "ms"),
                         _fmt(p["tflops"], "tflops"), str(p.get("mask", "—")) +
                         (f" [{form}]" if form else ""),
                         _fmt(p.get("density"), "density"), str(p.get("gqa", "—"))])
        lines += ["## Peers", ""]
        lines += _table(["peer", "shape", "KV", "chunk", "ms", "TFLOP/s", "mask [form]",
                         "density", "GQA"], body) + [""]

    comps = [r for r in rows if r["family"] not in families]
    if comps:
        keys = sorted({k for r in comps for k in r["counters"]},
                      key=lambda k: (COUNTERS.index(k) if k in COUNTERS else len(COUNTERS), k))
        body = [[r["family"].removeprefix("BM_"), r["method"] or "—", r["preset"] or "—",
                 str(r["params"].get("kv", "—")), str(r["params"].get("chunk", "—")),
                 _fmt(r["ms"], "ms")] + [_fmt(r["counters"].get(k), "ms" if k.endswith("_ms")
                                              else k) for k in keys] for r in comps]
        lines += ["## Components (selection, union)", ""]
        lines += _table(["family", "method", "preset", "KV", "chunk", "ms"] + keys, body) + [""]

    row_missing = [f"{s['family']}/{s['method']} {s['preset']} kv {s['kv_len']}"
                   + (f" page {s['page']}" if "page" in s else "") + f": {m}"
                   for s in summary for m in s["missing"]]
    lines += ["## Missing and notes", ""]
    lines += [f"- {x}" for x in notes + row_missing] or ["- nothing missing"]
    lines.append("")
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines))


# ------------------------------------------------------------------------------------------------
# Driver
# ------------------------------------------------------------------------------------------------

def merge(gb_paths: list[str], peer_paths: list[str], out: str, markdown: str | None,
          dtype: str = "bf16", families_override: list[str] | None = None,
          allow_inexact: bool = False) -> dict[str, Any]:
    if not gb_paths:
        raise InputError("give at least one Google Benchmark JSON file (--gb)")
    for paths, what in ((gb_paths, "--gb"), (peer_paths, "--peers")):
        twice = sorted({p for p in paths if paths.count(p) > 1})
        if twice:
            raise InputError(f"{what} lists {', '.join(twice)} twice")
    docs = [(p, load_gb(p)) for p in gb_paths]
    notes: list[str] = []
    peers: list[dict[str, Any]] = []
    for path, doc in docs:
        if "peers" in doc or "summary" in doc:
            notes.append(f"{path} is already merged: its peers are kept, its summary is recomputed")
            peers += load_peers(path) if "peers" in doc else []
    for p in peer_paths:
        peers += load_peers(p)
    first_ctx = docs[0][1]["context"]
    for path, doc in docs[1:]:
        if doc["context"].get("gpu") != first_ctx.get("gpu"):
            notes.append(f"{path} ran on {doc['context'].get('gpu')!r}, the first file on "
                         f"{first_ctx.get('gpu')!r}; the first context is kept")
    gpus = {p.get("gpu") for p in peers if p.get("gpu")}
    if first_ctx.get("gpu") and gpus - {first_ctx["gpu"]}:
        notes.append(f"peers ran on {sorted(gpus)}, the benchmarks on {first_ctx['gpu']!r}")
        print(f"merge_results.py: warning: {notes[-1]}", file=sys.stderr)
    rows = collect_rows(docs, notes)
    families = attention_families(rows, families_override)
    summary = build_summary(rows, peers, families, dtype, allow_inexact, notes)

    merged: dict[str, Any] = {}
    for key, value in docs[0][1].items():
        if key not in ("benchmarks", "peers", "summary"):
            merged[key] = value
    merged["benchmarks"] = [b for _, d in docs for b in d["benchmarks"]]
    merged["peers"] = peers
    merged["summary"] = summary
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "w", encoding="utf-8") as f:
        json.dump(merged, f, indent=2)
        f.write("\n")
    if markdown:
        os.makedirs(os.path.dirname(os.path.abspath(markdown)), exist_ok=True)
        write_markdown(markdown, merged, rows, families, {"gb": gb_paths, "peers": peer_paths},
                       notes)
    n_missing = sum(1 for s in summary if s["missing"])
    print(f"merge_results.py: {len(merged['benchmarks'])} benchmarks, {len(peers)} peers, "
          f"{len(summary)} summary rows ({n_missing} with something missing) -> {out}"
          + (f", {markdown}" if markdown else ""))
    return merged


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="merge_results.py",
        description="Merge Google Benchmark JSON files and bench/peers.py output into one results "
                    "file (shared/RESULTS.md): GB context + benchmarks, plus 'peers' and "
                    "'summary' arrays; optionally a markdown table.",
        epilog="Comparison rules (which dense row, which peer, per-chunk times) are in the module "
               "docstring and bench/README.md. Exit code 2 on malformed input.")
    p.add_argument("--gb", nargs="+", default=[], metavar="JSON",
                   help="Google Benchmark JSON files (--benchmark_out_format=json); the first "
                        "one's context is kept, benchmarks are concatenated")
    p.add_argument("--peers", nargs="*", default=[], metavar="JSON",
                   help="bench/peers.py outputs (JSON lists), concatenated")
    p.add_argument("--out", help="merged results JSON, e.g. bench/results/h100-executor.json")
    p.add_argument("--markdown", help="also write this markdown summary")
    p.add_argument("--dtype", default="bf16", help="element type of the benchmarks (default bf16); "
                                                   "peers of another dtype are not compared")
    p.add_argument("--attention-families", help="comma list of families that time attention "
                                                "(default: detected from the counters)")
    p.add_argument("--allow-inexact-peers", action="store_true",
                   help="also compare with peers that solved another mask (noted per row)")
    p.add_argument("--self-test", action="store_true", help="run the built-in checks and exit")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.self_test:
        return self_test()
    if not args.out:
        build_parser().error("--out is required")
    fams = ([f if f.startswith("BM_") else "BM_" + f
             for f in args.attention_families.split(",") if f.strip()]
            if args.attention_families else None)
    try:
        merge(args.gb, args.peers, args.out, args.markdown, args.dtype, fams,
              args.allow_inexact_peers)
    except InputError as e:
        print(f"merge_results.py: error: {e}", file=sys.stderr)
        return 2
    return 0


# ------------------------------------------------------------------------------------------------
# Self-test
# ------------------------------------------------------------------------------------------------

def _gb_entry(name: str, ms: float, **counters: float) -> dict[str, Any]:
    full = name + "/iterations:1/manual_time"
    e = {"name": full, "family_index": 0, "per_family_instance_index": 0, "run_name": full,
         "run_type": "iteration", "repetitions": 1, "repetition_index": 0, "threads": 1,
         "iterations": 1, "real_time": ms, "cpu_time": ms * 1.1, "time_unit": "ms", "ms": ms}
    e.update(counters)
    return e


def _write(path: str, doc: Any) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(doc, f)


def synthetic_inputs(tmp: str) -> dict[str, str]:
    """Executor + chunked-prefill GB files and two peers files, for the self-tests."""
    ctx = {"date": "2026-01-01T00:00:00+00:00", "host_name": "dev", "executable": "executor_bench",
           "num_cpus": 16, "library_build_type": "release", "gpu": "NVIDIA H100 80GB HBM3",
           "gpu_sm_count": "132", "gpu_compute_capability": "9.0"}
    ex = []
    for preset, scale in (("tp2", 1.0), ("tp1", 0.25)):
        for kv in (32768, 131072):
            base = scale * kv / 131072 * 20.0  # dense ms
            for page in (16, 64):
                ex.append(_gb_entry(f"BM_PagedFlash/dense/{preset}/kv:{kv}/chunk:1024/page:{page}",
                                    base * (1 if page == 16 else 1.05), tflops=400.0, density=1.0))
            ex.append(_gb_entry(f"BM_PagedFlash/random:0.10/{preset}/kv:{kv}/chunk:1024/page:16",
                                base / 8, tflops=350.0, density=0.11))
            ex.append(_gb_entry(f"BM_Union/block/{preset}/kv:{kv}/chunk:1024/page:16", 0.05,
                                density=0.11, tables=32.0))
    ex.append(_gb_entry("BM_AppendKV/tp2/kv:131072/chunk:1024", 0.2, gbps=2500.0))
    failed = _gb_entry("BM_PagedFlash/random:0.50/tp2/kv:32768/chunk:1024/page:16", 1.0)
    failed.update(error_occurred=True, error_message="out of memory")
    ex.append(failed)
    pf = [_gb_entry("BM_ChunkedPrefill/dense/tp2/kv:131072/chunk:1024", 900.0, total_ms=900.0,
                    last_chunk_ms=20.0, attn_ms=900.0, select_ms=0.0),
          _gb_entry("BM_ChunkedPrefill/compact/tp2/kv:131072/chunk:1024", 150.0, total_ms=150.0,
                    last_chunk_ms=4.0, attn_ms=120.0, select_ms=30.0, density=0.12),
          _gb_entry("BM_ChunkedPrefill/compact/tp1/kv:131072/chunk:1024", 60.0, total_ms=60.0,
                    attn_ms=50.0, select_ms=10.0)]
    peers_tp2 = []
    for kv, flash, cudnn in ((32768, 6.0, None), (131072, 25.0, 22.0)):
        common = {"batch": 8, "hq": 16, "hkv": 4, "head_dim": 128, "chunk": 1024, "kv_len": kv,
                  "dtype": "bf16", "gpu": "NVIDIA H100 80GB HBM3", "preset": "tp2"}
        peers_tp2.append({"name": "sdpa_flash", **common, "ms": flash, "tflops": 300.0,
                          "mask": "causal_lower_right",
                          "versions": {"torch": "2.11.0", "cuda": "12.8", "cudnn": 91002}})
        if cudnn is None:
            peers_tp2.append({"name": "sdpa_cudnn", **common, "error": "RuntimeError: no kernel"})
        else:
            peers_tp2.append({"name": "sdpa_cudnn", **common, "ms": cudnn, "tflops": 340.0,
                              "mask": "causal_lower_right", "cudnn_form": "bias"})
            peers_tp2.append({"name": "sdpa_cudnn", **common, "ms": 21.0, "tflops": 350.0,
                              "mask": "none", "cudnn_form": "noncausal"})
        peers_tp2.append({"name": "flex_block_sparse", **common, "variant": "random:0.10",
                          "ms": flash / 5, "tflops": 200.0, "density": 0.11,
                          "mask": "block_sparse_causal_lower_right"})
    peers_tp2.append({"name": "sdpa_flash", "mode": "prefill_total", "batch": 8, "hq": 16,
                      "hkv": 4, "head_dim": 128, "chunk": 1024, "kv_len": 131072, "ms": 1500.0,
                      "tflops": 320.0, "dtype": "bf16", "mask": "causal_lower_right",
                      "last_chunk_ms": 25.0, "chunks": 128})
    peers_tp1 = [{"name": "sdpa_flash", "batch": 1, "hq": 32, "hkv": 8, "head_dim": 128,
                  "chunk": 1024, "kv_len": 131072, "dtype": "bf16", "gpu": "NVIDIA H100 80GB HBM3",
                  "ms": 6.0, "tflops": 300.0, "mask": "causal_lower_right"}]
    files = {}
    for name, doc in (("executor_gb.json", {"context": ctx, "benchmarks": ex}),
                      ("prefill_gb.json", {"context": dict(ctx, executable="prefill_bench"),
                                           "benchmarks": pf}),
                      ("peers_tp2.json", peers_tp2), ("peers_tp1.json", peers_tp1)):
        files[name] = os.path.join(tmp, name)
        with open(files[name], "w") as f:
            json.dump(doc, f)
    return files


def self_test() -> int:
    def close(a, b):
        return a is not None and abs(a - b) <= 1e-3 * abs(b)

    # Name parsing.
    info = parse_name("BM_PagedFlash/random:0.10/tp2/kv:131072/chunk:1024/page:16/iterations:1/"
                      "manual_time")
    assert info == {"family": "BM_PagedFlash", "method": "random:0.10", "preset": "tp2",
                    "params": {"kv": 131072, "chunk": 1024, "page": 16}, "tags": [],
                    "clean": "BM_PagedFlash/random:0.10/tp2/kv:131072/chunk:1024/page:16"}, info
    info = parse_name("BM_Mask/flash_prefill/tp1/kv:32768/chunk:1024/alpha:0.18/warm")
    assert info["params"]["alpha"] == 0.18 and info["tags"] == ["warm"]
    info = parse_name("BM_AppendKV/tp2/kv:131072/chunk:1024/iterations:1/manual_time")
    assert info["method"] is None and info["preset"] == "tp2" and info["params"]["kv"] == 131072
    for bad in ("BM_X/a/tp2/kv:abc/chunk:1", "BM_X//tp2", "BM_X/a/tp9/kv:1/chunk:1",
                "BM_X/a/tp2/kv:0/chunk:1", "BM_X/a/tp2/tp1", "BM_X/a/tp2/kv:1/kv:2", "BM_X/a/:3"):
        try:
            parse_name(bad)
        except InputError:
            pass
        else:
            raise AssertionError(f"parsed {bad}")

    with tempfile.TemporaryDirectory() as tmp:
        f = synthetic_inputs(tmp)
        out, md = os.path.join(tmp, "res", "h100-executor.json"), os.path.join(tmp, "res", "x.md")
        merged = merge([f["executor_gb.json"], f["prefill_gb.json"]],
                       [f["peers_tp2.json"], f["peers_tp1.json"]], out, md)
        with open(out) as fh:
            on_disk = json.load(fh)
        with open(f["executor_gb.json"]) as fh:
            ex = json.load(fh)
        with open(f["prefill_gb.json"]) as fh:
            pf = json.load(fh)
        assert on_disk["context"] == ex["context"], "context not kept"
        assert on_disk["benchmarks"] == ex["benchmarks"] + pf["benchmarks"], "benchmarks changed"
        assert list(on_disk)[-2:] == ["peers", "summary"] and len(on_disk["peers"]) == 9
        summ = on_disk["summary"]
        assert all(s["family"] != "Union" for s in summ), "component family summarized"

        def row(family, method, preset, kv, page=None):
            hits = [s for s in summ if s["family"] == family and s["method"] == method
                    and s["preset"] == preset and s["kv_len"] == kv and s.get("page") == page]
            assert len(hits) == 1, (family, method, preset, kv, page, hits)
            return hits[0]

        # Executor, tp2 128K: dense 20 ms, random 2.5 ms, flash 25, cudnn 22 (exact; the
        # 21 ms cuDNN entry without mask is ignored).
        r = row("PagedFlash", "random:0.10", "tp2", 131072, 16)
        assert (r["batch"], r["hq"], r["hkv"], r["head_dim"], r["chunk"]) == (8, 16, 4, 128, 1024)
        assert close(r["speedup_vs_dense"], 8.0) and r["dense_ms"] == 20.0
        assert r["dense_ref"] == "BM_PagedFlash/dense/tp2/kv:131072/chunk:1024/page:16"
        assert r["benchmark"] == "BM_PagedFlash/random:0.10/tp2/kv:131072/chunk:1024/page:16"
        assert close(r["speedup_vs_sdpa_flash"], 10.0) and close(r["speedup_vs_sdpa_cudnn"], 8.8)
        assert r["sdpa_cudnn_ms"] == 22.0 and r["peer_basis"] == "ms" and r["missing"] == []
        assert close(r["speedup_vs_flex_block_sparse"], 2.0) and r["density"] == 0.11
        d = row("PagedFlash", "dense", "tp2", 131072, 64)
        assert close(d["speedup_vs_dense"], 1.0) and close(d["speedup_vs_sdpa_flash"], 25 / 21.0)
        assert d["speedup_vs_flex_block_sparse"] is None and d["missing"] == []
        # Missing peers: tp2 32K has an errored cuDNN peer; tp1 32K has no peers at all.
        r = row("PagedFlash", "random:0.10", "tp2", 32768, 16)
        assert close(r["speedup_vs_sdpa_flash"], 6.0 / (32768 / 131072 * 20 / 8))
        assert r["speedup_vs_sdpa_cudnn"] is None and any("failed" in m for m in r["missing"])
        r = row("PagedFlash", "random:0.10", "tp1", 32768, 16)
        assert r["speedup_vs_sdpa_flash"] is None and r["speedup_vs_sdpa_cudnn"] is None
        assert sum("no sdpa_" in m for m in r["missing"]) == 2, r["missing"]
        assert close(r["speedup_vs_dense"], 8.0)
        # Chunked prefill: same-family dense on ms (= total); peers' whole-prompt totals against
        # total_ms, per-chunk peers against last_chunk_ms.
        c = row("ChunkedPrefill", "compact", "tp2", 131072)
        assert close(c["speedup_vs_dense"], 6.0) and c["peer_basis"] == "total_ms"
        assert close(c["speedup_vs_sdpa_flash"], 1500.0 / 150.0) and c["sdpa_flash_ms"] == 1500.0
        assert c["speedup_vs_sdpa_cudnn"] is None  # no cuDNN total: said so
        assert any("no sdpa_cudnn prefill total" in m for m in c["missing"]), c["missing"]
        assert close(c["last_chunk_speedup_vs_sdpa_flash"], 6.25)
        assert close(c["last_chunk_speedup_vs_sdpa_cudnn"], 5.5)
        assert (c["select_ms"], c["attn_ms"], c["total_ms"]) == (30.0, 120.0, 150.0)
        # tp1 compact: no own dense, only total_ms and no peer totals: nothing compared, said so.
        c = row("ChunkedPrefill", "compact", "tp1", 131072)
        assert c["speedup_vs_dense"] is None and c["speedup_vs_sdpa_flash"] is None
        assert any("prefill total" in m for m in c["missing"]), c["missing"]
        text = open(md).read()
        assert "NVIDIA H100 80GB HBM3" in text and "| PagedFlash | random:0.10 |" in text
        assert "not run (out of memory)" in text and "## Components" in text
        assert "| AppendKV | — | tp2 | 131072 | 1024 | 0.200 |" in text and "gbps" in text
        assert "no sdpa_cudnn peer at tp1 kv 32768" in text

        # Inexact peers (cuDNN timed without the causal mask) are compared only on request.
        merged = merge([f["executor_gb.json"]], [f["peers_tp2.json"]], out, None,
                       allow_inexact=True)
        r = [s for s in merged["summary"] if s["method"] == "random:0.10"
             and s["preset"] == "tp2" and s["kv_len"] == 131072][0]
        assert close(r["speedup_vs_sdpa_cudnn"], 22.0 / 2.5), r  # the exact one still wins
        with open(f["peers_tp2.json"]) as fh:
            inexact = [p for p in json.load(fh)
                       if p["name"] != "sdpa_cudnn" or p.get("mask") != "causal_lower_right"]
        _write(os.path.join(tmp, "inexact.json"), inexact)
        merged = merge([f["executor_gb.json"]], [os.path.join(tmp, "inexact.json")], out, None,
                       allow_inexact=True)
        r = [s for s in merged["summary"] if s["method"] == "random:0.10"
             and s["preset"] == "tp2" and s["kv_len"] == 131072][0]
        assert close(r["speedup_vs_sdpa_cudnn"], 21.0 / 2.5)
        assert any("compared although" in m for m in r["missing"]), r["missing"]
        merged = merge([f["executor_gb.json"]], [os.path.join(tmp, "inexact.json")], out, None)
        r = [s for s in merged["summary"] if s["method"] == "random:0.10"
             and s["preset"] == "tp2" and s["kv_len"] == 131072][0]
        assert r["speedup_vs_sdpa_cudnn"] is None
        assert any("not compared" in m for m in r["missing"]), r["missing"]
        # Repetitions: the median aggregate wins over iterations.
        rep = {"context": {"gpu": "G"}, "benchmarks": [
            _gb_entry("BM_PagedFlash/dense/tp2/kv:32768/chunk:1024", 9.0),
            _gb_entry("BM_PagedFlash/dense/tp2/kv:32768/chunk:1024", 5.0)]}
        med = dict(rep["benchmarks"][0], run_type="aggregate", aggregate_name="median", ms=6.0,
                   name=rep["benchmarks"][0]["name"] + "_median")
        rep["benchmarks"].append(med)
        path = os.path.join(tmp, "rep.json")
        with open(path, "w") as fh:
            json.dump(rep, fh)
        merged = merge([path], [], out, None)
        assert [s["ms"] for s in merged["summary"]] == [6.0]
        assert merged["summary"][0]["speedup_vs_sdpa_flash"] is None

        # Malformed inputs fail with exit code 2 and a message (through the real CLI).
        bad = {"notjson.json": "{", "nocontext.json": json.dumps({"benchmarks": []}),
               "badname.json": json.dumps({"context": {}, "benchmarks": [
                   _gb_entry("BM_PagedFlash/dense/tp2/kv:12x/chunk:1024", 1.0)]}),
               "badcounter.json": json.dumps({"context": {}, "benchmarks": [
                   dict(_gb_entry("BM_PagedFlash/dense/tp2/kv:1024/chunk:1024", 1.0), ms="x")]}),
               "badpeers.json": json.dumps([{"name": "sdpa_flash", "batch": 8}]),
               "peersobj.json": json.dumps({"name": "sdpa_flash"})}
        for name, text in bad.items():
            path = os.path.join(tmp, name)
            with open(path, "w") as fh:
                fh.write(text)
            args = ([sys.executable, os.path.abspath(__file__),
                     "--out", os.path.join(tmp, "o.json")]
                    + (["--gb", f["executor_gb.json"], "--peers", path] if "peers" in name
                       else ["--gb", path]))
            r = subprocess.run(args, capture_output=True, text=True)
            assert r.returncode == 2 and "error:" in r.stderr, (name, r.returncode, r.stderr)
        r = subprocess.run([sys.executable, os.path.abspath(__file__), "--gb",
                            f["executor_gb.json"], f["executor_gb.json"],
                            "--out", os.path.join(tmp, "o.json")],
                           capture_output=True, text=True)
        assert r.returncode == 2 and "twice" in r.stderr, r.stderr
        r = subprocess.run([sys.executable, os.path.abspath(__file__), "--gb",
                            os.path.join(tmp, "missing.json"),
                            "--out", os.path.join(tmp, "o.json")],
                           capture_output=True, text=True)
        assert r.returncode == 2 and "does not exist" in r.stderr
        # The same benchmark in two files is an error.
        dup = os.path.join(tmp, "dup.json")
        with open(dup, "w") as fh:
            json.dump(ex, fh)
        try:
            merge([f["executor_gb.json"], dup], [], out, None)
        except InputError as e:
            assert "appears in both" in str(e)
        else:
            raise AssertionError("duplicate benchmark accepted")
    print("merge_results.py self-test: passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
