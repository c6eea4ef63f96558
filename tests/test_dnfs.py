"""cacheops.tree.dnfs(qs): {db_table: [conjunction dict, ...]} - the
disjunctive normal form of the exact/in/isnull=True conditions per table."""
import uuid

import pytest
from django.db import connection
from django.db.models import Exists, OuterRef, Q

from cacheops.tree import dnfs
from .models import All, Assorted, Brand, Category, Extra, Label, Post, Task

pytestmark = pytest.mark.django_db

POST = Post._meta.db_table
ALL = All._meta.db_table
EXTRA = Extra._meta.db_table
CATEGORY = Category._meta.db_table
U = uuid.UUID(int=7)
# MySQL compares strings by collation ('a' = 'A' = 'a '), so an exact condition on a
# string column can't be matched against a row's value: it is not granular there.
STRINGS_GRANULAR = connection.vendor != 'mysql'


def normalized(result, raw=False):
    """Compare conjunctions regardless of their order. Unless raw, values are
    compared by their str() - test_values_keep_their_python_types checks types."""
    value = (lambda v: v) if raw else str
    return {table: sorted(sorted((k, value(v)) for k, v in conj.items()) for conj in conjs)
            for table, conjs in result.items()}


def check(qs, expected, raw=False):
    assert normalized(dnfs(qs), raw) == normalized(expected, raw)


def test_no_conditions():
    check(Post.objects.all(), {POST: [{}]})


def test_exact_conditions():
    check(All.objects.filter(tag=1), {ALL: [{'tag': 1}]})
    check(All.objects.filter(tag=1, category_id=2), {ALL: [{'tag': 1, 'category_id': 2}]})


def test_exact_condition_on_string_column():
    if STRINGS_GRANULAR:
        check(Post.objects.filter(title='a', category_id=2), {POST: [{'title': 'a', 'category_id': 2}]})
    else:
        check(Post.objects.filter(title='a', category_id=2), {POST: [{'category_id': 2}]})


def test_foreign_key_gives_column_and_raw_value():
    cat = Category.objects.create(title='c')
    check(Post.objects.filter(category=cat), {POST: [{'category_id': cat.pk}]})
    check(Post.objects.filter(category_id=cat.pk), {POST: [{'category_id': cat.pk}]})
    check(Post.objects.filter(category__pk=cat.pk), {POST: [{'category_id': cat.pk}]})


def test_or_gives_several_conjunctions():
    check(All.objects.filter(Q(tag=1) | Q(tag=2)),
          {ALL: [{'tag': 1}, {'tag': 2}]})
    check(All.objects.filter(Q(tag=1) | Q(tag=2), category_id=1),
          {ALL: [{'tag': 1, 'category_id': 1}, {'tag': 2, 'category_id': 1}]})
    check(All.objects.filter(Q(tag=1) | Q(category_id=2)),
          {ALL: [{'tag': 1}, {'category_id': 2}]})


def test_in_is_a_disjunction():
    check(Post.objects.filter(category_id__in=[1, 2]),
          {POST: [{'category_id': 1}, {'category_id': 2}]})


def test_isnull_true():
    check(Task.objects.filter(category__isnull=True),
          {Task._meta.db_table: [{'category_id': None}]})


def test_other_lookups_give_no_condition():
    check(Post.objects.filter(title__startswith='a'), {POST: [{}]})
    check(Post.objects.filter(pk__gt=1), {POST: [{}]})
    check(Task.objects.filter(category__isnull=False), {Task._meta.db_table: [{}]})
    check(Post.objects.exclude(title='a'), {POST: [{}]})


def test_non_granular_condition_is_dropped_from_conjunction():
    check(Post.objects.filter(title__startswith='a', category_id=1), {POST: [{'category_id': 1}]})


def test_text_field_condition_is_not_granular():
    check(Post.objects.filter(text='a'), {POST: [{}]})
    check(Assorted.objects.filter(text='a', num=1), {Assorted._meta.db_table: [{'num': 1}]})


def test_joined_tables_are_listed():
    check(Extra.objects.filter(post__category_id=3), {EXTRA: [{}], POST: [{'category_id': 3}]})
    result = dnfs(Post.objects.filter(category__title='x'))
    assert set(result) == {POST, CATEGORY}
    assert normalized(result)[POST] == [[]]


def test_reverse_join():
    check(Post.objects.filter(extra__tag=5), {POST: [{}], EXTRA: [{'tag': 5}]})
    check(Category.objects.filter(posts__category_id=3), {CATEGORY: [{}], POST: [{'category_id': 3}]})


def test_multi_table_child_lists_parent_table():
    from .models import Media, Movie
    result = dnfs(Movie.objects.all())
    assert set(result) == {Movie._meta.db_table, Media._meta.db_table}


def test_m2m_join_lists_through_table():
    through = Brand.labels.through._meta.db_table
    result = dnfs(Label.objects.filter(brands=1))
    assert set(result) == {Label._meta.db_table, through}
    assert normalized(result)[through] == normalized({through: [{'brand_id': 1}]})[through]


def test_subquery_tables_are_listed():
    result = dnfs(Post.objects.filter(category__in=Category.objects.filter(title='x')))
    assert POST in result and CATEGORY in result
    result = dnfs(Category.objects.filter(
        Exists(Extra.objects.filter(post__category=OuterRef('pk')))))
    assert {CATEGORY, Extra._meta.db_table} <= set(result)


def test_values_keep_their_python_types():
    check(Post.objects.filter(category_id=3), {POST: [{'category_id': 3}]}, raw=True)
    check(Post.objects.filter(visible=True), {POST: [{'visible': True}]}, raw=True)
    check(Task.objects.filter(category=None), {Task._meta.db_table: [{'category_id': None}]}, raw=True)


def test_values_are_prepared_by_the_field():
    # equal conditions written differently give the same conjunction
    assert dnfs(Post.objects.filter(visible=1)) == dnfs(Post.objects.filter(visible=True))
    assert dnfs(Assorted.objects.filter(num='5')) == dnfs(Assorted.objects.filter(num=5))
    assert dnfs(Assorted.objects.filter(uuid=str(U))) == dnfs(Assorted.objects.filter(uuid=U))


def test_extra_tables_are_listed():
    # extra(tables=) puts them in the FROM clause: rows there decide what the query gives
    qs = Post.objects.extra(tables=[CATEGORY], where=[f'{CATEGORY}.id = {POST}.category_id'])
    assert normalized(dnfs(qs))[CATEGORY] == [[]]


@pytest.mark.django_db(transaction=True)
def test_a_write_to_an_extra_table_invalidates():
    category = Category.objects.create(title='a')
    Post.objects.create(title='p', category=category)
    qs = Post.objects.cache().extra(
        tables=[CATEGORY], where=[f"{CATEGORY}.id = {POST}.category_id", f"{CATEGORY}.title = 'a'"])

    def titles():
        return [p.title for p in qs.all()]
    assert titles() == ['p']
    category.title = 'b'
    category.save()
    assert titles() == [], 'stale: the write to the extra table left the entry'
