"""CACHEOPS_PLAIN_REDIS=1 sends every Redis call through redis-py's client: no connection
kept per thread, nothing packed by hand, no store sent without its reply. The
py312-dj60 run of runtests.py runs the whole suite so; here the switch is turned on for
one test, and whatever of the hand-packed layer is called fails it."""
import inspect

import pytest
import redis
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings

import cacheops.redis
from cacheops import cached_as, invalidate_model
from cacheops.redis import held, scripts, wire
from .cluster import single_redis
from .models import Category, Post
from .utils import queries, warm

pytestmark = [pytest.mark.django_db, single_redis(
    'CACHEOPS_PLAIN_REDIS turns off the hand-packed layer, which a cluster client never uses')]

# What the switch leaves called: the entry points, which hand over to redis-py
ENTRY_POINTS = {'read_command', '_direct_pool', '_plain_redis'}
# scripts.py's part of the layer: scripts over the kept connection, replies read later
HAND_PACKED_SCRIPTS = {'_start_over_held', '_PendingReply', '_HeldReply', '_script_over_held',
                       '_send_over_held', '_read_over_held'}


@pytest.mark.parametrize('value, plain', [(None, False), ('', False), ('0', False), ('1', True)])
def test_the_switch_takes_1_or_0(value, plain):
    assert held._plain_redis(value) is plain


@pytest.mark.parametrize('value', ['yes', 'true', 'no'])
def test_the_switch_refuses_other_values(value):
    with pytest.raises(ImproperlyConfigured, match='CACHEOPS_PLAIN_REDIS'):
        held._plain_redis(value)


def hand_packed_functions():
    """(module, name) of every function and class of the hand-packed layer (held.py,
    wire.py and scripts.py's part), in each module that names it."""
    layer = {(held.__name__, name) for name in vars(held)} | {(wire.__name__, name) for name in vars(wire)} \
        | {(scripts.__name__, name) for name in HAND_PACKED_SCRIPTS}
    return {(module, name) for module in (held, wire, scripts) for name, value in vars(module).items()
            if (inspect.isfunction(value) or inspect.isclass(value)) and name not in ENTRY_POINTS
            and (value.__module__, value.__name__) in layer}


@pytest.fixture
def plain_redis(monkeypatch, settings):
    """The switch on, with a client made since (its pool never met the layer), and any
    connection this thread kept given back."""
    held._take_held(None)
    monkeypatch.setattr(held, 'PLAIN_REDIS', True)
    called = []
    for module, name in hand_packed_functions():
        def refused(*args, _name=name, **kwargs):
            called.append(_name)
            raise AssertionError('%s called with CACHEOPS_PLAIN_REDIS on' % _name)
        monkeypatch.setattr(module, name, refused)
    commands = []
    execute_command = redis.Redis.execute_command

    def recording(self, *args, **kwargs):
        commands.append(args[0])
        return execute_command(self, *args, **kwargs)
    monkeypatch.setattr(redis.Redis, 'execute_command', recording)
    settings.CACHEOPS_REDIS = settings.CACHEOPS_REDIS  # a new client
    yield commands
    assert called == []
    assert held._thread_held.held is None
    assert cacheops.redis.get_client().connection_pool not in held._store_pools


def test_the_layer_is_found():
    names = {name for _, name in hand_packed_functions()}
    assert {'_keep_connection', '_over_held', '_packed_read', '_pooled_read', '_can_skip_replies',
            '_send_over_held', '_HeldReply', '_PendingReply', '_store_pool'} <= names


@pytest.mark.parametrize('insideout', [False, True], ids=['conj-sets', 'insideout'])
def test_reads_stores_and_invalidations_go_through_redis_py(plain_redis, insideout):
    with override_settings(CACHEOPS_INSIDEOUT=insideout):
        category = Category.objects.create(title='a')
        post = Post.objects.create(title='p', category=category)
        assert warm(lambda: list(Post.objects.cache().filter(category=category))) == [post]
        assert warm(lambda: Post.objects.cache().get(pk=post.pk)) == post
        post.title = 'q'
        post.save()
        fresh, misses = queries(lambda: Post.objects.cache().get(pk=post.pk))
        assert (fresh.title, misses) == ('q', 1)
        invalidate_model(Post)
        assert queries(lambda: list(Post.objects.cache().filter(category=category)))[1] == 1

        @cached_as(Category)
        def titles():
            return sorted(Category.objects.nocache().values_list('title', flat=True))
        assert warm(titles) == ['a']
        Category.objects.create(title='b')
        assert titles() == ['a', 'b']
    assert ('MGET' if insideout else 'GET') in plain_redis and 'EVALSHA' in plain_redis
    assert 'EVAL' not in plain_redis  # stores wait for their replies, run by SHA


def test_the_simple_cache_goes_through_redis_py(plain_redis):
    from cacheops import cache
    cache.set('k', 'v', 60)
    assert cache.get('k') == 'v'
    cache.delete('k')
    assert plain_redis
