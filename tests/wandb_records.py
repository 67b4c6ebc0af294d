"""Read back what W&B wrote offline: the records of ``offline-run-*/run-*.wandb`` files.

wandb 0.31 ships no Python reader for its transaction log, so this parses its framing (a LevelDB-style
log: a 7-byte file header, then 32 KiB blocks of chunks, each ``crc32 | length | type`` + payload,
where a record split across blocks is a FIRST, MIDDLE..., LAST sequence) into W&B's own protobuf.
"""

from __future__ import annotations

import json
import struct
import time
from pathlib import Path
from typing import Any

from wandb.proto import wandb_internal_pb2

FILE_HEADER = 7  # b":W&B" + magic (2 bytes) + version (1 byte)
BLOCK = 32768
CHUNK_HEADER = 7  # crc32 (4), length (2), type (1)
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def records(path: Path) -> list[Any]:
    """Every record of one ``.wandb`` file, as ``wandb_internal_pb2.Record``."""
    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B transaction log"
    payloads, pending, pos = [], b"", FILE_HEADER
    while pos + CHUNK_HEADER <= len(data):
        left = BLOCK - pos % BLOCK
        if left < CHUNK_HEADER:  # the writer pads a block's tail that cannot hold a chunk header
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + CHUNK_HEADER])
        if kind == 0:  # zero padding up to the end of the block
            pos += left
            continue
        chunk = data[pos + CHUNK_HEADER : pos + CHUNK_HEADER + length]
        pos += CHUNK_HEADER + length
        if kind == FULL:
            payloads.append(chunk)
        elif kind == FIRST:
            pending = chunk
        elif kind == MIDDLE:
            pending += chunk
        elif kind == LAST:
            payloads.append(pending + chunk)
    out = []
    for payload in payloads:
        record = wandb_internal_pb2.Record()
        record.ParseFromString(payload)
        out.append(record)
    return out


def offline_runs(root: Path, timeout: float = 30.0) -> list[list[Any]]:
    """The records of every offline run under ``root/wandb``, one list per run.

    ``run.finish()`` can return before W&B's service has flushed a run's file (seen with two runs open
    in one process), so this waits until every run holds its ``exit`` record.
    """
    deadline = time.monotonic() + timeout
    while True:
        runs = [records(f) for f in sorted((root / "wandb").glob("offline-run-*/run-*.wandb"))]
        if all(of_type(run, "exit") for run in runs) or time.monotonic() > deadline:
            return runs
        time.sleep(0.1)


def of_type(run: list[Any], kind: str) -> list[Any]:
    """The payloads of one record type (``run``, ``history``, ``artifact``, ...) in a run's records."""
    return [getattr(r, kind) for r in run if r.WhichOneof("record_type") == kind]


def history_rows(run: list[Any]) -> list[dict[str, Any]]:
    """Each ``log()`` call of a run as ``{key: value}`` (nested keys such as ``eval/x`` joined by '/')."""
    return [
        {(item.key or "/".join(item.nested_key)): json.loads(item.value_json) for item in history.item}
        for history in of_type(run, "history")
    ]
