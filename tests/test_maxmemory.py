"""CACHEOPS_INSIDEOUT with Redis maxmemory and a volatile-* policy: under memory
pressure Redis evicts cache values and conj stamps alike, and cacheops never serves
stale data. A private redis-server with a 2mb limit is filled well beyond it with
cached querysets on many distinct rows while rows are updated, and every cached read
is checked against the database. Evictions are watched through keyspace events, to
show that conj stamps were evicted too, which is the case that could go wrong."""
import random

import pytest
import redis
from django.test import override_settings

from tests.models import Category, Post
from tools.redis_server import private_redis

pytestmark = pytest.mark.django_db

CATEGORIES = 12
POSTS = 240
STEPS = 1500
TEXT_SIZE = 3000  # bytes of text per post, so cached values weigh on memory


@pytest.fixture
def small_redis():
    """A private redis-server with maxmemory 2mb, volatile-lru, no persistence; its URL."""
    with private_redis('--maxmemory', '2mb', '--maxmemory-policy', 'volatile-lru',
                       '--notify-keyspace-events', 'Ee') as port:
        yield 'redis://127.0.0.1:%d/0' % port


class Evictions:
    """The keys the server evicts, from its 'evicted' keyspace events."""
    def __init__(self, url):
        self.client = redis.Redis.from_url(url)
        self.pubsub = self.client.pubsub(ignore_subscribe_messages=True)
        self.pubsub.psubscribe('__keyevent@*__:evicted')
        self.keys = []

    def drain(self):
        # drained often: a subscriber's output buffer counts against maxmemory
        while True:
            message = self.pubsub.get_message(timeout=0)
            if message is None:
                return
            self.keys.append(message['data'].decode())

    def close(self):
        self.drain()
        self.pubsub.close()
        self.client.close()


def _make_rows():
    categories = [Category.objects.create(title='c%d' % i) for i in range(CATEGORIES)]
    posts = [Post.objects.create(title='p%d' % i, category=categories[i % CATEGORIES],
                                 text=('%d ' % i) * (TEXT_SIZE // 4))
             for i in range(POSTS)]
    return [c.pk for c in categories], [p.pk for p in posts]


def _read_post(pk):
    cached = Post.objects.cache().get(pk=pk)
    actual = Post.objects.nocache().get(pk=pk)
    return (cached.title, cached.category_id), (actual.title, actual.category_id)


def _read_category(pk):
    def rows(qs):
        return [(p.pk, p.title) for p in qs.filter(category_id=pk).order_by('pk')]
    return rows(Post.objects.cache()), rows(Post.objects.nocache())


def _write(rnd, category_ids, post_ids):
    post = Post.objects.nocache().get(pk=rnd.choice(post_ids))
    post.title = 't%d' % rnd.randrange(10 ** 6)
    post.category_id = rnd.choice(category_ids)
    post.save()


def run_under_pressure(url):
    """Interleave cached reads and writes; return (stale reads, reads, evicted keys)."""
    rnd = random.Random(20240)
    category_ids, post_ids = _make_rows()
    evictions = Evictions(url)
    stale, reads = [], 0
    try:
        for step in range(STEPS):
            choice = rnd.random()
            if choice < 0.2:
                _write(rnd, category_ids, post_ids)
                continue
            if choice < 0.75:
                what, (cached, actual) = 'post', _read_post(rnd.choice(post_ids))
            else:
                what, (cached, actual) = 'category', _read_category(rnd.choice(category_ids))
            reads += 1
            if cached != actual:
                stale.append((step, what, cached, actual))
            evictions.drain()
    finally:
        evictions.close()
    return stale, reads, evictions.keys


def test_insideout_never_serves_stale_data_under_memory_pressure(small_redis):
    with override_settings(CACHEOPS_REDIS=small_redis, CACHEOPS_CLUSTER={}, CACHEOPS_INSIDEOUT=True):
        stale, reads, evicted = run_under_pressure(small_redis)
        info = redis.Redis.from_url(small_redis).info()
    assert reads > STEPS // 2
    assert info['maxmemory'] == 2 * 1024 * 1024
    assert info['evicted_keys'] > 0 and evicted, 'the test never put Redis under pressure'
    assert any(':q:' in k or k.startswith('q:') for k in evicted), 'no cache value was evicted'
    assert any('conj:' in k for k in evicted), 'no conj stamp was evicted'
    assert stale == [], '%d stale reads of %d, e.g. %r' % (len(stale), reads, stale[:3])


def test_conj_set_mode_does_serve_stale_data_under_the_same_pressure(small_redis):
    """The contrast, showing the check above can fail: in conj-set mode an evicted conj
    set loses its registrations, and writes then miss the entries it referenced. This
    is why the README asks for insideout mode with maxmemory."""
    with override_settings(CACHEOPS_REDIS=small_redis, CACHEOPS_CLUSTER={}, CACHEOPS_INSIDEOUT=False):
        stale, reads, evicted = run_under_pressure(small_redis)
    assert any('conj:' in k for k in evicted)
    assert stale, 'conj-set mode read nothing stale: the pressure is too low to show anything'
