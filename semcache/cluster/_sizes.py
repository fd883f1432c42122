"""How big one Raft log entry may be, and every size limit derived from it.

pysyncobj 0.3.17 sends a message of 64 KiB or more through a chunked path that
loses replication, so every entry semcache appends stays under that, and the
limits below follow from it: change :data:`RAFT_MESSAGE_LIMIT` and they all move.

The Raft port refuses a frame declaring more than :data:`MAX_RAFT_FRAME_BYTES`
before buffering any of it (:mod:`semcache.cluster._raft.compat`).  The largest
message semcache sends is an ``append_entries`` carrying a batch of entries
just under :data:`RAFT_MESSAGE_LIMIT` plus the one entry that crosses it
(pysyncobj's ``__getEntries`` stops after the entry that reaches the batch
size); pickling at most doubles an entry (its index, term and framing next to
the smallest command semcache logs), and Fernet adds a third (base64) and a
header.  A snapshot travels in chunks of :data:`SNAPSHOT_CHUNK_BYTES`: pickled
by the transport with protocol 4 (bytes as they are, plus a few hundred bytes
of framing and checksums; ``compat.pickle_raft_messages_with_protocol_4``) and
encrypted (a third more), a chunk stays under the frame limit too.

>>> MAX_ENTRY_BYTES < RAFT_MESSAGE_LIMIT and DEFAULT_MAX_VALUE_BYTES == BATCH_MAX_BYTES < MAX_VALUE_BYTES_CEILING
True
>>> LARGEST_RAFT_MESSAGE < MAX_RAFT_FRAME_BYTES < 4 * LARGEST_RAFT_MESSAGE
True
>>> (SNAPSHOT_CHUNK_BYTES + KIB) * 4 // 3 + KIB < MAX_RAFT_FRAME_BYTES
True
"""

from __future__ import annotations

KIB = 1024
MIB = 1024 * KIB
RAFT_MESSAGE_LIMIT = 64 * KIB  # pysyncobj's chunking threshold (appendEntriesBatchSizeBytes, logCompactionBatchSize)
# One entry's command bytes: pysyncobj's pickled wrapper and the message framing add a few dozen bytes.
MAX_ENTRY_BYTES = RAFT_MESSAGE_LIMIT - 4 * KIB
# The largest value a cluster file may allow: a Put also carries its key (<= 1 KiB), its scope
# (<= 512 B), its vector (1.5 KiB at 384 dimensions) and its framing.
MAX_VALUE_BYTES_CEILING = MAX_ENTRY_BYTES - 4 * KIB
# The default value limit, and the payload of one coalesced request (puts that share one entry):
# a batch of small puts, or one put of the largest default value, fits an entry with room to spare.
DEFAULT_MAX_VALUE_BYTES = MAX_ENTRY_BYTES - 12 * KIB
BATCH_MAX_BYTES = DEFAULT_MAX_VALUE_BYTES

# ------------------------------------------------------------ RPC transport
# The largest legitimate request is a put_many (or search_many) batch: the client's batches stop at
# BATCH_MAX_BYTES, plus one item that may be as large as a whole entry, plus a JSON header. Everything
# that becomes a write fits one entry, so a request far over an entry is never legitimate.
MAX_REQUEST_BYTES = 1 * MIB  # one RPC's body (the wire frame); gRPC refuses more while it arrives
MAX_HEADER_BYTES = 256 * KIB  # a frame's JSON header (a 64-item put_many of 1 KiB keys needs ~100 KiB)
MAX_METADATA_BYTES = 8 * KIB  # gRPC metadata (headers) of one call; the token needs ~60 bytes
# The largest Raft message semcache sends, encrypted (see the module docstring), and the frame limit above it.
LARGEST_RAFT_MESSAGE = (RAFT_MESSAGE_LIMIT + MAX_ENTRY_BYTES) * 2 * 4 // 3 + KIB
MAX_RAFT_FRAME_BYTES = 1 * MIB
# One chunk of a snapshot file sent to a replica (semcache.cluster._raft.transfer): big enough that the per-message
# cost (pickle, Fernet, a tick) is small beside the bytes, small enough to stay well under the frame limit.
SNAPSHOT_CHUNK_BYTES = 512 * KIB
# The Raft sockets' kernel buffers (SO_SNDBUF, SO_RCVBUF) and pysyncobj's read size: pysyncobj's 64 KiB default made a
# snapshot chunk (and a full append_entries) leave in several trips through the tick loop.
RAFT_SOCKET_BUFFER_BYTES = 1 * MIB
