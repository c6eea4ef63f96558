"""main(): into the venv, then a child process per database, then the report (standard library only)."""
import json
import os
import subprocess
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

from .bootstrap import ensure_in_venv, postgres_problem, private_redis, redis_db_lock
from .config import PG_HOST, PG_PORT, REDIS_DB, ROOT, SCRIPT, log, parse_args


def cluster(args):
    """The nodes ('host:port,...') of the cluster --cluster asks for, or None: the one given,
    else one started for the run and stopped after it."""
    if not args.cluster:
        return nullcontext(None)
    if args.cluster_nodes:
        return nullcontext(args.cluster_nodes)
    from tools.redis_server import cluster_for_run
    return cluster_for_run()


def main():
    args = parse_args()
    ensure_in_venv(args)
    # Only now, inside the venv, may the modules that import Django and redis-py load.
    if args.child:
        from .child import child_main
        return child_main(args)
    sys.stdout.reconfigure(line_buffering=True)
    from tools.redis_server import redis_for_run, with_db

    from .report import render_report, render_summary, update_readme

    started, load_before = time.monotonic(), os.getloadavg()[0]
    dbs = ['sqlite', 'postgresql'] if args.db == 'all' else [args.db]
    notes = []
    if 'postgresql' in dbs:
        problem = postgres_problem()
        if problem:
            notes.append(f'PostgreSQL at {PG_HOST}:{PG_PORT} is unreachable ({problem}): SQLite only.')
            log(notes[-1])
            dbs.remove('postgresql')
    if not dbs:
        sys.exit('bench.py: no database to run on')
    results, failed = [], []
    with redis_db_lock(), redis_for_run() as server_url, private_redis() as memory_redis_url, \
            cluster(args) as cluster_nodes, tempfile.TemporaryDirectory(prefix='cacheops-bench-') as tmp:
        redis_url = with_db(server_url, REDIS_DB)
        # each database on the single Redis, then on the cluster: side by side in the report
        targets = [('redis', ['--redis-url', redis_url])]
        targets += [('cluster', ['--redis-cluster', cluster_nodes])] if cluster_nodes else []
        for db in dbs:
            for redis_kind, redis_args in targets:
                out = os.path.join(tmp, f'{db}-{redis_kind}.json')
                child_args = ['--child', db, *redis_args, '--memory-redis-url', memory_redis_url,
                              '--out', out, '--mode', args.mode]
                child_args += ['--quick'] if args.quick else []
                child_args += ['--rounds', str(args.rounds)] if args.rounds else []
                child_args += ['--hiredis'] if args.hiredis else []
                db_started = time.monotonic()
                done = subprocess.run([sys.executable, str(SCRIPT), *child_args], cwd=ROOT)
                if done.returncode and redis_kind == 'redis':
                    raise subprocess.CalledProcessError(done.returncode, done.args)
                if done.returncode:  # the single Redis' rows are still worth reporting
                    failed.append(f'{db} on the Redis Cluster failed (exit {done.returncode}, '
                                  f'its traceback above): no rows of it')
                    log(failed[-1])
                    continue
                with open(out) as f:
                    results.append(json.load(f))
                log(f'{db} on {redis_kind} done in {time.monotonic() - db_started:.0f} s')
    elapsed = time.monotonic() - started
    notes.append(f'load average (1 min) {load_before:.2f} at the start, {os.getloadavg()[0]:.2f} at the end: '
                 f'anything else running on the machine makes the numbers noisier')
    notes += failed
    report = render_report(results, notes, elapsed)
    print('\n' + report)
    if args.markdown:
        Path(args.markdown).write_text(report + '\n')
        log(f'report written to {args.markdown}')
    if args.readme:
        update_readme(ROOT / 'README.rst', render_summary(results), ' '.join(['python3 bench.py', *sys.argv[1:]]))
        log('summary written to README.rst')
    if failed:
        sys.exit('bench.py: ' + '; '.join(failed))
