"""Many-to-many changes invalidate: add/remove/clear/set from both sides, and
changes made through an explicit through model."""
from unittest import mock

import pytest

from cacheops import invalidation
from .models import Brand, Label, Product, ProductTag, Tag
from .utils import warm

pytestmark = pytest.mark.django_db


@pytest.fixture
def brand():
    return Brand.objects.create(name='acme')


@pytest.fixture
def labels():
    return Label.objects.create(text='red'), Label.objects.create(text='blue')


# ordered in SQL, so that these are not the same queries as the related managers'
def labels_of(brand):
    return [label.text for label in Label.objects.cache().filter(brands=brand).order_by('text')]


def brands_of(label):
    return [b.name for b in Brand.objects.cache().filter(labels=label).order_by('name')]


def related_labels(brand):
    return sorted(label.text for label in brand.labels.all().cache())


def test_related_manager_queries_can_be_cached(brand, labels, django_assert_num_queries):
    brand.labels.add(labels[0])
    with django_assert_num_queries(1):
        assert related_labels(brand) == ['red']
    with django_assert_num_queries(0):
        assert related_labels(brand) == ['red']


def test_add_invalidates_both_sides(brand, labels, django_assert_num_queries):
    assert warm(lambda: labels_of(brand)) == []
    assert warm(lambda: brands_of(labels[0])) == []
    assert warm(lambda: related_labels(brand)) == []
    brand.labels.add(labels[0])
    with django_assert_num_queries(1):
        assert labels_of(brand) == ['red']
    with django_assert_num_queries(1):
        assert brands_of(labels[0]) == ['acme']
    with django_assert_num_queries(1):
        assert related_labels(brand) == ['red']


def test_add_from_reverse_side_invalidates(brand, labels, django_assert_num_queries):
    assert warm(lambda: labels_of(brand)) == []
    assert warm(lambda: related_labels(brand)) == []
    labels[1].brands.add(brand)
    with django_assert_num_queries(1):
        assert labels_of(brand) == ['blue']
    with django_assert_num_queries(1):
        assert related_labels(brand) == ['blue']


def test_remove_invalidates(brand, labels, django_assert_num_queries):
    brand.labels.add(*labels)
    assert warm(lambda: labels_of(brand)) == ['blue', 'red']
    assert warm(lambda: brands_of(labels[0])) == ['acme']
    brand.labels.remove(labels[0])
    with django_assert_num_queries(1):
        assert labels_of(brand) == ['blue']
    with django_assert_num_queries(1):
        assert brands_of(labels[0]) == []


def test_remove_from_reverse_side_invalidates(brand, labels, django_assert_num_queries):
    brand.labels.add(*labels)
    assert warm(lambda: labels_of(brand)) == ['blue', 'red']
    labels[1].brands.remove(brand)
    with django_assert_num_queries(1):
        assert labels_of(brand) == ['red']


def test_clear_invalidates(brand, labels, django_assert_num_queries):
    brand.labels.add(*labels)
    assert warm(lambda: labels_of(brand)) == ['blue', 'red']
    assert warm(lambda: brands_of(labels[1])) == ['acme']
    brand.labels.clear()
    with django_assert_num_queries(1):
        assert labels_of(brand) == []
    with django_assert_num_queries(1):
        assert brands_of(labels[1]) == []


def test_clear_from_reverse_side_invalidates(brand, labels, django_assert_num_queries):
    other = Brand.objects.create(name='other')
    brand.labels.add(labels[0])
    other.labels.add(labels[0])
    assert warm(lambda: labels_of(brand)) == ['red']
    assert warm(lambda: labels_of(other)) == ['red']
    labels[0].brands.clear()
    with django_assert_num_queries(1):
        assert labels_of(brand) == []
    with django_assert_num_queries(1):
        assert labels_of(other) == []


def test_set_invalidates(brand, labels, django_assert_num_queries):
    brand.labels.add(labels[0])
    assert warm(lambda: labels_of(brand)) == ['red']
    brand.labels.set([labels[1]])
    with django_assert_num_queries(1):
        assert labels_of(brand) == ['blue']


def test_deleting_a_related_object_invalidates(brand, labels, django_assert_num_queries):
    brand.labels.add(*labels)
    assert warm(lambda: labels_of(brand)) == ['blue', 'red']
    labels[0].delete()
    with django_assert_num_queries(1):
        assert labels_of(brand) == ['blue']


def test_m2m_change_of_another_object_does_not_invalidate(brand, labels, django_assert_num_queries):
    other = Brand.objects.create(name='other')
    brand.labels.add(labels[0])
    assert warm(lambda: labels_of(brand)) == ['red']
    other.labels.add(labels[1])
    with django_assert_num_queries(0):
        assert labels_of(brand) == ['red']


# through model

@pytest.fixture
def product():
    return Product.objects.create(name='phone')


@pytest.fixture
def tags():
    return Tag.objects.create(name='new'), Tag.objects.create(name='cheap')


def tags_of(product):
    return [t.name for t in Tag.objects.cache().filter(products=product).order_by('name')]


def products_of(tag):
    return [p.name for p in Product.objects.cache().filter(tags=tag).order_by('name')]


def test_creating_through_object_invalidates(product, tags, django_assert_num_queries):
    assert warm(lambda: tags_of(product)) == []
    assert warm(lambda: products_of(tags[0])) == []
    ProductTag.objects.create(product=product, tag=tags[0], weight=3)
    with django_assert_num_queries(1):
        assert tags_of(product) == ['new']
    with django_assert_num_queries(1):
        assert products_of(tags[0]) == ['phone']


def test_through_object_update_invalidates(product, tags, django_assert_num_queries):
    link = ProductTag.objects.create(product=product, tag=tags[0], weight=3)
    heavy = lambda: sorted(t.name for t in Tag.objects.cache().filter(producttag__weight=3))
    assert warm(heavy) == ['new']
    link.weight = 1
    link.save()
    with django_assert_num_queries(1):
        assert heavy() == []


def test_deleting_through_object_invalidates(product, tags, django_assert_num_queries):
    link = ProductTag.objects.create(product=product, tag=tags[0])
    assert warm(lambda: tags_of(product)) == ['new']
    link.delete()
    with django_assert_num_queries(1):
        assert tags_of(product) == []


def test_add_with_through_defaults_invalidates(product, tags, django_assert_num_queries):
    assert warm(lambda: tags_of(product)) == []
    product.tags.add(tags[1], through_defaults={'weight': 7})
    with django_assert_num_queries(1):
        assert tags_of(product) == ['cheap']
    assert ProductTag.objects.get().weight == 7


def test_remove_and_clear_through_model_invalidate(product, tags, django_assert_num_queries):
    product.tags.add(*tags)
    assert warm(lambda: tags_of(product)) == ['cheap', 'new']
    product.tags.remove(tags[0])
    with django_assert_num_queries(1):
        assert tags_of(product) == ['cheap']
    tags[1].products.clear()
    with django_assert_num_queries(1):
        assert tags_of(product) == []


# Test suites patch cacheops.invalidation.invalidate_dict, looked up when an m2m change
# invalidates, and expect a call per through row added or removed

M2M_CHANGES = {
    'add': lambda brand, labels: brand.labels.add(*labels),
    'add-reverse': lambda brand, labels: [label.brands.add(brand) for label in labels],
    'remove': lambda brand, labels: brand.labels.remove(*labels),
    'clear': lambda brand, labels: brand.labels.clear(),
}


@pytest.mark.parametrize('change', list(M2M_CHANGES))
def test_m2m_changes_invalidate_through_invalidate_dict(brand, labels, change):
    if not change.startswith('add'):
        brand.labels.add(*labels)
    with mock.patch('cacheops.invalidation.invalidate_dict', wraps=invalidation.invalidate_dict) as spy:
        M2M_CHANGES[change](brand, labels)
    through = Brand.labels.through
    calls = sorted(((args[0], sorted(args[1].items()), kwargs) for args, kwargs in spy.call_args_list),
                   key=repr)
    assert calls == sorted(((through, [('brand_id', brand.pk), ('label_id', label.pk)], {'using': 'default'})
                            for label in labels), key=repr)
