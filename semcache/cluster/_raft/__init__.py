"""Everything pysyncobj: one replica of a shard as a Raft group member."""
