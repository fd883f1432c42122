"""The cluster commands of the ``semcache`` CLI: ``node`` and ``cluster up/status/down/add-replica/remove-replica``.

The main CLI (:mod:`semcache._cli.main`) calls :func:`add_cluster_commands` on its
subparsers; every command sets ``func(args) -> int`` (the exit status).  A node
process is always started the same way, by hand or by
:class:`~semcache.cluster.LocalCluster`::

    semcache node --config /tmp/sc/cluster.toml --replica shard-0-r0   # or: python -m semcache node ...
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from semcache.cluster._local import DEFAULT_UP_TIMEOUT, LocalCluster, format_status
from semcache.errors import SemcacheError

DEFAULT_DIR = ".semcache/local-cluster"


def add_cluster_commands(subparsers: Any) -> None:
    """Add ``node`` and ``cluster ...`` to the ``semcache`` argument parser's subcommands."""
    node = subparsers.add_parser("node", help="run one replica of a cluster (foreground)")
    node.add_argument("--config", required=True, help="the cluster file (TOML)")
    node.add_argument("--replica", required=True, help="this node's replica id in the cluster file")
    node.add_argument("--log-level", default="WARNING", help="logging level (default WARNING)")
    node.set_defaults(func=cmd_node)

    cluster = subparsers.add_parser("cluster", help="run a local cluster of node processes")
    commands = cluster.add_subparsers(dest="cluster_command", required=True)

    def with_dir(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
        parser.add_argument("--dir", default=DEFAULT_DIR, help=f"the cluster directory (default {DEFAULT_DIR})")
        return parser

    up = with_dir(commands.add_parser("up", help="create (if new) and start a local cluster, wait for leaders"))
    up.add_argument("--shards", type=int, default=2)
    up.add_argument("--replicas", type=int, default=3)
    up.add_argument("--embedding", default="all-MiniLM-L6-v2",
                    help='embedding model the shards are stamped with ("hash:DIM" for tests)')
    up.add_argument("--token", default="", help="require this RPC token from clients")
    up.add_argument("--timeout", type=float, default=DEFAULT_UP_TIMEOUT, help="seconds to wait for leaders")
    up.set_defaults(func=cmd_up)

    status = with_dir(commands.add_parser("status", help="leader, term, commit index, entries, lag per replica"))
    status.set_defaults(func=cmd_status)

    down = with_dir(commands.add_parser("down", help="stop every node of the local cluster (data is kept)"))
    down.set_defaults(func=cmd_down)

    add = with_dir(commands.add_parser("add-replica", help="add a replica to a shard while it serves"))
    add.add_argument("--shard", required=True)
    add.set_defaults(func=cmd_add_replica)

    remove = with_dir(commands.add_parser("remove-replica", help="remove a replica from its shard while it serves"))
    remove.add_argument("--replica", required=True)
    remove.set_defaults(func=cmd_remove_replica)


def cmd_node(args: argparse.Namespace) -> int:
    import logging

    from semcache.cluster._node import run_node

    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    run_node(args.config, args.replica)
    return 0


def cmd_up(args: argparse.Namespace) -> int:
    cluster = LocalCluster(args.dir)
    fresh = not cluster.exists()
    if fresh:
        cluster.create(args.shards, args.replicas, embedding=args.embedding, token=args.token)
        print(f"created {cluster.config_path}")
    else:
        print(f"using the existing cluster file {cluster.config_path}")
    started = cluster.start_all()
    print(f"started {len(started)} node(s); waiting for every shard to elect a leader...", flush=True)
    try:
        leaders = cluster.wait_for_leaders(args.timeout)
    except SemcacheError:
        print(f"cluster up failed; stopping the nodes it started. Logs: {cluster.directory / 'logs'}", file=sys.stderr)
        for replica_id in started:
            cluster.stop(replica_id)
        raise
    for shard in cluster.config().shards:
        print(f"{shard.id}: leader {leaders[shard.id]}")
        for replica in shard.replicas:
            print(f"  {replica.id:<16} {replica.rpc}")
    print("\nconnect with:\n")
    print("    from semcache import DistributedSemanticKV")
    print(f"    kv = {cluster.client_line()}")
    print(f"\nstop with: semcache cluster down --dir {cluster.directory}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    cluster = LocalCluster(args.dir)
    shards = cluster.status()
    print(format_status(shards))
    return 0 if all(shard.leader for shard in shards) else 1


def cmd_down(args: argparse.Namespace) -> int:
    cluster = LocalCluster(args.dir)
    cluster.config()  # a clear error when there is no cluster here
    stopped = cluster.down()
    print(f"stopped {len(stopped)} node(s): {', '.join(stopped) or 'none were running'}")
    return 0


def cmd_add_replica(args: argparse.Namespace) -> int:
    replica = LocalCluster(args.dir).add_replica(args.shard)
    print(f"added {replica.id} to {args.shard} at {replica.rpc} (caught up)")
    return 0


def cmd_remove_replica(args: argparse.Namespace) -> int:
    LocalCluster(args.dir).remove_replica(args.replica)
    print(f"removed {args.replica}")
    return 0
