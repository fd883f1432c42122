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

from semcache.cluster._config import ClusterConfig
from semcache.cluster._local import DEFAULT_REPLICAS, DEFAULT_SHARDS, DEFAULT_UP_TIMEOUT, LocalCluster, format_status
from semcache.embeddings import DEFAULT_MODEL
from semcache.errors import ConfigurationError, SemcacheError

DEFAULT_DIR = ".semcache/local-cluster"


def add_cluster_commands(subparsers: Any) -> None:
    """Add ``node`` and ``cluster ...`` to the ``semcache`` argument parser's subcommands."""
    node = subparsers.add_parser("node", help="run one replica of a cluster (foreground)")
    node.add_argument("--config", required=True, help="the cluster file (TOML)")
    node.add_argument("--replica", required=True, help="this node's replica id in the cluster file")
    node.add_argument("--log-level", default="WARNING", help="logging level (default WARNING)")
    node.add_argument("--force-membership", action="store_true",
                      help="recovery only: the shard's members are the cluster file's, whatever this replica's "
                           "journal says (semcache cluster recover uses it; see docs/operations/nodes.md)")
    node.add_argument("--metrics-port", type=int, default=None, metavar="PORT",
                      help="also serve this node's Prometheus metrics on http://HOST:PORT/metrics (0: a free port)")
    node.add_argument("--metrics-host", default="127.0.0.1", metavar="HOST",
                      help="the metrics address (default 127.0.0.1; another needs allow_remote in the cluster file)")
    node.set_defaults(func=cmd_node)

    cluster = subparsers.add_parser("cluster", help="run a local cluster of node processes")
    commands = cluster.add_subparsers(dest="cluster_command", required=True)

    def with_dir(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
        parser.add_argument("--dir", default=DEFAULT_DIR, help=f"the cluster directory (default {DEFAULT_DIR})")
        return parser

    up = with_dir(commands.add_parser(
        "up", help="create (if new) and start a local cluster, wait for leaders",
        description="Create a cluster in --dir (unless it has one), start every node not running, wait until every "
                    "shard has a leader.  --shards, --replicas, --embedding and --token shape a NEW cluster; on an "
                    "existing one they must match its cluster file (or be left out).",
    ))
    # Shape options default to None so that "not given" differs from "given the default" (see _file_differences).
    up.add_argument("--shards", type=int, default=None, help=f"number of shards (default {DEFAULT_SHARDS})")
    up.add_argument("--replicas", type=int, default=None,
                    help=f"replicas per shard (default {DEFAULT_REPLICAS}: survives one replica down; "
                         "5 survives two)")
    up.add_argument("--embedding", default=None,
                    help=f'embedding model the shards are stamped with (default {DEFAULT_MODEL}; "hash:DIM" for tests)')
    up.add_argument("--token", default=None,
                    help="the data-plane RPC token clients must present (default: a fresh random one; the admin "
                         "token is always generated and kept in the cluster file only)")
    up.add_argument("--timeout", type=float, default=DEFAULT_UP_TIMEOUT,
                    help=f"seconds to wait for leaders (default {DEFAULT_UP_TIMEOUT:.0f})")
    up.set_defaults(func=cmd_up)

    status = with_dir(commands.add_parser("status", help="leader, term, commit index, entries, lag per replica"))
    status.set_defaults(func=cmd_status)

    down = with_dir(commands.add_parser("down", help="stop every node of the local cluster (data is kept)"))
    down.set_defaults(func=cmd_down)

    add = with_dir(commands.add_parser("add-replica", help="add a replica to a shard while it serves"))
    add.add_argument("--shard", required=True)
    add.set_defaults(func=cmd_add_replica)

    recover = with_dir(commands.add_parser(
        "recover", help="bring back a shard that lost its quorum for good (forced membership)",
        description="Restart the shard from one surviving replica (the most advanced, or --seed) with a forced "
                    "membership, then add the other survivors back with fresh data (their old data directories "
                    "are renamed, not deleted).  Writes only the lost replicas held are lost.",
    ))
    recover.add_argument("--shard", required=True)
    recover.add_argument("--replicas", default=None,
                         help="comma-separated surviving replicas (default: every replica the file lists)")
    recover.add_argument("--seed", default=None, help="the survivor to restart from (default: the most advanced)")
    recover.add_argument("--timeout", type=float, default=DEFAULT_UP_TIMEOUT)
    recover.set_defaults(func=cmd_recover)

    remove = with_dir(commands.add_parser("remove-replica", help="remove a replica from its shard while it serves"))
    remove.add_argument("--replica", required=True)
    remove.set_defaults(func=cmd_remove_replica)


def cmd_node(args: argparse.Namespace) -> int:
    import logging

    from semcache.cluster._node import run_node

    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    transfers = logging.getLogger("semcache.cluster._raft.transfer")
    if transfers.getEffectiveLevel() == logging.WARNING:
        # Snapshot transfers are rare and long: their progress is logged at the default level too.
        transfers.setLevel(logging.INFO)
    run_node(args.config, args.replica, force_membership=args.force_membership,
             metrics_port=args.metrics_port, metrics_host=args.metrics_host)
    return 0


def cmd_up(args: argparse.Namespace) -> int:
    cluster = LocalCluster(args.dir)
    if cluster.exists():
        differences = _file_differences(cluster.config(), args)
        if differences:
            raise ConfigurationError(
                f"options differ from the existing cluster file {cluster.config_path}: {'; '.join(differences)}. "
                "A cluster's shape, model and token are fixed when it is created: leave these options out to "
                "start it as it is, or use another --dir for a new cluster"
            )
        print(f"using the existing cluster file {cluster.config_path}")
    else:
        shards = DEFAULT_SHARDS if args.shards is None else args.shards
        replicas = DEFAULT_REPLICAS if args.replicas is None else args.replicas
        cluster.create(shards, replicas, embedding=args.embedding or DEFAULT_MODEL, token=args.token)
        warning = fault_tolerance_warning(replicas)
        if warning:
            print(f"warning: {warning}", file=sys.stderr)
        print(f"created {cluster.config_path} ({shards} shard(s) x {replicas} replica(s))")
    started = cluster.start_all()
    print(f"started {len(started)} node(s); waiting for every shard to elect a leader...", flush=True)
    try:
        leaders = cluster.wait_for_leaders(args.timeout, watch=started)
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
    if cluster.config().admin_token:
        print(f"\nadmin calls (clear_scope, clear_all, replica changes) also need admin_token=..., which is in "
              f"{cluster.config_path} only")
    print(f"\nstop with: semcache cluster down --dir {cluster.directory}")
    return 0


def _file_differences(config: ClusterConfig, args: argparse.Namespace) -> list[str]:
    """How the shape options given to ``cluster up`` differ from an existing cluster file (an option not
    given is no difference)."""
    differences = []
    if args.shards is not None and args.shards != len(config.shards):
        differences.append(f"--shards {args.shards} (the file has {len(config.shards)} shard(s))")
    if args.replicas is not None and {len(shard.replicas) for shard in config.shards} != {args.replicas}:
        per_shard = ", ".join(f"{shard.id} has {len(shard.replicas)}" for shard in config.shards)
        differences.append(f"--replicas {args.replicas} (in the file {per_shard}; add-replica/remove-replica "
                           "change them while it runs)")
    if args.embedding is not None and args.embedding != config.embedding:
        differences.append(f"--embedding {args.embedding} (the file has {config.embedding})")
    if args.token is not None and args.token != config.token:
        differences.append("--token (the file has another token)")
    return differences


def fault_tolerance_warning(replicas: int) -> str | None:
    """What to know about ``replicas`` per shard when it buys no fault tolerance (None: nothing to say).

    A shard takes writes while a majority of its replicas (``replicas // 2 + 1``) is up.

    >>> fault_tolerance_warning(3) is None
    True
    >>> print(fault_tolerance_warning(4))
    4 replicas per shard survive as many replicas down as 3 would (1: a majority of 4 is 3)
    """
    majority = replicas // 2 + 1
    if replicas == 1:
        return ("1 replica per shard has no fault tolerance: when its node stops, so does the shard "
                "(fine for development; 3 replicas survive one down)")
    if replicas == 2:
        return ("2 replicas per shard have no fault tolerance: a majority of 2 is 2, so a shard stops taking "
                "writes when either replica is down; use 3 (survives one down) or 5 (two)")
    if replicas % 2 == 0:
        return (f"{replicas} replicas per shard survive as many replicas down as {replicas - 1} would "
                f"({replicas - majority}: a majority of {replicas} is {majority})")
    return None


def cmd_status(args: argparse.Namespace) -> int:
    cluster = LocalCluster(args.dir)
    shards = cluster.status()
    print(format_status(shards))
    return 0 if all(shard.leader for shard in shards) else 1


def cmd_down(args: argparse.Namespace) -> int:
    cluster = LocalCluster(args.dir)
    cluster.config()  # a clear error when there is no cluster here
    stopped = cluster.down()  # returns once the processes are gone
    print(f"stopped {len(stopped)} node(s): {', '.join(stopped) or 'none were running'}")
    return 0


def cmd_add_replica(args: argparse.Namespace) -> int:
    replica = LocalCluster(args.dir).add_replica(args.shard)
    print(f"added {replica.id} to {args.shard} at {replica.rpc} (caught up)")
    return 0


def cmd_recover(args: argparse.Namespace) -> int:
    survivors = [name.strip() for name in args.replicas.split(",") if name.strip()] if args.replicas else None
    recovery = LocalCluster(args.dir).recover(args.shard, survivors=survivors, seed=args.seed, timeout=args.timeout)
    print(f"{args.shard} recovered from {recovery.seed}; forgot {', '.join(recovery.forgotten) or 'no member'}; "
          f"rejoined {', '.join(recovery.rejoined) or 'no replica'}")
    for directory in recovery.set_aside:
        print(f"  old data kept in {directory}")
    return 0


def cmd_remove_replica(args: argparse.Namespace) -> int:
    LocalCluster(args.dir).remove_replica(args.replica)
    print(f"removed {args.replica}")
    return 0
