#!/usr/bin/env python3
"""The cacheops benchmark: python3 bench.py [--quick] [--db sqlite|postgresql|all]
                                           [--mode conj|insideout|all] [--rounds N]
                                           [--markdown FILE] [--readme] [--hiredis]
                                           [--cluster [--cluster-nodes HOST:PORT,...]]

Sets itself up like demo.py: makes .venvs/bench (or .venvs/bench-hiredis) with
cacheops and psycopg installed and runs again inside it, finds Redis at
$CACHEOPS_REDIS or 127.0.0.1:6379 (or starts a private one) and uses its db 9,
flushed at start (runtests.py's lock on slot 9 is held meanwhile, so a test run
started meanwhile keeps off it). PostgreSQL is used at 127.0.0.1:5432 (user postgres,
no password) in a database cacheops_bench made and dropped for the run; if it does not
answer, only SQLite runs. Each database runs in a child process of its own, both
storage modes one after the other in it. With --cluster each database runs a second
time, on a Redis Cluster (3 primaries, 3 replicas, started for the run by
tools/redis_server.cluster_for_run, or the one --cluster-nodes names, flushed), its
rows beside the single Redis' ones, marked "(cluster)"; the memory rows run once,
on their private single server.

The schema (tools/bench_app) is 3 models: 10k Items (10 fields of assorted types,
a foreign key to one of 50 Categories, 2 Tags each through a many-to-many).
What is measured, per database and mode:

  hit.*     a cache hit of get(pk), a 20-row filter() list, count(), exists() and
            aggregate(); next to it the floor (a raw redis-py GET of the very bytes
            cacheops stored, plus pickle.loads) and the same query with the cache off
  signed.get  a get(pk) hit with CACHEOPS_SIGNING_KEY set beside the same hit without it,
            in the same rounds; the report gives what signing adds, per round
  ahit.*    an async hit (await aget(pk), await acount()) read in an event loop kept
            for the run, beside the same sync hit in the same rounds
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

Standard library only up to the re-exec into the venv: this script, and what benchmarks.main
imports at its top (benchmarks.config, benchmarks.bootstrap, tools.bootstrap). The parts are
in benchmarks/, a package of the repository (not installed with cacheops).
"""
import sys

if sys.version_info < (3, 10):
    sys.exit('bench.py needs Python 3.10 or newer')

from benchmarks.main import main

if __name__ == '__main__':
    main()
