"""The cluster file: shards, their replicas, addresses, secret and tuning.

One TOML file describes a whole cluster; every node reads the same file and
picks its own replica by id.  :meth:`ClusterConfig.load` parses and checks it,
raising :class:`~semcache.errors.ConfigurationError` for anything invalid alone
(a missing secret, a malformed address) or contradictory (a heartbeat not
shorter than the election timeout, two replicas on one port).

>>> cfg = ClusterConfig(
...     secret="s3cret",
...     shards=(ShardConfig("shard-0", (Replica("r0", "127.0.0.1:7100", "grpc://127.0.0.1:8815"),)),),
... )
>>> cfg.replica("r0").rpc
'grpc://127.0.0.1:8815'
>>> cfg.shard_of("r0").id
'shard-0'
>>> try:
...     ClusterConfig(secret="", shards=cfg.shards)
... except ConfigurationError as exc:
...     print(str(exc)[:44])
the cluster file must set a non-empty secret
"""

from __future__ import annotations

import ipaddress
import json
import os
import stat
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from semcache._engine.eviction import check_policy
from semcache._engine.index import IndexSettings
from semcache._engine.inputs import whole_number
from semcache.cluster._sizes import DEFAULT_MAX_VALUE_BYTES, MAX_VALUE_BYTES_CEILING
from semcache.embeddings import DEFAULT_MODEL, PACKAGED_MODEL_ID, BaseEmbedding, as_embedding, hash_spec
from semcache.errors import ConfigurationError

DEFAULT_DATA_DIR = ".semcache/cluster"
ALLOW_READABLE_ENV = "SEMCACHE_ALLOW_READABLE_CONFIG"
# Measured on a loaded 2-core machine (docs/benchmarks/raft.md): pysyncobj's default
# 0.4-1.4 s election window let a busy follower start elections; 1.0-2.0 s did not.
DEFAULT_HEARTBEAT = 0.1
DEFAULT_ELECTION_MIN = 1.0
DEFAULT_ELECTION_MAX = 2.0
# A follower whose connection to its leader drops (the leader's process died) campaigns this soon, the others
# 0.3 s apart (semcache.cluster._raft.leadership); 0 waits out the election timeout instead.
DEFAULT_LEADER_LOSS_ELECTION = 0.1
DEFAULT_COMMIT_TIMEOUT = 5.0
DEFAULT_COMPACTION_ENTRIES = 5000
# hnswlib inserts a replica may defer to idle moments (see semcache._engine.index); ~1.5 KB each at 384 dims.
DEFAULT_INDEX_BACKLOG = 2048
DEFAULT_COMPACTION_SECONDS = 300.0
DEFAULT_MAINTENANCE_INTERVAL = 1.0

# Models whose dimension is known without loading them (a node never loads the
# embedder unless a request carries text and no vector).
_KNOWN_DIMS = {DEFAULT_MODEL: 384, PACKAGED_MODEL_ID: 384}


@dataclass(frozen=True)
class Replica:
    """One replica of one shard: a node process.

    Args:
        id: unique name of the replica in the whole cluster.
        raft: ``host:port`` of its Raft (pysyncobj) endpoint.
        rpc: ``grpc://host:port`` (or ``grpc+tls://``) of its client endpoint.
        data_dir: its journal and snapshots; default ``<cluster data_dir>/<id>``.
        raft_bind: ``host:port`` its Raft port listens on, when the other replicas
            reach it at ``raft`` through a proxy or NAT (default: ``raft``).
            ``raft`` stays its identity in the shard.
    """

    id: str
    raft: str
    rpc: str
    data_dir: str | None = None
    raft_bind: str | None = None


@dataclass(frozen=True)
class ShardConfig:
    """A shard: one Raft group of replicas."""

    id: str
    replicas: tuple[Replica, ...]


@dataclass(frozen=True)
class ClusterConfig:
    """Everything a node needs to know about its cluster.

    Args:
        secret: pysyncobj password; encrypts and authenticates Raft traffic (required).
        shards: the shards and their replicas.
        token: the data-plane RPC token: reads and writes need it; "" means none required (a dev setup).
        admin_token: the admin RPC token: admin actions (clear, compact, membership) need it, and it
            admits data calls too; "" means admin actions take the data token (or nothing, without one).
        data_dir: parent of the replicas' data directories (relative paths are
            relative to the cluster file's directory when loaded from a file).
        embedding: embedder name: ``"all-MiniLM-L6-v2"``, ``"hash:DIM"`` (tests) or
            another sentence-transformers model (then set ``dim``).
        dim: vector dimension; derived from ``embedding`` when known.
        allow_remote: permit addresses other than loopback (off by default).
        tls_cert: PEM certificate file; with ``tls_key`` set, RPC endpoints must be ``grpc+tls://``.
        tls_key: PEM private key file of ``tls_cert``.
        heartbeat: Raft heartbeat, seconds.
        election_timeout_min: shortest Raft election timeout, seconds.
        election_timeout_max: longest Raft election timeout, seconds.
        leader_loss_election: seconds after its connection to the leader drops that a follower
            campaigns (the next follower 0.3 s later...); 0 turns this off.  Must be under
            ``election_timeout_min``.
        commit_timeout: how long a node waits for a write to commit before NoQuorumError.
        compaction_entries: take a snapshot after this many log entries...
        compaction_seconds: ...or after this many seconds.
        fork_snapshots: write snapshots in a forked child so they never hold up
            Raft's tick thread (ignored where the OS cannot fork).
        index_backlog: hnswlib inserts (over all scopes) a replica may defer until it is
            idle, so a write is acknowledged without waiting for its insert (the
            vector is searchable at once); 0 inserts every vector as it is applied.
        capacity: per-shard entry limit (None: no limit).
        eviction: the policy that picks victims over ``capacity``: ``"lru"``, ``"lfu"`` or ``"ttl"``.
        max_value_bytes: largest value; it must leave the encoded command under one Raft entry.
        raft_fsync: fsync the Raft journal before a replica acknowledges an entry (an
            acknowledged entry then survives power loss, not only a crash of the process).
    """

    secret: str
    shards: tuple[ShardConfig, ...]
    token: str = ""
    admin_token: str = ""
    data_dir: str = DEFAULT_DATA_DIR
    embedding: str = DEFAULT_MODEL
    dim: int | None = None
    allow_remote: bool = False
    tls_cert: str | None = None
    tls_key: str | None = None
    max_entries: int = 100_000
    hnsw_m: int = 16
    hnsw_ef_construction: int = 200
    ef_search: int = 48
    capacity: int | None = None
    eviction: str = "lru"
    max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES
    heartbeat: float = DEFAULT_HEARTBEAT
    election_timeout_min: float = DEFAULT_ELECTION_MIN
    election_timeout_max: float = DEFAULT_ELECTION_MAX
    leader_loss_election: float = DEFAULT_LEADER_LOSS_ELECTION
    commit_timeout: float = DEFAULT_COMMIT_TIMEOUT
    compaction_entries: int = DEFAULT_COMPACTION_ENTRIES
    compaction_seconds: float = DEFAULT_COMPACTION_SECONDS
    maintenance_interval: float = DEFAULT_MAINTENANCE_INTERVAL
    fork_snapshots: bool = True
    index_backlog: int = DEFAULT_INDEX_BACKLOG
    raft_fsync: bool = False
    path: str | None = field(default=None, compare=False)  # the file it was loaded from

    def __post_init__(self) -> None:
        self.validate()

    # ------------------------------------------------------------ lookups
    def replicas(self) -> list[Replica]:
        return [replica for shard in self.shards for replica in shard.replicas]

    def replica(self, replica_id: str) -> Replica:
        """The replica named ``replica_id``.

        Raises:
            ConfigurationError: no such replica in the file.
        """
        for replica in self.replicas():
            if replica.id == replica_id:
                return replica
        raise ConfigurationError(f"replica {replica_id!r} is not in the cluster file")

    def shard_of(self, replica_id: str) -> ShardConfig:
        for shard in self.shards:
            if any(replica.id == replica_id for replica in shard.replicas):
                return shard
        raise ConfigurationError(f"replica {replica_id!r} is not in the cluster file")

    def data_dir_of(self, replica_id: str) -> Path:
        """Where ``replica_id`` keeps its journal and snapshots."""
        replica = self.replica(replica_id)
        base = Path(self.path).parent if self.path else Path.cwd()
        chosen = Path(replica.data_dir) if replica.data_dir else Path(self.data_dir) / replica.id
        return chosen if chosen.is_absolute() else base / chosen

    def index_settings(self) -> IndexSettings:
        return IndexSettings(self.max_entries, self.hnsw_m, self.hnsw_ef_construction, self.ef_search)

    def embedding_identity(self) -> tuple[str, int]:
        """``(model_id, dim)`` the shards are stamped with, without loading the model when possible."""
        name = self.embedding
        probe = hash_spec(name)
        if probe is not None:
            return probe.model_id, probe.dim
        model_id = PACKAGED_MODEL_ID if name in _KNOWN_DIMS else name
        dim = self.dim if self.dim is not None else _KNOWN_DIMS.get(name)
        if dim is None:
            dim = self.make_embedder().dim
        return model_id, dim

    def make_embedder(self) -> BaseEmbedding:
        """Load the embedder the file names (slow for real models: call lazily)."""
        return as_embedding(self.embedding)

    # --------------------------------------------------------- validation
    def validate(self) -> None:
        """Raise :class:`ConfigurationError` for invalid or contradictory settings."""
        if not isinstance(self.secret, str) or not self.secret:
            raise ConfigurationError(
                "the cluster file must set a non-empty secret (it encrypts and authenticates Raft traffic)"
            )
        if self.admin_token and self.admin_token == self.token:
            raise ConfigurationError("admin_token must differ from token (the admin token is the stronger one)")
        if not self.shards:
            raise ConfigurationError("the cluster file names no shards")
        _unique("shard id", [shard.id for shard in self.shards])
        for shard in self.shards:
            if not shard.id or not shard.replicas:
                raise ConfigurationError(f"shard {shard.id!r} needs an id and at least one replica")
        replicas = self.replicas()
        _unique("replica id", [replica.id for replica in replicas])
        _unique("address", [replica.raft for replica in replicas] + [_host_port(r.rpc) for r in replicas]
                + [r.raft_bind for r in replicas if r.raft_bind is not None])
        for replica in replicas:
            if not replica.id:
                raise ConfigurationError("every replica needs a non-empty id")
            self._check_address(replica.raft, f"raft address of {replica.id}")
            if replica.raft_bind is not None:
                self._check_address(replica.raft_bind, f"raft_bind address of {replica.id}")
            scheme = replica.rpc.split("://", 1)[0] if "://" in replica.rpc else ""
            if scheme not in ("grpc", "grpc+tcp", "grpc+tls"):
                raise ConfigurationError(f"rpc address of {replica.id} must be grpc://host:port, got {replica.rpc!r}")
            if (scheme == "grpc+tls") != (self.tls_cert is not None):
                raise ConfigurationError(
                    f"rpc address of {replica.id} is {replica.rpc!r}: use grpc+tls:// exactly when tls_cert is set"
                )
            self._check_address(_host_port(replica.rpc), f"rpc address of {replica.id}")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ConfigurationError("set both tls_cert and tls_key, or neither")
        if not 0 < self.heartbeat * 3 < self.election_timeout_min < self.election_timeout_max:
            raise ConfigurationError(
                "timeouts must satisfy 0 < 3 * heartbeat < election_timeout_min < election_timeout_max, got "
                f"heartbeat={self.heartbeat}, election_timeout=({self.election_timeout_min}, "
                f"{self.election_timeout_max})"
            )
        if not 0 <= self.leader_loss_election < self.election_timeout_min:
            raise ConfigurationError(f"leader_loss_election must be in [0, election_timeout_min), got "
                                     f"{self.leader_loss_election}")
        if self.commit_timeout <= 0 or self.maintenance_interval <= 0 or self.compaction_seconds <= 0:
            raise ConfigurationError("commit_timeout, maintenance_interval and compaction_seconds must be > 0")
        if self.compaction_entries < 2:
            raise ConfigurationError(f"compaction_entries must be at least 2, got {self.compaction_entries}")
        whole_number(self.index_backlog, "index_backlog", error=ConfigurationError)
        if self.capacity is not None and self.capacity < 1:
            raise ConfigurationError(f"capacity must be a positive int or absent, got {self.capacity}")
        check_policy(self.eviction)
        if not 0 < self.max_value_bytes <= MAX_VALUE_BYTES_CEILING:
            raise ConfigurationError(
                f"max_value_bytes must be in 1..{MAX_VALUE_BYTES_CEILING} (one Raft entry must stay under 64 KiB), "
                f"got {self.max_value_bytes}"
            )
        hash_spec(self.embedding)  # a malformed hash:... spec fails here, not in a node
        self.index_settings()

    def _check_address(self, address: str, what: str) -> None:
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigurationError(f"{what} must be host:port, got {address!r}")
        if not self.allow_remote and not is_loopback(host):
            raise ConfigurationError(
                f"{what} is {address!r}, not a loopback address: set allow_remote = true to listen beyond this host"
            )

    # ---------------------------------------------------------------- files
    @classmethod
    def load(cls, path: str | os.PathLike[str], *, allow_readable: bool | None = None) -> ClusterConfig:
        """Read and check a cluster file.

        The file holds the Raft secret and the tokens, so one that other users
        can read is refused, unless ``allow_readable`` (default: the
        ``SEMCACHE_ALLOW_READABLE_CONFIG=1`` environment variable) says otherwise.

        Raises:
            ConfigurationError: unreadable or readable-by-others file, unknown keys or invalid settings.
        """
        if allow_readable is None:
            allow_readable = os.environ.get(ALLOW_READABLE_ENV) == "1"
        try:
            mode = Path(path).stat().st_mode
            data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigurationError(f"cannot read cluster file {path}: {exc}") from exc
        if mode & 0o077 and not allow_readable:
            raise ConfigurationError(
                f"cluster file {path} can be read by other users (mode {stat.S_IMODE(mode):04o}) and it holds the "
                f"cluster's secret and tokens: chmod 600 it, or set {ALLOW_READABLE_ENV}=1 to accept that"
            )
        return cls.from_dict(data, path=str(Path(path).resolve()))

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, path: str | None = None) -> ClusterConfig:
        data = dict(data)
        known = {f.name for f in fields(cls)} - {"path"}
        unknown = set(data) - known
        if unknown:
            raise ConfigurationError(f"unknown cluster settings: {', '.join(sorted(unknown))}")
        try:
            shards = tuple(
                ShardConfig(
                    str(shard["id"]),
                    tuple(Replica(**replica) for replica in shard.get("replicas", [])),
                )
                for shard in data.pop("shards", [])
            )
            return cls(shards=shards, path=path, **data)
        except (KeyError, TypeError) as exc:
            raise ConfigurationError(f"malformed cluster file: {exc}") from exc

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in ("path", "shards") or value is None:
                continue
            out[f.name] = value
        out["shards"] = [
            {
                "id": shard.id,
                "replicas": [
                    {k: v for k, v in vars(replica).items() if v is not None} for replica in shard.replicas
                ],
            }
            for shard in self.shards
        ]
        return out

    def dump(self, path: str | os.PathLike[str]) -> None:
        """Write this configuration as a TOML cluster file (atomically)."""
        target = Path(path)
        tmp = target.with_name(target.name + ".tmp")
        # Readable by its owner only, from the first byte: it holds the secret and the tokens.
        descriptor = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            os.fchmod(handle.fileno(), 0o600)  # an existing .tmp keeps its mode through O_CREAT
            handle.write(_to_toml(self.to_dict()))
        os.replace(tmp, target)

    def with_shard(self, shard: ShardConfig) -> ClusterConfig:
        """A copy with ``shard`` replacing the shard of the same id (membership changes)."""
        return replace(self, shards=tuple(shard if s.id == shard.id else s for s in self.shards))




def _unique(what: str, values: list[str]) -> None:
    seen: set[str] = set()
    for value in values:
        if value in seen:
            raise ConfigurationError(f"duplicate {what} {value!r} in the cluster file")
        seen.add(value)


def _host_port(rpc: str) -> str:
    return rpc.split("://", 1)[-1]


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name, an IPv4 or an IPv6 address, bracketed or not) is this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _to_toml(data: dict[str, Any]) -> str:
    """Just enough TOML for a cluster file (scalars plus the shards table array)."""
    lines = [f"{key} = {_toml_value(value)}" for key, value in data.items() if key != "shards"]
    for shard in data["shards"]:
        lines += ["", "[[shards]]", f"id = {_toml_value(shard['id'])}"]
        for replica in shard["replicas"]:
            lines.append("  [[shards.replicas]]")
            lines += [f"  {key} = {_toml_value(value)}" for key, value in replica.items()]
    return "\n".join(lines) + "\n"


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(str(value))  # a JSON string is a valid TOML basic string
