"""GPU serving benchmark: titrate's own model serving (``models/``) on one GPU in bf16, against a naive server.

Everything runs in one process, one run, on one device, so every ratio is same-run:

1. **Ceiling**: the median rate of a dense bf16 ``8192 x 8192 x 8192`` matrix product (random normal data, three
   input sets rotated so no run is served from cache; CUDA events) -- the device's *measured* bf16 peak.
2. **Embedding variant**: all-MiniLM-L6-v2 loaded with :func:`models.variants.load_variant` (bf16, sdpa), checked
   against an fp32 load of the same weights (cosine) and against itself one text at a time (padding must not change
   an embedding). Then, per batch size ``B``:

   - ``predict_batch`` (titrate's call: tokenise, host->device copy, forward, mean pooling, normalise, ``.tolist()``)
     timed per call on the host clock: p50/p99 ms and texts/s;
   - the tokeniser alone (host clock) and the model's forward alone on pre-tokenised device tensors (CUDA events):
     where the time of a call goes;
   - achieved TFLOP/s of the forward alone and of the whole call, and their fraction of the measured ceiling.

3. **Closed loop** per concurrency ``C``: ``C`` async callers each sending one text and awaiting its answer, for
   ``--duration`` s, through (a) :class:`models.batching.DynamicBatcher` with ``max_wait_ms`` 5 (the default) and
   (b) 0 (batch whatever queued during the previous pass), against (c) a naive server: one
   ``model(**tokenizer(text))`` + pooling per request, serialised in one worker thread. The phases alternate
   ``--repeats`` times; medians of texts/s and p50/p99 are reported.
4. **Text-classification variant** (``--no-classifier`` skips it): the same encoder with a 2-label
   ``BertForSequenceClassification`` head, saved to a temporary folder and loaded with ``load_variant`` -- the
   head is randomly initialised, so its labels mean nothing, but its cost is the real one -- batch sweep and one
   closed loop (batcher vs naive).

Cost model, per sequence of ``L`` tokens: ``2 * P_layers * L + 4 * n_layers * L^2 * d + 2 * P_head`` FLOPs, where
``P_layers`` are the encoder layers' parameters (every token goes through each weight once, one multiply-add = 2
FLOPs), the second term is attention's ``QK^T`` and ``AV`` (``2 * L^2 * d`` multiply-adds each per layer), and
``P_head`` (BERT's pooler, plus the classifier) runs once per sequence. Embedding lookups and layer norms, GELU and
softmax are not counted (no multiply-adds worth counting). Every input is exactly ``--seq-len`` tokens (220-word
texts truncated), so batched and naive paths do identical work per text.

The weights: ``--model-dir`` (default ``.gpu_model/minilm-bf16`` when present -- a bf16 copy made by ``--prepare``,
small enough to travel to a lent GPU machine -- else the shipped package's fp32 checkpoint).
``--random-weights`` builds the same architecture from its ``config.json`` instead (throughput does not depend
on weight values).

    .venv/bin/python bench/gpu_serving.py --prepare .gpu_model/minilm-bf16     # once, here: bf16 copy (~45 MB)
    .venv/bin/python bench/gpu_serving.py --device cpu --small --out bench/out  # the whole script, tiny sizes
    python3 bench/gpu_serving.py --device cuda --out "$OUT"                    # on the GPU, ~3 min

Writes ``gpu_serving.json`` (every number) and ``gpu_serving.md`` (the ``RESULTS.md`` section) to ``--out``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # keep the device run's output tail readable
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from models.batching import DynamicBatcher  # noqa: E402
from models.monitoring import latency_percentiles  # noqa: E402
from models.spec import ModelSpec, Task  # noqa: E402
from models.variants import EmbeddingVariant, TextClassificationVariant, TransformersVariant, load_variant  # noqa: E402

DEFAULT_MODEL_DIR = ROOT / ".gpu_model" / "minilm-bf16"
WORDS = (
    "the model variant serves requests while the experiment measures latency conversion and revenue "
    "across users in many countries every day with careful statistics guardrails and ramps a quick "
    "brown fox jumps over lazy dogs near rivers mountains cities forests oceans deserts islands"
).split()


def log(message: str) -> None:
    """Progress on stderr, with the wall clock (the device run is watched through its output tail)."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def make_texts(n: int, seed: int, words: int = 220) -> list[str]:
    """``n`` distinct texts of ``words`` words (one word piece each): 220 is far past any ``--seq-len`` used
    here, so truncation fixes the length; ``seq_len - 3`` words give just over ``seq_len`` tokens."""
    rng = np.random.default_rng(seed)
    return [f"request {seed}-{i}: " + " ".join(rng.choice(WORDS, size=words)) for i in range(n)]


# ---------------------------------------------------------------------------------------------------------------
# preparation (here, not on the device)


def prepare(target: Path) -> None:
    """Write a bf16 copy of the shipped all-MiniLM-L6-v2 (model + tokenizer) to ``target``, checked by a reload."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    from models.shipped import shipped_minilm_path

    source = shipped_minilm_path()
    model = AutoModel.from_pretrained(str(source), local_files_only=True, dtype=torch.bfloat16)
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    model.save_pretrained(str(target))
    # The shipped tokenizer files as they are (not re-saved): the device's older transformers reads them as-is.
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        if (source / name).is_file():
            shutil.copy2(source / name, target / name)
    AutoTokenizer.from_pretrained(str(target), local_files_only=True)
    reloaded = AutoModel.from_pretrained(str(target), local_files_only=True, dtype=torch.bfloat16)
    for (name, a), (_, b) in zip(model.state_dict().items(), reloaded.state_dict().items(), strict=True):
        if not torch.equal(a, b):
            raise SystemExit(f"reloaded {name} differs")
    size = sum(f.stat().st_size for f in target.iterdir() if f.is_file())
    print(f"wrote {target} ({size / 2**20:.1f} MiB): {sorted(f.name for f in target.iterdir())}")


def random_weights_dir(source: Path, into: Path) -> Path:
    """The architecture of ``source`` (its ``config.json`` and tokenizer) with freshly initialised weights."""
    import torch
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    torch.manual_seed(0)
    config = AutoConfig.from_pretrained(str(source), local_files_only=True)
    model = AutoModel.from_config(config).to(torch.bfloat16)
    model.save_pretrained(str(into))
    AutoTokenizer.from_pretrained(str(source), local_files_only=True).save_pretrained(str(into))
    return into


def classifier_dir(source: Path, into: Path) -> Path:
    """``source``'s encoder under a 2-label ``*ForSequenceClassification`` head (randomly initialised), saved."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(
        str(source), local_files_only=True, num_labels=2, dtype=torch.bfloat16
    )
    model.save_pretrained(str(into))
    AutoTokenizer.from_pretrained(str(source), local_files_only=True).save_pretrained(str(into))
    return into


# ---------------------------------------------------------------------------------------------------------------
# ceiling and cost model


def sync(device: Any) -> None:
    """Wait for the device's queued work (no-op on CPU)."""
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_device(fn: Callable[[], Any], device: Any, reps: int) -> list[float]:
    """Per-call milliseconds of ``fn``: CUDA events on a GPU (device time), the host clock on CPU."""
    import torch

    times: list[float] = []
    for _ in range(reps):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1000.0)
    return times


def matmul_ceiling(device: Any, n: int, reps: int) -> dict[str, Any]:
    """Median TFLOP/s of an ``n x n x n`` bf16 product (``2 n^3`` FLOPs) on random data, inputs rotated.

    Checked first against float32 on the same device (relative Frobenius error must be a bf16-sized ~1e-3, not 0
    and not NaN), so the timed kernel computes the product.
    """
    import torch

    gen = torch.Generator(device=device).manual_seed(1)
    sets = [
        (torch.randn(n, n, device=device, dtype=torch.bfloat16, generator=gen),
         torch.randn(n, n, device=device, dtype=torch.bfloat16, generator=gen))
        for _ in range(3)
    ]
    out = torch.full((n, n), float("nan"), device=device, dtype=torch.bfloat16)
    a, b = sets[0]
    torch.matmul(a, b, out=out)
    ref = a.float() @ b.float()
    rel_err = float(torch.linalg.norm(out.float() - ref) / torch.linalg.norm(ref))
    if not (0.0 < rel_err < 2e-2):
        raise SystemExit(f"bf16 matmul check failed: relative error {rel_err}")
    del ref
    state = {"i": 0}

    def step() -> None:
        x, y = sets[state["i"] % 3]
        state["i"] += 1
        torch.matmul(x, y, out=out)

    # Warm up for a second or more: the idle card sits at a low clock, and a few runs do not raise it.
    warm_until = time.perf_counter() + 1.0
    while time.perf_counter() < warm_until:
        step()
        sync(device)
    times = time_device(step, device, reps)
    ms = statistics.median(times)
    return {"n": n, "reps": reps, "median_ms": ms, "tflop_s": 2.0 * n**3 / (ms / 1000.0) / 1e12,
            "best_tflop_s": 2.0 * n**3 / (min(times) / 1000.0) / 1e12, "rel_err_vs_fp32": rel_err}


def flops_per_sequence(model: Any, seq_len: int) -> dict[str, float]:
    """``2 * P_layers * L + 4 * n_layers * L^2 * d + 2 * P_head`` (module docstring), with its parts."""
    base = getattr(model, "bert", model)  # BertForSequenceClassification wraps the BertModel as .bert
    config = base.config
    layers = sum(p.numel() for p in base.encoder.parameters())
    head = sum(p.numel() for n, p in model.named_parameters() if "encoder." not in n and "embeddings." not in n)
    per_token = 2.0 * layers * seq_len
    attention = 4.0 * config.num_hidden_layers * seq_len**2 * config.hidden_size
    return {"layer_params": float(layers), "head_params": float(head), "linear_flops": per_token,
            "attention_flops": attention, "head_flops": 2.0 * head, "total": per_token + attention + 2.0 * head}


# ---------------------------------------------------------------------------------------------------------------
# correctness


def check_embeddings(variant: EmbeddingVariant, spec_fp32: ModelSpec, texts: list[str]) -> dict[str, float]:
    """bf16 vs fp32 embeddings of the same weights (cosine), and batched vs one-at-a-time (padding-invariance)."""
    batched = np.asarray(variant.predict_batch(texts), dtype=np.float64)
    single = np.asarray([variant.predict_batch([t])[0] for t in texts], dtype=np.float64)
    reference_variant = load_variant(spec_fp32)
    reference = np.asarray(reference_variant.predict_batch(texts), dtype=np.float64)
    reference_variant.close()
    del reference_variant
    for name, arr in (("batched", batched), ("single", single), ("fp32", reference)):
        if not np.all(np.isfinite(arr)) or not np.allclose(np.linalg.norm(arr, axis=1), 1.0, atol=1e-3):
            raise SystemExit(f"{name} embeddings are not finite unit vectors")
    cos_fp32 = np.sum(batched * reference, axis=1)
    cos_single = np.sum(batched * single, axis=1)
    result = {"min_cos_bf16_vs_fp32": float(cos_fp32.min()), "min_cos_batched_vs_single": float(cos_single.min())}
    if result["min_cos_bf16_vs_fp32"] < 0.99 or result["min_cos_batched_vs_single"] < 0.99:
        raise SystemExit(f"embedding check failed: {result}")
    # Distinct texts must give distinct vectors (an unwritten or broadcast output would not).
    if np.max(np.abs(batched[0] - batched[1])) == 0.0:
        raise SystemExit("two different texts gave the same embedding")
    return result


# ---------------------------------------------------------------------------------------------------------------
# tokeniser


def variant_tokenizer_lengths(model_dir: Path, texts: list[str], seq_len: int) -> list[list[int]]:
    """Token ids of ``texts`` truncated at ``seq_len``, by the model's own tokeniser."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
    ids: list[list[int]] = tokenizer(texts, truncation=True, max_length=seq_len)["input_ids"]
    return ids


_TOKENIZER_CHILD = """
import json, statistics, sys, time
from transformers import AutoTokenizer
sys.path.insert(0, sys.argv[2])
from bench.gpu_serving import make_texts
tok = AutoTokenizer.from_pretrained(sys.argv[1], local_files_only=True)
seq_len = int(sys.argv[3])
out = {}
for words in (220, seq_len - 3):
    texts = make_texts(int(sys.argv[4]), seed=5, words=words)
    for name, fn in (("call", lambda: tok(texts, padding="longest", truncation=True, max_length=seq_len,
                                          return_tensors="pt")),
                     ("encode_batch", lambda: tok._tokenizer.encode_batch(texts))):
        fn()
        times = []
        for _ in range(5):
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1000.0)
        out[f"{name}_{words}w_ms"] = statistics.median(times)
print(json.dumps(out))
"""


def tokenizer_probe(model_dir: Path, size: dict[str, Any]) -> dict[str, Any]:
    """Milliseconds to tokenise ``tokenizer_texts`` (1024) texts (long: 220 words; short: just over ``seq_len``
    tokens), through
    titrate's call (``tokenizer(...)`` to padded tensors) and the Rust ``encode_batch`` alone, with the
    tokeniser's thread pool at its default size and at one thread (``RAYON_NUM_THREADS=1``), each in a child
    process (the pool's size is fixed at its first use)."""
    out: dict[str, Any] = {}
    for label, extra in (("default_threads", {}), ("one_thread", {"RAYON_NUM_THREADS": "1"})):
        env = {**os.environ, "TOKENIZERS_PARALLELISM": "true", **extra}
        done = subprocess.run(
            [sys.executable, "-c", _TOKENIZER_CHILD, str(model_dir), str(ROOT), str(size["seq_len"]),
             str(size["tokenizer_texts"])],
            capture_output=True, text=True, env=env, timeout=300, check=False)
        if done.returncode != 0:
            out[label] = {"error": done.stderr[-2000:]}
            continue
        out[label] = json.loads(done.stdout.strip().splitlines()[-1])
    return out


# ---------------------------------------------------------------------------------------------------------------
# batch sweep


def batch_sweep(variant: TransformersVariant, sizes: list[int], texts: list[str], flops: float, ceiling: float | None,
                seconds_per_size: float, device: Any) -> list[dict[str, Any]]:
    """Per batch size: titrate's ``predict_batch`` (host clock), the tokeniser alone, the forward alone (device)."""
    import torch

    rows = []
    for size in sizes:
        batch = texts[:size]
        variant.predict_batch(batch)  # warm-up: kernels for this shape, allocator
        variant.predict_batch(batch)
        sync(device)
        t0 = time.perf_counter()
        variant.predict_batch(batch)
        one = time.perf_counter() - t0
        calls = int(max(5, min(300, seconds_per_size / max(one, 1e-6))))
        latencies = []
        for _ in range(calls):
            t0 = time.perf_counter()
            out = variant.predict_batch(batch)
            latencies.append((time.perf_counter() - t0) * 1000.0)
        if len(out) != size:
            raise SystemExit(f"predict_batch returned {len(out)} outputs for {size} texts")
        summary = latency_percentiles(latencies)
        tok_ms = []
        for _ in range(max(3, calls // 4)):
            t0 = time.perf_counter()
            variant.tokenizer(batch, padding="longest", truncation=True, max_length=variant.spec.max_length,
                              return_tensors="pt")
            tok_ms.append((time.perf_counter() - t0) * 1000.0)
        encoded = variant._encode(batch)  # device tensors, as predict_batch builds them

        def forward(encoded: dict[str, Any] = encoded) -> None:
            with torch.inference_mode():
                variant.model(**encoded)

        forward()
        sync(device)
        fwd = statistics.median(time_device(forward, device, max(5, min(100, calls))))
        row = {
            "batch": size, "calls": calls, "call_p50_ms": summary.p50_ms, "call_p99_ms": summary.p99_ms,
            "texts_per_s": size / (summary.p50_ms / 1000.0), "tokenize_p50_ms": statistics.median(tok_ms),
            "forward_ms": fwd, "forward_texts_per_s": size / (fwd / 1000.0),
            "forward_tflop_s": size * flops / (fwd / 1000.0) / 1e12,
            "call_tflop_s": size * flops / (summary.p50_ms / 1000.0) / 1e12,
        }
        if ceiling:
            row["forward_fraction"] = row["forward_tflop_s"] / ceiling
            row["call_fraction"] = row["call_tflop_s"] / ceiling
        rows.append(row)
        log(f"  B={size:5d}: call p50 {summary.p50_ms:8.2f} ms ({row['texts_per_s']:9.0f} texts/s), tokenise "
            f"{row['tokenize_p50_ms']:7.2f} ms, forward {fwd:7.2f} ms ({row['forward_tflop_s']:7.2f} TFLOP/s)")
    return rows


# ---------------------------------------------------------------------------------------------------------------
# closed loop


class NaiveServer:
    """What a first server does: one ``model(**tokenizer(text))`` per request, serialised in one worker thread."""

    def __init__(self, variant: TransformersVariant) -> None:
        self.variant = variant
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="naive-server")

    def forward(self, text: str) -> Any:
        """One request's output: the embedding (mean-pooled, normalised) or the classifier's (label, score)."""
        import torch

        tokenizer, model = self.variant.tokenizer, self.variant.model
        with torch.inference_mode():
            encoded = tokenizer(text, truncation=True, max_length=self.variant.spec.max_length, return_tensors="pt")
            encoded = {k: v.to(model.device) for k, v in encoded.items()}
            if isinstance(self.variant, TextClassificationVariant):
                probs = torch.softmax(model(**encoded).logits.float(), dim=-1)[0]
                score, index = probs.max(dim=-1)
                return {"label": self.variant.labels[int(index)], "score": float(score)}
            hidden = model(**encoded).last_hidden_state.float()
            mask = encoded["attention_mask"].unsqueeze(-1).float()
            pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1)
            return torch.nn.functional.normalize(pooled, dim=-1)[0].cpu().tolist()

    async def submit(self, texts: list[str]) -> list[Any]:
        """Outputs for ``texts``, one forward each."""
        loop = asyncio.get_running_loop()
        return [await loop.run_in_executor(self.executor, self.forward, text) for text in texts]

    def close(self) -> None:
        """Stop the worker thread."""
        self.executor.shutdown(wait=True)


async def closed_loop(submit: Callable[[list[str]], Awaitable[list[Any]]], texts: list[str], concurrency: int,
                      duration_s: float, stats: Any = None) -> dict[str, Any]:
    """``concurrency`` callers, each sending one text, awaiting its answer, sending the next, for ``duration_s``."""
    latencies: list[float] = []
    deadline = time.perf_counter() + duration_s
    counter = iter(range(10**12))
    before = (stats.texts, stats.batches) if stats is not None else None

    async def caller() -> None:
        while time.perf_counter() < deadline:
            text = texts[next(counter) % len(texts)]
            started = time.perf_counter()
            await submit([text])
            latencies.append((time.perf_counter() - started) * 1000.0)

    started = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    summary = latency_percentiles(latencies)
    result = {"requests": len(latencies), "seconds": elapsed, "texts_per_s": len(latencies) / elapsed,
              "p50_ms": summary.p50_ms, "p99_ms": summary.p99_ms}
    if before is not None:
        batches = stats.batches - before[1]
        result["mean_batch"] = (stats.texts - before[0]) / batches if batches else 0.0
    return result


async def concurrency_sweep(variant: TransformersVariant, texts: list[str], concurrencies: list[int],
                            max_batch: int, waits: list[float], duration: float, repeats: int) -> dict[str, Any]:
    """Batcher(s) and naive server alternating at each concurrency; medians over repeats."""
    naive = NaiveServer(variant)
    naive.forward(texts[0])
    paths: dict[str, Any] = {"naive": (naive.submit, None)}
    batchers = []
    for wait in waits:
        batcher = DynamicBatcher(variant, max_batch=max_batch, max_wait_ms=wait)
        await batcher.start()
        batchers.append(batcher)
        paths[f"batcher_wait{wait:g}"] = (batcher.submit, batcher.stats)
    rows = []
    try:
        for concurrency in concurrencies:
            runs: dict[str, list[dict[str, Any]]] = {name: [] for name in paths}
            for _ in range(repeats):
                for name, (submit, stats) in paths.items():
                    runs[name].append(await closed_loop(submit, texts, concurrency, duration, stats))
            row: dict[str, Any] = {"concurrency": concurrency, "runs": runs}
            for name, results in runs.items():
                row[name] = {key: float(statistics.median(r[key] for r in results))
                             for key in results[0] if key not in ("requests", "seconds")}
                row[name]["requests"] = sum(r["requests"] for r in results)
            rows.append(row)
            log(f"  C={concurrency:4d}: " + ", ".join(
                f"{name} {row[name]['texts_per_s']:8.0f} texts/s p50 {row[name]['p50_ms']:7.2f} ms"
                for name in paths))
    finally:
        for batcher in batchers:
            await batcher.close()
        naive.close()
    return {"max_batch": max_batch, "waits_ms": waits, "duration_s": duration, "repeats": repeats, "rows": rows}


# ---------------------------------------------------------------------------------------------------------------
# the run


def machine_info(device: Any) -> dict[str, Any]:
    """Host, torch, transformers and (on CUDA) the GPU as nvidia-smi reports it at the start."""
    import torch
    import transformers

    info: dict[str, Any] = {"python": platform.python_version(), "torch": torch.__version__,
                            "transformers": transformers.__version__, "nproc": os.cpu_count(),
                            "machine": platform.machine()}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        try:
            info["nvidia_smi"] = subprocess.run(
                ["nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm,power.limit,"
                 "temperature.gpu,utilization.gpu", "--format=csv,noheader"],
                capture_output=True, text=True, timeout=30, check=False).stdout.strip()
        except (OSError, subprocess.SubprocessError) as exc:
            info["nvidia_smi"] = f"unavailable: {exc}"
    return info


def sizes_for(args: argparse.Namespace) -> dict[str, Any]:
    """The workload: full on the GPU, tiny with ``--small`` (a CPU check of the whole script)."""
    if args.small:
        return {"seq_len": 32, "matmul_n": 256, "matmul_reps": 5, "batches": [1, 4, 16], "cls_batches": [1, 4],
                "concurrencies": [1, 8], "cls_concurrencies": [8], "short_concurrencies": [8], "max_batch": 16,
                "tokenizer_texts": 64,
                "duration": 0.5,
                "repeats": 1, "seconds_per_size": 0.3, "check_texts": 4}
    return {"seq_len": args.seq_len, "matmul_n": 8192, "matmul_reps": 200,
            "batches": [1, 8, 32, 64, 128, 256, 512, 1024], "cls_batches": [1, 64, 256],
            "concurrencies": [1, 16, 64, 256], "cls_concurrencies": [64], "short_concurrencies": [64, 256],
            "max_batch": args.max_batch, "tokenizer_texts": 1024,
            "duration": args.duration, "repeats": args.repeats, "seconds_per_size": 1.5, "check_texts": 32}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    device = torch.device(args.device)
    size = sizes_for(args)
    result: dict[str, Any] = {"started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                              "machine": machine_info(device), "workload": size, "device": str(device)}
    log(f"machine: {result['machine']}")

    def checkpoint() -> None:  # what a run stopped at its time limit still brings back
        (args.out / "gpu_serving.partial.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")

    ceiling = None
    if device.type == "cuda":
        result["ceiling"] = matmul_ceiling(device, size["matmul_n"], size["matmul_reps"])
        ceiling = result["ceiling"]["tflop_s"]
        log(f"ceiling: bf16 {size['matmul_n']}^3 matmul {ceiling:.0f} TFLOP/s (median), "
            f"rel err vs fp32 {result['ceiling']['rel_err_vs_fp32']:.1e}")
        checkpoint()
    elif args.small:
        result["ceiling"] = matmul_ceiling(device, size["matmul_n"], size["matmul_reps"])

    model_dir = args.model_dir
    workdir = Path(tempfile.mkdtemp(prefix="titrate-gpu-bench-"))
    if args.random_weights:
        model_dir = random_weights_dir(model_dir, workdir / "random")
    result["model_dir"] = str(args.model_dir)
    result["random_weights"] = bool(args.random_weights)
    dtype = "bfloat16" if device.type == "cuda" else args.cpu_dtype
    texts = make_texts(max(size["batches"]) + 64, seed=0)
    big = max(max(size["batches"]), size["max_batch"])

    def spec(task: Task, path: Path, dtype: str = dtype) -> ModelSpec:
        return ModelSpec(key=f"bench-{task}", task=task, path=path, dtype=dtype, device=str(device),  # type: ignore[arg-type]
                         max_batch=big, max_length=size["seq_len"], pooling="mean")

    t0 = time.perf_counter()
    variant = load_variant(spec("embedding", model_dir))
    assert isinstance(variant, EmbeddingVariant)
    result["embedding"] = {"load_s": time.perf_counter() - t0, "describe": variant.describe()}
    lengths = {len(ids) for ids in variant.tokenizer(texts[:64], truncation=True,
                                                    max_length=size["seq_len"])["input_ids"]}
    if lengths != {size["seq_len"]}:
        raise SystemExit(f"inputs are not all {size['seq_len']} tokens: {sorted(lengths)}")
    flops = flops_per_sequence(variant.model, size["seq_len"])
    result["embedding"]["flops"] = flops
    log(f"embedding variant loaded in {result['embedding']['load_s']:.1f} s: {variant.describe()}; "
        f"{flops['total'] / 1e9:.3f} GFLOP/sequence")
    result["embedding"]["check"] = check_embeddings(variant, spec("embedding", model_dir, "float32"),
                                                    make_texts(size["check_texts"], seed=7))
    log(f"check: {result['embedding']['check']}")
    checkpoint()
    log("batch sweep (embedding)")
    result["embedding"]["sweep"] = batch_sweep(variant, size["batches"], texts, flops["total"], ceiling,
                                               size["seconds_per_size"], device)
    checkpoint()
    log(f"closed loop (embedding), max_batch {size['max_batch']}")
    result["embedding"]["closed_loop"] = await concurrency_sweep(
        variant, texts, size["concurrencies"], size["max_batch"], [5.0, 0.0], size["duration"], size["repeats"])
    variant.close()
    del variant
    if device.type == "cuda":
        result["embedding"]["max_memory_allocated_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
    checkpoint()

    # The tokeniser's share, and the closed loop on texts that need no truncation.
    log("tokeniser and text length")
    result["tokenizer"] = tokenizer_probe(model_dir, size)
    log(f"  {result['tokenizer']}")
    checkpoint()
    short = make_texts(1024, seed=11, words=size["seq_len"] - 3)
    short_lengths = {len(ids) for ids in variant_tokenizer_lengths(model_dir, short[:64], size["seq_len"])}
    if short_lengths != {size["seq_len"]}:
        raise SystemExit(f"short inputs are not all {size['seq_len']} tokens: {sorted(short_lengths)}")
    variant = load_variant(spec("embedding", model_dir))
    assert isinstance(variant, TransformersVariant)
    log(f"closed loop (embedding, texts of ~{size['seq_len']} tokens)")
    result["embedding"]["closed_loop_short"] = await concurrency_sweep(
        variant, short, size["short_concurrencies"], size["max_batch"], [5.0], size["duration"], size["repeats"])
    result["embedding"]["sweep_short"] = batch_sweep(variant, [max(size["batches"])], short, flops["total"],
                                                     ceiling, size["seconds_per_size"], device)
    variant.close()
    del variant
    checkpoint()

    if not args.no_classifier:
        cls_dir = classifier_dir(model_dir, workdir / "classifier")
        cls_variant = load_variant(spec("text-classification", cls_dir))
        assert isinstance(cls_variant, TextClassificationVariant)
        cls_flops = flops_per_sequence(cls_variant.model, size["seq_len"])
        outputs = cls_variant.predict_batch(texts[:8])
        if not all(o["label"] in cls_variant.labels and 0.5 <= o["score"] <= 1.0 for o in outputs):
            raise SystemExit(f"classifier outputs out of range: {outputs}")
        log(f"classifier loaded: {cls_variant.describe()}; {cls_flops['total'] / 1e9:.3f} GFLOP/sequence")
        result["classification"] = {
            "describe": cls_variant.describe(), "flops": cls_flops,
            "sweep": batch_sweep(cls_variant, size["cls_batches"], texts, cls_flops["total"], ceiling,
                                 size["seconds_per_size"], device),
            "closed_loop": await concurrency_sweep(cls_variant, texts, size["cls_concurrencies"], size["max_batch"],
                                                   [5.0], size["duration"], size["repeats"]),
        }
        cls_variant.close()
    shutil.rmtree(workdir, ignore_errors=True)
    result["finished"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    return result


# ---------------------------------------------------------------------------------------------------------------
# report


def markdown(result: dict[str, Any]) -> str:
    """The ``RESULTS.md`` section for one run."""
    m, emb = result["machine"], result["embedding"]
    ceiling = result.get("ceiling")
    flops = emb["flops"]
    on_gpu = result["device"].startswith("cuda")
    unit, scale = ("TFLOP/s", 1.0) if on_gpu else ("GFLOP/s", 1000.0)
    lines = [
        "## GPU serving (models/, bf16)" if on_gpu else "## GPU serving (models/) -- CPU check run",
        "",
        f"`bench/gpu_serving.py`, {result['started']} -- {m.get('gpu', 'no GPU')} "
        f"({m.get('nvidia_smi', '')}); torch {m['torch']}, transformers {m['transformers']}, Python {m['python']}, "
        f"{m['nproc']} CPU cores. all-MiniLM-L6-v2 "
        + ("(random weights from its config)" if result["random_weights"] else "(the shipped weights, as bf16)")
        + f" through `models.variants.load_variant` ({emb['describe']['dtype']}, attention "
        f"{emb['describe']['attn_implementation']}) on `{emb['describe']['device']}`; every input exactly "
        f"{result['workload']['seq_len']} tokens.",
        "",
    ]
    if ceiling:
        lines.append(
            f"**Ceiling, same run:** a bf16 {ceiling['n']}³ matrix product on random data runs at "
            f"**{ceiling['tflop_s']:.0f} TFLOP/s** (median of {ceiling['reps']}, best {ceiling['best_tflop_s']:.0f}; "
            f"relative error vs fp32 {ceiling['rel_err_vs_fp32']:.1e}).")
    lines += [
        f"**Cost model:** FLOPs per sequence = 2·P_layers·L + 4·n_layers·L²·d + 2·P_head = "
        f"2·{flops['layer_params'] / 1e6:.2f}M·{result['workload']['seq_len']} + attention + "
        f"2·{flops['head_params'] / 1e6:.2f}M = **{flops['total'] / 1e9:.3f} GFLOP** (embeddings, norms, "
        "activations and softmax not counted).",
        f"**Checks:** bf16 vs fp32 embeddings of the same weights: min cosine "
        f"{emb['check']['min_cos_bf16_vs_fp32']:.4f}; "
        f"batched vs one text at a time: min cosine {emb['check']['min_cos_batched_vs_single']:.4f}.",
        "",
        "**Batch sweep** -- `predict_batch` (titrate's whole call: tokenise, copy, forward, pool, `.tolist()`), host "
        "clock; tokeniser alone; model forward alone on device tensors (CUDA events):",
        "",
        f"| batch | call p50 ms | call p99 ms | texts/s | tokenise ms | forward ms | forward {unit} | "
        f"call {unit} |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]

    def pct(row: dict[str, Any], key: str) -> str:
        return f" ({100 * row[key]:.1f} %)" if key in row else ""

    for row in emb["sweep"]:
        lines.append(
            f"| {row['batch']} | {row['call_p50_ms']:.2f} | {row['call_p99_ms']:.2f} | {row['texts_per_s']:,.0f} | "
            f"{row['tokenize_p50_ms']:.2f} | {row['forward_ms']:.2f} | {row['forward_tflop_s'] * scale:.1f}"
            f"{pct(row, 'forward_fraction')} | {row['call_tflop_s'] * scale:.1f}{pct(row, 'call_fraction')} |")
    loop = emb["closed_loop"]
    lines += [
        "",
        f"**Closed loop** -- C callers, one text per request, {loop['duration_s']:g} s per phase, paths alternating, "
        f"{loop['repeats']} repeats (medians). Batcher: `DynamicBatcher`, max_batch {loop['max_batch']}; naive: one "
        "`model(**tokenizer(text))` per request, serialised. Load generator and server share one process and event "
        "loop, as titrate's `/predict` shares its worker's.",
        "",
        "| C | batcher (wait 5 ms) texts/s | p50 / p99 ms | mean batch | batcher (wait 0) texts/s | p50 / p99 ms | "
        "mean batch | naive texts/s | p50 / p99 ms | batcher(5) / naive | achieved (batcher 5) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in loop["rows"]:
        b5, b0, nv = row["batcher_wait5"], row.get("batcher_wait0"), row["naive"]
        achieved = b5["texts_per_s"] * flops["total"] / 1e12
        frac = f" ({100 * achieved / ceiling['tflop_s']:.1f} %)" if ceiling and on_gpu else ""
        b0_cells = (f"{b0['texts_per_s']:,.0f} | {b0['p50_ms']:.2f} / {b0['p99_ms']:.2f} | {b0['mean_batch']:.1f}"
                    if b0 else "- | - | -")
        lines.append(
            f"| {row['concurrency']} | {b5['texts_per_s']:,.0f} | {b5['p50_ms']:.2f} / {b5['p99_ms']:.2f} | "
            f"{b5['mean_batch']:.1f} | {b0_cells} | {nv['texts_per_s']:,.0f} | {nv['p50_ms']:.2f} / "
            f"{nv['p99_ms']:.2f} | {b5['texts_per_s'] / nv['texts_per_s']:.2f}× | "
            f"{achieved * scale:.2f} {unit}{frac} |")
    tok = result.get("tokenizer")
    if tok and "error" not in tok.get("default_threads", {}):
        seq_len = result["workload"]["seq_len"]
        lines += ["", f"**Tokeniser**, {result['workload']['tokenizer_texts']} texts, ms (child processes; texts "
                  f"of 220 words, or of {seq_len - 3} words = just over {seq_len} tokens):", "",
                  "| threads | titrate's call, 220 w | `encode_batch`, 220 w | titrate's call, short | "
                  "`encode_batch`, short |", "|---|---:|---:|---:|---:|"]
        for label in ("default_threads", "one_thread"):
            t = tok.get(label, {})
            if "error" in t or not t:
                continue
            lines.append(f"| {label.replace('_', ' ')} | {t['call_220w_ms']:.1f} | {t['encode_batch_220w_ms']:.1f} | "
                         f"{t[f'call_{seq_len - 3}w_ms']:.1f} | {t[f'encode_batch_{seq_len - 3}w_ms']:.1f} |")
    short = emb.get("closed_loop_short")
    if short:
        lines += ["", f"**Closed loop on short texts** (just over {result['workload']['seq_len']} tokens: the "
                  "tokeniser reads only what the model keeps; same forward):", "",
                  "| C | batcher (wait 5 ms) texts/s | p50 / p99 ms | mean batch | naive texts/s | p50 / p99 ms | "
                  "batcher / naive |", "|---:|---:|---:|---:|---:|---:|---:|"]
        for row in short["rows"]:
            b5, nv = row["batcher_wait5"], row["naive"]
            lines.append(f"| {row['concurrency']} | {b5['texts_per_s']:,.0f} | {b5['p50_ms']:.2f} / {b5['p99_ms']:.2f}"
                         f" | {b5['mean_batch']:.1f} | {nv['texts_per_s']:,.0f} | {nv['p50_ms']:.2f} / "
                         f"{nv['p99_ms']:.2f} | {b5['texts_per_s'] / nv['texts_per_s']:.2f}× |")
        for row in emb.get("sweep_short", []):
            lines.append(f"\n`predict_batch` of {row['batch']} short texts: p50 {row['call_p50_ms']:.2f} ms "
                         f"({row['texts_per_s']:,.0f} texts/s; tokenise {row['tokenize_p50_ms']:.2f} ms, forward "
                         f"{row['forward_ms']:.2f} ms).")
    cls = result.get("classification")
    if cls:
        lines += [
            "",
            f"**Text classification** (the same encoder under a 2-label head, randomly initialised -- its cost is "
            f"real, its labels are not; {cls['flops']['total'] / 1e9:.3f} GFLOP/sequence):",
            "",
            f"| batch | call p50 ms | call p99 ms | texts/s | forward ms | forward {unit} |",
            "|---:|---:|---:|---:|---:|---:|",
        ]
        for row in cls["sweep"]:
            lines.append(
                f"| {row['batch']} | {row['call_p50_ms']:.2f} | {row['call_p99_ms']:.2f} | {row['texts_per_s']:,.0f}"
                f" | {row['forward_ms']:.2f} | {row['forward_tflop_s'] * scale:.1f}{pct(row, 'forward_fraction')} |")
        for row in cls["closed_loop"]["rows"]:
            b5, nv = row["batcher_wait5"], row["naive"]
            lines.append(
                f"\nClosed loop, C = {row['concurrency']}: batcher {b5['texts_per_s']:,.0f} texts/s (p50 "
                f"{b5['p50_ms']:.2f} / p99 {b5['p99_ms']:.2f} ms, mean batch {b5['mean_batch']:.1f}) vs naive "
                f"{nv['texts_per_s']:,.0f} texts/s (p50 {nv['p50_ms']:.2f} / p99 {nv['p99_ms']:.2f} ms): "
                f"**{b5['texts_per_s'] / nv['texts_per_s']:.2f}×**.")
    lines.append("")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line flags (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prepare", type=Path, default=None, help="write the bf16 copy of the shipped model here")
    parser.add_argument("--device", default="cuda", help="cuda | cuda:N | cpu (default cuda)")
    parser.add_argument("--small", action="store_true", help="tiny sizes: a quick check of the whole script")
    parser.add_argument("--model-dir", type=Path, default=None, help="default .gpu_model/minilm-bf16, else shipped")
    parser.add_argument("--random-weights", action="store_true", help="the model's architecture, fresh weights")
    parser.add_argument("--no-classifier", action="store_true", help="skip the text-classification variant")
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--max-batch", type=int, default=256, help="the batcher's cap in the closed loop")
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per closed-loop phase")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--cpu-dtype", default="float32", help="dtype for --device cpu (bf16 always on CUDA)")
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or ROOT / "bench" / "out"))
    args = parser.parse_args(argv)
    if args.model_dir is None:
        if DEFAULT_MODEL_DIR.is_dir():
            args.model_dir = DEFAULT_MODEL_DIR
        else:
            from models.shipped import shipped_minilm_path

            args.model_dir = shipped_minilm_path()
    return args


def main(argv: list[str] | None = None) -> None:
    """Prepare the bf16 copy, or run the benchmark and write ``gpu_serving.json`` / ``.md`` to ``--out``."""
    args = parse_args(argv)
    if args.prepare is not None:
        prepare(args.prepare)
        return
    args.out.mkdir(parents=True, exist_ok=True)
    result = asyncio.run(run(args))
    (args.out / "gpu_serving.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    section = markdown(result)
    (args.out / "gpu_serving.md").write_text(section, encoding="utf-8")
    print(section)


if __name__ == "__main__":
    main()
