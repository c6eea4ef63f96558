"""Cache keys: qs._cache_key() is the Redis key a queryset's result lives at.
Different SQL, params, result classes or (for db_agnostic=False) databases
give different keys; the same query gives the same key."""
import pytest

from .models import All, Category, DbAgnostic, DbBinded, Post

pytestmark = pytest.mark.django_db


def key(qs):
    return qs._cache_key()


def test_same_query_same_key():
    assert key(All.objects.filter(tag=1)) == key(All.objects.filter(tag=1))
    assert key(Post.objects.cache().filter(title='a')) == key(Post.objects.filter(title='a').cache())


def test_keyword_order_does_not_matter():
    assert key(All.objects.filter(tag=1, title='a')) == key(All.objects.filter(title='a', tag=1))


def test_key_depends_on_params():
    assert key(All.objects.filter(tag=1)) != key(All.objects.filter(tag=2))
    assert key(All.objects.filter(title='1')) != key(All.objects.filter(title='2'))


def test_key_depends_on_sql():
    keys = {
        key(All.objects.all()),
        key(All.objects.filter(tag=1)),
        key(All.objects.filter(title=1)),
        key(All.objects.exclude(tag=1)),
        key(All.objects.filter(tag__gt=1)),
        key(All.objects.order_by('tag')),
        key(All.objects.order_by('-tag')),
        key(All.objects.all()[:5]),
        key(All.objects.all()[5:10]),
        key(All.objects.only('tag')),
        key(All.objects.select_related('category')),
    }
    assert len(keys) == 11


def test_key_depends_on_model_even_for_same_table():
    from .models import ProxyPost
    # Proxy querysets produce instances of another class
    assert key(Post.objects.cache().filter(title='a')) != key(ProxyPost.objects.cache().filter(title='a'))


def test_key_depends_on_result_class():
    qs = All.objects.filter(tag=1)
    keys = {
        key(qs),
        key(qs.values('id', 'tag')),
        key(qs.values_list('id', 'tag')),
        key(qs.values_list('id', 'tag', named=True)),
    }
    assert len(keys) == 4
    assert key(qs.values_list('tag')) != key(qs.values_list('tag', flat=True))


def test_db_agnostic_false_key_depends_on_database():
    for model in (DbAgnostic, DbBinded):
        qs = model.objects.cache().filter(title='a')
        assert key(qs) != key(qs.using('slave'))
        assert key(qs) == key(qs.using('default'))


def test_db_agnostic_key_does_not_depend_on_database():
    qs = Category.objects.cache().filter(title='a')
    assert key(qs) == key(qs.using('slave'))


def test_key_is_a_string_with_prefix():
    import os
    k = key(All.objects.filter(tag=1))
    assert isinstance(k, str)
    if os.environ.get('CACHEOPS_TEST_PREFIX') == '1':
        assert k.startswith('p:')


# Nothing derived from a queryset's query outlives an op: code may replace or change it

def test_a_replaced_query_gets_its_own_key():
    Post.objects.create(title='a', category=Category.objects.create(title='c'))
    qs = Post.objects.cache().filter(title='a')
    assert qs.count() == 1
    qs.query = Post.objects.filter(title='zzz').query
    assert qs.count() == 0


def test_a_query_changed_in_place_gets_its_own_key():
    from django.db.models import Q
    Post.objects.create(title='a', category=Category.objects.create(title='c'))
    qs = Post.objects.cache().filter(title='a')
    assert qs.count() == 1
    qs.query.add_q(Q(title='zzz'))
    assert qs.count() == 0


def test_aggregates_differing_only_in_default_have_their_own_keys():
    from django.db.models import Sum
    # no rows: the sums are empty
    assert All.objects.cache().filter(tag=7).aggregate(s=Sum('tag')) == {'s': None}
    assert All.objects.cache().filter(tag=7).aggregate(s=Sum('tag', default=0)) == {'s': 0}


def test_values_list_in_another_order_has_its_own_key():
    from django.db.models import Count
    Post.objects.create(title='a', category=Category.objects.create(title='c'))
    assert list(Post.objects.cache().annotate(n=Count('id')).values_list('n', 'title')) == [(1, 'a')]
    assert list(Post.objects.cache().annotate(n=Count('id')).values_list('title', 'n')) == [('a', 1)]
