"""A :class:`~semcache._engine.state.ShardState` on disk: the snapshot format, its reader and its digest.

A snapshot is a directory:

* ``state.json``: format, model stamp (id, dimension), index settings, limits,
  the position in the command stream, and per scope its index file and metadata;
* ``entries.bin``: the key-value map, sorted by key, one framed record per entry;
* ``index-N.bin``: one hnswlib graph per scope (``save_index``);
* ``manifest.json``: the SHA-256 of every other file, and of itself.  Every
  file is checked against it before it is read: a flipped bit anywhere is a
  :class:`~semcache.errors.CorruptDataError` naming the file, never another
  key's value.  (Snapshots of format 1, written before checksums, have no manifest.)

Two replicas that applied the same commands write byte-identical snapshots,
so the SHA-256 over the files (:func:`snapshot_digest`) compares replicas.
"""

from __future__ import annotations

import hashlib
import json
import struct
import tempfile
from dataclasses import asdict
from pathlib import Path

from semcache._engine.index import IndexSettings, VectorIndex
from semcache._engine.inputs import Limits
from semcache._engine.state import Entry, ShardState
from semcache.errors import CorruptDataError, EmbeddingMismatchError

SNAPSHOT_FORMAT = 2
UNCHECKED_FORMATS = (1,)  # written before manifests existed: read without checksums
MANIFEST = "manifest.json"
_HASH_CHUNK = 1 << 20
_ENTRY_HEAD = struct.Struct("<IIIqqq")  # key, value, scope lengths; label (-1 none), created, expires


def write_snapshot(state: ShardState, directory: Path) -> None:
    """Write the whole ``state`` into the (empty or new) ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    scopes = []
    for number, scope in enumerate(sorted(state.indexes)):
        file = f"index-{number}.bin"
        meta = state.indexes[scope].save(directory / file)
        scopes.append({"scope": scope, "file": file, "meta": meta})
    (directory / "entries.bin").write_bytes(_encode_entries(state.entries))
    header = {
        "format": SNAPSHOT_FORMAT,
        "model_id": state.model_id,
        "dim": state.dim,
        "settings": asdict(state.settings),
        "limits": asdict(state.limits),
        "applied": state.applied,
        "scopes": scopes,
    }
    (directory / "state.json").write_text(json.dumps(header, sort_keys=True, indent=1))
    write_manifest(directory)


def write_manifest(directory: Path) -> None:
    """Record the SHA-256 of every file in ``directory`` (and of the record itself) in its manifest."""
    files = {file.name: file_sha256(file) for file in sorted(directory.iterdir()) if file.name != MANIFEST}
    (directory / MANIFEST).write_text(json.dumps({"files": files, "sha256": _sha_of(files)}, sort_keys=True, indent=1))


def verify_manifest(directory: Path) -> None:
    """Check every file of a snapshot against its manifest.

    Raises:
        CorruptDataError: the manifest is missing or damaged, a file is missing, added or altered.
    """
    try:
        manifest = json.loads((directory / MANIFEST).read_text())
        files, recorded = manifest["files"], manifest["sha256"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CorruptDataError(f"{directory / MANIFEST} is missing or damaged: {exc!r}") from exc
    if not isinstance(files, dict) or _sha_of(files) != recorded:
        raise CorruptDataError(f"{directory / MANIFEST} is damaged: its checksum does not match its content")
    present = {file.name for file in directory.iterdir()} - {MANIFEST}
    if present != set(files):
        raise CorruptDataError(f"snapshot in {directory} is damaged: files {sorted(present ^ set(files))} "
                               "are missing or were added")
    for name, expected in files.items():
        if file_sha256(directory / name) != expected:
            raise CorruptDataError(f"{directory / name} is damaged: its SHA-256 does not match the manifest")


def file_sha256(path: Path) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_HASH_CHUNK):
            sha.update(chunk)
    return sha.hexdigest()


def _sha_of(files: dict[str, str]) -> str:
    return hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()


def read_snapshot(directory: Path, *, model_id: str | None = None, dim: int | None = None) -> ShardState:
    """The state a snapshot directory holds.

    Raises:
        EmbeddingMismatchError: it was built with another model or dimension.
        CorruptDataError: a file is missing, damaged or in an unknown format.
    """
    try:
        return _read(directory, model_id, dim)
    except (EmbeddingMismatchError, CorruptDataError):
        raise
    except (OSError, ValueError, KeyError, TypeError, AttributeError, struct.error, RuntimeError) as exc:
        # json, struct, hnswlib and our own setting checks all end up here.
        raise CorruptDataError(f"snapshot in {directory} is damaged or unreadable: {exc!r}") from exc


def _read(directory: Path, model_id: str | None, dim: int | None) -> ShardState:
    if (directory / MANIFEST).exists() or not (directory / "state.json").exists():
        verify_manifest(directory)
    header = json.loads((directory / "state.json").read_text())
    if header.get("format") == SNAPSHOT_FORMAT:
        verify_manifest(directory)  # a snapshot of this format must have one: a deleted manifest is damage too
    elif header.get("format") not in UNCHECKED_FORMATS:
        raise CorruptDataError(f"unknown snapshot format {header.get('format')!r} in {directory}")
    if (model_id is not None and header["model_id"] != model_id) or (dim is not None and header["dim"] != dim):
        raise EmbeddingMismatchError(
            f"{directory} was built with {header['model_id']} (dim {header['dim']}); "
            f"it cannot be opened with {model_id} (dim {dim})"
        )
    settings = IndexSettings(**header["settings"])
    state = ShardState(header["dim"], header["model_id"], settings, Limits(**header["limits"]))
    indexes = {
        scope["scope"]: VectorIndex.load(directory / scope["file"], state.dim, settings, scope["meta"])
        for scope in header["scopes"]
    }
    state.adopt(_decode_entries((directory / "entries.bin").read_bytes()), indexes, header["applied"])
    return state


def snapshot_digest(state: ShardState) -> str:
    """SHA-256 over the snapshot bytes of ``state``: equal digests mean identical replicas."""
    with tempfile.TemporaryDirectory(prefix="semcache-digest-") as tmp:
        write_snapshot(state, Path(tmp))
        sha = hashlib.sha256()
        for file in sorted(Path(tmp).iterdir()):
            sha.update(file.name.encode())
            sha.update(file.read_bytes())
        return sha.hexdigest()


def _encode_entries(entries: dict[str, Entry]) -> bytes:
    parts = []
    for key in sorted(entries):
        entry = entries[key]
        key_b, scope_b = key.encode("utf-8", "surrogatepass"), entry.scope.encode("utf-8")
        label = -1 if entry.label is None else entry.label
        parts.append(
            _ENTRY_HEAD.pack(
                len(key_b), len(entry.value), len(scope_b), label, entry.created_at_ms, entry.expires_at_ms
            )
        )
        parts += [key_b, entry.value, scope_b]
    return b"".join(parts)


def _decode_entries(data: bytes) -> dict[str, Entry]:
    entries: dict[str, Entry] = {}
    view, pos = memoryview(data), 0
    while pos < len(view):
        key_len, value_len, scope_len, label, created, expires = _ENTRY_HEAD.unpack_from(view, pos)
        pos += _ENTRY_HEAD.size
        if pos + key_len + value_len + scope_len > len(view):
            raise CorruptDataError(f"entries.bin is truncated: an entry runs past its end at byte {pos}")
        key = bytes(view[pos : pos + key_len]).decode("utf-8", "surrogatepass")
        pos += key_len
        value = bytes(view[pos : pos + value_len])
        pos += value_len
        scope = bytes(view[pos : pos + scope_len]).decode("utf-8")
        pos += scope_len
        entries[key] = Entry(value, scope, None if label < 0 else label, created, expires)
    return entries
