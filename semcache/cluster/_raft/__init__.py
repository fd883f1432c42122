"""Everything pysyncobj: one replica of a shard as a Raft group member.

- ``replica``: :class:`ReplicatedShard`, the ``SyncObj`` subclass composing the parts below.
- ``compat``: the one module importing pysyncobj, every access to its private names, and every
  pysyncobj code path semcache replaces (follower log matching, the journal, the Raft port's limits).
- ``log_matching``: Raft's AppendEntries rule for a follower, as a plan pysyncobj carries out.
- ``journal``: the replica's checksummed Raft journal (replaces pysyncobj's FileJournal).
- ``group_commit``: writes waiting to commit, batched into entries under the Raft entry limit.
- ``applier``: the applier thread applying committed entries in log order, off the tick thread.
- ``leadership``: who leads, and the read barrier a new leader passes before serving reads.
- ``membership``: the replicated member table; adding and removing replicas.
- ``snapshots``: snapshot hooks (forked writes, tar of state + Raft metadata) and journal alignment.
- ``transfer``: sending a snapshot to a replica that needs one and receiving it (chunked, checksummed,
  acknowledged, installed only whole), in place of pysyncobj's transmission.
- ``status``: the health report.

Expiry and eviction use the engine's shared driver, :mod:`semcache._engine.housekeeping`.
"""
