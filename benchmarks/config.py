"""Paths, sizes and the command line of bench.py (standard library only: imported before the re-exec)."""
import argparse
import dataclasses
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# The children and the re-exec into the venv run the script, not this package: the venv
# finds the package through the checkout, wherever python is started from.
SCRIPT = ROOT / 'bench.py'
REDIS_DB = 9  # one of runtests.py's slots: we hold its lock while we run
SLOT_LOCK = Path(tempfile.gettempdir()) / 'cacheops-test-slots' / f'{REDIS_DB}.lock'
PG_HOST, PG_PORT, PG_USER, PG_DB = '127.0.0.1', 5432, 'postgres', 'cacheops_bench'
DJANGO = 'Django>=5.2,<5.3'  # the series CI tests on Python 3.11


@dataclasses.dataclass(frozen=True)
class Sizes:
    items: int           # Item rows (Categories: items // 200, at least 5)
    rounds: int          # rounds of the time rows
    hit_ops: int         # ops per batch of a hit row
    miss_ops: int        # ops per batch of a miss row (each a fresh key)
    save_ops: int        # saves per batch of a save row
    mixed_seconds: float  # length of one mixed workload run
    mixed_rounds: int
    memory_entries: int  # entries cached for the memory rows
    memory_reps: int     # times they are cached, the db flushed between


FULL = Sizes(items=10_000, rounds=15, hit_ops=200, miss_ops=100, save_ops=10,
             mixed_seconds=1.5, mixed_rounds=3, memory_entries=1000, memory_reps=3)
QUICK = Sizes(items=2_000, rounds=5, hit_ops=30, miss_ops=20, save_ops=3,
              mixed_seconds=0.3, mixed_rounds=1, memory_entries=1000, memory_reps=1)
SAVE_DEPENDENTS = (0, 10, 1000)
LIST_ROWS = 20


def sizes_for(args):
    sizes = QUICK if args.quick else FULL
    if args.rounds:
        sizes = dataclasses.replace(sizes, rounds=args.rounds, mixed_rounds=max(1, round(args.rounds / 5)))
    return sizes


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Benchmark cacheops (see the docstring of bench.py).')
    parser.add_argument('--quick', action='store_true', help='fewer rows and rounds: under a minute')
    parser.add_argument('--db', choices=['sqlite', 'postgresql', 'all'], default='all')
    parser.add_argument('--mode', choices=['conj', 'insideout', 'all'], default='all')
    parser.add_argument('--rounds', type=int,
                        help='rounds of the time rows (default 15, quick 5); the mixed workload gets N/5')
    parser.add_argument('--markdown', metavar='FILE', help='also write the report to FILE')
    parser.add_argument('--readme', action='store_true',
                        help="put the summary table into README.rst's Performance section")
    parser.add_argument('--hiredis', action='store_true', help='use redis-py with hiredis (.venvs/bench-hiredis)')
    parser.add_argument('--cluster', action='store_true',
                        help='also run on a Redis Cluster (3 primaries, 3 replicas, started for the run), '
                             'reported beside the single Redis')
    parser.add_argument('--cluster-nodes', metavar='HOST:PORT,...',
                        help='with --cluster: the nodes of a running cluster to use (its db is flushed)')
    # used by the parent to run one database in a child process
    parser.add_argument('--child', choices=['sqlite', 'postgresql'], help=argparse.SUPPRESS)
    parser.add_argument('--redis-url', help=argparse.SUPPRESS)
    parser.add_argument('--redis-cluster', help=argparse.SUPPRESS)  # the child's cluster, in place of --redis-url
    parser.add_argument('--memory-redis-url', help=argparse.SUPPRESS)
    parser.add_argument('--out', help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.cluster_nodes and not args.cluster:
        parser.error('--cluster-nodes goes with --cluster')
    return args


def log(message):
    print(f'[bench] {message}', file=sys.stderr, flush=True)
