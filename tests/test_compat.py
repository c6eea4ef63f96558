"""The compatibility surface beyond the README: names that projects' code and test suites
import, patch or read, with the meaning they rely on. The feature tests cover the rest
of it (test_transactions, test_invalidation, test_m2m_invalidation, test_utils,
test_redis_layout, test_signals, test_dnfs, test_simple_cache, test_templatetags...)."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.db import transaction
from django.db.models import Count
from django.test import SimpleTestCase, override_settings
from django.utils.functional import empty

import cacheops
import cacheops.redis
import cacheops.simple
from cacheops import query
from cacheops.conf import settings
from cacheops.events import deletes
from cacheops.transaction import is_sql_dirty, transaction_states
from cacheops.tree import dnfs
from .models import Category, Post, Task
from .utils import queries, warm

pytestmark = pytest.mark.django_db


# Import paths

def test_the_simple_cache_classes_import_from_cacheops():
    from cacheops import FileCache, RedisCache
    assert FileCache is cacheops.simple.FileCache
    assert RedisCache is cacheops.simple.RedisCache


def test_the_default_cache_is_a_redis_cache_with_the_cache_api():
    assert isinstance(cacheops.cache, cacheops.RedisCache)
    for name in ('cached', 'cached_view', 'get', 'set', 'delete'):
        assert callable(getattr(cacheops.cache, name))
    cacheops.cache.set('compat', [1, 2], 60)
    assert cacheops.cache.get('compat') == [1, 2]
    cacheops.cache.delete('compat')
    with pytest.raises(cacheops.CacheMiss):
        cacheops.cache.get('compat')


# cacheops.conf.settings

def test_settings_read_the_django_setting_or_the_default():
    assert settings.CACHEOPS_LONG_DISJUNCTION == 1000  # tests/settings.py
    assert settings.CACHEOPS_LOCK_WAIT == 30  # the default
    with pytest.raises(AttributeError):
        settings.CACHEOPS_NO_SUCH_SETTING  # noqa: B018


def test_settings_follow_override_settings():
    with override_settings(CACHEOPS_LOCK_WAIT=5):
        assert settings.CACHEOPS_LOCK_WAIT == 5
    assert settings.CACHEOPS_LOCK_WAIT == 30


@override_settings(CACHEOPS_LOCK_WAIT=7)
class SettingsOverriddenOnAClass(SimpleTestCase):
    def test_they_follow_it(self):
        assert settings.CACHEOPS_LOCK_WAIT == 7


# cacheops.transaction

@pytest.mark.django_db(transaction=True)
def test_is_dirty_tells_whether_a_transaction_wrote():
    assert not transaction_states.is_dirty(['default'])
    with transaction.atomic():
        Category.objects.count()
        assert not transaction_states.is_dirty(['default'])
        Category.objects.create(title='c')
        assert transaction_states.is_dirty(['default'])
    assert not transaction_states.is_dirty(['default'])


def test_is_sql_dirty_takes_psycopg_composed_sql():
    from psycopg import sql
    update = sql.SQL('UPDATE {} SET title = %s').format(sql.Identifier('tests_post'))
    select = sql.SQL('SELECT * FROM {}').format(sql.Identifier('delete'))  # a table named so
    assert is_sql_dirty(update)
    assert not is_sql_dirty(select)


# cacheops.tree.dnfs

def test_dnfs_lists_tables_used_only_in_annotations():
    result = dnfs(Category.objects.annotate(n=Count('posts')))
    assert result[Post._meta.db_table] == [{}]


# cacheops.query.invalidate_m2o

def test_invalidate_m2o_invalidates_rows_referencing_the_object(monkeypatch):
    cat = Category.objects.create(title='c')
    Task.objects.create(title='t', category=cat)

    def tasks():
        return [t.title for t in Task.objects.cache().filter(category=cat)]
    assert warm(tasks) == ['t']
    given = []
    original = deletes.invalidate_dicts
    monkeypatch.setattr(deletes, 'invalidate_dicts',
                        lambda model, rows, using: given.append(rows) or original(model, rows, using=using))
    query.invalidate_m2o(Category, cat, using='default')
    assert queries(tasks) == (['t'], 1)
    values = [value for rows in given for row in rows for value in row.values()]
    assert values and all(value is None or type(value) is int for value in values)


def test_invalidate_m2o_imports_from_cacheops_query_before_the_apps_are_ready():
    # it lives in events/, above the queryset layer: cacheops/compat.py puts it there, on
    # import of cacheops, not AppConfig.ready() (a settings module imports it earlier)
    code = ('from django.apps import apps; from cacheops.query import invalidate_m2o; '
            'from cacheops.events import invalidate_m2o as defined; '
            'print(apps.ready, invalidate_m2o is defined)')
    env = {**os.environ, 'DJANGO_SETTINGS_MODULE': 'tests.settings'}
    out = subprocess.run([sys.executable, '-c', code], env=env, cwd=Path(__file__).parent.parent,
                         capture_output=True, text=True, check=True).stdout
    assert out == 'False True\n'


# cacheops.redis.redis_client

def test_the_client_is_created_from_settings_when_first_used():
    with override_settings(CACHEOPS_REDIS='redis://127.0.0.1:1/0', CACHEOPS_CLUSTER={}):  # nothing listens there
        assert cacheops.redis.redis_client._wrapped is empty
        kwargs = cacheops.redis.redis_client.connection_pool.connection_kwargs
        assert kwargs['port'] == 1
    assert cacheops.redis.redis_client.ping()


def test_the_client_is_the_one_querysets_use():
    cat = Category.objects.create(title='c')
    qs = Post.objects.cache().filter(category=cat)
    list(qs)
    assert cacheops.redis.redis_client.exists(qs._cache_key())
