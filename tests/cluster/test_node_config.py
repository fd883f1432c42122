"""The cluster file: loading, dumping and every validation rule."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from semcache.cluster._config import ClusterConfig, Replica, ShardConfig
from semcache.errors import ConfigurationError

GOOD = """
secret = "s3cret"
token = "tok"
data_dir = "data"
embedding = "hash:64"
election_timeout_min = 1.2

[[shards]]
id = "shard-0"
  [[shards.replicas]]
  id = "r0"
  raft = "127.0.0.1:7100"
  rpc = "grpc://127.0.0.1:8815"
  [[shards.replicas]]
  id = "r1"
  raft = "127.0.0.1:7101"
  rpc = "grpc://127.0.0.1:8816"
  data_dir = "/tmp/elsewhere"
"""


def _config(**overrides: object) -> ClusterConfig:
    replicas = (
        Replica("r0", "127.0.0.1:7100", "grpc://127.0.0.1:8815"),
        Replica("r1", "127.0.0.1:7101", "grpc://127.0.0.1:8816"),
    )
    base = {"secret": "s", "shards": (ShardConfig("shard-0", replicas),)}
    base.update(overrides)
    return ClusterConfig(**base)  # type: ignore[arg-type]


def test_load_reads_every_field_and_resolves_data_dirs(tmp_path: Path) -> None:
    path = tmp_path / "cluster.toml"
    path.write_text(GOOD)
    path.chmod(0o600)
    cfg = ClusterConfig.load(path)
    assert cfg.token == "tok"
    assert cfg.election_timeout_min == 1.2
    assert [r.id for r in cfg.replicas()] == ["r0", "r1"]
    assert cfg.data_dir_of("r0") == tmp_path / "data" / "r0"
    assert cfg.data_dir_of("r1") == Path("/tmp/elsewhere")
    assert cfg.shard_of("r1").id == "shard-0"
    assert cfg.embedding_identity() == ("hash:64:0", 64)


def test_dump_then_load_round_trips(tmp_path: Path) -> None:
    cfg = _config(token="t", capacity=10, eviction="lfu", embedding="hash:32")
    path = tmp_path / "out.toml"
    cfg.dump(path)
    assert ClusterConfig.load(path) == cfg


def test_known_model_dimension_needs_no_model_load() -> None:
    assert _config().embedding_identity() == ("sentence-transformers/all-MiniLM-L6-v2", 384)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"secret": ""}, "secret"),
        ({"shards": ()}, "no shards"),
        ({"heartbeat": 0.5}, "heartbeat"),
        ({"election_timeout_min": 3.0}, "election_timeout_max"),
        ({"max_value_bytes": 70_000}, "64 KiB"),
        ({"eviction": "random"}, "eviction policy"),
        ({"tls_cert": "cert.pem"}, "grpc\\+tls"),
        ({"embedding": "hash:x"}, "hash:DIM"),
        ({"compaction_entries": 1}, "compaction_entries"),
    ],
)
def test_invalid_settings_raise_configuration_error(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        _config(**overrides)


def test_duplicate_ids_and_addresses_are_refused() -> None:
    cfg = _config()
    shard = cfg.shards[0]
    dup_id = replace(shard, replicas=(shard.replicas[0], replace(shard.replicas[1], id="r0")))
    with pytest.raises(ConfigurationError, match="duplicate replica id"):
        cfg.with_shard(dup_id)
    dup_port = replace(shard, replicas=(shard.replicas[0], replace(shard.replicas[1], raft="127.0.0.1:7100")))
    with pytest.raises(ConfigurationError, match="duplicate address"):
        cfg.with_shard(dup_port)
    with pytest.raises(ConfigurationError, match="duplicate shard id"):
        replace(cfg, shards=(shard, shard))


def test_non_loopback_addresses_need_allow_remote() -> None:
    cfg = _config()
    shard = cfg.shards[0]
    remote = replace(shard, replicas=(replace(shard.replicas[0], raft="10.0.0.5:7100"), shard.replicas[1]))
    with pytest.raises(ConfigurationError, match="allow_remote"):
        cfg.with_shard(remote)
    assert replace(cfg, allow_remote=True).with_shard(remote).replica("r0").raft == "10.0.0.5:7100"


def test_unknown_keys_and_bad_files_are_configuration_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("secrets = 'typo'\n" + GOOD)
    bad.chmod(0o600)
    with pytest.raises(ConfigurationError, match="unknown cluster settings: secrets"):
        ClusterConfig.load(bad)
    with pytest.raises(ConfigurationError, match="cannot read"):
        ClusterConfig.load(tmp_path / "missing.toml")
    with pytest.raises(ConfigurationError, match="not in the cluster file"):
        _config().replica("nope")


def test_the_cluster_file_is_written_for_its_owner_only_and_a_readable_one_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "cluster.toml"
    _config(token="t").dump(path)
    assert path.stat().st_mode & 0o777 == 0o600
    path.chmod(0o644)
    with pytest.raises(ConfigurationError, match=r"can be read by other users \(mode 0644\).*chmod 600"):
        ClusterConfig.load(path)
    assert ClusterConfig.load(path, allow_readable=True).token == "t"
