"""cacheops.utils.model_family and cacheops.transaction.is_sql_dirty."""
import pytest

from cacheops.transaction import is_sql_dirty
from cacheops.utils import model_family
from .models import AbstractThing, Category, Media, Movie, Post, ProxyPost, ThingA, ThingB


def test_plain_model_family_is_itself():
    assert set(model_family(Category)) == {Category}


def test_proxy_and_concrete_are_family():
    assert set(model_family(Post)) == {Post, ProxyPost}
    assert set(model_family(ProxyPost)) == {Post, ProxyPost}


def test_multi_table_inheritance_is_family():
    assert set(model_family(Media)) == {Media, Movie}
    assert set(model_family(Movie)) == {Media, Movie}


def test_abstract_model_has_no_family():
    assert set(model_family(AbstractThing)) == set()


def test_children_of_an_abstract_model_are_not_family():
    assert set(model_family(ThingA)) == {ThingA}
    assert set(model_family(ThingB)) == {ThingB}


@pytest.mark.parametrize('sql', [
    'SELECT * FROM tests_post',
    'SELECT id FROM tests_post WHERE title = %s',
    'select id from tests_post',
])
def test_select_is_not_dirty(sql):
    assert not is_sql_dirty(sql)


@pytest.mark.parametrize('sql', [
    'INSERT INTO tests_post (title) VALUES (%s)',
    'UPDATE tests_post SET title = %s',
    'DELETE FROM tests_post WHERE id = %s',
    'insert into tests_post (title) values (%s)',
    'update tests_post set title = %s',
    'delete from tests_post',
])
def test_writes_are_dirty(sql):
    assert is_sql_dirty(sql)


def test_a_foreign_key_to_a_string_key_narrows_except_on_mysql():
    from cacheops.utils import is_granular_field
    from .models import City
    field = City._meta.get_field('country')
    assert is_granular_field(field, 'postgresql')
    assert not is_granular_field(field, 'mysql')  # compared by collation, like the key itself
