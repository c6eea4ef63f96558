"""The management commands: `invalidate app.Model.pk | app.Model | app | all` and
`reapconjs`. Mass updates don't invalidate, so they make entries stale on purpose;
a command that invalidates makes the next read query the database again."""
import io
import re
from unittest import mock

import pytest
from django.contrib.auth.models import Group
from django.core.management import CommandError, call_command
from django.db import connection, connections
from django.test import override_settings
from django.test.utils import CaptureQueriesContext

from cacheops.redis import redis_client
from .cluster import redis_keys
from .models import Brand, Category, Label, Post
from .utils import unseen_update

pytestmark = pytest.mark.django_db(databases=['default', 'slave'])

POST = Post._meta.db_table
CATEGORY = Category._meta.db_table


def run(*args, **kwargs):
    """call_command, returning its output."""
    out = io.StringIO()
    call_command(*args, stdout=out, **kwargs)
    return out.getvalue()


def queries(func, using='default'):
    """(func(), the number of queries it ran on that database)."""
    with CaptureQueriesContext(connections[using]) as ctx:
        result = func()
    return result, len(ctx)


def texts(cat, using='default'):
    return [p.text for p in Post.objects.cache().using(using).filter(category=cat)]


def titles(model=Category, using='default'):
    return [o.title if hasattr(o, 'title') else o.name
            for o in model.objects.cache().using(using).order_by('pk')]


def cached(func, using='default'):
    """Assert func's result is cached: a miss, then a hit; return the result."""
    result, _ = queries(func, using)
    again, count = queries(func, using)
    assert count == 0 and again == result
    return result


@pytest.fixture
def cats():
    return Category.objects.create(title='one'), Category.objects.create(title='two')


@pytest.fixture(params=[False, True], ids=['conj', 'insideout'])
def insideout(request):
    with override_settings(CACHEOPS_INSIDEOUT=request.param):
        yield request.param


@pytest.fixture
def posts(cats):
    return [Post.objects.create(title='p%d' % i, category=cat) for i, cat in enumerate(cats)]


# invalidate app.Model.pk

def test_invalidate_object(cats, posts):
    assert cached(lambda: texts(cats[0])) == cached(lambda: texts(cats[1])) == ['']
    unseen_update(Post.objects, text='changed')
    assert queries(lambda: texts(cats[0])) == ([''], 0)  # stale

    out = run('invalidate', 'tests.Post.%d' % posts[0].pk)

    assert queries(lambda: texts(cats[0])) == (['changed'], 1)
    assert queries(lambda: texts(cats[1])) == ([''], 0)  # granular: not this object's
    assert 'tests.Post' in out and str(posts[0].pk) in out


def test_invalidate_object_on_another_database(cats):
    def per_db(query):
        return query.db + ':'

    with override_settings(CACHEOPS_PREFIX=per_db):
        cat = Category.objects.using('slave').create(title='s')
        post = Post.objects.using('slave').create(title='p', category=cat)
        assert cached(lambda: texts(cat, 'slave'), 'slave') == ['']
        unseen_update(Post.objects.using('slave'), text='changed')
        with pytest.raises(CommandError, match='No tests.Post with pk'):
            run('invalidate', 'tests.Post.%d' % (post.pk + 1000))
        run('invalidate', 'tests.Post.%d' % post.pk, database='slave')
        assert queries(lambda: texts(cat, 'slave'), 'slave') == (['changed'], 1)


# invalidate app.Model

def test_invalidate_model(cats, posts):
    assert cached(lambda: texts(cats[0])) == ['']
    assert cached(titles) == ['one', 'two']
    unseen_update(Post.objects, text='changed')
    unseen_update(Category.objects, title='same')

    out = run('invalidate', 'tests.post')  # the model name in any case

    assert queries(lambda: texts(cats[0])) == (['changed'], 1)
    assert queries(titles) == (['one', 'two'], 0)
    assert out.splitlines()[0] == 'Invalidated tests.Post.'


def test_invalidate_says_what_it_removed(cats, posts, insideout):
    for cat in cats:
        assert cached(lambda: texts(cat)) == ['']
    # a third conj key: not on title, which MySQL's collations keep out of conj keys
    other = [p.text for p in Post.objects.cache().filter(category=cats[0], visible=True)]
    assert other == ['']

    out = run('invalidate', 'tests.Post')

    # conj-set mode deletes the cached results with their conj sets; insideout mode
    # deletes the stamps, which leaves the results unreadable until they expire
    results = 0 if insideout else 3
    assert out.splitlines() == ['Invalidated tests.Post.',
                                'Removed %d cached results and 3 conj keys.' % results]
    assert run('invalidate', 'tests.Post') == 'Invalidated tests.Post.\n'  # nothing left


def test_invalidate_object_says_what_it_removed(cats, posts, insideout):
    assert cached(lambda: texts(cats[0])) == cached(lambda: texts(cats[1])) == ['']

    out = run('invalidate', 'tests.Post.%d' % posts[0].pk)

    assert out.splitlines()[1] == 'Removed %d cached results and 1 conj keys.' % (0 if insideout else 1)


def test_invalidate_model_on_every_database(cats):
    def per_db(query):
        return query.db + ':'

    with override_settings(CACHEOPS_PREFIX=per_db):
        Category.objects.using('slave').create(title='s')
        assert cached(titles) == ['one', 'two']
        assert cached(lambda: titles(using='slave'), 'slave') == ['s']
        unseen_update(Category.objects, title='x')
        unseen_update(Category.objects.using('slave'), title='y')
        run('invalidate', 'tests.Category')
        assert queries(titles) == (['x', 'x'], 1)
        assert queries(lambda: titles(using='slave'), 'slave') == (['y'], 1)


# invalidate app

def test_invalidate_app(cats, posts):
    Group.objects.create(name='g')
    assert cached(lambda: texts(cats[0])) == ['']
    assert cached(titles) == ['one', 'two']
    assert cached(lambda: titles(Group)) == ['g']
    unseen_update(Post.objects, text='changed')
    unseen_update(Category.objects, title='same')
    unseen_update(Group.objects, name='h')

    out = run('invalidate', 'tests')

    assert queries(lambda: texts(cats[0])) == (['changed'], 1)
    assert queries(titles) == (['same', 'same'], 1)
    assert queries(lambda: titles(Group)) == (['g'], 0)  # another app
    assert re.fullmatch(r'Invalidated \d+ models of tests\.', out.splitlines()[0])


def test_invalidate_app_includes_auto_created_m2m_tables():
    brand, label = Brand.objects.create(name='b'), Label.objects.create(text='l')
    brand.labels.add(label)
    through = Brand.labels.through
    assert cached(lambda: through.objects.cache().filter(brand=brand).count()) == 1
    with connection.cursor() as cursor:  # raw SQL: cacheops can't see it (caveat)
        cursor.execute('DELETE FROM %s' % connection.ops.quote_name(through._meta.db_table))
    assert queries(lambda: through.objects.cache().filter(brand=brand).count()) == (1, 0)
    run('invalidate', 'tests')
    assert queries(lambda: through.objects.cache().filter(brand=brand).count()) == (0, 1)


# invalidate all

def test_invalidate_all(cats, posts):
    Group.objects.create(name='g')
    assert cached(lambda: texts(cats[0])) == ['']
    assert cached(lambda: titles(Group)) == ['g']
    unseen_update(Post.objects, text='changed')
    unseen_update(Group.objects, name='h')

    run('invalidate', 'all')

    assert queries(lambda: texts(cats[0])) == (['changed'], 1)
    assert queries(lambda: titles(Group)) == (['h'], 1)


@pytest.mark.parametrize('prefix', [None, 'tests.test_commands.prefix_of_string_path'])
def test_invalidate_all_sends_cache_invalidated(prefix):
    from cacheops.signals import cache_invalidated
    received = []

    def receiver(sender, obj_dict, **kwargs):
        received.append((sender, obj_dict))

    cache_invalidated.connect(receiver)
    try:
        with override_settings(CACHEOPS_PREFIX=prefix):
            run('invalidate', 'all')
    finally:
        cache_invalidated.disconnect(receiver)
    assert received == [(None, None)]


@override_settings(CACHEOPS_PREFIX=None)
def test_invalidate_all_without_prefix_flushes_the_database(cats):
    redis_client.set('other:data', 'x')
    keys = len(redis_keys('*'))
    assert run('invalidate', 'all') == 'Invalidated everything cacheops cached: flushed %d keys.\n' % keys
    assert not redis_client.exists('other:data')


def prefix_of_string_path(query):
    return 'mine:'


OTHER_DATA = {'other:data': 'x', 'q:not-ours': 'y', 'minex': 'z', 'conj:': 'w'}


def put_other_data():
    for key, value in OTHER_DATA.items():
        redis_client.set(key, value)
    redis_client.sadd('conj:no_such_table:a=1', 'other:data')


def assert_other_data_kept():
    for key, value in OTHER_DATA.items():
        assert redis_client.get(key) == value.encode(), key
    assert redis_client.smembers('conj:no_such_table:a=1') == {b'other:data'}


@override_settings(CACHEOPS_PREFIX='tests.test_commands.prefix_of_string_path')
def test_invalidate_all_with_prefix_deletes_only_own_keys(cats, posts):
    put_other_data()
    assert cached(lambda: texts(cats[0])) == ['']
    assert any(k.startswith(b'mine:') for k in redis_keys('*'))
    unseen_update(Post.objects, text='changed')

    run('invalidate', 'all')

    assert queries(lambda: texts(cats[0])) == (['changed'], 1)
    assert_other_data_kept()
    run('invalidate', 'all')
    # and the schemes sets of cacheops' tables, which only tell writes where to look
    left = set(redis_keys('*'))
    assert {k for k in left if not k.startswith(b'mine:schemes:')} == \
        {k.encode() for k in OTHER_DATA} | {b'conj:no_such_table:a=1'}


def per_table_prefix(query):
    """No prefix for categories, 'join:' for queries on several tables (and only them)."""
    if len(query.tables) > 1:
        return 'join:'
    return '' if query.tables == [CATEGORY] else 'single:'


@override_settings(CACHEOPS_PREFIX=per_table_prefix)
def test_invalidate_all_with_per_table_prefixes(cats, posts):
    put_other_data()
    in_one = lambda: [p.text for p in Post.objects.cache().filter(category__title='one')]  # noqa: E731
    assert cached(in_one) == ['']
    assert cached(lambda: texts(cats[0])) == ['']
    assert cached(titles) == ['one', 'two']
    keys = {k.split(b':')[0] for k in redis_keys('*q:*')}
    assert keys == {b'join', b'single', b'q'}
    unseen_update(Post.objects, text='changed')
    unseen_update(Category.objects.filter(title='two'), title='deux')

    run('invalidate', 'all')

    assert queries(in_one) == (['changed'], 1)
    assert queries(lambda: texts(cats[0])) == (['changed'], 1)
    assert queries(titles) == (['one', 'deux'], 1)
    assert_other_data_kept()


# errors

@pytest.mark.parametrize('target, message', [
    ('nosuchapp', "Unknown app 'nosuchapp'"),
    ('nosuchapp.Model', "Unknown app 'nosuchapp'"),
    ('tests.NoSuchModel', "Unknown model 'NoSuchModel' in app 'tests'"),
    ('tests.Post.not-a-number', "'not-a-number' is not a valid pk for tests.Post"),
    ('tests.Post.123456', "No tests.Post with pk '123456' in database 'default'"),
])
def test_unknown_targets_are_errors(target, message):
    with pytest.raises(CommandError, match=message):
        run('invalidate', target)


def request_host_prefix(query):
    raise AttributeError("'NoneType' object has no attribute 'get_host'")  # no request here


@override_settings(CACHEOPS_PREFIX=request_host_prefix)
@pytest.mark.parametrize('args', [('invalidate', 'all'), ('reapconjs',)])
def test_a_prefix_that_fails_outside_requests_is_an_error(args):
    with pytest.raises(CommandError, match="CACHEOPS_PREFIX failed for a query on database "):
        run(*args)


def test_unknown_database_is_an_error():
    with pytest.raises(CommandError, match="Unknown database 'nosuchdb'"):
        run('invalidate', 'tests.Post', database='nosuchdb')


def test_an_error_invalidates_nothing(cats, posts):
    assert cached(lambda: texts(cats[0])) == ['']
    with pytest.raises(CommandError):
        run('invalidate', 'tests.Post.123456')
    assert queries(lambda: texts(cats[0])) == ([''], 0)


DOWN = 'redis://127.0.0.1:1/0'  # nothing listens there: connections are refused


@pytest.mark.parametrize('args, message', [
    (('invalidate', 'all'), 'Redis failed, all may be invalidated in part only: ConnectionError'),
    (('invalidate', 'tests.Category'), 'Redis failed, tests.Category may be invalidated in part only'),
    (('reapconjs',), 'Redis failed, conj sets reaped in part only: ConnectionError'),
])
def test_a_redis_error_exits_non_zero_with_a_message(args, message, capsys):
    from django.core.management import execute_from_command_line
    with override_settings(CACHEOPS_REDIS=DOWN, CACHEOPS_CLUSTER=None, CACHEOPS_SENTINEL=None):
        with pytest.raises(SystemExit) as exit:
            execute_from_command_line(['manage.py', *args])
    assert exit.value.code == 1
    assert message in capsys.readouterr().err


def test_quiet_with_verbosity_0(cats):
    assert run('invalidate', 'tests.Category', verbosity=0) == ''


# reapconjs

class Terminal(io.StringIO):
    def isatty(self):
        return True


def expired_references(cat, n):
    """n entries registered in one conj set, whose keys then expire (deleted here)."""
    for i in range(1, n + 1):
        qs = Post.objects.cache().filter(category=cat)[:i]
        list(qs)
        redis_client.delete(qs._cache_key())


@override_settings(CACHEOPS_INSIDEOUT=False)
def test_reapconjs_summary(cats):
    expired_references(cats[0], 3)
    out = run('reapconjs', '--chunk-size=2', '--min-conj-set-size=2')
    assert re.fullmatch(r'Found 1 conj keys, checked 1 sets of at least 2 members: 3 members checked, '
                        r'3 references to expired keys removed from 1 sets, 1 sets emptied; '
                        r'0 sets left by unfinished invalidations drained; in \d+\.\d s\.\n',
                        out)


@override_settings(CACHEOPS_INSIDEOUT=False)
def test_reapconjs_default_sizes(cats):
    expired_references(cats[0], 3)
    assert 'checked 0 sets of at least 1000 members' in run('reapconjs')


@override_settings(CACHEOPS_INSIDEOUT=False)
def test_reapconjs_default_chunk_size_is_1000(cats):
    from cacheops import reaper
    from cacheops.keys import conj_key, prefix_for
    from cacheops.redis import get_client
    conj = conj_key(prefix_for(['default'], [POST]), POST, {'category_id': cats[0].pk})
    redis_client.sadd(conj, *('q:expired%d' % i for i in range(2500)))
    scans, scripts = [], []
    client_class = type(get_client())
    sscan, reap_members = client_class.sscan, reaper._reap_members

    def spied_sscan(self, name, cursor=0, match=None, count=None, **kwargs):
        scans.append(count)
        return sscan(self, name, cursor, match=match, count=count, **kwargs)

    def spied_reap_members(client, prefix, conj, members):
        scripts.append(len(members))
        return reap_members(client, prefix, conj, members)

    with mock.patch.object(client_class, 'sscan', spied_sscan), \
            mock.patch.object(reaper, '_reap_members', spied_reap_members):
        out = run('reapconjs', '--min-conj-set-size=1')
    assert '2500 references to expired keys removed' in out
    assert set(scans) == {1000}
    assert sum(scripts) == 2500 and max(scripts) <= 1000


@override_settings(CACHEOPS_INSIDEOUT=False)
def test_reapconjs_progress_bar_on_a_terminal(cats):
    expired_references(cats[0], 4)
    out = Terminal()
    call_command('reapconjs', '--chunk-size=1', '--min-conj-set-size=1', stdout=out)
    lines = out.getvalue().split('\r')
    assert lines[1].startswith('Scanning: ')
    bars = [line.split('\n')[0].rstrip() for line in lines if line.startswith('[')]
    assert re.fullmatch(r'Scanning: \d+ conj keys found, \d+/s', lines[1].rstrip())
    assert bars[0].startswith('[..............................]   0% 0/4 members')
    assert re.fullmatch(r'\[#{30}\] 100% 4/4 members, 4 removed from 1 sets, \d+/s', bars[-1])
    assert 'references to expired keys removed from 1 sets, 1 sets emptied; 0 sets ' in lines[-1]


@pytest.mark.parametrize('args', [['--chunk-size=0'], ['--chunk-size=x'], ['--min-conj-set-size=-1']])
def test_reapconjs_bad_arguments(args):
    with pytest.raises(CommandError):
        run('reapconjs', *args)
