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

from semcache._cli.cluster import add_cluster_commands, fault_tolerance_warning
from semcache.cluster._client import DistributedSemanticKV
from semcache.cluster._local import LocalCluster, supervisor
from semcache.cluster._local.supervisor import alive
from semcache.errors import AuthenticationError, ClusterError

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


def test_up_generates_a_data_and_an_admin_token_and_prints_only_the_data_token(cluster_dir: Path) -> None:
    out = semcache("cluster", "up", "--shards", "1", "--replicas", "1", "--dir", str(cluster_dir),
                   "--embedding", "hash:32").stdout
    config = LocalCluster(cluster_dir).config()
    assert config.token and config.admin_token and config.token != config.admin_token
    assert f"token={config.token!r}" in out and config.admin_token not in out
    assert "admin_token" in out and str(cluster_dir / "cluster.toml") in out  # where the admin token is
    assert (cluster_dir / "cluster.toml").stat().st_mode & 0o077 == 0
    addresses = LocalCluster(cluster_dir).addresses()
    with pytest.raises(AuthenticationError):  # no token: nothing, not even a read
        DistributedSemanticKV(addresses)
    data = DistributedSemanticKV(addresses, token=config.token)
    admin = DistributedSemanticKV(addresses, admin_token=config.admin_token)
    try:
        data.put("k", "v")
        with pytest.raises(AuthenticationError, match="admin"):
            data.clear_all()  # clear is an admin action
        assert data.get("k") == b"v"
        assert admin.clear_all() == 1 and admin.get("k") is None
    finally:
        data.close()
        admin.close()


def test_a_killed_node_rejoins_with_its_data_and_down_stops_everything(cluster_dir: Path) -> None:
    semcache("cluster", "up", "--shards", "1", "--replicas", "3", "--dir", str(cluster_dir), "--embedding", "hash:32")
    local = LocalCluster(cluster_dir)
    kv = DistributedSemanticKV(local.addresses(), token=local.config().token)
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

        with NodeClient(local.config().replica(victim).rpc, token=local.config().token) as node:
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
    kv = DistributedSemanticKV(local.addresses(), token=local.config().token)
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


def test_up_on_an_existing_cluster_with_other_options_names_each_difference_and_starts_nothing(
    cluster_dir: Path,
) -> None:
    LocalCluster(cluster_dir).create(1, 3, embedding="hash:32", token="file-token")
    result = semcache("cluster", "up", "--shards", "2", "--replicas", "5", "--embedding", "hash:64",
                      "--token", "other", "--dir", str(cluster_dir), check=False)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    for difference in ("--shards 2 (the file has 1 shard(s))", "--replicas 5 (in the file shard-0 has 3",
                       "--embedding hash:64 (the file has hash:32)", "--token (the file has another token)"):
        assert difference in result.stderr
    assert "file-token" not in result.stderr and "other" not in result.stderr.split("--token")[1][:20]
    assert "using the existing cluster file" not in result.stdout
    assert not list((cluster_dir / "run").glob("*.pid"))  # nothing started


def test_up_help_shows_the_default_shape() -> None:
    out = " ".join(semcache("cluster", "up", "--help").stdout.split())  # argparse wraps to the terminal width
    assert "number of shards (default 2)" in out and "replicas per shard (default 3" in out
    assert "default all-MiniLM-L6-v2" in out and "(default 60)" in out


def test_up_with_two_replicas_warns_that_they_have_no_fault_tolerance(cluster_dir: Path) -> None:
    result = semcache("cluster", "up", "--shards", "1", "--replicas", "2", "--embedding", "hash:16",
                      "--dir", str(cluster_dir))
    assert "warning: 2 replicas per shard have no fault tolerance: a majority of 2 is 2" in result.stderr
    assert "shard-0: leader grpc://" in result.stdout


def test_one_replica_is_fine_for_development_but_has_no_fault_tolerance() -> None:
    one = fault_tolerance_warning(1)
    assert one is not None and "no fault tolerance" in one and "development" in one
    assert fault_tolerance_warning(4) is not None  # tolerates no more than 3
    assert fault_tolerance_warning(3) is None and fault_tolerance_warning(5) is None


def test_up_fails_fast_quoting_the_log_when_a_node_cannot_load_its_model(cluster_dir: Path) -> None:
    # With --timeout 600 a wait for leaders would outlast semcache()'s own 120 s limit: only failing fast passes.
    result = semcache("cluster", "up", "--shards", "1", "--replicas", "1", "--embedding", "no-such-model-for-tests",
                      "--timeout", "600", "--dir", str(cluster_dir), check=False)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "node shard-0-r0 exited; its log ends with: " in result.stderr
    assert "cannot load sentence-transformers model 'no-such-model-for-tests'" in result.stderr
    assert "no leader after" not in result.stderr


FAKE_NODE = """#!/bin/sh
# Stands in for `python -m semcache node ... --replica ID`: {behaviour}
{body}
"""


def fake_nodes(tmp_path: Path, behaviour: str, body: str) -> LocalCluster:
    """A LocalCluster whose "python" runs a shell script instead of a node (its argv still names the replica)."""
    script = tmp_path / "fake-node.sh"
    script.write_text(FAKE_NODE.format(behaviour=behaviour, body=body))
    script.chmod(0o755)
    local = LocalCluster(tmp_path / "cluster", python=str(script))
    local.create(1, 2, embedding="hash:16")
    return local


def test_a_node_that_exits_ends_the_wait_for_leaders_with_its_log(tmp_path: Path) -> None:
    local = fake_nodes(tmp_path, "exits at once", 'echo "loading"; echo "OSError: the model cannot load" >&2; exit 1')
    started = local.start_all()
    with pytest.raises(ClusterError, match="node shard-0-r0 exited; its log ends with: loading / OSError: the model"):
        local.wait_for_leaders(timeout=600, watch=started)  # not 600 s: the first exit ends it


@pytest.mark.parametrize(("behaviour", "body"), [
    ("takes a while to stop", "trap 'sleep 1; exit 0' TERM\nwhile true; do sleep 0.1; done"),
    ("ignores SIGTERM", "trap '' TERM\nwhile true; do sleep 0.1; done"),
])
def test_down_returns_only_once_every_node_process_is_gone(tmp_path: Path, behaviour: str, body: str) -> None:
    local = fake_nodes(tmp_path, behaviour, body)
    local.start_all()
    pids = [local.pid(r.id) for r in local.config().replicas()]
    assert all(pids)
    try:
        assert sorted(local.down(timeout=2.0)) == ["shard-0-r0", "shard-0-r1"]
        assert not any(alive(pid) for pid in pids if pid)
        assert all(local.pid(r.id) is None for r in local.config().replicas())
    finally:
        for pid in pids:
            if pid and alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_a_node_whose_arguments_are_unreadable_while_it_execs_or_exits_still_counts_as_running(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """/proc/PID/cmdline reads empty for a moment while a process execs or exits; a stop that took that for
    "not running" returned before the node was gone."""
    real = Path.read_bytes
    monkeypatch.setattr(Path, "read_bytes", lambda path: b"" if path.name == "cmdline" else real(path))
    assert supervisor.is_our_node(os.getpid(), "shard-0-r0")


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
