"""The venv, the lock on our Redis db, PostgreSQL's check, a private redis-server (standard library only)."""
import fcntl
import os
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager

from tools import bootstrap

from .config import DJANGO, PG_HOST, PG_PORT, PG_USER, REDIS_DB, SCRIPT, SLOT_LOCK, log


def venv_name(args):
    return 'bench-hiredis' if args.hiredis else 'bench'


def ensure_in_venv(args):
    name = venv_name(args)
    if bootstrap.running_in(name):
        return
    python = sys.executable if sys.version_info >= (3, 11) else bootstrap.find_python('3.11')
    packages = [DJANGO, 'psycopg[binary]'] + (['hiredis'] if args.hiredis else [])
    venv_python = bootstrap.ensure_venv(name, python, packages)
    os.execv(venv_python, [venv_python, str(SCRIPT), *sys.argv[1:]])


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
