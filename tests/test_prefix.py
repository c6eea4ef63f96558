"""CACHEOPS_PREFIX: a dotted path or a callable of a query object (.dbs, .tables, and
.db/.table for a single one), applied alike to queryset keys, @cached_as, the simple
cache and invalidation, so that prefixes by database or by table keep caches apart
and invalidation still reaches every entry."""
import threading

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.db import connections
from django.test import RequestFactory, override_settings
from django.test.utils import CaptureQueriesContext

from cacheops import CacheMiss, cache, cached_as, invalidate_all, invalidate_model, invalidate_obj
from cacheops.keys import PrefixQuery
from cacheops.redis import redis_client
from cacheops.redis.primary import PRIMARY_KEY

from .cluster import redis_keys
from .models import Category, Post
from .utils import unseen_update

pytestmark = pytest.mark.django_db(databases=['default', 'slave'])

POST = Post._meta.db_table
CATEGORY = Category._meta.db_table


def queries(func, using='default'):
    with CaptureQueriesContext(connections[using]) as ctx:
        result = func()
    return result, len(ctx)


def warm(func, using='default'):
    result = func()
    assert queries(func, using) == (result, 0)
    return result


def keys(pattern='*'):
    """The keys cacheops made, but cacheops:primary, which is per server, never prefixed."""
    return {k.decode() for k in redis_keys(pattern)} - {PRIMARY_KEY}


def titles(using='default', **filters):
    return [p.title for p in Post.objects.cache().using(using).filter(**filters).order_by('pk')]


def per_db(query):
    return 'db-%s:' % query.db


def per_table(query):
    return 'tb-%s:' % '+'.join(sorted(query.tables))


def by_table_attribute(query):
    return 'one-%s:' % query.table


def string_path_prefix(query):
    return 'path:'


@pytest.fixture
def cat():
    return Category.objects.create(title='c')


# The setting's forms and the query object

@override_settings(CACHEOPS_PREFIX='tests.test_prefix.string_path_prefix')
def test_a_dotted_path(cat):
    qs = Post.objects.cache().filter(category=cat)
    assert warm(lambda: [p.title for p in qs]) == []
    assert qs._cache_key().startswith('path:q:')
    assert keys() and all(k.startswith('path:') for k in keys())
    Post.objects.create(title='a', category=cat)
    assert queries(lambda: [p.title for p in qs.all()]) == (['a'], 1)


@override_settings(CACHEOPS_PREFIX=per_table)
def test_a_querysets_prefix_is_the_one_its_key_starts_with(cat):
    qs = Post.objects.cache().filter(category=cat)
    assert qs._prefix == 'tb-%s:' % POST
    assert qs._cache_key().startswith(qs._prefix + 'q:')


def test_the_query_object(cat):
    seen = []

    def record(query):
        seen.append((query.dbs, sorted(query.tables)))
        return ''

    with override_settings(CACHEOPS_PREFIX=record):
        list(Post.objects.cache().using('slave').filter(category__title='c'))
    assert (['slave'], [CATEGORY, POST]) in seen


def test_single_db_and_table_attributes():
    query = PrefixQuery(['default'], [POST])
    assert (query.db, query.table, query.dbs, query.tables) == ('default', POST, ['default'], [POST])
    with pytest.raises(ImproperlyConfigured, match='query.dbs'):
        PrefixQuery(['default', 'slave'], [POST]).db
    with pytest.raises(ImproperlyConfigured, match='query.tables'):
        PrefixQuery(['default'], [POST, CATEGORY]).table


@override_settings(CACHEOPS_PREFIX=by_table_attribute)
def test_query_table_on_a_join_is_an_error(cat):
    assert warm(lambda: titles(category=cat)) == []  # a single table: fine
    with pytest.raises(ImproperlyConfigured, match='query.tables'):
        titles(category__title='c')


# Per-database prefixes

@override_settings(CACHEOPS_PREFIX=per_db)
def test_per_database_prefixes_keep_caches_apart(cat):
    """Post is db-agnostic: without a prefix both databases would share one entry."""
    Post.objects.create(title='d', category=cat)
    slave_cat = Category.objects.using('slave').create(title='c')
    Post.objects.using('slave').create(title='s', category=slave_cat)
    assert warm(titles) == ['d']
    assert warm(lambda: titles('slave'), 'slave') == ['s']
    assert Post.objects.cache()._cache_key().startswith('db-default:')
    assert Post.objects.cache().using('slave')._cache_key().startswith('db-slave:')
    assert keys('db-default:conj:*') and keys('db-slave:conj:*')

    Post.objects.using('slave').create(title='s2', category=slave_cat)
    assert queries(lambda: titles('slave'), 'slave') == (['s', 's2'], 1)
    assert queries(titles) == (['d'], 0)  # the other database's entry is still good
    Post.objects.create(title='d2', category=cat)
    assert queries(titles) == (['d', 'd2'], 1)


@override_settings(CACHEOPS_PREFIX=per_db)
def test_per_database_prefixes_and_manual_invalidation(cat):
    post = Post.objects.create(title='d', category=cat)
    Category.objects.using('slave').create(title='c')
    assert warm(titles) == ['d']
    assert warm(lambda: titles('slave'), 'slave') == []
    unseen_update(Post.objects, title='x')
    invalidate_model(Post, using='slave')
    assert queries(titles) == (['d'], 0)
    invalidate_model(Post)
    assert queries(titles) == (['x'], 1)
    unseen_update(Post.objects, title='y')
    invalidate_obj(post)  # the object's database: default
    assert queries(titles) == (['y'], 1)


# Per-table prefixes

@override_settings(CACHEOPS_PREFIX=per_table)
def test_per_table_prefixes(cat):
    qs = Post.objects.cache().filter(category__title='c')
    assert warm(lambda: [p.title for p in qs]) == []
    assert qs._cache_key().startswith('tb-%s+%s:q:' % (CATEGORY, POST))
    assert keys('tb-%s:conj:*' % POST) and keys('tb-%s:conj:*' % CATEGORY)


@override_settings(CACHEOPS_PREFIX=per_table)
def test_a_query_on_two_tables_with_different_prefixes_is_invalidated_by_both(cat):
    def in_c():
        return [p.title for p in Post.objects.cache().filter(category__title='c').order_by('pk')]

    assert warm(in_c) == []
    post = Post.objects.create(title='a', category=cat)  # a write to one table
    assert queries(in_c) == (['a'], 1)
    assert warm(in_c) == ['a']
    cat.title = 'other'
    cat.save()  # a write to the other
    assert queries(in_c) == ([], 1)
    assert warm(in_c) == []
    unseen_update(Category.objects.filter(pk=cat.pk), title='c')
    cat.refresh_from_db()
    invalidate_obj(cat)
    assert queries(in_c) == (['a'], 1)
    assert warm(in_c) == ['a']
    unseen_update(Post.objects.filter(pk=post.pk), title='b')
    invalidate_model(Post)
    assert queries(in_c) == (['b'], 1)


# The spec's examples: a prefix by tables that gives None for other queries, and one by
# the host of the current request

HELPER_TABLES = {CATEGORY}


def tables_prefix(query):
    if set(query.tables) <= HELPER_TABLES:
        return 'helper:'
    if query.tables == [POST]:
        return 'blog:'


@override_settings(CACHEOPS_PREFIX=tables_prefix)
def test_a_prefix_by_tables_none_meaning_no_prefix(cat):
    posts = Post.objects.cache().filter(category=cat)
    helpers = Category.objects.cache().filter(pk=cat.pk)
    joined = Post.objects.cache().filter(category__title='c')
    for qs in (posts, helpers, joined):
        warm(lambda: list(qs.all()))
    assert posts._cache_key().startswith('blog:q:')
    assert helpers._cache_key().startswith('helper:q:')
    assert joined._cache_key().startswith('q:')
    Post.objects.create(title='a', category=cat)
    assert queries(lambda: [p.title for p in posts.all()]) == (['a'], 1)
    assert queries(lambda: [p.title for p in joined.all()]) == (['a'], 1)
    assert queries(lambda: [c.title for c in helpers.all()]) == (['c'], 0)


_current = threading.local()  # what a middleware would keep the request in


def host_prefix(query):
    return _current.request.get_host() + ':'


@override_settings(CACHEOPS_PREFIX=host_prefix, ALLOWED_HOSTS=['one.example', 'two.example'])
def test_a_prefix_by_the_host_of_the_current_request(cat):
    def on(host, func):
        _current.request = RequestFactory().get('/', HTTP_HOST=host)
        try:
            return func()
        finally:
            del _current.request

    hosts = ['one.example', 'two.example', 'one.example', 'two.example']
    assert [on(host, lambda: queries(lambda: titles(category=cat))) for host in hosts] == \
        [([], 1), ([], 1), ([], 0), ([], 0)]
    assert keys('one.example:q:*') and keys('two.example:q:*')
    on('one.example', lambda: Post.objects.create(title='a', category=cat))
    assert on('one.example', lambda: queries(lambda: titles(category=cat))) == (['a'], 1)


# @cached_as and the simple cache

@override_settings(CACHEOPS_PREFIX=per_db)
def test_cached_as_gets_the_prefix_and_is_invalidated(cat):
    calls = []

    @cached_as(Post.objects.using('slave').all())
    def slave_titles():
        calls.append(1)
        return [p.title for p in Post.objects.using('slave').nocache()]

    assert slave_titles() == slave_titles() == []
    assert len(calls) == 1
    assert keys('db-slave:as:*')
    Post.objects.create(title='d', category=cat)  # another database: not invalidated
    assert slave_titles() == [] and len(calls) == 1
    slave_cat = Category.objects.using('slave').create(title='c')
    Post.objects.using('slave').create(title='s', category=slave_cat)
    assert slave_titles() == ['s'] and len(calls) == 2


@override_settings(CACHEOPS_PREFIX=per_table)
def test_cached_as_with_per_table_prefixes(cat):
    calls = []

    @cached_as(Post.objects.filter(category__title='c'))
    def in_c():
        calls.append(1)
        return [p.title for p in Post.objects.nocache().filter(category__title='c')]

    assert in_c() == in_c() == []
    assert len(calls) == 1
    assert keys('tb-%s+%s:as:*' % (CATEGORY, POST))
    Post.objects.create(title='a', category=cat)
    assert in_c() == ['a'] and len(calls) == 2
    cat.title = 'x'
    cat.save()
    assert in_c() == [] and len(calls) == 3


def prefix_by_site(site):
    def prefix(query):
        return 'site-%s:' % site
    return prefix


def test_the_simple_cache_gets_the_prefix():
    with override_settings(CACHEOPS_PREFIX=prefix_by_site('a')):
        cache.set('key', 'for a')
        assert cache.get('key') == 'for a'
    assert keys('site-a:*')
    with override_settings(CACHEOPS_PREFIX=prefix_by_site('b')):
        with pytest.raises(CacheMiss):
            cache.get('key')
        cache.set('key', 'for b')
    with override_settings(CACHEOPS_PREFIX=prefix_by_site('a')):
        assert cache.get('key') == 'for a'


# invalidate_all()

OTHER = {'other:data': b'x', 'q:not-ours': b'y'}


def put_other_data():
    for key, value in OTHER.items():
        redis_client.set(key, value)


def assert_other_data_kept():
    for key, value in OTHER.items():
        assert redis_client.get(key) == value, key


@override_settings(CACHEOPS_PREFIX='tests.test_prefix.string_path_prefix')
def test_invalidate_all_deletes_only_prefixed_keys(cat):
    put_other_data()
    assert warm(lambda: titles(category=cat)) == []
    Post.objects.create(title='a', category=cat)
    unseen_update(Post.objects, title='b')
    invalidate_all()
    assert queries(lambda: titles(category=cat)) == (['b'], 1)
    assert_other_data_kept()


@pytest.mark.parametrize('prefix', [per_db, per_table])
def test_invalidate_all_with_a_callable_prefix(prefix, cat):
    put_other_data()
    with override_settings(CACHEOPS_PREFIX=prefix):
        Post.objects.create(title='a', category=cat)
        assert warm(lambda: titles(category=cat)) == ['a']
        assert warm(lambda: titles('slave')) == []
        unseen_update(Post.objects, title='b')
        invalidate_all()
        assert queries(lambda: titles(category=cat)) == (['b'], 1)
    assert_other_data_kept()


# invalidate_all() with a prefix scans, while readers keep registering: what a reader
# registers meanwhile must stay within reach of later writes.

def empty_prefix(query):
    return ''


def test_a_reader_registering_during_invalidate_all_is_invalidated_by_later_writes(monkeypatch, cat):
    """Under an empty prefix its keys can't be deleted wholesale: the schemes set that
    tells writes which conj keys to delete must outlive invalidate_all()."""
    from cacheops import invalidation
    Post.objects.create(title='a', category=cat)
    whole_prefixes = invalidation._whole_prefixes

    def reading_meanwhile(by_prefix):
        assert queries(lambda: titles(category=cat)) == (['a'], 1)  # registers and stores
        return whole_prefixes(by_prefix)
    with override_settings(CACHEOPS_PREFIX=empty_prefix):
        monkeypatch.setattr(invalidation, '_whole_prefixes', reading_meanwhile)
        invalidate_all()
        monkeypatch.undo()
        assert queries(lambda: titles(category=cat)) == (['a'], 0)
        Post.objects.create(title='b', category=cat)
        assert titles(category=cat) == ['a', 'b']


def test_a_conj_key_found_by_invalidate_all_goes_with_the_values_it_references(monkeypatch, cat):
    """The scan under a prefix may find a conj key a reader registered after the scan
    passed the reader's value: deleting the conj key alone would leave the value out
    of reach of later writes."""
    Post.objects.create(title='a', category=cat)
    scan_iter = redis_client.scan_iter

    def scan_reaching_a_new_conj_key_only(match=None, **kwargs):
        found = list(scan_iter(match=match, **kwargs))
        if match != 'path:*':
            return iter(found)
        assert queries(lambda: titles(category=cat)) == (['a'], 1)  # registers and stores
        new_conjs = [key for key in scan_iter(match='path:conj:*') if key not in found]
        assert new_conjs
        return iter(found + new_conjs)
    with override_settings(CACHEOPS_PREFIX='tests.test_prefix.string_path_prefix'):
        monkeypatch.setattr(redis_client, 'scan_iter', scan_reaching_a_new_conj_key_only)
        invalidate_all()
        monkeypatch.undo()
        Post.objects.create(title='b', category=cat)
        assert titles(category=cat) == ['a', 'b']
