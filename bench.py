#!/usr/bin/env python3
"""The cacheops benchmark: python3 bench.py [--quick] [--db sqlite|postgresql|all]
                                           [--mode conj|insideout|all] [--rounds N]
                                           [--markdown FILE] [--readme] [--hiredis]

Sets itself up like demo.py: makes .venvs/bench (or .venvs/bench-hiredis) with
cacheops and psycopg installed and runs again inside it, finds Redis at
$CACHEOPS_REDIS or 127.0.0.1:6379 (or starts a private one) and uses its db 9,
flushed at start (runtests.py's lock on slot 9 is held meanwhile, so a test run
started meanwhile keeps off it). PostgreSQL is used at 127.0.0.1:5432 (user postgres,
no password) in a database cacheops_bench made and dropped for the run; if it does not
answer, only SQLite runs. Each database runs in a child process of its own, both
storage modes one after the other in it.

The schema (tools/bench_app) is 3 models: 10k Items (10 fields of assorted types,
a foreign key to one of 50 Categories, 2 Tags each through a many-to-many).
What is measured, per database and mode:

  hit.*     a cache hit of get(pk), a 20-row filter() list, count(), exists() and
            aggregate(); next to it the floor (a raw redis-py GET of the very bytes
            cacheops stored, plus pickle.loads) and the same query with the cache off
  miss.*    a miss + store (a fresh key each op) vs the same query with the cache off
  save.N    save() of a row N cached queries depend on (deleted by its invalidation)
            vs save() with the cache off
  mixed.P   95% reads over a skewed (Zipf) key distribution and 5% saves, P processes
            for a fixed time, in ops/s, with the cache and without
  memory.*  Redis INFO used_memory growth per cached get(pk) and per 20-row list, on a
            private redis-server started for it (on a shared one, other clients' data and
            buffers change used_memory too)

Time rows run in rounds; in each round every system of a row runs a batch in turn
(the order rotating between rounds), and its per-op time is the batch time / ops.
The table shows the median over rounds with the interquartile range in brackets,
and ratios as the median of the per-round ratios (paired within a round), IQR in
brackets. "The cache off" means CACHEOPS_ENABLED=False: Django with cacheops
installed but doing nothing. --readme puts the summary of a full run (the targeted
ratios, a column per database and mode) into README.rst's Performance section.

Standard library only up to the re-exec into the venv.
"""
import sys

if sys.version_info < (3, 10):
    sys.exit('bench.py needs Python 3.10 or newer')

import argparse
import dataclasses
import fcntl
import json
import os
import socket
import statistics
import subprocess
import tempfile
import time
from contextlib import contextmanager, nullcontext
from pathlib import Path

from tools import bootstrap

ROOT = Path(__file__).resolve().parent
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


# Set-up: the venv, Redis, PostgreSQL (standard library only)

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
    # used by the parent to run one database in a child process
    parser.add_argument('--child', choices=['sqlite', 'postgresql'], help=argparse.SUPPRESS)
    parser.add_argument('--redis-url', help=argparse.SUPPRESS)
    parser.add_argument('--memory-redis-url', help=argparse.SUPPRESS)
    parser.add_argument('--out', help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def venv_name(args):
    return 'bench-hiredis' if args.hiredis else 'bench'


def ensure_in_venv(args):
    name = venv_name(args)
    if bootstrap.running_in(name):
        return
    python = sys.executable if sys.version_info >= (3, 11) else bootstrap.find_python('3.11')
    packages = [DJANGO, 'psycopg[binary]'] + (['hiredis'] if args.hiredis else [])
    venv_python = bootstrap.ensure_venv(name, python, packages)
    os.execv(venv_python, [venv_python, str(Path(__file__).resolve()), *sys.argv[1:]])


@contextmanager
def redis_db_lock():
    """Hold runtests.py's lock on slot REDIS_DB, so no test run uses our Redis db meanwhile."""
    SLOT_LOCK.parent.mkdir(exist_ok=True)
    with open(SLOT_LOCK, 'w') as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log(f'a test run holds Redis db {REDIS_DB}: waiting for it')
            fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def postgres_problem():
    """None if PostgreSQL answers, else why not."""
    try:
        socket.create_connection((PG_HOST, PG_PORT), timeout=2).close()
        import psycopg
        psycopg.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, dbname='postgres', connect_timeout=3).close()
    except Exception as e:  # noqa: BLE001 - any failure means: no PostgreSQL
        return f'{type(e).__name__}: {e}'
    return None


@contextmanager
def private_redis():
    """URL of a redis-server of our own, for the memory rows only, stopped when the block exits."""
    from tools.redis_server import find_redis_server, free_port, ping

    port = free_port()
    url = f'redis://127.0.0.1:{port}/0'
    with tempfile.TemporaryDirectory(prefix='cacheops-bench-redis-') as workdir:
        proc = subprocess.Popen([find_redis_server(), '--port', str(port), '--bind', '127.0.0.1', '--save', '',
                                 '--appendonly', 'no', '--dir', workdir],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 10
            while not ping(url):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError('the private redis-server for the memory rows did not start')
                time.sleep(0.05)
            yield url
        finally:
            proc.terminate()
            proc.wait()


def log(message):
    print(f'[bench] {message}', file=sys.stderr, flush=True)


# The parent: one child per database, then the report

def main():
    args = parse_args()
    ensure_in_venv(args)
    if args.child:
        return child_main(args)
    sys.stdout.reconfigure(line_buffering=True)
    from tools.redis_server import redis_for_run, with_db

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
    results = []
    with redis_db_lock(), redis_for_run() as server_url, private_redis() as memory_redis_url, \
            tempfile.TemporaryDirectory(prefix='cacheops-bench-') as tmp:
        redis_url = with_db(server_url, REDIS_DB)
        for db in dbs:
            out = os.path.join(tmp, f'{db}.json')
            child_args = ['--child', db, '--redis-url', redis_url, '--memory-redis-url', memory_redis_url,
                          '--out', out, '--mode', args.mode]
            child_args += ['--quick'] if args.quick else []
            child_args += ['--rounds', str(args.rounds)] if args.rounds else []
            child_args += ['--hiredis'] if args.hiredis else []
            db_started = time.monotonic()
            subprocess.run([sys.executable, str(Path(__file__).resolve()), *child_args], check=True, cwd=ROOT)
            with open(out) as f:
                results.append(json.load(f))
            log(f'{db} done in {time.monotonic() - db_started:.0f} s')
    elapsed = time.monotonic() - started
    notes.append(f'load average (1 min) {load_before:.2f} at the start, {os.getloadavg()[0]:.2f} at the end: '
                 f'anything else running on the machine makes the numbers noisier')
    report = render_report(results, notes, elapsed)
    print('\n' + report)
    if args.markdown:
        Path(args.markdown).write_text(report + '\n')
        log(f'report written to {args.markdown}')
    if args.readme:
        update_readme(ROOT / 'README.rst', render_summary(results), ' '.join(['python3 bench.py', *sys.argv[1:]]))
        log('summary written to README.rst')


# The report

# row key, or key prefix ending in '.' -> (the baseline cacheops is divided by, or None for the
# value itself; the comparison; the limit, or {db: limit})
TARGETS = {
    'hit.': ('floor', '<=', 1.3),
    'miss.': ('nocache', '<=', 1.6),
    'save.0': ('nocache', '<=', 2.0),
    'save.10': ('nocache', '<=', 2.5),
    'save.1000': ('nocache', '<=', 5.0),
    'mixed.': ('nocache', '>=', {'sqlite': 1.0, 'postgresql': 1.4}),
    'memory.get': (None, '<=', 1.0),
}
BASELINE_NAMES = {'floor': 'floor', 'nocache': 'no cache'}


def target_for(key, db):
    for prefix, (baseline, op, limit) in TARGETS.items():
        if key == prefix or (prefix.endswith('.') and key.startswith(prefix)):
            return baseline, op, limit[db] if isinstance(limit, dict) else limit
    return None


def quartiles(values):
    """(median, p25, p75) of a list."""
    if len(values) == 1:
        return values[0], values[0], values[0]
    p25, median, p75 = statistics.quantiles(values, n=4, method='inclusive')
    return median, p25, p75


def fmt_value(values, unit):
    if not values:
        return '–'
    median, p25, p75 = quartiles(values)
    if unit == 'us':
        digits = 0 if median >= 100 else 1
        return f'{median:.{digits}f} µs [{p25:.{digits}f}–{p75:.{digits}f}]'
    if unit == 'ops/s':
        return f'{median:,.0f} ops/s [{p25:,.0f}–{p75:,.0f}]'
    return f'{median:.3f} {unit} [{p25:.3f}–{p75:.3f}]'


def paired_ratios(row, baseline):
    """Per-round cacheops / baseline ratios."""
    return [a / b for a, b in zip(row['values']['cacheops'], row['values'].get(baseline, [])) if b]


def fmt_ratio(ratios):
    if not ratios:
        return '–'
    median, p25, p75 = quartiles(ratios)
    return f'{median:.2f}x [{p25:.2f}–{p75:.2f}]'


def verdict(row, db):
    """(target text, 'PASS'/'FAIL') for a row, or ('', '') when it has no target."""
    target = target_for(row['key'], db)
    if not target:
        return '', ''
    baseline, op, limit = target
    if baseline:
        text = f'{op.replace("<=", "≤").replace(">=", "≥")} {limit}x {BASELINE_NAMES[baseline]}'
    else:
        text = f'{op.replace("<=", "≤")} {limit} {row["unit"]}'
    return text, 'PASS' if meets(measured(row, baseline), op, limit) else 'FAIL'


def measured(row, baseline):
    """What a row's target judges: the median ratio to baseline, or the value if None."""
    return quartiles(paired_ratios(row, baseline) if baseline else row['values']['cacheops'])[0]


def meets(value, op, limit):
    return value <= limit if op == '<=' else value >= limit


def render_table(results):
    header = ['DB', 'mode', 'measurement', 'cacheops', 'floor', 'no cache',
              'cacheops ÷ floor', 'cacheops ÷ no cache', 'target', 'result']
    lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
    counts = {'PASS': 0, 'FAIL': 0}
    for result in results:
        db = result['db']
        for row in result['rows']:
            target, outcome = verdict(row, db)
            if outcome:
                counts[outcome] += 1
            values = row['values']
            cells = [db, row['mode'], row['label'],
                     fmt_value(values.get('cacheops'), row['unit']),
                     fmt_value(values.get('floor'), row['unit']),
                     fmt_value(values.get('nocache'), row['unit']),
                     fmt_ratio(paired_ratios(row, 'floor')),
                     fmt_ratio(paired_ratios(row, 'nocache')),
                     target, f'**{outcome}**' if outcome == 'FAIL' else outcome]
            lines.append('| ' + ' | '.join(cells) + ' |')
    return lines, counts


# Short labels of the targeted rows, in the summary's order
SUMMARY_ROWS = {
    'hit.get': 'get(pk) hit ÷ floor', 'hit.list': '20-row list hit ÷ floor',
    'hit.count': 'count() hit ÷ floor', 'hit.exists': 'exists() hit ÷ floor',
    'hit.aggregate': 'aggregate() hit ÷ floor',
    'miss.get': 'get(pk) miss + store ÷ no cache', 'miss.list': '20-row list miss + store ÷ no cache',
    'save.0': 'save(), 0 dependents ÷ no cache', 'save.10': 'save(), 10 dependents ÷ no cache',
    'save.1000': 'save(), 1000 dependents ÷ no cache',
    'mixed.1': 'mixed 95/5, 1 process ÷ no cache', 'mixed.2': 'mixed 95/5, 2 processes ÷ no cache',
    'memory.get': 'Redis KiB per cached get(pk)',
}
README_START, README_END = '.. bench-summary-start', '.. bench-summary-end'
DB_NAMES = {'sqlite': 'SQLite', 'postgresql': 'PostgreSQL'}


def render_summary(results):
    """An RST table of the targeted rows' medians (ratios, or KiB), a column per database
    and mode, failing ones marked, and the targets."""
    columns, cells, targets = [], {}, {}
    for result in results:
        db = result['db']
        for row in result['rows']:
            target = target_for(row['key'], db)
            if row['key'] not in SUMMARY_ROWS or not target:
                continue
            column = f'{DB_NAMES[db]} {row["mode"]}'
            if column not in columns:
                columns.append(column)
            baseline, op, limit = target
            value = measured(row, baseline)
            text, outcome = verdict(row, db)
            shown = f'{value:.2f}'
            if outcome == 'FAIL' and meets(float(shown), op, limit):
                shown = f'{value:.3f}'  # 0.997 would show as 1.00, a pass
            cells[row['key'], column] = shown + (' ✗' if outcome == 'FAIL' else '')
            targets.setdefault(row['key'], {})[db] = text
    table = [['measurement', *columns, 'target'],
             *[[label, *[cells.get((key, c), '–') for c in columns], _target_text(targets[key])]
               for key, label in SUMMARY_ROWS.items() if key in targets]]
    widths = [max(len(line[i]) for line in table) for i in range(len(table[0]))]
    rule = '  '.join('=' * w for w in widths)
    lines = [rule, '  '.join(cell.ljust(w) for cell, w in zip(table[0], widths)).rstrip(), rule]
    lines += ['  '.join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip() for line in table[1:]]
    return [*lines, rule]


def _target_text(by_db):
    """A row's target, told per database where they differ."""
    if len(set(by_db.values())) == 1:
        return next(iter(by_db.values()))
    return ', '.join(f'{text} ({DB_NAMES[db]})' for db, text in by_db.items())


def update_readme(path, summary, command):
    """Replace what lies between the summary markers of README.rst."""
    text = path.read_text()
    start, end = text.index(README_START), text.index(README_END)
    failed = sum(line.count('✗') for line in summary)
    block = [README_START, '', f'Medians of one run of ``{command}``, on the machine',
             f'`BENCHMARKS.md <BENCHMARKS.md>`_ describes (✗: a target missed, {failed} of them):', '',
             *summary, '']
    path.write_text(text[:start] + '\n'.join(block) + '\n' + text[end:])


def render_report(results, notes, elapsed):
    env = results[0]['env']
    lines = ['# cacheops benchmark', '',
             f'- command: `{" ".join(["python3 bench.py", *sys.argv[1:]])}`',
             f'- Python {env["python"]}, Django {env["django"]}, redis-py {env["redis_py"]} '
             f'(hiredis: {"yes" if env["hiredis"] else "no"}), Redis server {env["redis_server"]} '
             f'at {env["redis_url"]} (memory rows: a private redis-server {env["memory_redis_server"]}), '
             f'{os.cpu_count()} CPUs',
             *[f'- {r["db"]}: {r["env"]["db_version"]}; {r["env"]["data"]}' for r in results],
             f'- {results[0]["env"]["sizes"]}',
             f'- total time {elapsed:.0f} s',
             *[f'- {note}' for note in notes], '']
    table, counts = render_table(results)
    lines += table
    lines += ['', f'{counts["PASS"]} targets passed, {counts["FAIL"]} failed.', '',
              'Times are per op: median over rounds [interquartile range]. Ratios are the median of '
              'per-round ratios (each system ran in the same round) [IQR]. floor = a raw redis-py GET '
              'of the bytes cacheops stored for that query + pickle.loads (insideout: minus the '
              '40-byte checksum). no cache = CACHEOPS_ENABLED=False (the thin cacheops wrappers still run). '
              'Memory = growth of INFO used_memory '
              'of a private redis-server per entry: cache keys, conj sets or stamps, schemes sets and the '
              'keyspace tables together; "keys" is the part MEMORY USAGE gives for the keys. Mixed: '
              'throughput, so higher is better; "reads hit" is the share of cached reads that made no '
              'database query, over all cacheops runs of that row.']
    return '\n'.join(lines)


# The child: one database, the modes one after the other

def child_main(args):
    sizes = QUICK if args.quick else FULL
    if args.rounds:
        sizes = dataclasses.replace(sizes, rounds=args.rounds, mixed_rounds=max(1, round(args.rounds / 5)))
    modes = ['conj', 'insideout'] if args.mode == 'all' else [args.mode]
    with tempfile.TemporaryDirectory(prefix='cacheops-bench-db-') as workdir, database(args.child, workdir) as db_conf:
        setup_django(db_conf, args.redis_url)
        import redis

        raw = redis.Redis.from_url(args.redis_url)
        raw.flushdb()
        data = create_data(sizes.items)
        rows = []
        for mode in modes:
            started = time.monotonic()
            rows += run_mode(args.child, mode, raw, data, sizes, args.memory_redis_url)
            log(f'{args.child}/{mode} took {time.monotonic() - started:.0f} s')
        raw.flushdb()
        env = environment(args.child, args.redis_url, raw, data, sizes)
        env['memory_redis_server'] = redis.Redis.from_url(args.memory_redis_url).info('server')['redis_version']
        from django.db import connections
        connections.close_all()
    with open(args.out, 'w') as f:
        json.dump({'db': args.child, 'env': env, 'rows': rows}, f)


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


def setup_django(db_conf, redis_url):
    import django
    from django.conf import settings
    from django.core.management import call_command

    settings.configure(
        INSTALLED_APPS=['cacheops', 'tools.bench_app'],
        DATABASES={'default': db_conf},
        USE_TZ=True,
        DEBUG=False,
        CACHEOPS_REDIS=redis_url,
        CACHEOPS={'bench_app.*': {'ops': 'all', 'timeout': 3600}},
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
        'hiredis': HIREDIS_AVAILABLE, 'redis_server': raw.info('server')['redis_version'],
        'redis_url': redis_url, 'db_version': db_version,
        'data': f'{data.items} items, {data.categories} categories, {data.tags} tags, '
                f'{data.links} item-tag links',
        'sizes': f'{sizes.rounds} rounds; batches of {sizes.hit_ops} hits, {sizes.miss_ops} misses, '
                 f'{sizes.save_ops} saves; mixed: {sizes.mixed_rounds} rounds of {sizes.mixed_seconds} s '
                 f'per system; memory: {sizes.memory_entries} entries x {sizes.memory_reps}',
    }


# The data

@dataclasses.dataclass
class Data:
    items: int
    categories: int
    tags: int
    links: int
    hot_pk: int        # the item the hit rows read
    hot_category: int  # its category
    hot_tag: int       # one of its tags


def create_data(n_items):
    import random
    import uuid
    from datetime import datetime, timedelta, timezone
    from decimal import Decimal

    from django.db import connection
    from django.test.utils import override_settings

    from tools.bench_app.models import Category, Item, Tag

    rng = random.Random(1)
    n_categories, n_tags = max(n_items // 200, 5), 100
    words = 'solid light quick dark blue round tall smart fresh plain'.split()
    start = datetime(2024, 1, 1, tzinfo=timezone.utc)
    with override_settings(CACHEOPS_ENABLED=False):  # no invalidation while loading
        Category.objects.bulk_create(Category(id=c, name=f'Category {c}', slug=f'category-{c}')
                                     for c in range(1, n_categories + 1))
        Tag.objects.bulk_create(Tag(id=t, name=f'tag{t}') for t in range(1, n_tags + 1))
        Item.objects.bulk_create((
            Item(id=i, category_id=i % n_categories + 1,
                 title=f'{" ".join(rng.sample(words, 4)).capitalize()} item number {i}', slug=f'item-{i}',
                 price=Decimal(rng.randrange(100, 100_000)) / 100, stock=rng.randrange(1000),
                 rating=round(rng.uniform(0, 5), 2), is_active=rng.random() < 0.9,
                 created=start + timedelta(minutes=7 * i + rng.randrange(5)),
                 code=uuid.UUID(int=rng.getrandbits(128)))
            for i in range(1, n_items + 1)), batch_size=1000)
        through = Item.tags.through
        links = [through(item_id=i, tag_id=t) for i in range(1, n_items + 1)
                 for t in {i % n_tags + 1, (7 * i + 3) % n_tags + 1}]
        through.objects.bulk_create(links, batch_size=5000)
        with connection.cursor() as cursor:  # fresh statistics, and no autovacuum in the middle of a run
            cursor.execute('ANALYZE' if connection.vendor == 'sqlite' else 'VACUUM ANALYZE')
        hot = Item.objects.filter(is_active=True, id__gte=n_items // 2).order_by('id').first()
        hot_tag = hot.tags.order_by('id').first().id
    return Data(n_items, n_categories, n_tags, len(links), hot.pk, hot.category_id, hot_tag)


def page(category, offset=0):
    """A 20-row page of a category's newest active items."""
    from tools.bench_app.models import Item
    return Item.objects.filter(category_id=category, is_active=True).order_by('-created')[offset:offset + LIST_ROWS]


# Timing

@dataclasses.dataclass
class System:
    """One way to do a row's work: op(i) is timed; setup() runs untimed before each batch and
    before_each(i) untimed before each op. cache_off runs it with CACHEOPS_ENABLED=False."""
    op: object
    setup: object = None
    before_each: object = None
    cache_off: bool = False


@dataclasses.dataclass
class Row:
    key: str
    label: str
    ops: int      # ops per batch
    systems: dict  # name ('cacheops', 'floor', 'nocache') -> System


def cache_state(off):
    from django.test.utils import override_settings
    return override_settings(CACHEOPS_ENABLED=False) if off else nullcontext()


def time_batch(system, n):
    """Seconds per op of n ops of a system, gc off while timing."""
    import gc

    with cache_state(system.cache_off):
        if system.setup:
            system.setup()
        gc.collect()
        gc.disable()
        try:
            if system.before_each is None:
                op = system.op
                start = time.perf_counter()
                for i in range(n):
                    op(i)
                return (time.perf_counter() - start) / n
            total = 0.0
            for i in range(n):
                system.before_each(i)
                start = time.perf_counter()
                system.op(i)
                total += time.perf_counter() - start
            return total / n
        finally:
            gc.enable()


def rotated(items, n):
    n %= len(items)
    return items[n:] + items[:n]


def run_rounds(rows, rounds, label):
    """{row key: {system: [µs per op, one per round]}}, a warm-up round first."""
    import gc
    gc.collect()
    gc.freeze()  # what exists now is never garbage: keeps the collect() before each batch short
    times = {row.key: {name: [] for name in row.systems} for row in rows}
    for r in range(-1, rounds):
        for row in rows:
            for name in rotated(list(row.systems), r):
                seconds = time_batch(row.systems[name], row.ops)
                if r >= 0:
                    times[row.key][name].append(seconds * 1e6)
        if r >= 0:
            log(f'{label}: round {r + 1}/{rounds}')
    gc.unfreeze()
    return times


# The measurements of one mode

def run_mode(db, mode, raw, data, sizes, memory_redis_url):
    import redis
    from django.test.utils import override_settings

    with override_settings(CACHEOPS_INSIDEOUT=mode == 'insideout'):
        raw.flushdb()
        label = f'{db}/{mode}'
        bench = ModeBench(mode, raw, data, sizes)
        with phase(f'{label}: set-up'):
            rows = bench.hit_rows() + bench.miss_rows() + bench.save_rows()
        with phase(f'{label}: time rows'):
            times = run_rounds(rows, sizes.rounds, label)
        results = [{'key': row.key, 'label': row.label, 'unit': 'us', 'values': times[row.key]} for row in rows]
        with phase(f'{label}: mixed workload'):
            results += bench.mixed_results(label)
        with phase(f'{label}: memory'), override_settings(CACHEOPS_REDIS=memory_redis_url):
            results += bench.memory_results(redis.Redis.from_url(memory_redis_url))
        raw.flushdb()
    for result in results:
        result['mode'] = mode
    return results


@contextmanager
def phase(label):
    started = time.monotonic()
    yield
    log(f'{label} took {time.monotonic() - started:.1f} s')


def queries_of(func):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as queries:
        result = func()
    return len(queries), result


class ModeBench:
    def __init__(self, mode, raw, data, sizes):
        import pickle
        self.loads = pickle.loads
        self.mode, self.raw, self.data, self.sizes = mode, raw, data, sizes
        self.skip = 40 if mode == 'insideout' else 0  # insideout values start with a 40-byte checksum

    # Hits

    def hit_rows(self):
        from django.db.models import Avg, Max, Sum

        from tools.bench_app.models import Item
        d = self.data
        cat = d.hot_category
        return [
            self.hit_row('hit.get', f'hit: get(pk={d.hot_pk})', lambda: Item.objects.get(pk=d.hot_pk)),
            self.hit_row('hit.list', f"hit: list(filter(category={cat}, is_active=True).order_by('-created')[:20])",
                         lambda: list(page(cat))),
            self.hit_row('hit.count', f'hit: filter(category={cat}).count()',
                         lambda: Item.objects.filter(category_id=cat).count()),
            self.hit_row('hit.exists', f'hit: filter(category={cat}, tags={d.hot_tag}).exists() (M2M join)',
                         lambda: Item.objects.filter(category_id=cat, tags=d.hot_tag).exists()),
            self.hit_row('hit.aggregate', f'hit: filter(category={cat}).aggregate(Avg, Sum, Max)',
                         lambda: Item.objects.filter(category_id=cat).aggregate(
                             avg=Avg('price'), stock=Sum('stock'), best=Max('rating'))),
        ]

    def hit_row(self, key, label, query):
        redis_key = self.stored_key(query)
        get, loads, raw = self.raw.get, self.loads, self.raw
        if self.skip:
            def floor(i):
                return loads(memoryview(get(redis_key))[40:])
        else:
            def floor(i):
                return loads(get(redis_key))

        def cached(i):
            return query()

        def ensure_stored():
            query()
            if not raw.exists(redis_key):
                raise RuntimeError(f'{key}: the cached value is no longer at {redis_key!r}')

        self.check_hit(key, query, floor)
        return Row(key, label, self.sizes.hit_ops, {
            'floor': System(floor, setup=ensure_stored),
            'cacheops': System(cached, setup=ensure_stored),
            'nocache': System(cached, cache_off=True),
        })

    def stored_key(self, query):
        """The key a query stores its value at: the only loadable string key after running
        it once on an empty db (conj sets and schemes are sets, insideout stamps don't load)."""
        self.raw.flushdb()
        query()
        found = []
        for key in self.raw.scan_iter(count=1000):
            if self.raw.type(key) != b'string':
                continue
            try:
                self.loads(self.raw.get(key)[self.skip:])
            except Exception:  # noqa: BLE001 - not a pickle: a stamp or a marker
                continue
            found.append(key)
        if len(found) != 1:
            raise RuntimeError(f'expected one cache key after one query, found {found}')
        return found[0]

    def check_hit(self, key, query, floor):
        """A hit makes no query and returns what the floor loads; the cache off makes one."""
        from django.db.models import Model
        from django.test.utils import override_settings

        queries, result = queries_of(query)
        if queries:
            raise RuntimeError(f'{key}: the cached query was not a hit ({queries} queries)')
        stored = floor(0)
        if stored != ([result] if isinstance(result, Model) else result):
            raise RuntimeError(f'{key}: the floor loads {stored!r}, the hit returned {result!r}')
        with override_settings(CACHEOPS_ENABLED=False):
            if not queries_of(query)[0]:
                raise RuntimeError(f'{key}: no query with the cache off')

    # Misses

    def miss_rows(self):
        from tools.bench_app.models import Item
        d, n = self.data, self.sizes.miss_ops
        step = d.items // (n + 1)
        pks = [1 + step * (i + 1) for i in range(n)]
        pages = [(i % d.categories + 1, i // d.categories) for i in range(n)]
        return [
            self.miss_row('miss.get', 'miss + store: get(pk=...), a fresh pk each op',
                          lambda i: Item.objects.get(pk=pks[i])),
            self.miss_row('miss.list', 'miss + store: 20-row list, a fresh (category, offset) each op',
                          lambda i: list(page(*pages[i]))),
        ]

    def miss_row(self, key, label, query):
        raw = self.raw

        def empty_cache():
            raw.flushdb()
            query(0)  # settings just changed: warm cacheops' derived settings up outside the clock
            raw.flushdb()

        raw.flushdb()
        first, second = queries_of(lambda: query(0))[0], queries_of(lambda: query(0))[0]
        if (first, second) != (1, 0):
            raise RuntimeError(f'{key}: a miss made {first} queries and the next call {second}')
        return Row(key, label, self.sizes.miss_ops, {
            'cacheops': System(query, setup=empty_cache),
            'nocache': System(query, cache_off=True),
        })

    # Saves

    def save_rows(self):
        d = self.data
        # rows from categories the hit rows do not read
        categories = [c for c in range(1, d.categories + 1) if c != d.hot_category]
        background, saved = categories[0], categories[1:]
        return [self.save_row(n, background, saved[k]) for k, n in enumerate(SAVE_DEPENDENTS)]

    def save_row(self, dependents, background_category, category):
        from tools.bench_app.models import Item
        pk = Item.objects.nocache().filter(category_id=category).order_by('id').values_list('id', flat=True)[3]

        def dependent_queries():
            """Queries the row's save must invalidate: its get(pk) and counts of its category."""
            yield lambda: Item.objects.get(pk=pk)
            for j in range(dependents - 1):
                yield lambda j=j: Item.objects.filter(category_id=category, stock__gte=j).count()

        def other_queries():
            """Cached queries on the same table that do not depend on the row."""
            others = Item.objects.nocache().filter(category_id=background_category).values_list('id', flat=True)[:10]
            for other in others:
                yield lambda other=other: Item.objects.get(pk=other)
            for offset in range(10):
                yield lambda offset=offset: list(page(background_category, offset))

        self.raw.flushdb()
        for query in [*other_queries(), *(dependent_queries() if dependents else [])]:
            query()
        snapshot = self.snapshot()
        self.check_save(pk, snapshot, list(dependent_queries())[-1] if dependents else None,
                        next(other_queries()))

        instance = []

        def fetch():
            instance[:] = [Item.objects.nocache().get(pk=pk)]

        def save(i):
            obj = instance[0]
            obj.stock ^= 1  # a real change every time
            obj.save()

        return Row(f'save.{dependents}', f'save() of a row {dependents} cached queries depend on',
                   self.sizes.save_ops, {
                       'cacheops': System(save, setup=fetch, before_each=lambda i: self.restore(snapshot)),
                       'nocache': System(save, setup=fetch, cache_off=True),
                   })

    def check_save(self, pk, snapshot, dependent, other):
        """After the save a dependent query misses; a query on other rows still hits."""
        from tools.bench_app.models import Item
        self.restore(snapshot)
        obj = Item.objects.nocache().get(pk=pk)
        obj.save()
        if dependent is not None and not queries_of(dependent)[0]:
            raise RuntimeError(f'save of {pk}: a dependent query was not invalidated')
        if queries_of(other)[0]:
            raise RuntimeError(f'save of {pk}: a query on other rows was invalidated')

    def snapshot(self):
        """Every key of our db with its TTL and DUMP."""
        keys = list(self.raw.scan_iter(count=1000))
        pipe = self.raw.pipeline(transaction=False)
        for key in keys:
            pipe.pttl(key)
            pipe.dump(key)
        replies = pipe.execute()
        return [(key, max(ttl, 0), dump) for key, ttl, dump in zip(keys, replies[::2], replies[1::2])]

    def restore(self, snapshot):
        self.raw.flushdb()
        pipe = self.raw.pipeline(transaction=False)
        for key, ttl, dump in snapshot:
            pipe.restore(key, ttl, dump, replace=True)
        pipe.execute()

    # The mixed workload

    def mixed_results(self, label):
        from django.db import connections
        plan = MixedPlan(self.data)
        seconds = self.sizes.mixed_seconds
        values = {procs: {'cacheops': [], 'nocache': []} for procs in (1, 2)}
        reads = {procs: [0, 0] for procs in (1, 2)}  # cacheops reads, of which hits
        plan.warm_up()
        for r in range(self.sizes.mixed_rounds):
            for procs in (1, 2):
                for name in rotated(['cacheops', 'nocache'], r):
                    run = run_mixed(plan, name == 'nocache', procs, seconds, seed=100 * r + 10 * procs)
                    values[procs][name].append(run.ops_per_second)
                    if name == 'cacheops':
                        reads[procs][0] += run.reads
                        reads[procs][1] += run.read_hits
            log(f'{label}: mixed round {r + 1}/{self.sizes.mixed_rounds}')
        connections.close_all()
        return [{'key': f'mixed.{procs}',
                 'label': f'mixed: 95% reads (Zipf), 5% saves, {procs} process{"es" if procs > 1 else ""}; '
                          f'reads hit {reads[procs][1] / max(reads[procs][0], 1):.0%}',
                 'unit': 'ops/s', 'values': values[procs]} for procs in (1, 2)]

    # Memory

    def memory_results(self, client):
        """Memory rows, measured with client; cacheops must be set to use the same server."""
        from tools.bench_app.models import Item
        d = self.data
        entries = self.sizes.memory_entries
        step = d.items // entries
        gets = [lambda pk=1 + step * i: Item.objects.get(pk=pk) for i in range(entries)]
        pages = [lambda c=i % d.categories + 1, o=i // d.categories: list(page(c, o))
                 for i in range(entries)]
        return [self.memory_row(client, 'memory.get', 'Redis memory per cached get(pk) (10-field row)', gets),
                self.memory_row(client, 'memory.list', f'Redis memory per cached {LIST_ROWS}-row list', pages,
                                rows=LIST_ROWS)]

    def memory_row(self, client, key, label, queries, rows=None):
        """KiB of INFO used_memory growth per entry, and of MEMORY USAGE of the keys."""
        grown, usage = [], []
        for query in queries[:10]:  # connect, load the scripts: memory that is not per entry
            query()
        for _ in range(self.sizes.memory_reps):
            client.flushdb()
            before = client.info('memory')['used_memory']
            for query in queries:
                result = query()
                if rows and len(result) != rows:
                    raise RuntimeError(f'{key}: a list had {len(result)} rows, not {rows}')
            after = client.info('memory')['used_memory']
            grown.append((after - before) / len(queries) / 1024)
            usage.append(memory_usage(client) / len(queries) / 1024)
        client.flushdb()
        return {'key': key, 'label': f'{label}; keys {statistics.median(usage):.3f} KiB',
                'unit': 'KiB', 'values': {'cacheops': grown}}


def memory_usage(client):
    """Bytes that MEMORY USAGE gives for all the keys of the client's db."""
    keys = list(client.scan_iter(count=1000))
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.memory_usage(key, samples=0)
    return sum(pipe.execute())


class MixedPlan:
    """The mixed workload: 95% reads, 5% saves; keys drawn from Zipf distributions
    (s=1.1) over the items and the categories, the same hot keys in every process."""
    # (op, share): get(pk), a 20-row page of a category, count() of a category, get + save()
    OPS = (('get', 55), ('page', 25), ('count', 15), ('save', 5))

    def __init__(self, data, s=1.1):
        import itertools
        import random
        rng = random.Random(2)
        self.items = rng.sample(range(1, data.items + 1), data.items)  # rank -> pk
        self.categories = rng.sample(range(1, data.categories + 1), data.categories)
        self.item_weights = list(itertools.accumulate(1 / k ** s for k in range(1, data.items + 1)))
        self.category_weights = list(itertools.accumulate(1 / k ** s for k in range(1, data.categories + 1)))

    def warm_up(self):
        """Cache what a long-running site would have cached: the reads of the most popular
        tenth of the items (84% of the gets with 10k items) and of every category."""
        for pk in self.items[:len(self.items) // 10]:
            mixed_op('get', pk)
        for category in self.categories:
            mixed_op('page', category)
            mixed_op('count', category)

    def sequence(self, seed, length):
        import random
        rng = random.Random(seed)
        kinds = rng.choices([op for op, _ in self.OPS], weights=[w for _, w in self.OPS], k=length)
        items = rng.choices(self.items, cum_weights=self.item_weights, k=length)
        categories = rng.choices(self.categories, cum_weights=self.category_weights, k=length)
        return [(kind, category if kind in ('page', 'count') else item)
                for kind, item, category in zip(kinds, items, categories)]


def mixed_op(kind, arg):
    from tools.bench_app.models import Item
    if kind == 'get':
        Item.objects.get(pk=arg)
    elif kind == 'page':
        list(page(arg))
    elif kind == 'count':
        Item.objects.filter(category_id=arg).count()
    else:
        obj = Item.objects.get(pk=arg)
        obj.stock ^= 1
        obj.save()


@dataclasses.dataclass
class MixedRun:
    ops_per_second: float
    reads: int      # read ops done
    read_hits: int  # reads that made no database query
    error: str = None


def run_mixed(plan, cache_off, procs, seconds, seed):
    """A MixedRun of procs forked processes running the mixed workload for `seconds`."""
    import multiprocessing

    from django.db import connections

    ctx = multiprocessing.get_context('fork')
    connections.close_all()  # each process opens its own
    ready, start, results = ctx.Queue(), ctx.Event(), ctx.Queue()
    workers = [ctx.Process(target=mixed_worker, args=(plan, cache_off, seconds, seed + w, ready, start, results))
               for w in range(procs)]
    for worker in workers:
        worker.start()
    for _ in workers:
        ready.get(timeout=60)
    start.set()
    runs = [results.get(timeout=seconds + 60) for _ in workers]
    for worker in workers:
        worker.join()
    errors = [run.error for run in runs if run.error]
    if errors:
        raise RuntimeError(f'mixed workload failed: {errors[0]}')
    return MixedRun(sum(run.ops_per_second for run in runs),
                    sum(run.reads for run in runs), sum(run.read_hits for run in runs))


def mixed_worker(plan, cache_off, seconds, seed, ready, start, results):
    from django.db import connection

    queries = [0]

    def count_queries(execute, *args):
        queries[0] += 1
        return execute(*args)

    ops = plan.sequence(seed, length=int(40_000 * seconds) + 1000)
    try:
        with cache_state(cache_off), connection.execute_wrapper(count_queries):
            mixed_op(*ops[-1])  # connect to the database and Redis before the clock starts
            ready.put(True)
            start.wait()
            count = reads = read_hits = 0
            began = time.perf_counter()
            deadline = began + seconds
            while time.perf_counter() < deadline:
                kind, arg = ops[count % len(ops)]
                before = queries[0]
                mixed_op(kind, arg)
                count += 1
                if kind != 'save':
                    reads += 1
                    read_hits += queries[0] == before
            results.put(MixedRun(count / (time.perf_counter() - began), reads, read_hits))
    except Exception as e:  # noqa: BLE001 - reported by the parent
        ready.put(False)
        results.put(MixedRun(0, 0, 0, f'{type(e).__name__}: {e}'))


if __name__ == '__main__':
    main()
