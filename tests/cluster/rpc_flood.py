"""A hostile client for the flood tests: raw Flight ``DoAction`` calls with grpcio's asyncio API, run as a process.

    python -m tests.cluster.rpc_flood ADDRESS many --calls 2000 --seconds 10
    python -m tests.cluster.rpc_flood ADDRESS big --mib 64 --calls 4
    python -m tests.cluster.rpc_flood ADDRESS header --mib 50 [--token T]

Prints one JSON line: how many calls ended with which gRPC status.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import struct
import time

import grpc
import grpc.aio

SERVICE = "/arrow.flight.protocol.FlightService/"  # Flight's gRPC service (as semcache.cluster._server)
CHANNELS = 20  # separate connections, so the calls are not queued behind one connection's stream limit


def action(name: str, body: bytes) -> bytes:
    """Flight's ``Action`` message: ``type`` (field 1) and ``body`` (field 2), both length-delimited."""
    return b"\x0a" + _varint(len(name)) + name.encode() + b"\x12" + _varint(len(body)) + body


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        out.append(low | (0x80 if value else 0))
        if not value:
            return bytes(out)


async def _call(method: grpc.aio.UnaryStreamMultiCallable, request: bytes, metadata: tuple[tuple[str, str], ...],
                outcomes: collections.Counter[str]) -> None:
    try:
        async for _ in method(request, metadata=metadata, timeout=30):
            pass
        outcomes["OK"] += 1
    except grpc.aio.AioRpcError as exc:
        outcomes[exc.code().name] += 1


async def flood(address: str, request: bytes, *, calls: int, seconds: float, token: str | None) -> dict[str, int]:
    """Keep ``calls`` calls in flight (each one again as soon as it ends) for ``seconds`` (0: one round)."""
    target = address.split("://", 1)[-1]
    options = [("grpc.max_send_message_length", -1), ("grpc.use_local_subchannel_pool", 1)]
    channels = [grpc.aio.insecure_channel(target, options=options) for _ in range(CHANNELS)]
    metadata = (("authorization", f"Bearer {token}"),) if token else ()
    outcomes: collections.Counter[str] = collections.Counter()
    deadline = time.monotonic() + seconds

    async def caller(index: int) -> None:
        method = channels[index % CHANNELS].unary_stream(SERVICE + "DoAction")
        while True:
            await _call(method, request, metadata, outcomes)
            if time.monotonic() >= deadline:
                return

    try:
        await asyncio.gather(*(caller(i) for i in range(calls)))
    finally:
        for channel in channels:
            await channel.close()
    return dict(outcomes)


def frame_with_header_of(size: int) -> bytes:
    """A wire frame whose JSON header is ``size`` bytes (one long string)."""
    header = json.dumps({"key": "x" * (size - 11)}).encode()
    return struct.pack("<I", len(header)) + header + struct.pack("<I", 0)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("address")
    parser.add_argument("kind", choices=("many", "big", "header"))
    parser.add_argument("--calls", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=0.0)
    parser.add_argument("--mib", type=int, default=1)
    parser.add_argument("--token", default=None)
    args = parser.parse_args()
    if args.kind == "many":
        request = action("health", b"")
    elif args.kind == "big":
        request = action("put", bytes(args.mib << 20))
    else:
        request = action("put", frame_with_header_of(args.mib << 20))
    outcomes = asyncio.run(flood(args.address, request, calls=args.calls, seconds=args.seconds, token=args.token))
    print(json.dumps(outcomes), flush=True)


if __name__ == "__main__":
    main()
