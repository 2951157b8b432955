"""Read TensorFlow 1 checkpoints (tensor bundles) without TensorFlow.

A checkpoint ``prefix`` is two files:

* ``prefix.index`` — a LevelDB-style SSTable: data blocks of prefix-compressed (key, value)
  records, an index block pointing at them and a 48-byte footer. Keys are variable names;
  the empty key holds a ``BundleHeaderProto``, every other value is a ``BundleEntryProto``
  (dtype, shape, shard, offset, size).
* ``prefix.data-00000-of-0000N`` — the tensors' raw little-endian bytes, at those offsets.

Only the few protobuf fields we need are decoded, with a tiny varint parser, so neither
TensorFlow nor protobuf is required. :func:`write_checkpoint` writes the same format (one
shard, no compression); tests use it to check the reader on a checkpoint they made.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import UserInputError
from ..files import atomic_write

TABLE_MAGIC = 0xDB4775248B80FB57
FOOTER_SIZE = 48
BLOCK_TRAILER_SIZE = 5  # compression type (1 byte) + masked crc32c (4 bytes)

# tensorflow/core/framework/types.proto -> numpy little-endian dtypes
DTYPES: dict[int, np.dtype] = {
    1: np.dtype("<f4"), 2: np.dtype("<f8"), 3: np.dtype("<i4"), 4: np.dtype("u1"), 5: np.dtype("<i2"),
    6: np.dtype("i1"), 9: np.dtype("<i8"), 10: np.dtype("?"), 19: np.dtype("<f2"),
}
DTYPE_CODES = {v: k for k, v in DTYPES.items()}


class CheckpointError(UserInputError):
    """The checkpoint files are missing or not in the tensor-bundle format."""


@dataclass(frozen=True)
class TensorEntry:
    name: str
    dtype: np.dtype
    shape: tuple[int, ...]
    shard: int
    offset: int
    size: int


# ---- protobuf wire format (just enough) --------------------------------------------------------
def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise CheckpointError("Truncated varint in checkpoint index.")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _fields(buf: bytes) -> list[tuple[int, int | bytes]]:
    """(field number, value) pairs of a serialized message; nested messages stay bytes."""
    out, pos = [], 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 1:
            value, pos = buf[pos : pos + 8], pos + 8
        elif wire == 2:
            length, pos = _varint(buf, pos)
            value, pos = buf[pos : pos + length], pos + length
        elif wire == 5:
            value, pos = buf[pos : pos + 4], pos + 4
        else:
            raise CheckpointError(f"Unsupported protobuf wire type {wire} in checkpoint index.")
        out.append((number, value))
    return out


def _parse_entry(name: str, value: bytes) -> TensorEntry:
    dtype_code, shape, shard, offset, size = 0, (), 0, 0, 0
    for number, field in _fields(value):
        if number == 1:
            dtype_code = int(field)
        elif number == 2:  # TensorShapeProto: repeated Dim dim = 2 {int64 size = 1}
            dims = []
            for n, dim in _fields(field):
                if n == 2:
                    dims.append(next((int(v) for k, v in _fields(dim) if k == 1), 0))
            shape = tuple(dims)
        elif number == 3:
            shard = int(field)
        elif number == 4:
            offset = int(field)
        elif number == 5:
            size = int(field)
        elif number == 7:
            raise CheckpointError(f"Tensor {name!r} is stored in slices; partitioned variables are not supported.")
    if dtype_code not in DTYPES:
        raise CheckpointError(f"Tensor {name!r} has unsupported dtype code {dtype_code}.")
    return TensorEntry(name, DTYPES[dtype_code], shape, shard, offset, size)


# ---- SSTable -----------------------------------------------------------------------------------
def _block_entries(table: bytes, offset: int, size: int) -> list[tuple[bytes, bytes]]:
    block = table[offset : offset + size]
    if len(block) != size:
        raise CheckpointError("Checkpoint index is truncated.")
    compression = table[offset + size] if offset + size < len(table) else 0
    if compression != 0:
        raise CheckpointError("Compressed checkpoint index blocks are not supported.")
    num_restarts = struct.unpack_from("<I", block, size - 4)[0]
    end = size - 4 - 4 * num_restarts
    entries, pos, key = [], 0, b""
    while pos < end:
        shared, pos = _varint(block, pos)
        unshared, pos = _varint(block, pos)
        length, pos = _varint(block, pos)
        key = key[:shared] + block[pos : pos + unshared]
        pos += unshared
        entries.append((key, block[pos : pos + length]))
        pos += length
    return entries


def _handle(buf: bytes, pos: int = 0) -> tuple[int, int, int]:
    offset, pos = _varint(buf, pos)
    size, pos = _varint(buf, pos)
    return offset, size, pos


def read_index(index_path: str | Path) -> dict[str, TensorEntry]:
    """Name -> :class:`TensorEntry` for every tensor in a ``.index`` file."""
    path = Path(index_path)
    if not path.is_file():
        raise CheckpointError(f"Checkpoint index {path} not found.")
    table = path.read_bytes()
    if len(table) < FOOTER_SIZE or struct.unpack_from("<Q", table, len(table) - 8)[0] != TABLE_MAGIC:
        raise CheckpointError(f"{path} is not a TensorFlow checkpoint index (bad SSTable magic).")
    footer = table[-FOOTER_SIZE:]
    _, _, pos = _handle(footer)  # metaindex (unused)
    index_offset, index_size, _ = _handle(footer, pos)
    entries: dict[str, TensorEntry] = {}
    for _, handle in _block_entries(table, index_offset, index_size):
        offset, size, _ = _handle(handle)
        for key, value in _block_entries(table, offset, size):
            if key:  # the empty key is the BundleHeaderProto
                name = key.decode()
                entries[name] = _parse_entry(name, value)
    return entries


def read_checkpoint(prefix: str | Path, names: list[str] | None = None,
                    skip_optimizer: bool = True) -> dict[str, np.ndarray]:
    """Tensors of the checkpoint ``prefix`` as numpy arrays (optionally only ``names``).

    Files are ``prefix + ".index"`` and ``prefix + ".data-0000i-of-0000N"``; musicnn's prefix is a
    folder with a trailing slash (files ``MTT_vgg/.index``…). A folder given without the slash
    is treated the same way. Adam slots and step counters are skipped unless asked for.
    """
    text = str(prefix)
    if Path(text).is_dir() and not text.endswith("/"):
        text += "/"
    entries = read_index(text + ".index")
    if names is not None:
        missing = [n for n in names if n not in entries]
        if missing:
            raise CheckpointError(f"Checkpoint has no tensor(s) {missing}.")
        wanted = {n: entries[n] for n in names}
    elif skip_optimizer:
        optimizer_state = ("beta1_power", "beta2_power", "global_step")
        wanted = {n: e for n, e in entries.items() if "/Adam" not in n and not n.startswith(optimizer_state)}
    else:
        wanted = entries
    shards = 1 + max((e.shard for e in entries.values()), default=0)
    blobs: dict[int, bytes] = {}
    out: dict[str, np.ndarray] = {}
    for name, entry in wanted.items():
        if entry.shard not in blobs:
            data_path = Path(f"{text}.data-{entry.shard:05d}-of-{shards:05d}")
            if not data_path.is_file():
                raise CheckpointError(f"Checkpoint data file {data_path} not found.")
            blobs[entry.shard] = data_path.read_bytes()
        raw = blobs[entry.shard][entry.offset : entry.offset + entry.size]
        count = int(np.prod(entry.shape)) if entry.shape else 1
        if len(raw) != count * entry.dtype.itemsize:
            raise CheckpointError(f"Tensor {name!r}: {len(raw)} bytes stored, {count * entry.dtype.itemsize} expected.")
        out[name] = np.frombuffer(raw, dtype=entry.dtype).reshape(entry.shape).copy()
    return out


# ---- writer (tests, and a format reference) -----------------------------------------------------
def _put_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _field(number: int, value: int | bytes) -> bytes:
    if isinstance(value, bytes):
        return _put_varint(number << 3 | 2) + _put_varint(len(value)) + value
    return _put_varint(number << 3) + _put_varint(value)


def _block(records: list[tuple[bytes, bytes]], restart_every: int = 16) -> bytes:
    out, restarts, previous = bytearray(), [], b""
    for i, (key, value) in enumerate(records):
        shared = 0
        if i % restart_every == 0:
            restarts.append(len(out))
        else:
            while shared < min(len(key), len(previous)) and key[shared] == previous[shared]:
                shared += 1
        out += _put_varint(shared) + _put_varint(len(key) - shared) + _put_varint(len(value))
        out += key[shared:] + value
        previous = key
    for r in restarts or [0]:
        out += struct.pack("<I", r)
    out += struct.pack("<I", len(restarts or [0]))
    return bytes(out)


def write_checkpoint(prefix: str | Path, tensors: dict[str, np.ndarray]) -> None:
    """Write ``tensors`` as a one-shard TF tensor bundle (``prefix.index`` + ``prefix.data-00000-of-00001``)."""
    text = str(prefix)
    data, records = bytearray(), []
    header = _field(1, 1) + _field(3, _field(1, 1))  # num_shards=1, version{producer=1}
    records.append((b"", header))
    for name in sorted(tensors):
        array = np.array(tensors[name], order="C")  # (ascontiguousarray would make scalars 1-d)
        dtype = array.dtype.newbyteorder("<") if array.dtype.byteorder == ">" else array.dtype
        code = DTYPE_CODES.get(np.dtype(dtype.str.replace("=", "<")), DTYPE_CODES.get(dtype))
        if code is None:
            raise ValueError(f"dtype {array.dtype} not supported")
        raw = array.astype(dtype.newbyteorder("<")).tobytes()
        shape = b"".join(_field(2, _field(1, d)) for d in array.shape)
        entry = _field(1, code) + _field(2, shape) + _field(4, len(data)) + _field(5, len(raw))
        records.append((name.encode(), entry))
        data += raw
    table = bytearray()
    data_block = _block(records)
    table += data_block + b"\x00\x00\x00\x00\x00"
    meta_offset = len(table)
    meta_block = _block([])
    table += meta_block + b"\x00\x00\x00\x00\x00"
    index_offset = len(table)
    index_block = _block([(records[-1][0] + b"\x00", _put_varint(0) + _put_varint(len(data_block)))])
    table += index_block + b"\x00\x00\x00\x00\x00"
    handles = (_put_varint(meta_offset) + _put_varint(len(meta_block))
               + _put_varint(index_offset) + _put_varint(len(index_block)))
    table += handles + b"\x00" * (40 - len(handles)) + struct.pack("<Q", TABLE_MAGIC)
    atomic_write(text + ".data-00000-of-00001", bytes(data))  # data first: an index never points at missing data
    atomic_write(text + ".index", bytes(table))
