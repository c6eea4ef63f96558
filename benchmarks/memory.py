"""The memory rows: Redis INFO used_memory growth per cached entry, on a private redis-server."""
import statistics

from .config import LIST_ROWS
from .data import page


def memory_results(client, data, sizes):
    """Memory rows, measured with client; cacheops must be set to use the same server."""
    from tools.bench_app.models import Item
    entries = sizes.memory_entries
    step = data.items // entries
    gets = [lambda pk=1 + step * i: Item.objects.get(pk=pk) for i in range(entries)]
    pages = [lambda c=i % data.categories + 1, o=i // data.categories: list(page(c, o))
             for i in range(entries)]
    return [memory_row(client, sizes, 'memory.get', 'Redis memory per cached get(pk) (10-field row)', gets),
            memory_row(client, sizes, 'memory.list', f'Redis memory per cached {LIST_ROWS}-row list', pages,
                       rows=LIST_ROWS)]


def memory_row(client, sizes, key, label, queries, rows=None):
    """KiB of INFO used_memory growth per entry, and of MEMORY USAGE of the keys."""
    grown, usage = [], []
    for query in queries[:10]:  # connect, load the scripts: memory that is not per entry
        query()
    for _ in range(sizes.memory_reps):
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
