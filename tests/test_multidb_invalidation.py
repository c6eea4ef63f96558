"""Writes through using()/save(using=...) invalidate that database's entries, m2m
changes too. Most tests here use a per-database CACHEOPS_PREFIX, which keeps each
database's entries apart: an invalidation run for the wrong database then misses."""
import pytest
from django.db import connections, transaction
from django.test import override_settings
from django.test.utils import CaptureQueriesContext

from .models import Brand, Category, Label, Post, Product, ProductTag, Tag, Task

pytestmark = pytest.mark.django_db(databases=['default', 'slave'])


def per_db(query):
    return 'db-%s:' % query.db


per_db_prefix = override_settings(CACHEOPS_PREFIX=per_db)


def queries(func, using):
    with CaptureQueriesContext(connections[using]) as ctx:
        result = func()
    return result, len(ctx)


def warm(func, using):
    result = func()
    assert queries(func, using) == (result, 0)
    return result


def titles(using, **filters):
    return [p.title for p in Post.objects.cache().using(using).filter(**filters).order_by('pk')]


def on_both(func):
    """func(using) warmed on both databases; the per-db prefix gives each its entry."""
    return {db: warm(lambda: func(db), db) for db in ('default', 'slave')}


def fresh(func, using):
    """func(using) reads the database: its entry was invalidated."""
    result, count = queries(lambda: func(using), using)
    assert count >= 1, 'still cached on %s' % using
    return result


def cached(func, using):
    """func(using) is still cached there."""
    result, count = queries(lambda: func(using), using)
    assert count == 0, 'invalidated on %s' % using
    return result


@pytest.fixture
def cats():
    """A category with the same pk on each database."""
    return {db: Category.objects.using(db).create(title='c') for db in ('default', 'slave')}


# Model events

@per_db_prefix
def test_save_using(cats):
    on_both(titles)
    Post(title='s', category_id=cats['slave'].pk).save(using='slave')
    assert fresh(titles, 'slave') == ['s']
    assert cached(titles, 'default') == []


@per_db_prefix
def test_create_through_using(cats):
    on_both(titles)
    Post.objects.using('slave').create(title='s', category=cats['slave'])
    assert fresh(titles, 'slave') == ['s']
    assert cached(titles, 'default') == []


@per_db_prefix
def test_update_of_an_object_read_from_another_database(cats):
    other = Category.objects.using('slave').create(title='o')
    post = Post.objects.using('slave').create(title='s', category=cats['slave'])
    in_cat = lambda db: titles(db, category_id=cats[db].pk)  # noqa: E731
    in_other = lambda db: titles(db, category_id=other.pk)  # noqa: E731
    assert warm(lambda: in_cat('slave'), 'slave') == ['s']
    assert warm(lambda: in_other('slave'), 'slave') == []
    post = Post.objects.using('slave').get(pk=post.pk)
    post.category = other
    post.save()  # goes to the database it was read from
    assert fresh(in_cat, 'slave') == []       # by the old value
    assert fresh(in_other, 'slave') == ['s']  # by the new value


@per_db_prefix
def test_delete(cats):
    post = Post.objects.using('slave').create(title='s', category=cats['slave'])
    on_both(titles)
    post.delete()
    assert fresh(titles, 'slave') == []
    assert cached(titles, 'default') == []


@per_db_prefix
def test_queryset_delete_and_bulk_create(cats):
    Post.objects.using('slave').create(title='s', category=cats['slave'])
    on_both(titles)
    Post.objects.using('slave').filter(title='s').delete()
    assert fresh(titles, 'slave') == []
    warm(lambda: titles('slave'), 'slave')
    Post.objects.using('slave').bulk_create([Post(title='b', category=cats['slave'])])
    assert fresh(titles, 'slave') == ['b']
    assert cached(titles, 'default') == []


@per_db_prefix
def test_set_null_on_delete(cats):
    """Deleting a category sets tasks' category to NULL without model events for them."""
    Task.objects.using('slave').create(title='t', category=cats['slave'])

    def tasks(db):
        return [t.title for t in Task.objects.cache().using(db).filter(category__isnull=True)]

    assert warm(lambda: tasks('slave'), 'slave') == []
    cats['slave'].delete()
    assert fresh(tasks, 'slave') == ['t']


# Many-to-many

@pytest.fixture
def brands():
    return {db: Brand.objects.using(db).create(name='b') for db in ('default', 'slave')}


@pytest.fixture
def labels():
    return {db: Label.objects.using(db).create(text='l') for db in ('default', 'slave')}


def labels_of(brand):
    return lambda db: [lb.text for lb in Label.objects.cache().using(db).filter(brands=brand.pk)]


def brands_of(label):
    return lambda db: [b.name for b in Brand.objects.cache().using(db).filter(labels=label.pk)]


@per_db_prefix
def test_m2m_add_remove_clear(brands, labels):
    brand, label = brands['slave'], labels['slave']
    on_both(labels_of(brand))
    brand.labels.add(label)
    assert fresh(labels_of(brand), 'slave') == ['l']
    assert cached(labels_of(brand), 'default') == []
    brand.labels.remove(label)
    assert fresh(labels_of(brand), 'slave') == []
    brand.labels.add(label)
    warm(lambda: labels_of(brand)('slave'), 'slave')
    brand.labels.clear()
    assert fresh(labels_of(brand), 'slave') == []


@per_db_prefix
def test_m2m_reverse_side_and_set(brands, labels):
    brand, label = brands['slave'], labels['slave']
    on_both(brands_of(label))
    label.brands.add(brand)
    assert fresh(brands_of(label), 'slave') == ['b']
    assert cached(brands_of(label), 'default') == []
    label.brands.set([])
    assert fresh(brands_of(label), 'slave') == []


@per_db_prefix
def test_m2m_through_model():
    product = Product.objects.using('slave').create(name='p')
    tag = Tag.objects.using('slave').create(name='t')

    def tags_of(db):
        return [t.name for t in Tag.objects.cache().using(db).filter(products=product.pk)]

    assert warm(lambda: tags_of('slave'), 'slave') == []
    product.tags.add(tag, through_defaults={'weight': 1})
    assert fresh(tags_of, 'slave') == ['t']
    ProductTag.objects.using('slave').filter(product=product).delete()
    assert fresh(tags_of, 'slave') == []


def test_m2m_on_another_database_without_prefix(brands, labels):
    """No prefix: the rows exist on 'slave' only, so only its alias finds what to invalidate."""
    brand = Brand.objects.using('slave').create(name='only on slave')
    label = labels['slave']
    assert warm(lambda: labels_of(brand)('slave'), 'slave') == []
    brand.labels.add(label)
    assert fresh(labels_of(brand), 'slave') == ['l']
    brand.labels.clear()
    assert fresh(labels_of(brand), 'slave') == []


# Transactions are per database

@per_db_prefix
@pytest.mark.django_db(transaction=True, databases=['default', 'slave'])
def test_a_transaction_on_one_database_does_not_delay_anothers_invalidation(cats):
    on_both(titles)
    with transaction.atomic(using='default'):
        Post.objects.using('slave').create(title='s', category=cats['slave'])
        assert fresh(titles, 'slave') == ['s']
    with transaction.atomic(using='slave'):
        Post.objects.using('slave').create(title='s2', category=cats['slave'])
        assert fresh(titles, 'slave') == ['s', 's2']  # dirty: the cache is off
        assert cached(titles, 'default') == []
    assert fresh(titles, 'slave') == ['s', 's2']  # invalidated at commit
    assert warm(lambda: titles('slave'), 'slave') == ['s', 's2']


@pytest.mark.parametrize('db', ['default', 'slave'])
def test_deleting_an_object_invalidates_queries_through_its_m2m_table(db):
    brand = Brand.objects.using(db).create(name='b')
    label = Label.objects.using(db).create(text='l')
    brand.labels.add(label)
    pk = brand.pk
    assert warm(lambda: labels_of(brand)(db), db) == ['l']
    brand.delete()  # its rows in tests_brand_labels are deleted without events
    assert fresh(labels_of(Brand(pk=pk)), db) == []
