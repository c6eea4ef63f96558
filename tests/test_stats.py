"""cacheops.stats(): this process' hits, misses, stores and invalidations, per model and
per cached function, and stats(reset=True); cache_read passes the key read."""
import gc
import weakref

import pytest

import cacheops
from cacheops import cached, cached_as, invalidate_all, invalidate_model, invalidate_obj
from cacheops.signals import cache_read
from .models import Category, Post

pytestmark = pytest.mark.django_db

ZERO = {'hits': 0, 'misses': 0, 'stores': 0, 'invalidations': 0}


def counts(**given):
    return {**ZERO, **given}


@pytest.fixture(autouse=True)
def fresh_stats():
    """Every test counts from zero: what the tests before it counted is taken away."""
    cacheops.stats(reset=True)


def test_stats_is_exported_with_its_shape():
    assert 'stats' in cacheops.__all__
    assert cacheops.stats() == {'models': {}, 'functions': {}, 'total': ZERO}


def test_a_queryset_miss_stores_then_hits():
    cat = Category.objects.create(title='a')
    cacheops.stats(reset=True)  # the create's invalidation
    for _ in range(3):
        assert list(Category.objects.cache().filter(pk=cat.pk)) == [cat]
    found = cacheops.stats()
    assert found['models'] == {'tests.Category': counts(hits=2, misses=1, stores=1)}
    assert found['total'] == counts(hits=2, misses=1, stores=1)


def test_each_model_counts_apart():
    cat = Category.objects.create(title='a')
    Post.objects.create(title='p', category=cat)
    cacheops.stats(reset=True)
    Category.objects.cache().count()
    Post.objects.cache().count()
    Post.objects.cache().count()
    models = cacheops.stats()['models']
    assert models['tests.Category'] == counts(misses=1, stores=1)
    assert models['tests.Post'] == counts(hits=1, misses=1, stores=1)


def test_invalidations_count_per_model_and_everything_in_the_total():
    cat = Category.objects.create(title='a')  # a create invalidates
    cat.title = 'b'
    cat.save()  # an update: its old and new rows, one invalidation
    invalidate_obj(cat)
    invalidate_model(Post)
    invalidate_all()
    found = cacheops.stats()
    assert found['models'] == {'tests.Category': counts(invalidations=3),
                               'tests.Post': counts(invalidations=1)}
    assert found['total'] == counts(invalidations=5)


def test_cached_as_counts_under_its_function():
    @cached_as(Category)
    def titles():
        return [c.title for c in Category.objects.all()]

    titles()
    titles()
    name = __name__ + '.test_cached_as_counts_under_its_function.<locals>.titles'
    assert cacheops.stats()['functions'] == {name: counts(hits=1, misses=1, stores=1)}


def test_the_simple_cache_counts_reads_stores_and_invalidations():
    @cached(timeout=60)
    def double(n):
        return n * 2

    assert double(2) == 4
    assert double(2) == 4
    double.invalidate(2)
    assert double(2) == 4
    name = __name__ + '.test_the_simple_cache_counts_reads_stores_and_invalidations.<locals>.double'
    assert cacheops.stats()['functions'] == {name: counts(hits=1, misses=2, stores=2, invalidations=1)}


def test_reset_returns_the_counts_and_starts_anew():
    Category.objects.cache().count()
    Category.objects.cache().count()
    taken = cacheops.stats(reset=True)
    assert taken['models'] == {'tests.Category': counts(hits=1, misses=1, stores=1)}
    assert cacheops.stats() == {'models': {}, 'functions': {}, 'total': ZERO}
    Category.objects.cache().count()  # still cached: counted from zero
    assert cacheops.stats()['models'] == {'tests.Category': counts(hits=1)}


def test_stats_without_reset_keeps_counting():
    Category.objects.cache().count()
    cacheops.stats()
    Category.objects.cache().count()
    assert cacheops.stats()['models']['tests.Category'] == counts(hits=1, misses=1, stores=1)


def test_a_read_of_the_cache_off_counts_nothing():
    Category.objects.nocache().count()
    list(Category.objects.all().nocache())
    assert cacheops.stats()['total'] == ZERO


def test_cache_read_is_given_the_key_read():
    keys = []

    def receiver(sender, key=None, **kwargs):
        keys.append(key)
    cache_read.connect(receiver)
    try:
        Category.objects.cache().count()
        Category.objects.cache().count()
    finally:
        cache_read.disconnect(receiver)
    assert len(keys) == 2 and keys[0] == keys[1]
    assert isinstance(keys[0], str) and keys[0]


class Point:
    def __init__(self, x):
        self.x = x


def test_a_cached_class_counts_as_a_function():
    cached(timeout=60)(Point)(1)
    name = __name__ + '.Point'
    assert cacheops.stats()['functions'] == {name: counts(misses=1, stores=1)}


def test_a_function_decorated_on_each_call_counts_as_one_and_is_not_kept_alive():
    made = []

    def view():
        @cached_as(Category)
        def titles():
            return list(Category.objects.values_list('title', flat=True))
        made.append(weakref.ref(titles.__wrapped__))  # the function itself, which counts are of
        return titles()

    for _ in range(3):
        view()
    gc.collect()
    assert [ref() for ref in made] == [None, None, None]
    name = __name__ + '.test_a_function_decorated_on_each_call_counts_as_one_and_is_not_kept_alive' \
        '.<locals>.view.<locals>.titles'
    assert cacheops.stats()['functions'] == {name: counts(hits=2, misses=1, stores=1)}

