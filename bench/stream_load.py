"""Streamed chat completions from many aiohttp clients, and what each client saw.

bench/streams.py imports `load` (part 1, in its own process, as bench/sync_chat.py
does) and runs this file as a process of its own for part 2, so the clients' CPU is
apart from the bench's and measured (user + system seconds of this process):

    .venv/bin/python bench/stream_load.py URL KEY --requests 1000 --concurrency 1000

prints one JSON object. A content chunk is a `chat.completion.chunk` whose delta
carries non-empty `content`; TTFT runs from sending the request to the first of them,
a gap from one of them to the next (same stream), the stream's time to `data: [DONE]`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
from collections import Counter
from typing import Any

import aiohttp

__all__ = ["load", "pct", "stream_body"]


def stream_body(message: str) -> dict[str, Any]:
    return {
        "model": "mock-model",
        "stream": True,
        "stream_options": {"include_usage": True},
        "messages": [{"role": "user", "content": message}],
    }


def pct(values: list[float], q: float) -> float:
    """The q-quantile (nearest rank below) in milliseconds; values sorted."""
    return round(1000 * values[int(q * (len(values) - 1))], 2) if values else float("nan")


async def load(
    url: str, key: str, requests: int, concurrency: int, message: str, expect: int = 0
) -> dict[str, Any]:
    """`requests` streams from `concurrency` clients at once."""
    ttft: list[float] = []
    totals: list[float] = []
    gaps: list[float] = []
    counts: list[int] = []
    short: list[list[Any]] = []  # [chunk id, content chunks, their lengths] of a few
    errors: Counter[str] = Counter()
    sent = iter(range(requests))
    body = stream_body(message)
    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=60, sock_read=120)
    headers = {"Authorization": f"Bearer {key}"}

    async def one_stream(client: aiohttp.ClientSession) -> None:
        t = time.perf_counter()
        first = last = ident = None
        n, done, sizes = 0, False, []
        async with client.post(f"{url}/v1/chat/completions", json=body) as reply:
            if reply.status != 200:
                errors[f"HTTP {reply.status}: {(await reply.text())[:200]}"] += 1
                return
            async for line in reply.content:
                if not line.startswith(b"data: "):
                    continue
                data = line[6:].strip()
                if data == b"[DONE]":
                    done = True
                    break
                event = json.loads(data)
                if "error" in event:
                    errors[f"error event: {str(event['error'])[:200]}"] += 1
                ident = ident or event.get("id")
                content = "".join(
                    (c.get("delta") or {}).get("content") or "" for c in event.get("choices") or ()
                )
                if content:
                    sizes.append(len(content))
                    now = time.perf_counter()
                    if first is None:
                        first = now
                    else:
                        gaps.append(now - last)  # type: ignore[operator]
                    last, n = now, n + 1
        totals.append(time.perf_counter() - t)
        counts.append(n)
        if expect and n != expect and len(short) < 20:
            short.append([ident, n, sizes if len(sizes) < 10 else [*sizes[:3], "...", *sizes[-3:]]])
        if first is not None:
            ttft.append(first - t)
        if not done:
            errors["stream ended without [DONE]"] += 1

    async def one_client(client: aiohttp.ClientSession) -> None:
        for _ in sent:
            try:
                await one_stream(client)
            except (aiohttp.ClientError, TimeoutError) as exc:
                errors[f"{type(exc).__name__}: {str(exc)[:200]}"] += 1

    cpu0 = os.times()
    async with aiohttp.ClientSession(
        connector=connector, headers=headers, timeout=timeout
    ) as client:
        t0 = time.perf_counter()
        await asyncio.gather(*(one_client(client) for _ in range(concurrency)))
        wall = time.perf_counter() - t0
    cpu1 = os.times()
    for values in (ttft, totals, gaps):
        values.sort()
    return {
        "requests": requests,
        "concurrency": concurrency,
        "wall_s": round(wall, 2),
        "streams_completed": len(counts) - errors["stream ended without [DONE]"],
        "content_chunks": sum(counts),
        "chunks_min_max": [min(counts, default=0), max(counts, default=0)],
        "errors": dict(errors.most_common(5)),
        "ttft_p50_ms": pct(ttft, 0.5),
        "ttft_p99_ms": pct(ttft, 0.99),
        "total_p50_ms": pct(totals, 0.5),
        "total_p99_ms": pct(totals, 0.99),
        "gap_p50_ms": pct(gaps, 0.5),
        "gap_p99_ms": pct(gaps, 0.99),
        "gap_max_ms": pct(gaps, 1.0),
        "gap_mean_ms": round(1000 * statistics.fmean(gaps), 2) if gaps else float("nan"),
        "short_streams": short,
        "client_cpu_s": round(sum(cpu1[:2]) - sum(cpu0[:2]), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("url")
    parser.add_argument("key")
    parser.add_argument("--requests", type=int, required=True)
    parser.add_argument("--concurrency", type=int, required=True)
    parser.add_argument("--message", default="How far is the moon?")
    parser.add_argument("--expect", type=int, default=0, help="content chunks a stream")
    args = parser.parse_args()
    row = asyncio.run(
        load(args.url, args.key, args.requests, args.concurrency, args.message, args.expect)
    )
    print(json.dumps(row))


if __name__ == "__main__":
    main()
