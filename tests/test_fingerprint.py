"""Query fingerprints: cache keys without compiling SQL (cacheops/fingerprint/).

query_fingerprint(query) stands for the SQL a query compiles to: equal fingerprints must
mean equal SQL and params (else a query would be served another's result), while telling
apart queries that compile alike only costs sharing. When the query holds anything the
fingerprint can't vouch for, it is None and the cache key comes from the compiled SQL.

tests/conftest.py turns fingerprint.VERIFY on for the whole suite: every fingerprint
computed is compiled too, and one fingerprint meeting two different SQL statements
fails the test that made it.
"""
import datetime
import marshal
import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest
from django.core.exceptions import EmptyResultSet
from django.db import connection
from django.db.models import (Avg, Count, Exists, F, FilteredRelation, FloatField, Func, Max, Min,
                              OuterRef, Q, StdDev, Subquery, Sum, TextChoices, Value, Variance)
from django.db.models.expressions import Star
from django.db.models.functions import Lower
from django.db.models.lookups import Exact
from django.db.models.sql.compiler import SQLCompiler
from django.test import override_settings
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from cacheops import fingerprint
from cacheops.fingerprint import expressions_fingerprint, query_fingerprint

from .models import (All, Assorted, Brand, Category, Gadget, Label, Post, ProxyPost, Tag,
                     Task)
from .utils import queries, warm

pytestmark = pytest.mark.django_db

UTC = datetime.timezone.utc
DAY = datetime.date(2024, 5, 17)
NOON = datetime.datetime(2024, 5, 17, 12, 0, tzinfo=UTC)


def fp(qs):
    return query_fingerprint(qs.query, qs.db)


def compiled(qs):
    """What the queryset's query compiles to here: (sql, repr(params)), or how it fails."""
    try:
        sql, params = qs.query.clone().get_compiler(using=qs.db).as_sql()
    except EmptyResultSet:
        return ('EmptyResultSet',)
    except Exception as e:
        return ('raises', type(e).__name__)
    return sql, repr(tuple(params))


def category_title(title):
    return Category.objects.filter(pk=OuterRef('category'), title=title)


# (a) A corpus of pairs that differ subtly: their SQL differs on every database, and so
# must their fingerprints. Both are supported, so each pair checks the fast path's keys.

DIFFERENT = {
    # lookups
    'exact vs iexact': (lambda: Post.objects.filter(title='a'),
                        lambda: Post.objects.filter(title__iexact='a')),
    'gt vs gte': (lambda: All.objects.filter(tag__gt=1), lambda: All.objects.filter(tag__gte=1)),
    'lt vs lte': (lambda: All.objects.filter(tag__lt=1), lambda: All.objects.filter(tag__lte=1)),
    'in vs exact': (lambda: All.objects.filter(tag__in=[1]), lambda: All.objects.filter(tag=1)),
    'in, params in another order': (lambda: All.objects.filter(tag__in=[1, 2]),
                                    lambda: All.objects.filter(tag__in=[2, 1])),
    'isnull true vs false': (lambda: Task.objects.filter(category__isnull=True),
                             lambda: Task.objects.filter(category__isnull=False)),
    'range bounds': (lambda: All.objects.filter(tag__range=(1, 2)),
                     lambda: All.objects.filter(tag__range=(1, 3))),
    'contains vs startswith': (lambda: Post.objects.filter(title__contains='a'),
                               lambda: Post.objects.filter(title__startswith='a')),
    'startswith vs endswith': (lambda: Post.objects.filter(title__startswith='a'),
                               lambda: Post.objects.filter(title__endswith='a')),
    # values
    'another value': (lambda: Post.objects.filter(title='a'), lambda: Post.objects.filter(title='b')),
    'a value on another field': (lambda: All.objects.filter(tag=1), lambda: All.objects.filter(id=1)),
    "value 1 vs '1'": (lambda: All.objects.annotate(v=Value(1)), lambda: All.objects.annotate(v=Value('1'))),
    'value 1 vs True': (lambda: All.objects.annotate(v=Value(1)),
                        lambda: All.objects.annotate(v=Value(True))),
    'value 1 vs 1.5': (lambda: All.objects.annotate(v=Value(1)), lambda: All.objects.annotate(v=Value(1.5))),
    'another date': (lambda: Assorted.objects.filter(date=DAY),
                     lambda: Assorted.objects.filter(date=DAY + datetime.timedelta(days=1))),
    'another datetime': (lambda: Assorted.objects.filter(datetime__gte=NOON),
                         lambda: Assorted.objects.filter(datetime__gte=NOON + datetime.timedelta(seconds=1))),
    'F() vs a value': (lambda: All.objects.filter(tag=F('id')), lambda: All.objects.filter(tag=1)),
    'F() of another field': (lambda: All.objects.filter(tag=F('id')),
                             lambda: All.objects.filter(tag=F('category_id'))),
    # conditions
    'filter vs exclude': (lambda: All.objects.filter(tag=1), lambda: All.objects.exclude(tag=1)),
    'negating another child': (lambda: All.objects.filter(~Q(tag=1), title='a'),
                               lambda: All.objects.filter(~Q(title='a'), tag=1)),
    'OR vs AND': (lambda: All.objects.filter(Q(tag=1) | Q(title='a')),
                  lambda: All.objects.filter(Q(tag=1) & Q(title='a'))),
    'm2m: two filter() calls make two joins': (
        lambda: Brand.objects.filter(labels__text='a').filter(labels__id=1),
        lambda: Brand.objects.filter(labels__text='a', labels__id=1)),
    'reverse fk: two filter() calls make two joins': (
        lambda: Category.objects.filter(posts__title='a').filter(posts__visible=True),
        lambda: Category.objects.filter(posts__title='a', posts__visible=True)),
    # the rest of the query
    'order_by direction': (lambda: Post.objects.order_by('title'), lambda: Post.objects.order_by('-title')),
    'order_by vs reverse()': (lambda: Post.objects.order_by('title', 'id'),
                              lambda: Post.objects.order_by('title', 'id').reverse()),
    'order_by fields in another order': (lambda: Post.objects.order_by('title', 'id'),
                                         lambda: Post.objects.order_by('id', 'title')),
    'order_by a related field': (lambda: Post.objects.order_by('category__title'),
                                 lambda: Post.objects.order_by('category_id')),
    'slice end': (lambda: Post.objects.all()[:5], lambda: Post.objects.all()[:6]),
    'slice start': (lambda: Post.objects.all()[5:10], lambda: Post.objects.all()[:10]),
    'distinct': (lambda: Post.objects.filter(title='a'), lambda: Post.objects.filter(title='a').distinct()),
    'values of another field': (lambda: Post.objects.values('id'), lambda: Post.objects.values('title')),
    'values in another order': (lambda: Post.objects.values('id', 'title'),
                                lambda: Post.objects.values('title', 'id')),
    'values_list of another field': (lambda: Post.objects.values_list('id', flat=True),
                                     lambda: Post.objects.values_list('title', flat=True)),
    'annotate Count vs Sum': (lambda: Category.objects.annotate(n=Count('posts')),
                              lambda: Category.objects.annotate(n=Sum('posts'))),
    'annotate distinct Count': (lambda: Category.objects.annotate(n=Count('posts')),
                                lambda: Category.objects.annotate(n=Count('posts', distinct=True))),
    'annotate a function': (lambda: Post.objects.annotate(t=Lower('title')),
                            lambda: Post.objects.annotate(t=F('title'))),
    'values().annotate() groups': (lambda: Post.objects.values('category').annotate(n=Count('id')),
                                   lambda: Post.objects.values('visible').annotate(n=Count('id'))),
    'select_related': (lambda: Post.objects.all(), lambda: Post.objects.select_related('category')),
    'only vs defer': (lambda: Post.objects.only('title'), lambda: Post.objects.defer('title')),
    'only another field': (lambda: Post.objects.only('title'), lambda: Post.objects.only('text')),
    'extra where': (lambda: Post.objects.extra(where=['1=1']), lambda: Post.objects.extra(where=['2=2'])),
    'extra select params': (lambda: Post.objects.extra(select={'x': '%s'}, select_params=[1]),
                            lambda: Post.objects.extra(select={'x': '%s'}, select_params=[2])),
    'union vs union all': (
        lambda: Post.objects.filter(title='a').union(Post.objects.filter(title='b')),
        lambda: Post.objects.filter(title='a').union(Post.objects.filter(title='b'), all=True)),
    'union of another query': (lambda: Post.objects.filter(title='a').union(Post.objects.filter(title='b')),
                               lambda: Post.objects.filter(title='a').union(Post.objects.filter(title='c'))),
    'Exists of another condition': (lambda: Post.objects.filter(Exists(category_title('a'))),
                                    lambda: Post.objects.filter(Exists(category_title('b')))),
    'Exists vs not Exists': (lambda: Post.objects.filter(Exists(category_title('a'))),
                             lambda: Post.objects.filter(~Exists(category_title('a')))),
    'Subquery of another column': (
        lambda: Post.objects.annotate(c=Subquery(category_title('a').values('title')[:1])),
        lambda: Post.objects.annotate(c=Subquery(category_title('a').values('id')[:1]))),
    'm2m by another instance': (lambda: Brand.objects.filter(labels=Label(pk=1)),
                                lambda: Brand.objects.filter(labels=Label(pk=2))),
    '__in a subquery of another condition': (
        lambda: Post.objects.filter(category__in=Category.objects.filter(title='a')),
        lambda: Post.objects.filter(category__in=Category.objects.filter(title='b'))),
}


@pytest.mark.parametrize('make_one, make_other', DIFFERENT.values(), ids=DIFFERENT.keys())
def test_subtly_different_queries_get_different_fingerprints(make_one, make_other):
    one, other = make_one(), make_other()
    assert compiled(one) != compiled(other)  # the corpus is right
    assert fp(one) is not None and fp(other) is not None
    assert fp(one) != fp(other)


@pytest.mark.parametrize('make', [make for pair in DIFFERENT.values() for make in pair])
def test_equal_queries_get_equal_fingerprints(make):
    # built twice: the cache is shared between requests only if this holds
    assert fp(make()) == fp(make()) is not None


# Pairs that compile alike. Some share a fingerprint (and so cache entries); telling the
# others apart costs sharing only.

SAME_FINGERPRINT = {
    'keyword order': (lambda: All.objects.filter(tag=1, title='a'),
                      lambda: All.objects.filter(title='a', tag=1)),
    "1 vs '1' on a CharField": (lambda: Post.objects.filter(title=1), lambda: Post.objects.filter(title='1')),
    "1 vs '1' vs True on an IntegerField": (lambda: All.objects.filter(tag__in=[1, '1']),
                                            lambda: All.objects.filter(tag__in=[True, 1])),
    'a foreign key by instance or by column': (
        lambda: Post.objects.filter(category=Category(pk=3)),
        lambda: Post.objects.filter(category_id=3)),
}

SAME_SQL = {
    'a proxy model': (lambda: Post.objects.filter(title='a'), lambda: ProxyPost.objects.filter(title='a')),
    # Post has no Meta.ordering
    'order_by() with no default ordering': (lambda: Post.objects.all(), lambda: Post.objects.order_by()),
}


@pytest.mark.parametrize('make_one, make_other', SAME_FINGERPRINT.values(), ids=SAME_FINGERPRINT.keys())
def test_some_queries_compiling_alike_share_a_fingerprint(make_one, make_other):
    one, other = make_one(), make_other()
    assert compiled(one) == compiled(other)
    assert fp(one) == fp(other) is not None


@pytest.mark.parametrize('make_one, make_other', SAME_SQL.values(), ids=SAME_SQL.keys())
def test_queries_compiling_alike_may_be_told_apart(make_one, make_other):
    one, other = make_one(), make_other()
    assert compiled(one) == compiled(other)
    assert fp(one) != fp(other)


def test_equal_fingerprints_mean_equal_sql_across_the_corpus():
    corpus = [make() for pairs in (DIFFERENT, SAME_FINGERPRINT, SAME_SQL) for pair in pairs.values()
              for make in pair]
    corpus += [
        Assorted.objects.filter(decimal=Decimal('1.0')),
        Assorted.objects.filter(decimal=Decimal('1.00')),
        Assorted.objects.filter(num=1),
        Assorted.objects.filter(num=1.0),
        Assorted.objects.filter(uuid='12345678-1234-5678-1234-567812345678'),
        Assorted.objects.filter(binary=b'a'),
        Assorted.objects.filter(text='a'),
        Post.objects.filter(pk__in=[]),
        Post.objects.none(),
    ]
    by_fingerprint = {}
    for qs in corpus:
        key = fp(qs)
        assert key is not None
        by_fingerprint.setdefault(key, set()).add(compiled(qs))
    assert all(len(sqls) == 1 for sqls in by_fingerprint.values())


@pytest.mark.filterwarnings('ignore:DateTimeField .* received a naive datetime')
def test_settings_that_change_params_change_fingerprints():
    # a naive datetime is made aware in the default time zone while compiling
    qs = Assorted.objects.annotate(v=Value(NOON.replace(tzinfo=None)))
    with override_settings(TIME_ZONE='Europe/Paris'):
        in_paris = compiled(qs), fp(qs)
    with override_settings(USE_TZ=False):
        without_tz = fp(qs)
    assert in_paris[0] != compiled(qs)
    assert len({in_paris[1], without_tz, fp(qs)}) == 3


def test_fingerprints_are_the_same_in_another_process():
    # sets of names (only(), masks) are written sorted: their order changes with the hash seed
    code = ('import django; django.setup(); from tests.models import Post; '
            'from cacheops.fingerprint import query_fingerprint as f; '
            "print(f(Post.objects.only('title', 'text', 'visible').query).encode('latin-1').hex())")
    env = {**os.environ, 'DJANGO_SETTINGS_MODULE': 'tests.settings'}
    seen = {subprocess.run([sys.executable, '-c', code], env={**env, 'PYTHONHASHSEED': seed},
                           cwd=Path(__file__).parent.parent, capture_output=True, text=True,
                           check=True).stdout
            for seed in ('1', '2')}
    here = fp(Post.objects.only('title', 'text', 'visible')).encode('latin-1').hex() + '\n'
    assert seen == {here}


# What the fingerprint doesn't know: None, and the key comes from the compiled SQL

class Color(TextChoices):
    RED = 'red'


class Reverse(Func):
    function = 'REVERSE'


class CustomTz(datetime.tzinfo):
    def utcoffset(self, dt):
        return datetime.timedelta(hours=1)


def historical_post():
    from django.apps import apps
    from django.db.migrations.state import ProjectState
    return ProjectState.from_apps(apps).apps.get_model('tests', 'Post')


def with_attribute(qs, where, name):
    setattr(where(qs.query), name, 1)
    return qs


UNKNOWN = {
    'a transform reading the time zone': lambda: Assorted.objects.filter(datetime__date=DAY),
    'a year lookup': lambda: Assorted.objects.filter(date__year=2024),
    'a filtered relation': lambda: Category.objects.annotate(
        p=FilteredRelation('posts', condition=Q(posts__title='a'))).filter(p__visible=True),
    'a custom expression': lambda: Post.objects.annotate(r=Reverse('title')),
    'an enum value': lambda: Post.objects.filter(title=Color.RED),
    'a time zone of unknown class': lambda: Assorted.objects.filter(
        datetime=datetime.datetime(2024, 5, 17, tzinfo=CustomTz())),
    'a historical model': lambda: historical_post().objects.filter(title='a'),
    'an unknown attribute of the query': lambda: with_attribute(
        Post.objects.filter(title='a'), lambda q: q, 'something_new'),
    'an unknown attribute of a lookup': lambda: with_attribute(
        Post.objects.filter(title='a'), lambda q: q.where.children[0], 'something_new'),
    'extra tables': lambda: Post.objects.extra(tables=['tests_category']),
    # order_by() keeps what it is given, for the compiler to resolve
    'ordering by a transform': lambda: Gadget.objects.order_by('-created__date'),
    'ordering by F() with a transform': lambda: Gadget.objects.order_by(F('created__date').desc()),
    # the compiler matches ordering expressions against selected ones by how they were built
    'ordering by an expression': lambda: Post.objects.order_by(Lower('title')),
    'a group_by name': lambda: with_group_by(Post.objects.values('title').annotate(n=Count('id'))),
}


def with_group_by(qs):
    qs.query.group_by = ('title',)
    return qs


def test_ordering_expressions_built_alike_may_compile_differently():
    # why order_by() expressions have no fingerprint: these two resolve alike, and yet
    def make(annotation):
        grouped = Post.objects.annotate(l=annotation).values('l').annotate(n=Count('id'))
        return grouped.order_by(Lower('title'))
    one, other = make(Lower('title')), make(Lower(F('title')))
    assert compiled(one) != compiled(other)
    assert fp(one) is fp(other) is None


@pytest.mark.parametrize('make', UNKNOWN.values(), ids=UNKNOWN.keys())
def test_what_is_not_known_has_no_fingerprint(make):
    assert fp(make()) is None


def test_queries_without_fingerprint_are_cached_by_their_sql():
    Assorted.objects.create(label='a', date=DAY)
    assert fp(Assorted.objects.filter(date__year=2024)) is None

    def labels():
        return [a.label for a in Assorted.objects.cache().filter(date__year=2024)]
    assert warm(labels) == ['a']
    Assorted.objects.create(label='b', date=DAY)
    assert sorted(labels()) == ['a', 'b']


def test_fingerprint_and_sql_keys_never_collide(monkeypatch):
    def key():
        return Post.objects.cache().filter(title='a')._cache_key()
    by_calls = key()  # recorded calls (tests/test_lazy_chain.py)
    monkeypatch.setattr('cacheops.query.keys.chain_fingerprint', lambda *args: None)
    by_fingerprint = key()
    monkeypatch.setattr('cacheops.query.keys.query_fingerprint', lambda query, using: None)
    by_sql = key()
    assert len({by_calls, by_fingerprint, by_sql}) == 3


# (b) The fast path is taken for the common shapes, bench.py's among them

@pytest.fixture
def compiles(monkeypatch):
    """The queries compiled to SQL meanwhile, with VERIFY off as outside the tests."""
    monkeypatch.setattr(fingerprint, 'VERIFY', False)
    calls = []
    as_sql = SQLCompiler.as_sql

    def spy(self, *args, **kwargs):
        calls.append(self.query)
        return as_sql(self, *args, **kwargs)
    monkeypatch.setattr(SQLCompiler, 'as_sql', spy)
    return calls


def bench_list(category):
    return Gadget.objects.cache().filter(category=category, is_active=True).order_by('-created')[:20]


def bench_count(category):
    return Gadget.objects.cache().filter(category=category).count()


def bench_exists(category, tag):
    return Gadget.objects.cache().filter(category=category, tags=tag).exists()


def bench_aggregate(category):
    return Gadget.objects.cache().filter(category=category).aggregate(
        Avg('price'), Sum('stock'), Max('rating'))


COMMON = {
    'bench: list': lambda: Gadget.objects.filter(category=1, is_active=True).order_by('-created')[:20],
    'bench: count, exists, aggregate': lambda: Gadget.objects.filter(category=1),
    'bench: exists through tags': lambda: Gadget.objects.filter(category=1, tags=1),
    'all': lambda: Post.objects.all(),
    'by pk': lambda: Post.objects.filter(pk=1),
    '__in a list': lambda: Post.objects.filter(pk__in=[1, 2, 3]),
    'OR and exclude': lambda: All.objects.filter(Q(tag=1) | Q(tag=2)).exclude(title=''),
    'isnull': lambda: Task.objects.filter(category__isnull=True),
    'across a join': lambda: Post.objects.filter(category__title='a', visible=True),
    'values_list': lambda: Post.objects.filter(visible=True).values_list('id', flat=True),
    'select_related': lambda: Post.objects.select_related('category').order_by('-id')[:10],
    'annotate Count': lambda: Category.objects.annotate(n=Count('posts')).filter(n__gt=1),
    'datetime range': lambda: Gadget.objects.filter(created__range=(NOON, NOON + datetime.timedelta(days=1))),
    'decimal': lambda: Gadget.objects.filter(price__lte=Decimal('9.99')),
    'ordering across relations': lambda: Post.objects.order_by('-category__title', F('id').asc()),
    'ordering by a relation': lambda: Post.objects.order_by('category', 'category_id'),
}


@pytest.mark.parametrize('make', COMMON.values(), ids=COMMON.keys())
def test_common_queries_have_fingerprints(make, compiles):
    qs = make().cache()
    assert fp(qs) is not None
    qs._cache_key()
    assert compiles == []


def test_bench_keys_need_no_compiling(compiles):
    category, tag = Category.objects.create(title='c'), Tag.objects.create(name='t')
    qs = Gadget.objects.cache().filter(category=category)
    for op in ('', 'count', 'exists', 'aggregate'):
        qs._cache_key(op)
    bench_list(category)._cache_key()
    Gadget.objects.cache().filter(category=category, tags=tag)._cache_key('exists')
    assert compiles == []


# (c) A hit compiles nothing and returns the right data; writes invalidate it as before

@pytest.fixture
def gadgets():
    category, tag = Category.objects.create(title='c'), Tag.objects.create(name='t')
    rows = [Gadget.objects.create(category=category, title='g%d' % i, price=Decimal('%d.50' % i),
                                  stock=i, rating=i / 2, created=NOON + datetime.timedelta(hours=i))
            for i in range(3)]
    rows[0].tags.add(tag)
    return category, tag, rows


def test_hits_compile_nothing(gadgets, compiles):
    category, tag, rows = gadgets
    ops = {
        'list': lambda: [g.title for g in bench_list(category)],
        'count': lambda: bench_count(category),
        'exists': lambda: bench_exists(category, tag),
        'aggregate': lambda: bench_aggregate(category),
    }
    expected = {
        'list': ['g2', 'g1', 'g0'],
        'count': 3,
        'exists': True,
        'aggregate': {'price__avg': Decimal('1.50'), 'stock__sum': 3, 'rating__max': 1.0},
    }
    for name, op in ops.items():
        assert warm(op) == expected[name], name
        del compiles[:]
        result, ran = queries(op)
        assert (result, ran, compiles) == (expected[name], 0, []), name


def test_hits_are_invalidated_as_before(gadgets, django_assert_num_queries):
    category, tag, rows = gadgets
    warm(lambda: list(bench_list(category)))
    warm(lambda: bench_count(category))
    warm(lambda: bench_aggregate(category))
    Gadget.objects.create(category=category, title='new', price=Decimal('4.50'), stock=6, rating=3,
                          created=NOON + datetime.timedelta(days=1))
    with django_assert_num_queries(1):
        assert bench_list(category)[0].title == 'new'
    with django_assert_num_queries(1):
        assert bench_count(category) == 4
    with django_assert_num_queries(1):
        assert bench_aggregate(category)['stock__sum'] == 9


def test_m2m_hits_are_invalidated_as_before(gadgets, django_assert_num_queries):
    category, tag, rows = gadgets
    other = Tag.objects.create(name='other')
    assert warm(lambda: bench_exists(category, other)) is False
    rows[1].tags.add(other)
    with django_assert_num_queries(1):
        assert bench_exists(category, other) is True


def test_a_query_keeps_its_key_once_it_ran(gadgets):
    category, tag, rows = gadgets
    for make in (lambda: Gadget.objects.cache().all(), lambda: bench_list(category),
                 lambda: Gadget.objects.cache().filter(category=category, tags=tag)):
        qs = make()
        key = qs._cache_key()
        list(qs)
        assert qs._cache_key() == key == make()._cache_key()


# Queries that match nothing: compiling raises EmptyResultSet, the fingerprint doesn't

def test_empty_in_is_cached_and_right(gadgets, django_assert_num_queries):
    category, tag, rows = gadgets
    qs = Gadget.objects.cache().filter(pk__in=[])
    assert compiled(qs) == ('EmptyResultSet',)
    assert fp(qs) is not None
    with django_assert_num_queries(0):  # Django knows the answers without asking
        assert list(qs) == []
        assert qs.count() == 0
        assert qs.exists() is False
        assert qs.aggregate(Sum('stock')) == {'stock__sum': None}
    Gadget.objects.create(category=category, title='new')
    with django_assert_num_queries(0):
        assert list(Gadget.objects.cache().filter(pk__in=[])) == []
        assert Gadget.objects.cache().filter(pk__in=[]).count() == 0


def test_empty_in_or_another_condition(gadgets):
    category, tag, rows = gadgets
    qs = lambda: Gadget.objects.cache().filter(Q(pk__in=[]) | Q(title='g1'))  # noqa: E731
    assert [g.title for g in warm(lambda: list(qs()))] == ['g1']
    rows[1].title = 'renamed'
    rows[1].save()
    assert list(qs()) == []


def test_empty_query_without_fingerprint_is_not_cached(gadgets):
    # the SQL path: compiling raises EmptyResultSet, and the op runs without the cache
    qs = Assorted.objects.cache().filter(date__year=2024, pk__in=[])
    assert fp(qs) is None
    assert list(qs) == [] and qs.count() == 0 and qs.exists() is False


# The verification switch

def test_verification_is_on_in_the_test_suite():
    assert fingerprint.VERIFY is True


def test_verification_is_off_outside_the_tests():
    code = 'import cacheops.fingerprint as f; print(f.VERIFY)'
    out = subprocess.run([sys.executable, '-c', code], cwd=Path(__file__).parent.parent,
                         capture_output=True, text=True, check=True).stdout
    assert out == 'False\n'


def test_verification_catches_one_fingerprint_for_two_statements(monkeypatch):
    monkeypatch.setattr(fingerprint.verification, '_verified', {})
    fingerprint.verify(Post.objects.filter(title='a').query, connection.alias, 'same')
    fingerprint.verify(Post.objects.filter(title='a').query, connection.alias, 'same')
    with pytest.raises(AssertionError, match='one fingerprint, two SQL statements'):
        fingerprint.verify(Post.objects.filter(title='b').query, connection.alias, 'same')


def test_lookups_reading_the_current_time_zone_have_no_fingerprint():
    qs = Assorted.objects.filter(datetime__date=DAY)
    with timezone.override('Europe/Paris'):
        in_paris = compiled(qs), fp(qs)
    assert in_paris[0] != compiled(qs)  # the same query, other SQL
    assert in_paris[1] is fp(qs) is None


# DNFs are built once per query fingerprint in a process: insideout mode reads them on
# every hit, and a miss would otherwise build them from a clone of the query

@pytest.fixture
def dnfs_built(monkeypatch):
    from cacheops.query import keys
    built = []
    original = keys.query_dnfs

    def counting(sql_query, db):
        built.append(sql_query)
        return original(sql_query, db)

    monkeypatch.setattr(keys, 'query_dnfs', counting)
    keys._dnfs_memo().clear()  # what earlier tests left
    return built


def test_dnfs_of_a_query_seen_before_are_not_built_again(dnfs_built):
    Post.objects.create(title='a', category=Category.objects.create(title='c'))
    for _ in range(3):
        assert Post.objects.cache().filter(title='a').count() == 1
    assert len(dnfs_built) == 1


def test_dnfs_of_another_query_are_built(dnfs_built):
    Post.objects.cache().filter(title='a').count()
    Post.objects.cache().filter(title='b').count()
    assert len(dnfs_built) == 2


def test_dnfs_are_built_again_after_a_setting_changes(dnfs_built):
    Post.objects.cache().filter(title='a')._dnfs()
    with override_settings(CACHEOPS_LONG_DISJUNCTION=3):
        Post.objects.cache().filter(title='a')._dnfs()
    assert len(dnfs_built) == 2


# (d) aggregate()'s expressions: expressions_fingerprint() joins the query's fingerprint
# in the key. Built-in aggregates of a field name are read directly, as their class and
# the name; anything else is walked like a query's expressions. VERIFY doesn't see these
# (nothing compiles an aggregate to make its key): the corpus test runs them instead.

def afp(*args, **kwargs):
    return expressions_fingerprint(args, kwargs)


def tree(fingerprint):
    return marshal.loads(fingerprint.encode('latin-1'))


class MyAvg(Avg):
    pass


class MyStar(Star):
    pass


def with_f_attribute(name, value):
    f = F('stock')
    setattr(f, name, value)
    return Sum(f)


def set_after(aggregate, name, value):
    setattr(aggregate, name, value)
    return aggregate


PLAIN_AGGREGATES = {
    "Avg('price')": (lambda: Avg('price'), ('Avg(F)', 'price')),
    "Avg(F('price'))": (lambda: Avg(F('price')), ('Avg(F)', 'price')),
    "Count('*')": (lambda: Count('*'), ('Count(*)',)),
    "Count('pk')": (lambda: Count('pk'), ('Count(F)', 'pk')),
    "Max('rating')": (lambda: Max('rating'), ('Max(F)', 'rating')),
    "Min('rating')": (lambda: Min('rating'), ('Min(F)', 'rating')),
    "Sum('stock')": (lambda: Sum('stock'), ('Sum(F)', 'stock')),
    "StdDev('rating')": (lambda: StdDev('rating'), ('StdDev(F)', 'rating', 'STDDEV_POP')),
    "Variance('rating', sample=True)": (lambda: Variance('rating', sample=True),
                                        ('Variance(F)', 'rating', 'VAR_SAMP')),
}


@pytest.mark.parametrize('make, read', PLAIN_AGGREGATES.values(), ids=PLAIN_AGGREGATES.keys())
def test_plain_aggregates_are_read_directly(make, read):
    assert tree(afp(make())) == ((read,), ())
    assert tree(afp(v=make())) == ((), (('v', read),))


def test_names_with_a_separator_are_walked():
    # a transform (__date) may read the current time zone: not for the direct reading
    assert tree(afp(v=Max('created__date')))[1][0][1][0] == 'Max'
    assert tree(afp(v=Max('category__title')))[1][0][1][0] == 'Max'


SAME_AGGREGATE = {
    'built twice': (lambda: Avg('price'), lambda: Avg('price')),
    'a name or an F() of it': (lambda: Avg('price'), lambda: Avg(F('price'))),
    "'*' or Star()": (lambda: Count('*'), lambda: Count(Star())),
    'output_field=None': (lambda: Max('rating'), lambda: Max('rating', output_field=None)),
    'walked, built twice': (lambda: Sum('stock', default=0), lambda: Sum('stock', default=0)),
}


@pytest.mark.parametrize('make_one, make_other', SAME_AGGREGATE.values(), ids=SAME_AGGREGATE.keys())
def test_aggregates_built_alike_share_a_fingerprint(make_one, make_other):
    assert afp(v=make_one()) == afp(v=make_other()) is not None


# Each pair compiles differently or gives another type: its fingerprints must differ.
# The first of most is plain; the second is walked, or plain with another class or name.
DIFFERENT_AGGREGATES = {
    'Avg vs Sum': (lambda: Avg('price'), lambda: Sum('price')),
    'Max vs Min': (lambda: Max('rating'), lambda: Min('rating')),
    'StdDev vs Variance': (lambda: StdDev('rating'), lambda: Variance('rating')),
    'sample': (lambda: StdDev('rating'), lambda: StdDev('rating', sample=True)),
    'another name': (lambda: Sum('stock'), lambda: Sum('price')),
    "pk vs '*'": (lambda: Count('pk'), lambda: Count('*')),
    'distinct': (lambda: Count('stock'), lambda: Count('stock', distinct=True)),
    'distinct set after': (lambda: Sum('stock'), lambda: set_after(Sum('stock'), 'distinct', True)),
    'default': (lambda: Sum('stock'), lambda: Sum('stock', default=0)),
    'filter': (lambda: Sum('stock'), lambda: Sum('stock', filter=Exact(F('stock'), 1))),
    'output_field': (lambda: Max('stock'), lambda: Max('stock', output_field=FloatField())),
    'function set after': (lambda: Max('stock'), lambda: set_after(Max('stock'), 'function', 'MIN')),
    'an expression': (lambda: Sum('stock'), lambda: Sum(F('stock') * 2)),
    'a value': (lambda: Count('stock'), lambda: Count(Value(1))),
    'across a relation': (lambda: Max('title'), lambda: Max('category__title')),
    'a transform': (lambda: Max('created'), lambda: Max('created__date')),
}


@pytest.mark.parametrize('make_one, make_other', DIFFERENT_AGGREGATES.values(),
                         ids=DIFFERENT_AGGREGATES.keys())
def test_aggregate_variations_get_different_fingerprints(make_one, make_other):
    one, other = afp(v=make_one()), afp(v=make_other())
    assert one is not None and other is not None
    assert one != other


UNKNOWN_AGGREGATES = {
    'a filter by Q': lambda: Sum('stock', filter=Q(stock=1)),
    'a subclass': lambda: MyAvg('price'),
    'a subclass of Star': lambda: Count(MyStar()),
    'an OuterRef': lambda: Sum(OuterRef('stock')),
    'an F() with another attribute': lambda: with_f_attribute('something_new', 1),
    'an unknown attribute': lambda: set_after(Sum('stock'), 'something_new', 1),
}


@pytest.mark.parametrize('make', UNKNOWN_AGGREGATES.values(), ids=UNKNOWN_AGGREGATES.keys())
def test_aggregates_not_known_have_no_fingerprint(make):
    assert afp(v=make()) is None


def test_positional_and_named_aggregates_are_told_apart():
    assert len({afp(Sum('stock')), afp(stock__sum=Sum('stock')), afp(Sum('stock'), Max('stock')),
                afp(Max('stock'), Sum('stock')), afp(s=Sum('stock'), m=Max('stock')),
                afp(m=Max('stock'), s=Sum('stock'))}) == 6


def aggregated(qs, expression):
    """What qs.aggregate(v=expression) runs and gives, uncached: (sql, repr(result))."""
    with CaptureQueriesContext(connection) as ctx:
        result = qs.nocache().aggregate(v=expression)
    return tuple(query['sql'] for query in ctx.captured_queries), repr(result)


def test_equal_aggregate_fingerprints_mean_equal_sql_and_results(gadgets):
    qs = Gadget.objects.filter(category=gadgets[0])
    corpus = [make for pairs in (SAME_AGGREGATE, DIFFERENT_AGGREGATES) for pair in pairs.values()
              for make in pair] + [make for make, read in PLAIN_AGGREGATES.values()]
    by_fingerprint = {}
    for make in corpus:
        by_fingerprint.setdefault(afp(v=make()), set()).add(aggregated(qs, make()))
    assert None not in by_fingerprint
    assert all(len(ran) == 1 for ran in by_fingerprint.values())
    # and the corpus is right: every pair told apart runs otherwise
    for make_one, make_other in DIFFERENT_AGGREGATES.values():
        assert aggregated(qs, make_one()) != aggregated(qs, make_other())


def test_aggregate_hits_are_right(gadgets):
    category, tag, rows = gadgets

    def aggregate():
        return Gadget.objects.cache().filter(category=category).aggregate(
            n=Count('*'), pk=Count('pk'), low=Min('price'), spread=Variance('rating'))
    expected = {'n': 3, 'pk': 3, 'low': Decimal('0.50'), 'spread': pytest.approx(1 / 6)}
    assert warm(aggregate) == expected
    assert queries(aggregate) == (expected, 0)


def test_aggregates_differing_in_default_or_filter_do_not_share_a_key(gadgets):
    category, tag, rows = gadgets

    def aggregate(qs, **kwargs):
        return lambda: qs.cache().aggregate(**kwargs)
    nothing, some = Gadget.objects.filter(title='none'), Gadget.objects.filter(category=category)
    # warm() asserts a miss first: the second of each pair isn't served the first's result
    assert warm(aggregate(nothing, s=Sum('stock'))) == {'s': None}
    assert warm(aggregate(nothing, s=Sum('stock', default=0))) == {'s': 0}
    assert warm(aggregate(some, s=Sum('stock'))) == {'s': 3}
    assert warm(aggregate(some, s=Sum('stock', filter=Exact(F('stock'), 1)))) == {'s': 1}
    assert warm(aggregate(some, s=Sum('stock', distinct=True))) == {'s': 3}
    # a Q() has no fingerprint: not cached, and right
    assert queries(aggregate(some, s=Sum('stock', filter=Q(stock=2)))) == ({'s': 2}, 1)


def test_a_hit_keeps_the_order_of_the_names(gadgets):
    qs = Gadget.objects.cache().filter(category=gadgets[0])
    one = warm(lambda: qs.aggregate(s=Sum('stock'), m=Max('stock')))
    other = warm(lambda: qs.aggregate(m=Max('stock'), s=Sum('stock')))
    assert list(one) == ['s', 'm'] and list(other) == ['m', 's']


def test_an_aggregate_over_a_transform_is_cached_per_current_time_zone():
    """Max('created__date') compiles in the current time zone: a date from another zone's
    entry would be wrong."""
    if not connection.features.has_zoneinfo_database:
        pytest.skip('the database has no time zone definitions (MySQL without its tables)')
    # 11:00 UTC on the 1st is the 2nd in Auckland (UTC+13 in January)
    Gadget.objects.create(title='g', category=Category.objects.create(title='c'),
                          created=datetime.datetime(2024, 1, 1, 11, tzinfo=datetime.timezone.utc))
    qs = Gadget.objects.cache()
    assert qs.aggregate(day=Max('created__date')) == {'day': datetime.date(2024, 1, 1)}
    with timezone.override('Pacific/Auckland'):
        assert qs.aggregate(day=Max('created__date')) == {'day': datetime.date(2024, 1, 2)}
    # each zone has its own entry: in UTC again, a hit
    assert queries(lambda: qs.aggregate(day=Max('created__date'))) == ({'day': datetime.date(2024, 1, 1)}, 0)


def test_a_fresh_query_is_fingerprinted_as_the_walk_would_and_loses_it_when_changed():
    """A manager's fresh Query is recognized by comparing its state with a fresh one's."""
    query = Post.objects.all().query
    assert query_fingerprint(query) == marshal.dumps(
        (fingerprint.query._walk_query(query, query.__dict__), fingerprint.values._settings()), 2).decode('latin-1')
    fresh = query_fingerprint(query)
    query.add_q(Q(pk=1))  # the same Query object, changed in place
    assert query_fingerprint(query) not in (None, fresh)
    assert query_fingerprint(Category.objects.all().query) != fresh  # per model
