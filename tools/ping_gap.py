"""How long a PING from another client waits while cacheops does big work on Redis.

Each scenario runs on its own private redis-server (tools/redis_server.private_redis):
invalidating a conj set of N members (a save's invalidation, and invalidate_model()),
invalidate_all() over N keys without and with a prefix, and reap_conjs() over a set of N
members half of whose keys expired. A thread PINGs all along; the longest wait and the
99th percentile are printed per scenario. A number, not a test: a timed assertion would
fail on a busy machine (docs/design.md, "Bounded work").

    .venvs/py313-dj61/bin/python tools/ping_gap.py [--members 1000000]
"""
import argparse
import os
import statistics
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tools.redis_server import private_redis  # noqa: E402

# made in Redis by a script, in steps of this many: the setup must not time out itself
FILL_STEP = 50_000
# KEYS: the conj set, or ''; ARGV: key prefix, first and last number, every how many
# keys one exists (1: all, 2: every other one)
FILL = """
local every = tonumber(ARGV[4])
for i = tonumber(ARGV[2]), tonumber(ARGV[3]) do
    local key = ARGV[1] .. i
    if i % every == 0 then redis.call('set', key, 'x', 'ex', 3600) end
    if KEYS[1] ~= '' then redis.call('sadd', KEYS[1], key) end
end
"""


class Pinger(threading.Thread):
    """PINGs Redis on its own connection until stopped; keeps every wait, in seconds."""

    def __init__(self, port):
        super().__init__(daemon=True)
        import redis
        self.client = redis.Redis(port=port)
        self.waits = []
        self.stopping = threading.Event()

    def run(self):
        while not self.stopping.is_set():
            started = time.perf_counter()
            self.client.ping()
            self.waits.append(time.perf_counter() - started)
            time.sleep(0.001)

    def stop(self):
        self.stopping.set()
        self.join()
        return max(self.waits), statistics.quantiles(self.waits, n=100)[98]


def fill(client, members, conj='', every=1, prefix='q:gap:'):
    """Keys prefix<i> (one in every) and, with conj, a set naming all of them."""
    script = client.register_script(FILL)
    for start in range(0, members, FILL_STEP):
        script(keys=[conj], args=[prefix, start, min(start + FILL_STEP, members) - 1, every])


def scenarios(members):
    from cacheops import invalidate_all, invalidate_dict, invalidate_model, reap_conjs
    from cacheops.keys import conj_key, prefix_for, schemes_key
    from tests.models import Post

    table = Post._meta.db_table

    def big_conj(client, every=1):
        conj = conj_key(prefix_for(['default'], [table]), table, {'category_id': 1})
        client.sadd(schemes_key(prefix_for(['default'], [table]), table), 'category_id')
        fill(client, members, conj, every)

    return [
        ('save() invalidating a conj set of N members', big_conj,
         lambda: invalidate_dict(Post, {'category_id': 1})),
        ('invalidate_model() with a conj set of N members', big_conj,
         lambda: invalidate_model(Post)),
        ('invalidate_all() over N keys, no prefix', lambda client: fill(client, members),
         invalidate_all),
        ('reap_conjs() over a set of N members, half expired',
         lambda client: big_conj(client, every=2),
         lambda: reap_conjs(min_conj_set_size=1000)),
    ]


def measure(port, setup, work):
    import redis
    from django.test.utils import override_settings

    client = redis.Redis(port=port)
    client.flushdb()
    setup(client)
    before = client.dbsize()
    with override_settings(CACHEOPS_REDIS=f'redis://127.0.0.1:{port}/0'):
        pinger = Pinger(port)
        pinger.start()
        started = time.perf_counter()
        work()
        took = time.perf_counter() - started
        longest, p99 = pinger.stop()
    return before, took, longest, p99


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--members', type=int, default=1_000_000)
    args = parser.parse_args()
    os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'tests.settings')
    os.environ.setdefault('CACHEOPS_TEST_DB', 'sqlite')
    os.environ['CACHEOPS_TEST_INSIDEOUT'] = '0'  # conj-set mode: the sets are the work
    import django
    django.setup()

    print(f'N = {args.members:,}; PING waits in ms (longest, 99th percentile)')
    print(f'{"scenario":<52} {"keys":>9} {"took s":>7} {"longest":>8} {"p99":>6}')
    for name, setup, work in scenarios(args.members):
        with private_redis() as port:
            keys, took, longest, p99 = measure(port, setup, work)
        print(f'{name:<52} {keys:>9,} {took:>7.2f} {longest * 1000:>8.1f} {p99 * 1000:>6.2f}', flush=True)


if __name__ == '__main__':
    main()
