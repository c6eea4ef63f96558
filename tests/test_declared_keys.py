"""Every key a script touches is in its KEYS (docs/design.md, "Declared keys"), so that
servers refusing others (Dragonfly) run them as they are: an invalidation by rows is
given the conj keys the rows fall into, derived by this process from the schemes it
knows in use; the script checks that none in use is missing from them, and where one
is, the keys are derived again from what it reports."""
import pytest
import redis

from cacheops import invalidation, keys
from cacheops.conf import insideout
from cacheops.redis import redis_client

from . import declared_keys
from .cluster import redis_keys
from .models import Category, Post
from .utils import losing_replies, queries, warm

pytestmark = pytest.mark.django_db


@pytest.fixture
def post():
    return Post.objects.create(title='a', category=Category.objects.create(title='c'))


def titles(**conditions):
    return [p.title for p in Post.objects.cache().filter(**conditions)]


def _forget_schemes(monkeypatch):
    """As a process that never read these tables: a worker writing what a web process reads."""
    monkeypatch.setattr(keys, '_known_schemes', {})


def test_a_process_invalidates_what_another_cached_under_schemes_it_never_saw(post, monkeypatch, redis_commands):
    warm(lambda: titles(category_id=post.category_id))
    warm(lambda: titles(title='a'))
    _forget_schemes(monkeypatch)
    redis_commands.clear()
    post.title = 'b'
    post.save()
    # the first run reports the schemes in use and does nothing; the second has their keys
    assert redis_commands.count('EVALSHA') == 2
    assert queries(lambda: titles(category_id=post.category_id)) == (['b'], 1)
    assert queries(lambda: titles(title='a')) == ([], 1)


def test_once_it_saw_them_one_run_does(post, monkeypatch, redis_commands):
    warm(lambda: titles(category_id=post.category_id))
    _forget_schemes(monkeypatch)
    post.title = 'b'
    post.save()  # learns them
    warm(lambda: titles(category_id=post.category_id))
    redis_commands.clear()
    post.title = 'c'
    post.save()
    assert redis_commands.count('EVALSHA') == 1
    assert queries(lambda: titles(category_id=post.category_id)) == (['c'], 1)


def test_schemes_known_but_no_longer_in_use_cost_no_second_run(post, redis_commands):
    warm(lambda: titles(category_id=post.category_id))
    keys.learn_schemes(keys.prefix_for(['default'], ['tests_post']), 'tests_post', ['title,visible'])
    redis_commands.clear()
    post.title = 'b'
    post.save()
    assert redis_commands.count('EVALSHA') == 1
    assert queries(lambda: titles(category_id=post.category_id)) == (['b'], 1)


def test_a_row_lacking_a_column_of_a_scheme_invalidates_every_value_there(post):
    warm(lambda: titles(category_id=post.category_id))
    warm(lambda: titles(category_id=post.category_id, title='a'))
    # a row with no title: it may have had any
    from cacheops.invalidation import invalidate_rows
    invalidate_rows('tests_post', [{'category_id': str(post.category_id)}])
    assert queries(lambda: titles(category_id=post.category_id)) == (['a'], 1)
    assert queries(lambda: titles(category_id=post.category_id, title='a')) == (['a'], 1)


def test_row_conj_keys_are_those_registration_names():
    prefix = keys.prefix_for(['default'], ['tests_post'])
    registered = keys.conj_key(prefix, 'tests_post', {'title': 'a', 'category_id': 1})
    schemes, rows = ['', 'category_id,title'], [{'category_id': '1', 'title': 'a'}, {'title': 'b'}]
    found = keys.row_conj_keys(prefix, 'tests_post', schemes, rows)
    patterns = keys.row_conj_patterns(prefix, 'tests_post', schemes, rows)
    assert found == [keys.conj_prefix(prefix, 'tests_post'), registered]
    assert patterns == [keys.glob_escape(keys.conj_prefix(prefix, 'tests_post')) + 'category_id=*&title=b']


@pytest.mark.skipif(not declared_keys.ACTIVE, reason='the check of declared keys is on in the runs that '
                    'set CACHEOPS_TEST_DECLARED_KEYS (runtests.py)')
def test_the_check_sees_a_key_a_script_was_not_given(_undeclared_keys):
    # in one slot, as a cluster needs
    code = declared_keys.checked(b"redis.call('get', KEYS[1]) return redis.call('exists', '{t}not-given', KEYS[1])")
    assert redis_client.eval(code, 1, '{t}given') == 0
    assert declared_keys.published(_undeclared_keys) == ['exists {t}not-given']
    with pytest.raises(redis.ResponseError):  # the prelude leaves errors as they were
        redis_client.eval(declared_keys.checked(b"return redis.call('nosuchcommand', KEYS[1])"), 1, '{t}given')
    assert declared_keys.published(_undeclared_keys) == []


def _handing_back(reply):
    """invalidate.lua's reply of a complete run that left cache keys or drain sets to the client."""
    return (isinstance(reply, list) and len(reply) == 6 and reply[0] == 1
            and (any(b'q:' in key for key in reply[2]) or bool(reply[5])))


@pytest.mark.skipif(insideout(), reason='conj-set mode: cache keys are handed back')
@pytest.mark.parametrize('left_in', ['handover set', 'drain set'])
def test_a_replay_hands_over_what_its_lost_run_left_though_a_scheme_appeared_since(monkeypatch, left_in):
    """The replay of a run whose reply was lost hands over the keys that run popped, even
    where another process's read registered a scheme meanwhile: it must not do nothing
    as a first run missing that scheme would."""
    _forget_schemes(monkeypatch)
    if left_in == 'handover set':
        monkeypatch.setattr(invalidation, 'SERVER_DELETE_BUDGET', 0)
    else:
        monkeypatch.setattr(invalidation, 'SERVER_READ_LIMIT', 0)  # every set renamed to a drain set
    post = Post.objects.create(title='old', category=Category.objects.create(title='c'))
    assert warm(lambda: titles(title='old')) == ['old']
    lost = losing_replies(monkeypatch, lambda _, reply: bool(lost) or _handing_back(reply))
    post.title = 'new'
    post.save()
    assert lost and invalidation.failed
    monkeypatch.undo()  # Redis answers again
    prefix = keys.prefix_for(['default'], ['tests_post'])
    redis_client.sadd(keys.schemes_key(prefix, 'tests_post'), 'visible')  # another process's read
    assert invalidation.retry_failed()
    assert queries(lambda: titles(title='old')) == ([], 1)
    assert not redis_keys('*handover*')


def test_a_scheme_not_in_utf8_is_given_back_as_it_is(post, redis_commands):
    """Not cacheops' (its columns are text), but found in the schemes set: the check takes
    it back as bytes, and no conj key is derived from it."""
    warm(lambda: titles(category_id=post.category_id))
    prefix = keys.prefix_for(['default'], ['tests_post'])
    redis_client.sadd(keys.schemes_key(prefix, 'tests_post'), b'ti\xfftle')
    redis_commands.clear()
    post.title = 'b'
    post.save()
    assert redis_commands.count('EVALSHA') == 2  # its first meeting: reported, then given
    assert queries(lambda: titles(category_id=post.category_id)) == (['b'], 1)


def test_schemes_that_keep_appearing_invalidate_the_tables_whole(post, monkeypatch, caplog):
    warm(lambda: titles(category_id=post.category_id))
    warm(lambda: titles(pk=post.pk + 1))  # not the row's: only a whole invalidation drops it
    _forget_schemes(monkeypatch)
    monkeypatch.setattr(invalidation, 'learn_schemes', lambda *args: None)  # as if new ones each time
    post.title = 'b'
    post.save()
    assert 'invalidated whole' in caplog.text
    assert queries(lambda: titles(category_id=post.category_id)) == (['b'], 1)
    assert queries(lambda: titles(pk=post.pk + 1)) == ([], 1)
