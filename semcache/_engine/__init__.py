"""The engine: the semantic key-value state machine and the embedded store around it.

Data flows one way through it: a write is checked (:mod:`.inputs`), turned into
a command (:mod:`.commands`) and applied to a :class:`~.state.ShardState`,
which holds the entries and one HNSW index per scope (:mod:`.index`).  The
embedded :class:`~.kv.SemanticKV` logs each command first (:mod:`.storage`);
a cluster replica feeds the same commands through Raft
(:mod:`semcache.cluster._raft`).  Nothing here imports the cache layer or the cluster.
"""
