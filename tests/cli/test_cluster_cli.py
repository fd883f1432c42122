"""``semcache cluster up/status/down/add-replica/remove-replica`` and ``semcache node``, as a user runs them.

The commands run in subprocesses exactly as from a shell; the cluster they
start is stopped in teardown through its pid files, whatever happens.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from semcache._cli.cluster import add_cluster_commands
from semcache.cluster._client import DistributedSemanticKV
from semcache.cluster._local import LocalCluster

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]


def semcache(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "semcache", *args], capture_output=True, text=True, timeout=120
    )
    if check and result.returncode != 0:
        command = " ".join(args)
        raise AssertionError(f"semcache {command} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


@pytest.fixture
def cluster_dir(tmp_path: Path) -> Iterator[Path]:
    directory = tmp_path / "cluster"
    try:
        yield directory
    finally:
        LocalCluster(directory).stop_all(timeout=5.0)


def test_up_prints_addresses_and_a_client_line_that_works(cluster_dir: Path) -> None:
    out = semcache("cluster", "up", "--shards", "2", "--replicas", "3", "--dir", str(cluster_dir),
                   "--embedding", "hash:32").stdout
    addresses = re.findall(r"grpc://127\.0\.0\.1:\d+", out)
    assert len(set(addresses)) == 6
    assert "shard-0: leader grpc://127.0.0.1:" in out and "shard-1: leader grpc://127.0.0.1:" in out
    line = next(line.strip() for line in out.splitlines() if "DistributedSemanticKV(nodes=" in line)
    # The nodes outlive the command, detached, one per replica, each with the cluster file on its command line.
    local = LocalCluster(cluster_dir)
    pids = {r.id: local.pid(r.id) for r in local.config().replicas()}
    assert all(pids.values()) and len(set(pids.values())) == 6
    for replica_id, pid in pids.items():
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        assert str(local.config_path).encode() in argv and replica_id.encode() in argv
        assert os.getsid(pid) != os.getsid(0)  # its own session: not killed with our terminal
    # Paste the printed line.
    scope: dict[str, object] = {"DistributedSemanticKV": DistributedSemanticKV}
    exec(line, scope)  # noqa: S102 - the line the command tells users to paste
    kv = scope["kv"]
    assert isinstance(kv, DistributedSemanticKV)
    try:
        for i in range(20):
            kv.put(f"k{i}", f"value {i}")
        assert kv.get("k7") == b"value 7"
    finally:
        kv.close()

    status = semcache("cluster", "status", "--dir", str(cluster_dir)).stdout
    assert status.count("leader grpc://") == 2 and status.count(" leader ") >= 2
    assert "entries" in status and "lag" in status and "to index" in status


def test_a_killed_node_rejoins_with_its_data_and_down_stops_everything(cluster_dir: Path) -> None:
    semcache("cluster", "up", "--shards", "1", "--replicas", "3", "--dir", str(cluster_dir), "--embedding", "hash:32")
    local = LocalCluster(cluster_dir)
    kv = DistributedSemanticKV(local.addresses())
    try:
        for i in range(30):
            kv.put(f"k{i}", f"value {i}")
        victim = "shard-0-r2"
        os.kill(local.pid(victim) or 0, signal.SIGKILL)
        for i in range(30, 40):  # written while it was down
            kv.put(f"k{i}", f"value {i}")
        status = semcache("cluster", "status", "--dir", str(cluster_dir)).stdout
        assert re.search(r"shard-0-r2\s+-\s+DOWN", status), status
        command = (cluster_dir / "run" / f"{victim}.cmd").read_text().split()
        assert command[-2:] == ["--replica", victim] and str(local.config_path) in command
        out = semcache("cluster", "up", "--dir", str(cluster_dir)).stdout  # starts only what is not running
        assert "using the existing cluster file" in out and "started 1 node(s)" in out
        local.wait_caught_up(victim, timeout=60)
        from semcache.cluster._flight import NodeClient

        with NodeClient(local.config().replica(victim).rpc) as node:
            assert node.get("k35", read_from="any") == b"value 35"
            assert node.get("k3", read_from="any") == b"value 3"
    finally:
        kv.close()
    pids = [local.pid(r.id) for r in local.config().replicas()]
    out = semcache("cluster", "down", "--dir", str(cluster_dir)).stdout
    assert "stopped 3 node(s)" in out
    assert all(not Path(f"/proc/{pid}").exists() or _zombie(pid) for pid in pids if pid)
    assert all(local.pid(r.id) is None for r in local.config().replicas())


def test_add_and_remove_replica_from_the_command_line(cluster_dir: Path) -> None:
    semcache("cluster", "up", "--shards", "1", "--replicas", "3", "--dir", str(cluster_dir), "--embedding", "hash:32")
    local = LocalCluster(cluster_dir)
    kv = DistributedSemanticKV(local.addresses())
    try:
        for i in range(50):
            kv.put(f"k{i}", f"value {i}")
        out = semcache("cluster", "add-replica", "--shard", "shard-0", "--dir", str(cluster_dir)).stdout
        assert "added shard-0-r3" in out and "caught up" in out
        assert [r.id for r in local.config().replicas()] == ["shard-0-r0", "shard-0-r1", "shard-0-r2", "shard-0-r3"]
        status = semcache("cluster", "status", "--dir", str(cluster_dir)).stdout
        assert "shard-0-r3" in status and "DOWN" not in status
        leader = local.status()[0].leader
        follower = next(r.id for r in local.config().replicas() if r.rpc != leader and r.id != "shard-0-r3")
        semcache("cluster", "remove-replica", "--replica", follower, "--dir", str(cluster_dir))
        assert follower not in [r.id for r in local.config().replicas()] and local.pid(follower) is None
        kv.put("after", "still serving")
        assert kv.get("after") == b"still serving"
    finally:
        kv.close()


def test_commands_without_a_cluster_fail_with_one_clear_line(tmp_path: Path) -> None:
    result = semcache("cluster", "status", "--dir", str(tmp_path / "none"), check=False)
    assert result.returncode == 1
    assert result.stderr.startswith("semcache: error: no cluster in") and "Traceback" not in result.stderr


def test_the_commands_plug_into_the_main_parser() -> None:
    parser = argparse.ArgumentParser(prog="semcache")
    add_cluster_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["cluster", "up", "--shards", "3", "--replicas", "5", "--dir", "/tmp/x"])
    assert (args.shards, args.replicas, args.dir) == (3, 5, "/tmp/x") and callable(args.func)
    args = parser.parse_args(["node", "--config", "c.toml", "--replica", "shard-0-r1"])
    assert (args.config, args.replica) == ("c.toml", "shard-0-r1")
    for command in ("status", "down"):
        assert callable(parser.parse_args(["cluster", command]).func)


def test_the_main_semcache_cli_has_the_cluster_commands(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from semcache._cli.main import build_parser, main

    args = build_parser().parse_args(["cluster", "down", "--dir", str(tmp_path)])
    assert args.cluster_command == "down" and callable(args.func)
    assert main(["cluster", "status", "--dir", str(tmp_path / "none")]) == 1
    assert "no cluster in" in capsys.readouterr().err


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"
    except OSError:
        return True
