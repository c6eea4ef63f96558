"""The mixed workload: 95% reads over Zipf-drawn keys, 5% saves, in forked processes for a fixed time."""
import dataclasses
import time

from .config import log
from .data import page
from .measure import cache_state, rotated


def mixed_results(data, sizes, label):
    """The mixed rows: ops/s with the cache and without, in 1 and 2 processes."""
    from django.db import connections
    plan = MixedPlan(data)
    seconds = sizes.mixed_seconds
    values = {procs: {'cacheops': [], 'nocache': []} for procs in (1, 2)}
    reads = {procs: [0, 0] for procs in (1, 2)}  # cacheops reads, of which hits
    plan.warm_up()
    for r in range(sizes.mixed_rounds):
        for procs in (1, 2):
            for name in rotated(['cacheops', 'nocache'], r):
                run = run_mixed(plan, name == 'nocache', procs, seconds, seed=100 * r + 10 * procs)
                values[procs][name].append(run.ops_per_second)
                if name == 'cacheops':
                    reads[procs][0] += run.reads
                    reads[procs][1] += run.read_hits
        log(f'{label}: mixed round {r + 1}/{sizes.mixed_rounds}')
    connections.close_all()
    return [{'key': f'mixed.{procs}',
             'label': f'mixed: 95% reads (Zipf), 5% saves, {procs} process{"es" if procs > 1 else ""}; '
                      f'reads hit {reads[procs][1] / max(reads[procs][0], 1):.0%}',
             'unit': 'ops/s', 'values': values[procs]} for procs in (1, 2)]


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
