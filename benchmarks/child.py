"""A child process of bench.py: one database, set up and filled, its modes measured one after the other."""
import json
import os
import sys
import tempfile
import time
from contextlib import contextmanager

from .config import PG_DB, PG_HOST, PG_PORT, PG_USER, log, sizes_for
from .data import create_data
from .measure import run_rounds
from .memory import memory_results
from .mixed import mixed_results
from .async_rows import AsyncHits
from .workloads import ModeBench


def child_main(args):
    sizes = sizes_for(args)
    modes = ['conj', 'insideout'] if args.mode == 'all' else [args.mode]
    nodes = cluster_nodes(args.redis_cluster) if args.redis_cluster else None
    with tempfile.TemporaryDirectory(prefix='cacheops-bench-db-') as workdir, database(args.child, workdir) as db_conf:
        setup_django(db_conf, args.redis_url, nodes)
        import redis

        raw = raw_client(args.redis_url, nodes)
        raw.flushdb()
        data = create_data(sizes.items)
        rows = []
        # the memory rows measure a private single redis-server: run once, beside the single Redis
        memory_url = None if nodes else args.memory_redis_url
        for mode in modes:
            started = time.monotonic()
            rows += run_mode(args.child, mode, raw, data, sizes, memory_url)
            log(f'{args.child}/{mode} took {time.monotonic() - started:.0f} s')
        raw.flushdb()
        env = environment(args.child, args.redis_cluster or args.redis_url, raw, data, sizes)
        env['memory_redis_server'] = redis.Redis.from_url(args.memory_redis_url).info('server')['redis_version']
        from django.db import connections
        connections.close_all()
    with open(args.out, 'w') as f:
        json.dump({'db': args.child, 'redis': 'cluster' if nodes else 'redis', 'env': env, 'rows': rows}, f)


def cluster_nodes(spec):
    """'host:port,host:port' -> [(host, port), ...]."""
    return [(host, int(port)) for host, _, port in (node.rpartition(':') for node in spec.split(','))]


def raw_client(redis_url, nodes):
    """A redis-py client of cacheops' Redis: its db, or the whole cluster (flushdb goes to every primary)."""
    if nodes is None:
        import redis
        return redis.Redis.from_url(redis_url)
    from redis.cluster import ClusterNode, RedisCluster
    return RedisCluster(startup_nodes=[ClusterNode(host, port) for host, port in nodes])


@contextmanager
def database(db, workdir):
    """DATABASES['default'] for db: a SQLite file in workdir, or a fresh PostgreSQL database."""
    if db == 'sqlite':
        # WAL with synchronous=NORMAL, as SQLite is usually run under Django today: no fsync per
        # commit. A faster database makes the cache's share of a save larger, not smaller.
        yield {'ENGINE': 'django.db.backends.sqlite3', 'NAME': os.path.join(workdir, 'bench.sqlite3'),
               'OPTIONS': {'init_command': 'PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;'}}
        return
    import psycopg

    def admin(sql):
        with psycopg.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, dbname='postgres',
                             autocommit=True) as conn:
            conn.execute(sql)

    admin(f'DROP DATABASE IF EXISTS {PG_DB} WITH (FORCE)')
    admin(f'CREATE DATABASE {PG_DB}')
    try:
        yield {'ENGINE': 'django.db.backends.postgresql', 'NAME': PG_DB, 'USER': PG_USER,
               'HOST': PG_HOST, 'PORT': PG_PORT}
    finally:
        from django.conf import settings
        if settings.configured:
            from django.db import connections
            connections.close_all()
        admin(f'DROP DATABASE IF EXISTS {PG_DB} WITH (FORCE)')


def setup_django(db_conf, redis_url, nodes=None):
    import django
    from django.conf import settings
    from django.core.management import call_command

    redis = {'CACHEOPS_CLUSTER': {'startup_nodes': nodes}} if nodes else {'CACHEOPS_REDIS': redis_url}
    settings.configure(
        INSTALLED_APPS=['cacheops', 'tools.bench_app'],
        DATABASES={'default': db_conf},
        USE_TZ=True,
        DEBUG=False,
        CACHEOPS={'bench_app.*': {'ops': 'all', 'timeout': 3600}},
        **redis,
    )
    django.setup()
    call_command('migrate', run_syncdb=True, verbosity=0)


def environment(db, redis_url, raw, data, sizes):
    import django
    import redis
    from django.db import connection
    from redis.utils import HIREDIS_AVAILABLE

    if db == 'sqlite':
        import sqlite3
        db_version = f'SQLite {sqlite3.sqlite_version} (WAL, synchronous=NORMAL, a file in {tempfile.gettempdir()})'
    else:
        with connection.cursor() as cursor:
            cursor.execute('SHOW server_version')
            db_version = f'PostgreSQL {cursor.fetchone()[0]} at {PG_HOST}:{PG_PORT} (TCP)'
    return {
        'python': sys.version.split()[0], 'django': django.get_version(), 'redis_py': redis.__version__,
        'hiredis': HIREDIS_AVAILABLE, 'redis_server': server_version(raw),
        'redis_url': redis_url, 'db_version': db_version,
        'data': f'{data.items} items, {data.categories} categories, {data.tags} tags, '
                f'{data.links} item-tag links',
        'sizes': f'{sizes.rounds} rounds; batches of {sizes.hit_ops} hits, {sizes.miss_ops} misses, '
                 f'{sizes.save_ops} saves; mixed: {sizes.mixed_rounds} rounds of {sizes.mixed_seconds} s '
                 f'per system; memory: {sizes.memory_entries} entries x {sizes.memory_reps}',
    }


def server_version(raw):
    """The Redis version raw talks to (a cluster's INFO answers per node: any one's)."""
    if hasattr(raw, 'get_nodes'):
        return raw.info('server', target_nodes=raw.get_random_node())['redis_version']
    return raw.info('server')['redis_version']


def run_mode(db, mode, raw, data, sizes, memory_redis_url):
    import redis
    from django.test.utils import override_settings

    with override_settings(CACHEOPS_INSIDEOUT=mode == 'insideout'):
        raw.flushdb()
        label = f'{db}/{mode}'
        bench = ModeBench(mode, raw, data, sizes)
        with phase(f'{label}: set-up'):
            rows = bench.hit_rows() + AsyncHits(bench).rows() + bench.miss_rows() + bench.save_rows()
        with phase(f'{label}: time rows'):
            times = run_rounds(rows, sizes.rounds, label)
        results = [{'key': row.key, 'label': row.label, 'unit': 'us', 'values': times[row.key]} for row in rows]
        with phase(f'{label}: mixed workload'):
            results += mixed_results(data, sizes, label)
        if memory_redis_url:
            with phase(f'{label}: memory'), override_settings(CACHEOPS_REDIS=memory_redis_url):
                results += memory_results(redis.Redis.from_url(memory_redis_url), data, sizes)
        raw.flushdb()
    for result in results:
        result['mode'] = mode
    return results


@contextmanager
def phase(label):
    started = time.monotonic()
    yield
    log(f'{label} took {time.monotonic() - started:.1f} s')
