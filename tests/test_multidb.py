"""Multiple databases: by default the same query is the same cache entry on
any database; with db_agnostic=False each database has its own entries."""
import pytest
from django.db import connections

from .models import Category, DbAgnostic, DbBinded

pytestmark = pytest.mark.django_db(databases=['default', 'slave'])


def test_db_agnostic_query_result_is_shared_between_databases(django_assert_num_queries):
    Category.objects.create(title='on default')
    Category.objects.using('slave').create(title='on slave')
    with django_assert_num_queries(1):
        assert [c.title for c in Category.objects.cache().all()] == ['on default']
    with django_assert_num_queries(0, connection=connections['slave']):
        assert [c.title for c in Category.objects.cache().using('slave')] == ['on default']


@pytest.mark.parametrize('model', [DbAgnostic, DbBinded])
def test_db_agnostic_false_caches_per_database(model, django_assert_num_queries):
    model.objects.create(title='on default')
    model.objects.using('slave').create(title='on slave')
    with django_assert_num_queries(1):
        assert [o.title for o in model.objects.cache().all()] == ['on default']
    with django_assert_num_queries(1, connection=connections['slave']):
        assert [o.title for o in model.objects.cache().using('slave')] == ['on slave']
    with django_assert_num_queries(0):
        assert [o.title for o in model.objects.cache().all()] == ['on default']
    with django_assert_num_queries(0, connection=connections['slave']):
        assert [o.title for o in model.objects.cache().using('slave')] == ['on slave']


def test_writes_on_another_database_invalidate(django_assert_num_queries):
    DbBinded.objects.using('slave').create(title='a')
    slave = connections['slave']
    assert [o.title for o in DbBinded.objects.cache().using('slave').filter(title='a')] == ['a']
    with django_assert_num_queries(0, connection=slave):
        assert [o.title for o in DbBinded.objects.cache().using('slave').filter(title='a')] == ['a']
    DbBinded.objects.using('slave').create(title='a')
    with django_assert_num_queries(1, connection=slave):
        assert [o.title for o in DbBinded.objects.cache().using('slave').filter(title='a')] == ['a', 'a']
