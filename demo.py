#!/usr/bin/env python3
"""A short tour of cacheops: python3 demo.py

Sets itself up: makes .venvs/demo with cacheops installed and runs again inside
it, finds Redis at $CACHEOPS_REDIS or 127.0.0.1:6379 (or starts a private one),
creates a SQLite database of 1000 articles in a temporary directory, then times
cache misses and hits and shows an invalidation at work.
"""
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from tools import bootstrap

CATEGORIES = 10
ARTICLES = 1000
REPEATS = 25
REDIS_DB = 15  # the demo's own Redis db, flushed at start; runtests.py keeps off it


def ensure_in_venv():
    if bootstrap.running_in('demo'):
        return
    python = sys.executable if sys.version_info >= (3, 10) else bootstrap.find_python('3.11')
    venv_python = bootstrap.ensure_venv('demo', python, [])
    os.execv(venv_python, [venv_python, str(Path(__file__).resolve()), *sys.argv[1:]])


def setup_django(redis_url, workdir):
    import django
    from django.conf import settings
    from django.core.management import call_command

    settings.configure(
        INSTALLED_APPS=['cacheops', 'tools.demo_app'],
        DATABASES={'default': {'ENGINE': 'django.db.backends.sqlite3',
                               'NAME': os.path.join(workdir, 'demo.sqlite3')}},
        USE_TZ=True,
        CACHEOPS_REDIS=redis_url,
        CACHEOPS={'demo_app.*': {'ops': 'all', 'timeout': 3600}},
    )
    django.setup()
    call_command('migrate', run_syncdb=True, verbosity=0)


def create_data():
    from tools.demo_app.models import Article, Category

    categories = Category.objects.bulk_create(Category(title=f'Category {n}') for n in range(CATEGORIES))
    Article.objects.bulk_create(
        Article(category=categories[n % CATEGORIES], title=f'Article {n}', body='Lorem ipsum. ' * 20, views=n)
        for n in range(ARTICLES))


def median_us(func, before=None):
    """Median time of func() in microseconds; before() runs untimed ahead of each call."""
    times = []
    for _ in range(REPEATS):
        if before:
            before()
        start = time.perf_counter()
        func()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e6


def queries_of(func):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as queries:
        result = func()
    return len(queries), result


def measure(label, cached, uncached, flush):
    """A row of the report: the database alone, a miss, a hit, and the queries a hit makes."""
    database = median_us(uncached)
    miss = median_us(cached, before=flush)
    cached()  # make sure the next calls hit
    hit = median_us(cached)
    hit_queries, _ = queries_of(cached)
    print(f'{label:<44} {database:>9.0f} {miss:>9.0f} {hit:>9.0f} {database / hit:>7.1f}x {hit_queries:>8}')


def show_timings(client):
    from django.db.models import Count, Sum

    from tools.demo_app.models import Article, Category

    pk = Article.objects.order_by('pk')[ARTICLES // 2].pk
    rows = [
        (f'Article.objects.get(pk={pk})',
         lambda: Article.objects.get(pk=pk),
         lambda: Article.objects.nocache().get(pk=pk)),
        ('list(Article.objects.filter(category=3)[:20])',
         lambda: list(Article.objects.filter(category=3).order_by('title')[:20]),
         lambda: list(Article.objects.nocache().filter(category=3).order_by('title')[:20])),
        ('Article.objects.filter(category=3).count()',
         lambda: Article.objects.filter(category=3).count(),
         lambda: Article.objects.nocache().filter(category=3).count()),
        ('Category.objects.annotate(Count, Sum) (join)',
         lambda: list(Category.objects.annotate(n=Count('articles'), views=Sum('articles__views'))),
         lambda: list(Category.objects.nocache().annotate(n=Count('articles'), views=Sum('articles__views')))),
    ]
    print(f'{"query":<44} {"database":>9} {"miss":>9} {"hit":>9} {"speed-up":>8} {"hit SQL":>8}')
    for label, cached, uncached in rows:
        measure(label, cached, uncached, client.flushdb)
    print(f'(microseconds, median of {REPEATS} calls; "database" bypasses the cache with .nocache(); '
          f'a miss reads the database and stores the result; '
          f'"hit SQL" is the number of database queries a hit makes)')
    print(f'For scale: a Redis round trip (PING) takes {median_us(client.ping):.0f} microseconds here; '
          f'no hit can be cheaper than that.')


def show_invalidation():
    from tools.demo_app.models import Article

    def first_page():
        return list(Article.objects.filter(category=3).order_by('title')[:20])

    first_page()
    article = first_page()[0]
    article.title = 'A fresh title'
    article.save()
    print(f'\nSaved article {article.pk} (in category 3) with title {article.title!r}.')
    queries, page = queries_of(first_page)
    print(f'The cached first page of category 3 now makes {queries} database quer{"y" if queries == 1 else "ies"}'
          f' ({"a miss, as it should" if queries else "a hit: NOT invalidated"}),'
          f' and its first title is {page[0].title!r}.')
    queries, page = queries_of(first_page)
    print(f'Asked again: {queries} database queries ({"a hit" if not queries else "still a miss"}).')


def main():
    ensure_in_venv()
    sys.stdout.reconfigure(line_buffering=True)  # keep our lines in order with the [redis] ones on stderr
    import redis

    from tools.redis_server import redis_for_run, with_db

    with redis_for_run() as server_url, tempfile.TemporaryDirectory(prefix='cacheops-demo-') as workdir:
        redis_url = with_db(server_url, REDIS_DB)
        client = redis.Redis.from_url(redis_url)
        client.flushdb()
        setup_django(redis_url, workdir)
        create_data()
        print(f'\ncacheops demo: {ARTICLES} articles in {CATEGORIES} categories, SQLite in {workdir}, '
              f'Redis at {redis_url}\n')
        show_timings(client)
        show_invalidation()


if __name__ == '__main__':
    main()
