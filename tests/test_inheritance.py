"""Proxy models and multi-table inheritance: a change through one model of a
family invalidates the cached queries of the others."""
import pytest

from .models import Category, Media, Movie, Post, ProxyPost
from .utils import warm

pytestmark = pytest.mark.django_db


@pytest.fixture
def cat():
    return Category.objects.create(title='c')


def post_titles(model, cat):
    return sorted(p.title for p in model.objects.cache().filter(category=cat))


def test_proxy_change_invalidates_concrete_queries(cat, django_assert_num_queries):
    assert warm(lambda: post_titles(Post, cat)) == []
    ProxyPost.objects.create(title='via proxy', category=cat)
    with django_assert_num_queries(1):
        assert post_titles(Post, cat) == ['via proxy']


def test_concrete_change_invalidates_proxy_queries(cat, django_assert_num_queries):
    assert warm(lambda: post_titles(ProxyPost, cat)) == []
    post = Post.objects.create(title='concrete', category=cat)
    with django_assert_num_queries(1):
        assert post_titles(ProxyPost, cat) == ['concrete']
    post.title = 'renamed'
    post.save()
    with django_assert_num_queries(1):
        assert post_titles(ProxyPost, cat) == ['renamed']
    post.delete()
    with django_assert_num_queries(1):
        assert post_titles(ProxyPost, cat) == []


def test_proxy_update_and_delete_invalidate_concrete(cat, django_assert_num_queries):
    proxy = ProxyPost.objects.create(title='p', category=cat)
    assert warm(lambda: post_titles(Post, cat)) == ['p']
    proxy.title = 'q'
    proxy.save()
    with django_assert_num_queries(1):
        assert post_titles(Post, cat) == ['q']
    proxy.delete()
    with django_assert_num_queries(1):
        assert post_titles(Post, cat) == []


def test_proxy_queries_give_proxy_instances(cat, django_assert_num_queries):
    Post.objects.create(title='p', category=cat)
    assert warm(lambda: [type(p) for p in Post.objects.cache().filter(category=cat)]) == [Post]
    with django_assert_num_queries(1):
        assert [type(p) for p in ProxyPost.objects.cache().filter(category=cat)] == [ProxyPost]
    with django_assert_num_queries(0):
        assert [type(p) for p in ProxyPost.objects.cache().filter(category=cat)] == [ProxyPost]
    with django_assert_num_queries(0):
        assert [type(p) for p in Post.objects.cache().filter(category=cat)] == [Post]


def test_child_save_invalidates_parent_queries(django_assert_num_queries):
    def names():
        return sorted(m.name for m in Media.objects.cache().filter(name='alien'))
    assert warm(names) == []
    movie = Movie.objects.create(name='alien', year=1979)
    with django_assert_num_queries(1):
        assert names() == ['alien']
    movie.year = 1980
    movie.save()
    assert warm(lambda: Media.objects.cache().count()) == 1
    movie.name = 'aliens'
    movie.save()
    with django_assert_num_queries(1):
        assert names() == []
    with django_assert_num_queries(1):
        assert Media.objects.cache().count() == 1


def test_child_delete_invalidates_parent_queries(django_assert_num_queries):
    movie = Movie.objects.create(name='alien', year=1979)
    assert warm(lambda: Media.objects.cache().count()) == 1
    movie.delete()
    with django_assert_num_queries(1):
        assert Media.objects.cache().count() == 0


def test_parent_change_invalidates_child_queries(django_assert_num_queries):
    movie = Movie.objects.create(name='alien', year=1979)
    def names():
        return sorted(m.name for m in Movie.objects.cache().all())
    assert warm(names) == ['alien']
    media = Media.objects.get(pk=movie.pk)
    media.name = 'aliens'
    media.save()
    with django_assert_num_queries(1):
        assert names() == ['aliens']


def test_child_query_by_own_field_invalidated_by_child_save(django_assert_num_queries):
    movie = Movie.objects.create(name='alien', year=1979)
    def names():
        return sorted(m.name for m in Movie.objects.cache().filter(year=1979))
    assert warm(names) == ['alien']
    movie.name = 'aliens'
    movie.save()
    with django_assert_num_queries(1):
        assert names() == ['aliens']


def test_a_second_concrete_parent_is_invalidated_by_its_own_key():
    from .models import Owner, OwnedVehicle, Vehicle
    Owner.objects.create()
    Owner.objects.create()  # the child's owner_id is now ahead of its vehicle_id
    child = OwnedVehicle.objects.create(wheels=4)
    assert child.owner_id != child.vehicle_id

    def four_wheeled():
        return list(Vehicle.objects.cache().filter(vehicle_id=child.vehicle_id, wheels=4)
                    .values_list('vehicle_id', flat=True))
    assert warm(four_wheeled) == [child.vehicle_id]
    child = OwnedVehicle.objects.get(pk=child.pk)
    child.wheels = 3
    child.save()
    assert four_wheeled() == []
