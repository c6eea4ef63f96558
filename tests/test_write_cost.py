"""What a write costs the cache: a save reads the row's old values with one SELECT (on
PostgreSQL its UPDATE returns them: one statement) and invalidates with one Redis round
trip, and so does an update() of few rows; an invalidation deletes a bounded number of
cache keys inside Redis and the rest from the client."""
import pytest
from django.db import connection
from django.test import override_settings
from django.test.utils import CaptureQueriesContext

from cacheops import invalidation
from cacheops.conf import settings
from cacheops.redis import get_client

from .cluster import ON_CLUSTER, single_redis
from .settings import CACHEOPS_INSIDEOUT, CACHEOPS_STRICT_KEYS
from .models import Category, Post
from .utils import hand_packed, queries, unseen_update, warm

pytestmark = pytest.mark.django_db


@pytest.fixture
def post():
    category = Category.objects.create(title='c')
    post = Post.objects.create(title='a', category=category)
    post.save()  # the invalidation script is loaded into Redis by now
    return post


def titles(category_id):
    return [p.title for p in Post.objects.cache().filter(category_id=category_id)]


# the cache keys deleted inside Redis: not on a cluster, where they live in other slots,
# nor with CACHEOPS_STRICT_KEYS, where a script touches only the keys it is given
server_deletes = pytest.mark.skipif(CACHEOPS_STRICT_KEYS, reason='CACHEOPS_STRICT_KEYS: the cache keys '
                                    'are deleted by the client (test_with_strict_keys_...)')


@single_redis('a cluster deletes the cache keys from the client, by slot, after the script')
@server_deletes
def test_a_save_makes_one_round_trip_to_redis(post, redis_commands, round_trips):
    warm(lambda: titles(post.category_id))
    redis_commands.clear()
    round_trips.clear()
    post.title = 'b'
    post.save()
    assert redis_commands == ['EVALSHA']  # the cache keys are deleted inside Redis
    assert len(round_trips) == 1
    assert titles(post.category_id) == ['b']


@single_redis('a cluster deletes the cache keys from the client always')
def test_with_strict_keys_a_save_deletes_the_cache_keys_from_the_client(post, redis_commands):
    warm(lambda: titles(post.category_id))
    redis_commands.clear()
    with override_settings(CACHEOPS_STRICT_KEYS=True):
        post.title = 'b'
        post.save()
    # insideout mode has no cache keys to delete: its stamps are the script's KEYS
    assert redis_commands == (['EVALSHA'] if CACHEOPS_INSIDEOUT else ['EVALSHA', 'UNLINK'])
    assert titles(post.category_id) == ['b']


@hand_packed
@server_deletes
def test_a_save_right_after_a_miss_makes_one_round_trip_to_redis(post, redis_commands, round_trips):
    """The miss's store was sent without waiting: the invalidation goes over the same
    connection, after it, with a PING in the same write (see test_store_connections)."""
    warm(lambda: titles(post.category_id))
    assert Post.objects.cache().filter(pk=post.pk).count() == 1  # a miss, its store sent
    redis_commands.clear()
    round_trips.clear()
    post.title = 'b'
    post.save()
    assert redis_commands == ['PING', 'EVALSHA']
    assert len(round_trips) == 1
    assert titles(post.category_id) == ['b']
    assert queries(lambda: Post.objects.cache().filter(pk=post.pk).count()) == (1, 1)


def test_a_save_reads_the_old_values_with_one_select(post):
    if connection.vendor == 'postgresql':
        pytest.skip('PostgreSQL: the UPDATE returns them (the next test)')
    post.title = 'b'
    _, count = queries(post.save)
    assert count == 2  # the old values, the UPDATE


def test_a_save_on_postgresql_is_one_statement_returning_the_old_values(post):
    if connection.vendor != 'postgresql':
        pytest.skip('a save is one statement on PostgreSQL only')
    old, new, other = (Category.objects.create(title=t) for t in ('old', 'new', 'other'))
    unseen_update(Post.objects.filter(pk=post.pk), category=old)  # only the database knows
    for category in (old, new, other):
        warm(lambda: titles(category.pk))
    post.category = new
    with CaptureQueriesContext(connection) as ctx:
        post.save()
    assert len(ctx) == 1 and 'RETURNING' in ctx[0]['sql'], [q['sql'] for q in ctx]
    assert queries(lambda: titles(old.pk)) == ([], 1)  # invalidated by the value returned
    assert queries(lambda: titles(new.pk)) == (['a'], 1)
    assert queries(lambda: titles(other.pk)) == ([], 0)  # still a hit


def test_an_update_of_few_rows_reads_them_once_and_makes_one_round_trip_to_redis(
        post, redis_commands, round_trips):
    warm(lambda: titles(post.category_id))
    redis_commands.clear()
    round_trips.clear()
    with CaptureQueriesContext(connection) as ctx:
        assert Post.objects.filter(category_id=post.category_id).update(title='b') == 1
    statements = [q['sql'] for q in ctx]
    if connection.vendor == 'sqlite':  # the write lock first, as for a save
        assert 'WHERE 1 = 0' in statements.pop(0)
    assert len(statements) == 2, statements  # the rows' old values, the UPDATE
    if not ON_CLUSTER and not CACHEOPS_STRICT_KEYS:  # else the client deletes the cache keys
        assert redis_commands == ['EVALSHA']
        assert len(round_trips) == 1
    assert titles(post.category_id) == ['b']


def test_a_stale_instance_still_invalidates_by_the_values_in_the_database(post):
    other = Category.objects.create(title='other')
    stale = Post.objects.nocache().get(pk=post.pk)
    unseen_update(Post.objects.filter(pk=post.pk), category=other)  # the cache is not told
    warm(lambda: titles(other.pk))
    stale.title = 'b'
    stale.save()  # moves the row back from `other`, which only the database knows
    assert titles(other.pk) == []


def test_a_big_invalidation_deletes_past_the_server_budget_from_the_client(
        post, monkeypatch, redis_commands):
    monkeypatch.setattr(invalidation, 'SERVER_DELETE_BUDGET', 3)
    counts = [lambda n=n: Post.objects.cache().filter(category_id=post.category_id, pk__gte=-n).count()
              for n in range(10)]
    for count in counts:
        warm(count)
    redis_commands.clear()
    post.save()
    for count in counts:
        assert queries(count) == (1, 1)
    if not settings.CACHEOPS_INSIDEOUT:  # insideout mode deletes no cache keys at all
        assert 'UNLINK' in redis_commands


def test_rows_lacking_a_column_scan_the_keyspace_once(redis_commands):
    """Rows without a pk (bulk_create with ignore_conflicts) match any pk: each row gives
    the conj keys of its scheme a pattern, and they are found in one SCAN pass, not one
    pass per row (a SCAN walks the whole keyspace, whatever it matches)."""
    cats = [Category.objects.create(title='c%d' % i) for i in range(21)]
    by_pk = [lambda cat=cat: titles_of(cat, pk=10**6) for cat in cats]
    for read in by_pk:
        warm(read)
    redis_commands.clear()

    Post.objects.bulk_create([Post(title='t', category=cat, pk=None) for cat in cats[:20]],
                             ignore_conflicts=True)

    # the keyspace is small: a pass takes one SCAN or two, on each primary of a cluster
    assert redis_commands.count('SCAN') <= 2 * (len(get_client().get_primaries()) if ON_CLUSTER else 1)
    for read in by_pk[:20]:
        assert queries(read) == ([], 1)  # no new row has that pk: invalidated all the same
    assert queries(by_pk[20]) == ([], 0)  # granular: no row of that category


def titles_of(category, **conditions):
    return [p.title for p in Post.objects.cache().filter(category=category, **conditions)]
