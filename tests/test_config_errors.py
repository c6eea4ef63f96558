"""Bad settings give ImproperlyConfigured naming the setting, at the latest
when the profile or the client is first used, and are reported by Django's
system checks with ids starting with 'cacheops.'."""
import sys
from importlib.util import find_spec

import pytest
import redis
from django.core.checks.registry import registry
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings

import cacheops.redis
from cacheops.conf import settings as cacheops_settings
from tools.redis_server import free_port
from .models import All, Category

pytestmark = pytest.mark.django_db

BAD_PROFILES = [
    {'tests.category': {'ops': 'bogus'}},
    {'tests.category': {'ops': ['get', 'fetchh']}},
    {'tests.category': {'opz': 'all'}},
    {'tests.category': {'ops': 'all', 'timeout': 'soon'}},
    {'tests.category': 'all'},
]
BAD_PROFILE_IDS = ['ops-bogus', 'ops-list-typo', 'unknown-key', 'timeout-type', 'not-a-dict']


def cacheops_checks():
    """The system checks cacheops registers (other apps' checks are not run here:
    they may need parts of the project that are irrelevant to these tests)."""
    return [check for check in registry.get_checks()
            if getattr(check, '__module__', '').startswith('cacheops')]


def cacheops_messages():
    checks = cacheops_checks()
    assert checks, 'cacheops registers no system checks'
    messages = []
    for check in checks:
        messages.extend(check(app_configs=None, databases=None))
    return [m for m in messages if m.id and m.id.startswith('cacheops.')]


@pytest.mark.parametrize('cacheops', BAD_PROFILES, ids=BAD_PROFILE_IDS)
def test_bad_profile_raises_on_use(cacheops):
    Category.objects.create(title='c')
    with pytest.raises(ImproperlyConfigured, match='CACHEOPS'):
        with override_settings(CACHEOPS=cacheops):
            list(Category.objects.cache().filter(title='c'))
            Category.objects.get(title='c')


@pytest.mark.parametrize('cacheops', BAD_PROFILES, ids=BAD_PROFILE_IDS)
def test_bad_profile_fails_system_checks(cacheops):
    with override_settings(CACHEOPS=cacheops):
        messages = cacheops_messages()
        assert messages and all(m.is_serious() for m in messages)


@pytest.mark.parametrize('conf', [42, ['redis://localhost'], 3.5])
def test_bad_redis_setting_raises_on_use(conf):
    with pytest.raises(ImproperlyConfigured, match='CACHEOPS_REDIS'):
        with override_settings(CACHEOPS_REDIS=conf):
            All.objects.create(tag=1)
            list(All.objects.filter(tag=1))


@pytest.mark.parametrize('conf', [42, ['redis://localhost']])
def test_bad_redis_setting_fails_system_checks(conf):
    with override_settings(CACHEOPS_REDIS=conf):
        assert cacheops_messages()


@pytest.mark.parametrize('defaults', [{'ops': 'bogus'}, {'timeoutt': 10}])
def test_bad_defaults(defaults):
    Category.objects.create(title='c')
    with override_settings(CACHEOPS_DEFAULTS=defaults):
        assert cacheops_messages()
    with pytest.raises(ImproperlyConfigured, match='CACHEOPS'):
        with override_settings(CACHEOPS_DEFAULTS=defaults):
            list(Category.objects.cache().filter(title='c'))


def test_good_settings_pass_checks():
    assert [m for m in cacheops_messages() if m.is_serious()] == []


# Each system check, triggered by a setting a user could write, and by nothing else

CHECKS = [
    ('cacheops.E001', {'CACHEOPS': {'tests.category': {'ops': 'bogus'}}}),
    ('cacheops.E001', {'CACHEOPS_DEFAULTS': {'timeoutt': 10}}),
    ('cacheops.E002', {'CACHEOPS_REDIS': 42}),
    ('cacheops.E002', {'CACHEOPS_REDIS': 'http://127.0.0.1:6379/0'}),
    ('cacheops.E002', {'CACHEOPS_SENTINEL': {'locations': [('127.0.0.1', 26379)]}}),
    ('cacheops.E002', {'CACHEOPS_CLIENT_CLASS': 'no_such_module.Redis'}),
    ('cacheops.E003', {'CACHEOPS_PREFIX': 'no_such_module.prefix'}),
    ('cacheops.E003', {'CACHEOPS_PREFIX': 42}),
    ('cacheops.E004', {'CACHEOPS_SERIALIZER': 'no_such_serializer'}),
    ('cacheops.E004', {'CACHEOPS_SERIALIZER': 'os'}),
    ('cacheops.E005', {'CACHEOPS_SKIP_FIELDS': 'TextField'}),
    ('cacheops.E006', {'CACHEOPS_LONG_DISJUNCTION': 0}),
    ('cacheops.E007', {'CACHEOPS_ENABLED': 'no'}),
    ('cacheops.E007', {'CACHEOPS_INSIDEOUT': 'no'}),
    ('cacheops.E007', {'CACHEOPS_DEGRADE_ON_FAILURE': 'yes'}),
    ('cacheops.E007', {'CACHEOPS_INVALIDATE_UPDATES': 'no'}),
    ('cacheops.E008', {'CACHEOPS_LOCK_WAIT': '30'}),
    ('cacheops.E008', {'FILE_CACHE_TIMEOUT': 0}),
    ('cacheops.W001', {'CACHEOPS': {'*.*': {'ops': 'all', 'timeout': 60}}}),
    ('cacheops.W002', {'CACHEOPS': {'nosuchapp.*': {'timeout': 60}}}),
    ('cacheops.W002', {'CACHEOPS': {'tests.nosuchmodel': {'timeout': 60}}}),
]


@pytest.mark.parametrize('check_id, setting', CHECKS, ids=['%s-%s' % (i, '-'.join(s)) for i, s in CHECKS])
def test_a_bad_setting_gives_its_check_id(check_id, setting):
    # a cluster run's CACHEOPS_CLUSTER set aside: these settings are for a single Redis
    with override_settings(**{'CACHEOPS_CLUSTER': {}, **setting}):
        assert [m.id for m in cacheops_messages()] == [check_id]


# Redis Cluster: each bad combination has its id, and its message names the fix. A
# cluster needs no CACHEOPS_REDIS, so each setting sets it aside; no client is built
# (nothing listens at these ports): the cluster checks fail first.

HAS_CLUSTER = find_spec('redis.cluster') is not None  # redis-py 4.1 and newer
NODES = [('127.0.0.1', 7000), ('127.0.0.1', 7001)]
CLUSTER = {'CACHEOPS_REDIS': {}, 'CACHEOPS_CLUSTER': {'startup_nodes': NODES}}
BY_URL = {'CACHEOPS_CLUSTER': {}, 'CACHEOPS_CLIENT_CLASS': 'redis.cluster.RedisCluster'}
SENTINEL = {'locations': [('127.0.0.1', 26379)], 'service_name': 'mymaster'}

CLUSTER_CHECKS = [
    ('cacheops.E009', {**CLUSTER, 'CACHEOPS_SENTINEL': SENTINEL}, 'remove CACHEOPS_SENTINEL'),
    ('cacheops.E009', {**BY_URL, 'CACHEOPS_REDIS': 'redis://127.0.0.1:7000', 'CACHEOPS_SENTINEL': SENTINEL},
     'remove CACHEOPS_SENTINEL'),
    ('cacheops.E009', {**CLUSTER, 'CACHEOPS_REDIS': 'redis://127.0.0.1:7000'}, 'remove CACHEOPS_REDIS'),
    ('cacheops.E010', {**CLUSTER, 'CACHEOPS_CLUSTER': {'startup_nodes': NODES, 'db': 1}}, 'remove the db'),
    ('cacheops.E010', {**BY_URL, 'CACHEOPS_REDIS': 'redis://127.0.0.1:7000/3'}, 'remove the db'),
    ('cacheops.E010', {**BY_URL, 'CACHEOPS_REDIS': 'redis://127.0.0.1:7000?db=2'}, 'remove the db'),
    ('cacheops.E010', {**BY_URL, 'CACHEOPS_REDIS': {'host': '127.0.0.1', 'port': 7000, 'db': 5}},
     'remove the db'),
    ('cacheops.E011', {**CLUSTER, 'CACHEOPS_CLUSTER': {'nodes': NODES}}, "'startup_nodes'"),
    ('cacheops.E011', {**CLUSTER, 'CACHEOPS_CLUSTER': {'startup_nodes': NODES, 'read_from_replicas': True}},
     'read_from_replicas: cacheops reads from primaries only'),
    ('cacheops.E011', {**CLUSTER, 'CACHEOPS_CLUSTER': {'startup_nodes': []}}, "'startup_nodes'"),
    ('cacheops.E011', {**CLUSTER, 'CACHEOPS_CLUSTER': NODES}, "a dict with 'startup_nodes'"),
    ('cacheops.E011', {**CLUSTER, 'CACHEOPS_CLUSTER': {'startup_nodes': '127.0.0.1:7000'}},
     '(host, port)'),
    ('cacheops.E011', {**CLUSTER, 'CACHEOPS_CLUSTER': {'startup_nodes': [('127.0.0.1', '7000')]}},
     'a host name and a port number'),
    ('cacheops.E011', {**CLUSTER, 'CACHEOPS_CLUSTER': {'startup_nodes': [('127.0.0.1',)]}},
     'a host name and a port number'),
    ('cacheops.E011', {**CLUSTER, 'CACHEOPS_CLIENT_CLASS': 'redis.Redis'}, 'subclass of redis.cluster'),
]


def expected_id(check_id, setting):
    """What a cluster setting gives where redis-py has no redis.cluster (4.0): E012 for
    CACHEOPS_CLUSTER, E002 (the class cannot be imported) for a cluster client class."""
    if HAS_CLUSTER:
        return check_id
    return 'cacheops.E012' if setting.get('CACHEOPS_CLUSTER') else 'cacheops.E002'


@pytest.mark.parametrize('check_id, setting, fix', CLUSTER_CHECKS,
                         ids=['%s-%d' % (c[0], n) for n, c in enumerate(CLUSTER_CHECKS)])
def test_a_bad_cluster_setting_gives_its_check_id(check_id, setting, fix):
    check_id = expected_id(check_id, setting)
    with override_settings(**setting):
        messages = cacheops_messages()
        assert [m.id for m in messages] == [check_id]
        assert fix in messages[0].msg or not HAS_CLUSTER
        with pytest.raises(ImproperlyConfigured):
            cacheops.redis.make_client()


def test_cluster_without_redis_cluster_names_the_upgrade(monkeypatch):
    """redis-py 4.0 has no redis.cluster: CACHEOPS_CLUSTER is a check error, not an ImportError."""
    monkeypatch.setitem(sys.modules, 'redis.cluster', None)  # what importing it does on 4.0
    with override_settings(**CLUSTER):
        messages = cacheops_messages()
        assert [m.id for m in messages] == ['cacheops.E012']
        assert 'redis>=4.1' in messages[0].msg
        with pytest.raises(ImproperlyConfigured, match='redis>=4.1'):
            cacheops.redis.make_client()


def test_a_cluster_down_is_no_bad_setting():
    """Nothing answers at the startup node: the checks pass, a use fails as Redis down does."""
    down = {**CLUSTER, 'CACHEOPS_CLUSTER': {'startup_nodes': [('127.0.0.1', free_port())]}}
    with override_settings(**down):
        if not HAS_CLUSTER:  # redis-py 4.0: no client to try, the setting itself is refused
            assert [m.id for m in cacheops_messages()] == ['cacheops.E012']
            return
        assert cacheops_messages() == []
        with pytest.raises(redis.ConnectionError):
            cacheops.redis.make_client()


@pytest.mark.parametrize('name, value', [
    ('CACHEOPS_ENABLED', 'no'), ('CACHEOPS_INSIDEOUT', 'no'), ('CACHEOPS_DEGRADE_ON_FAILURE', 'yes'),
    ('CACHEOPS_INVALIDATE_UPDATES', 'no'),
])
def test_a_flag_given_a_string_is_not_taken_as_true(name, value):
    with override_settings(**{name: value}):
        with pytest.raises(ImproperlyConfigured, match=name):
            getattr(cacheops_settings, name)


def test_a_flag_given_a_string_fails_a_cached_read():
    Category.objects.create(title='c')
    with override_settings(CACHEOPS_ENABLED='no'):
        with pytest.raises(ImproperlyConfigured, match='CACHEOPS_ENABLED'):
            list(Category.objects.cache().filter(title='c'))


@pytest.mark.parametrize('value', [True, False, 1, 0])
def test_flags_take_booleans(value):
    with override_settings(CACHEOPS_DEGRADE_ON_FAILURE=value):
        assert cacheops_settings.CACHEOPS_DEGRADE_ON_FAILURE == value
        assert cacheops_messages() == []


# Validated where given (issue 18, finding 9)

class StrSerializer:
    """dumps() gives str: conj-set mode gets by (Redis encodes it), insideout mode breaks."""
    @staticmethod
    def dumps(value):
        return repr(value)

    @staticmethod
    def loads(data):
        return data


LATE_CHECKS = [
    ('cacheops.E008', {'CACHEOPS_LOCK_WAIT': 0.5}),  # a Redis expiry: whole seconds
    ('cacheops.E008', {'CACHEOPS_LOCK_WAIT': -1}),
    ('cacheops.E008', {'FILE_CACHE_TIMEOUT': '3600'}),
    ('cacheops.E004', {'CACHEOPS_SERIALIZER': 'tests.test_config_errors.StrSerializer'}),
]


@pytest.mark.parametrize('check_id, setting', LATE_CHECKS, ids=['%s-%s' % (i, '-'.join(s)) for i, s in LATE_CHECKS])
def test_settings_checked_late_give_their_check_id(check_id, setting):
    with override_settings(**{'CACHEOPS_CLUSTER': {}, **setting}):
        assert [m.id for m in cacheops_messages()] == [check_id]


BAD_TIMEOUTS = [(-1, ValueError), (0, ValueError), (1.5, TypeError), ('60', TypeError), (True, TypeError)]


@pytest.mark.parametrize('timeout, error', BAD_TIMEOUTS)
def test_a_bad_queryset_timeout_raises_at_the_call(timeout, error):
    with pytest.raises(error, match='timeout'):
        Category.objects.cache(timeout=timeout)


@pytest.mark.parametrize('timeout, error', BAD_TIMEOUTS)
def test_a_bad_cached_as_timeout_raises_at_the_call(timeout, error):
    from cacheops import cached_as, cached_view_as
    with pytest.raises(error, match='timeout'):
        cached_as(Category, timeout=timeout)
    with pytest.raises(error, match='timeout'):
        cached_view_as(Category, timeout=timeout)


@pytest.mark.parametrize('timeout, error', BAD_TIMEOUTS)
def test_a_bad_cached_timeout_raises_at_the_call(timeout, error):
    from cacheops import cached, cached_view, file_cache
    # the file cache expires by mtime: a fraction of a second is a timeout there
    file_decorators = () if isinstance(timeout, float) else (file_cache.cached, file_cache.cached_view)
    for decorator in (cached, cached_view, *file_decorators):
        with pytest.raises(error, match='timeout'):
            decorator(timeout=timeout)


@override_settings(CACHEOPS_DEGRADE_ON_FAILURE=True)
def test_none_and_positive_timeouts_keep_their_meanings():
    from cacheops import cached, cached_as
    Category.objects.create(title='c')
    assert [c.title for c in Category.objects.cache(timeout=None)] == ['c']  # the profile's
    assert [c.title for c in Category.objects.cache(timeout=5)] == ['c']
    assert cached_as(Category, timeout=None)(lambda: 1)() == 1  # the samples' profiles'
    assert cached(timeout=None)(lambda: 2)() == 2  # no expiry
    assert cached(timeout=7)(lambda: 3)() == 3
