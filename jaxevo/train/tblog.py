"""Metrics sinks: a JSONL file (always) and TensorBoard scalars.

TensorBoard: `tensorboardX` is used when installed. Otherwise a minimal built-in writer produces
standard `events.out.tfevents.*` files (TFRecord framing with masked CRC-32C, `Event`/`Summary`
protobufs encoded by hand) that TensorBoard reads — no TensorFlow, tensorboard or protobuf needed
(`flax.metrics.tensorboard` would need TensorFlow).
"""

from __future__ import annotations

import json
import math
import os
import socket
import struct
import time
from pathlib import Path
from typing import Mapping

# ----------------------------------------------------------------------------- CRC-32C


def _crc_table() -> list[int]:
    poly = 0x82F63B78
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ poly if c & 1 else c >> 1
        table.append(c)
    return table


_TABLE = _crc_table()


def crc32c(data: bytes) -> int:
    c = 0xFFFFFFFF
    for b in data:
        c = _TABLE[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


def masked_crc32c(data: bytes) -> int:
    c = crc32c(data)
    return (((c >> 15) | (c << 17)) + 0xA282EAD8) & 0xFFFFFFFF


# ----------------------------------------------------------------------------- protobuf wire format


def _varint(n: int) -> bytes:
    n &= (1 << 64) - 1
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _len_field(num: int, payload: bytes) -> bytes:
    return _varint((num << 3) | 2) + _varint(len(payload)) + payload


def encode_event(wall_time: float, step: int, *, file_version: str | None = None,
                 scalars: Mapping[str, float] | None = None) -> bytes:
    """A serialized `tensorflow.Event` (wall_time=1, step=2, file_version=3, summary=5)."""
    msg = b"\x09" + struct.pack("<d", wall_time) + b"\x10" + _varint(int(step))
    if file_version is not None:
        msg += _len_field(3, file_version.encode())
    if scalars:
        summary = b""
        for tag, value in scalars.items():
            # Summary.Value: tag=1 (string), simple_value=2 (float)
            val = _len_field(1, tag.encode()) + b"\x15" + struct.pack("<f", float(value))
            summary += _len_field(1, val)
        msg += _len_field(5, summary)
    return msg


def tfrecord(data: bytes) -> bytes:
    header = struct.pack("<Q", len(data))
    return (header + struct.pack("<I", masked_crc32c(header)) + data
            + struct.pack("<I", masked_crc32c(data)))


class EventFileWriter:
    """Minimal TensorBoard scalar writer (see the module doc)."""

    def __init__(self, logdir: str | os.PathLike):
        d = Path(logdir)
        d.mkdir(parents=True, exist_ok=True)
        name = f"events.out.tfevents.{int(time.time())}.{socket.gethostname()}.{os.getpid()}.jaxevo"
        self.path = d / name
        self._f = self.path.open("ab")
        self._f.write(tfrecord(encode_event(time.time(), 0, file_version="brain.Event:2")))
        self._f.flush()

    def add_scalars(self, scalars: Mapping[str, float], step: int) -> None:
        finite = {k: float(v) for k, v in scalars.items() if isinstance(v, (int, float))}
        if finite:
            self._f.write(tfrecord(encode_event(time.time(), step, scalars=finite)))

    def flush(self) -> None:
        self._f.flush()

    def close(self) -> None:
        if not self._f.closed:
            self._f.close()


class _TBX:
    def __init__(self, logdir):
        from tensorboardX import SummaryWriter

        self._w = SummaryWriter(str(logdir))

    def add_scalars(self, scalars, step):
        for k, v in scalars.items():
            self._w.add_scalar(k, float(v), step)

    def flush(self):
        self._w.flush()

    def close(self):
        self._w.close()


def tensorboard_writer(logdir):
    try:  # optional dependency: without it, our own event-file writer
        import tensorboardX  # noqa: F401

        return _TBX(logdir)
    except ImportError:
        return EventFileWriter(logdir)


class MetricsLogger:
    """Appends ``{"step": n, ...}`` lines to ``metrics.jsonl`` and mirrors scalars to TensorBoard."""

    def __init__(self, out_dir: str | os.PathLike, tensorboard: bool = True):
        self.dir = Path(out_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path = self.dir / "metrics.jsonl"
        self._f = self.path.open("a")
        self._tb = tensorboard_writer(self.dir / "tensorboard") if tensorboard else None

    def log(self, step: int, metrics: Mapping[str, float]) -> None:
        row = {"step": int(step)}
        row.update({k: (v if not isinstance(v, float) or math.isfinite(v) else str(v))
                    for k, v in metrics.items()})
        self._f.write(json.dumps(row) + "\n")
        self._f.flush()
        if self._tb is not None:
            self._tb.add_scalars({k: v for k, v in metrics.items()
                                  if isinstance(v, (int, float)) and math.isfinite(v)}, step)

    def close(self) -> None:
        self._f.close()
        if self._tb is not None:
            self._tb.flush()
            self._tb.close()
