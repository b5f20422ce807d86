"""A worker's streaming stack alone: CPU per delta.

S streamed calls, C at once, on one asyncio loop in this process, as a worker's loop
runs them: httpx reads the mock provider's server-sent events (100 chunks 20 ms apart
by default), OpenAI's chunk decoder turns them into deltas, `StreamedCall` relays each
to the job's Redis Stream (a private redis-server) through one `StreamAppender`. No
Celery, no database, no API: the part of a streamed job's cost that grows with its
length. Reported: process CPU per delta (this process; the mock and redis-server are
apart), wall time, deltas relayed; with `--profile FILE`, a cProfile of the same run.

    .venv/bin/python bench/stream_worker.py --streams 400 --concurrency 100
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/ is not installed

import httpx2 as httpx
import redis.asyncio as aioredis
from private_redis import private_redis  # bench/ is sys.path[0]

from workers.providers.exchange import StreamCall, json_call, stream_async
from workers.providers.openai import ChatChunks, error_from_response, stream_payload
from workers.streaming import StreamAppender, StreamedCall

BODY = {"model": "mock-model", "messages": [{"role": "user", "content": "How far is the moon?"}]}


async def relay_all(mock_url: str, redis_url: str, args: argparse.Namespace) -> dict[str, Any]:
    connections = args.concurrency + 16
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    client = httpx.AsyncClient(limits=limits, timeout=60)
    pool = aioredis.BlockingConnectionPool.from_url(redis_url, max_connections=32, timeout=10)
    appender = StreamAppender(aioredis.Redis(connection_pool=pool))
    gate = asyncio.Semaphore(args.concurrency)
    deltas = 0

    async def one(job: str) -> None:
        nonlocal deltas
        async with gate:
            call = json_call(
                f"{mock_url}/v1/chat/completions",
                {"Authorization": "Bearer k"},
                stream_payload(BODY),
                60,
            )
            stream = StreamCall(call, ChatChunks("openai"), error_from_response)
            streamed = StreamedCall(appender, job, 1, BODY, "mock-model")
            await streamed.run(stream_async(stream, client, "openai"))
            deltas += streamed.assembly.pieces

    await asyncio.gather(*(one(f"job_warm_{i}") for i in range(args.concurrency)))
    deltas = 0
    profile = cProfile.Profile() if args.profile else None
    cpu, wall = time.process_time(), time.perf_counter()
    if profile is not None:
        profile.enable()
    await asyncio.gather(*(one(f"job_bench_{i}") for i in range(args.streams)))
    if profile is not None:
        profile.disable()
        profile.dump_stats(args.profile)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    await client.aclose()
    await pool.aclose()
    return {
        "streams": args.streams,
        "concurrency": args.concurrency,
        "deltas": deltas,
        "wall_s": round(wall, 2),
        "cpu_s": round(cpu, 2),
        "cpu_us_per_delta": round(1e6 * cpu / max(deltas, 1), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=400)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--chunks", type=int, default=100, help="the mock's per stream")
    parser.add_argument("--interval", type=float, default=0.02, help="between chunks, s")
    parser.add_argument("--redis-port", type=int, default=6405)
    parser.add_argument("--profile", type=Path, help="write a cProfile of the run here")
    args = parser.parse_args()
    from tests.support.processes import start_mock

    flags = ["--latency", "0", "--stream-chunks", str(args.chunks)]
    flags += ["--stream-interval", f"{args.interval:g}"]
    with (
        tempfile.TemporaryDirectory() as logs,
        private_redis(args.redis_port) as redis_url,
    ):
        mock, mock_url = start_mock(dict(os.environ), Path(logs), *flags)
        try:
            row = asyncio.run(relay_all(mock_url, f"{redis_url}/0", args))
        finally:
            mock.stop()
    print(json.dumps(row))


if __name__ == "__main__":
    main()
