"""cacheops.utils.model_family and cacheops.transaction.is_sql_dirty."""
from datetime import datetime, timedelta, timezone
from decimal import Decimal
import uuid
from zoneinfo import ZoneInfo

import pytest

from cacheops.transaction import is_sql_dirty
from cacheops.utils import model_family
from .models import (
    AbstractIssue, AbstractThing, Assorted, Category, Magazine, Media, Movie, OwnedVehicle, Owner,
    Post, ProxyMagazine, ProxyPost, Publication, ThingA, ThingB, Vehicle,
)


def test_plain_model_family_is_itself():
    assert set(model_family(Category)) == {Category}


def test_proxy_and_concrete_are_family():
    assert set(model_family(Post)) == {Post, ProxyPost}
    assert set(model_family(ProxyPost)) == {Post, ProxyPost}


def test_multi_table_inheritance_is_family():
    assert set(model_family(Media)) == {Media, Movie}
    assert set(model_family(Movie)) == {Media, Movie}


def test_multi_table_children_through_an_abstract_model_are_family():
    family = {Publication, Magazine, ProxyMagazine}
    assert model_family(Publication) == family
    assert model_family(Magazine) == family
    assert model_family(ProxyMagazine) == family


def test_a_child_of_two_concrete_parents_is_family_of_each():
    assert model_family(OwnedVehicle) == {Owner, Vehicle, OwnedVehicle}
    assert model_family(Owner) == {Owner, OwnedVehicle}
    assert model_family(Vehicle) == {Vehicle, OwnedVehicle}


def test_abstract_model_has_no_family():
    assert set(model_family(AbstractThing)) == set()
    assert model_family(AbstractIssue) == set()


def test_children_of_an_abstract_model_are_not_family():
    assert set(model_family(ThingA)) == {ThingA}
    assert set(model_family(ThingB)) == {ThingB}


@pytest.mark.parametrize('sql', [
    'SELECT * FROM tests_post',
    'SELECT id FROM tests_post WHERE title = %s',
    'select id from tests_post',
    'SELECT id FROM tests_post;',
    'SELECT 1; SELECT id FROM tests_post',
    '(SELECT id FROM tests_post) UNION (SELECT id FROM tests_post)',
    'EXPLAIN SELECT id FROM tests_post',
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
    # statements sent together as one query (psycopg 3 runs them)
    'SELECT title FROM tests_post WHERE id = %s FOR NO KEY UPDATE; UPDATE tests_post SET title = %s',
    'SELECT 1; DELETE FROM tests_post',
    # any statement after the first counts, DDL and procedures too
    'SET LOCAL statement_timeout = 0; CALL move_post(%s, %s)',
    'SELECT 1; CREATE TABLE tests_other (id integer)',
    '(SELECT 1); DELETE FROM tests_post',
    "SELECT 'a;b'; REFRESH MATERIALIZED VIEW tests_view",
    # a ';' in a literal or a comment of one statement
    "WITH agg AS (SELECT string_agg(title, ';') AS t FROM tests_post) UPDATE tests_category SET title = agg.t FROM agg",
    "/* nightly fix; */ UPDATE tests_category SET title = 'written'",
    'SELECT 1; /* ; */ DELETE FROM tests_post',
    'EXPLAIN ANALYZE DELETE FROM tests_post',
])
def test_writes_are_dirty(sql):
    assert is_sql_dirty(sql)


def test_a_foreign_key_to_a_string_key_narrows_except_on_mysql():
    from cacheops.utils import is_granular_field
    from .models import City
    field = City._meta.get_field('country')
    assert is_granular_field(field, 'postgresql')
    assert not is_granular_field(field, 'mysql')  # compared by collation, like the key itself


# An update's new row reuses the strings of its old row's equal values: the same rows
# as computed one by one.

def _assorted_columns():
    from cacheops.utils import written_granular_columns
    from django.db import connection
    (_, columns), = written_granular_columns(Assorted, connection.vendor)
    return columns


@pytest.mark.parametrize('old, new', [
    ({'id': 1, 'num': 1, 'label': 'a'}, {'id': 1, 'num': 1, 'label': 'b'}),
    ({'id': 1, 'num': 1}, {'id': 1, 'num': True}),  # equal, of another type
    ({'id': 1, 'decimal': Decimal('1.10')}, {'id': 1, 'decimal': Decimal('1.1')}),
    ({'id': 1, 'datetime': datetime(2024, 1, 1, 12, tzinfo=timezone.utc)},
     {'id': 1, 'datetime': datetime(2024, 1, 1, 13, tzinfo=timezone(timedelta(hours=1)))}),
    ({'id': 1, 'num': None}, {'id': 1, 'num': 0}),
    ({'id': 1, 'num': 2}, {'id': 1}),  # not loaded in the new one
    ({'id': 1}, {'id': 1, 'num': 2}),
    ({'id': None, 'num': 2}, {'id': None, 'num': 2}),  # a pk not known yet
    # equal clock times in a repeated hour, different instants
    ({'id': 1, 'datetime': datetime(2024, 11, 3, 1, 30, tzinfo=ZoneInfo('America/Chicago'))},
     {'id': 1, 'datetime': datetime(2024, 11, 3, 1, 30, fold=1, tzinfo=ZoneInfo('America/Chicago'))}),
    ({'id': 1, 'datetime': datetime(2024, 11, 3, 1, 30)}, {'id': 1, 'datetime': datetime(2024, 11, 3, 1, 30, fold=1)}),
])
def test_rows_of_an_update_are_the_rows_one_by_one(old, new):
    from cacheops.invalidation import _rows_of, row_of
    columns = _assorted_columns()
    assert _rows_of(columns, [old, new]) == [row_of(columns, old), row_of(columns, new)]
    assert _rows_of(columns, [new, old]) == [row_of(columns, new), row_of(columns, old)]


def test_an_equal_value_of_the_same_type_is_not_prepared_again(monkeypatch):
    from cacheops import invalidation, keys
    from cacheops.invalidation import row_of
    columns = _assorted_columns()
    prepared = []
    original = keys.conj_value
    monkeypatch.setattr(keys, 'conj_value', lambda value: prepared.append(value) or original(value))
    code = uuid.UUID(int=7)
    rows = invalidation._rows_of(columns, [{'id': 1, 'num': 5, 'uuid': code}, {'id': 1, 'num': 6, 'uuid': code}])
    assert len(prepared) == 3 + 1  # id, num and uuid of the old row; the new num
    assert rows == [{'id': '1', 'num': '5', 'uuid': row_of(columns, {'uuid': code})['uuid']},
                    {'id': '1', 'num': '6', 'uuid': row_of(columns, {'uuid': code})['uuid']}]


# Per-process memos: one policy, utils.remember (a full memo is emptied)

def test_memos_of_names_and_models_are_bounded_alike(monkeypatch):
    """Names may come from requests, models be made on the fly: each memo keyed by them
    is filled through utils.remember, so none outgrows utils.MEMO_SIZE."""
    from cacheops import chain, serialization, utils
    from cacheops.fingerprint import Unknown, models as fingerprint_models, ordering
    monkeypatch.setattr(utils, 'MEMO_SIZE', 3)
    memos = [chain._filter_fields, ordering._plain_names, chain._recordable_classes,
             fingerprint_models._registered]
    for i in range(10):
        assert chain._filter_field(Post, 'nothing%d' % i) is None
        assert ordering.plain_ordering_name(Post, 'nothing%d' % i) is False
        assert chain.recordable_class(type('QuerySet%d' % i, (Post.objects._queryset_class,), {}))
        with pytest.raises(Unknown):
            fingerprint_models._model(type('Unregistered%d' % i, (), {}))
        assert all(len(memo) <= 3 for memo in memos), [len(memo) for memo in memos]
    # and what was just remembered is there
    assert chain._filter_fields[Post, 'nothing9'] is None
    assert ordering._plain_names[Post, 'nothing9'] is False
    assert serialization._layout(Post) is serialization._layouts[Post]
