"""Invariant 1 of docs/design.md with writers racing writers: invalidation knows the
values a row had when it was written, not those an instance or an earlier read had.

The interleaving that matters: writer A reads a row's old values; writer B moves the
row and commits; a reader caches B's version; then A writes. A's invalidation must
cover the values B left, or the reader's entry outlives both writes.

On PostgreSQL a save's UPDATE returns the old values itself (one statement); elsewhere,
and for the models it can't serve, the UPDATE is conditional on the values read before.
The conditional_updates fixture makes PostgreSQL take that path too.
"""
import threading
import time
from contextlib import contextmanager

import django
import pytest
from django.db import OperationalError, connection, connections, models, transaction
from django.db.models import F
from django.db.models.signals import post_save, pre_save
from django.test import override_settings
from django.test.utils import CaptureQueriesContext

from cacheops import rows
from cacheops.events import returning, saves
from tests.models import (Assorted, Category, Gadget, JsonDoc, Lossy, LossyIntegerField, Media,
                          Movie, Note, Post, ProxyPost, SelectOnSave)
from tests.utils import Worker, unseen_update

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def conditional_updates(monkeypatch):
    """Saves read the old values first and make the UPDATE conditional on them, on
    PostgreSQL too (where they would otherwise be one statement)."""
    monkeypatch.setattr(returning, 'saves_in_one_statement', lambda model, vendor: False)


@pytest.fixture(params=['as configured', 'conditional update'])
def either_save_path(request):
    """The test twice on PostgreSQL: saves in one statement, and conditional updates."""
    if request.param == 'conditional update':
        if connection.vendor != 'postgresql':
            pytest.skip('conditional updates are what runs anyway off PostgreSQL')
        request.getfixturevalue('conditional_updates')


def _skip_unless_one_statement():
    if connection.vendor != 'postgresql':
        pytest.skip('a save is one statement on PostgreSQL only')


def _cached(category):
    return [(p.pk, p.title) for p in Post.objects.filter(category=category).cache()]


def _actual(category):
    return [(p.pk, p.title) for p in Post.objects.filter(category=category).nocache()]


def _assert_cache_matches_database(*categories):
    for category in categories:
        assert _cached(category) == _actual(category), category.title


class _HeldAfterOldValuesRead:
    """Holds a save made in the thread named 'writer A' after cacheops' pre_save receiver
    ran (which reads the row's old values, or on PostgreSQL leaves them to the UPDATE) and
    before Django's UPDATE."""

    def __init__(self, model=Post):
        self.model = model
        self.read, self.go = threading.Event(), threading.Event()

    def __call__(self, sender, instance, **kwargs):
        if threading.current_thread().name == 'writer A' and not self.read.is_set():
            self.read.set()
            assert self.go.wait(10), 'the test never let writer A go on'

    def __enter__(self):
        pre_save.connect(self, sender=self.model, weak=False)  # after cacheops' receiver
        return self

    def __exit__(self, *exc):
        pre_save.disconnect(self, sender=self.model)


@contextmanager
def _running(func, name=None):
    """func() in a thread (named name) while the block runs, joined after it; an error it
    raised fails the test. The block lets it finish."""
    def run():
        try:
            func()
        finally:
            connection.close()
    thread = Worker(run, name=name)
    thread.start()
    try:
        yield
    finally:
        thread.join(10)


@contextmanager
def _writer_a_held(save, model=Post):
    """Runs save() in a thread named 'writer A', held after its old values were read while
    the with block runs (the other writer's turn), then let go; its errors fail the test."""
    with _HeldAfterOldValuesRead(model) as held, _running(save, 'writer A'):
        try:
            assert held.read.wait(10), 'writer A never read the old values'
            yield
        finally:
            held.go.set()


def _save_beside_an_uncommitted_child(category):
    """Save category while another transaction has inserted (not committed) a row with a
    foreign key to it, whose key check, made immediate, holds a key share lock on it: the
    save fails the test if it waits for that transaction."""
    inserted, go = threading.Event(), threading.Event()

    def inserter():
        try:
            with transaction.atomic():
                with connection.cursor() as cursor:  # Django's are deferred to the commit
                    cursor.execute('SET CONSTRAINTS ALL IMMEDIATE')
                Post.objects.create(title='p', category_id=category.pk)
                inserted.set()
                assert go.wait(10), 'the test never let the inserter go on'
        finally:
            inserted.set()
    with _running(inserter):
        try:
            assert inserted.wait(10)
            with transaction.atomic():
                with connection.cursor() as cursor:
                    cursor.execute("SET LOCAL lock_timeout = '2s'")
                try:
                    category.save()
                except OperationalError as e:
                    raise AssertionError('the save waited for the inserter: %s' % e)
        finally:
            go.set()


def _race(save_a, in_transaction=False):
    """Writer A saves with save_a(post) while B moves the post to c2 and a reader caches c2."""
    c1, c2, c3 = (Category.objects.create(title=t) for t in ('c1', 'c2', 'c3'))
    post = Post.objects.create(title='p', category=c1)

    def writer_a():
        instance = Post.objects.get(pk=post.pk)
        if in_transaction:
            with transaction.atomic():
                save_a(instance, c3)
        else:
            save_a(instance, c3)

    with _writer_a_held(writer_a):
        moved = Post.objects.get(pk=post.pk)
        moved.category, moved.title = c2, 'moved by B'
        moved.save()
        assert _cached(c2) == [(post.pk, 'moved by B')]  # the reader caches B's version
    return post, (c1, c2, c3)


def _move(instance, category):
    instance.category = category
    instance.save()


def _retitle(instance, category):
    instance.title = 'retitled by A'
    instance.save(update_fields=['title'])


@pytest.mark.parametrize('in_transaction', [False, True], ids=['autocommit', 'in a transaction'])
def test_a_save_racing_another_invalidates_the_values_the_other_left(in_transaction,
                                                                     either_save_path):
    if in_transaction and connection.vendor == 'sqlite':
        pytest.skip("SQLite can't interleave so: A's read in a transaction blocks B's commit")
    post, (c1, c2, c3) = _race(_move, in_transaction)
    assert Post.objects.nocache().get(pk=post.pk).category_id == c3.pk
    _assert_cache_matches_database(c1, c2, c3)


def test_a_save_of_other_fields_racing_a_move_invalidates_where_the_row_is():
    post, (c1, c2, c3) = _race(_retitle)
    assert _actual(c2) == [(post.pk, 'retitled by A')]
    _assert_cache_matches_database(c1, c2, c3)


def test_without_conditional_updates_the_same_race_leaves_a_stale_entry(conditional_updates,
                                                                        monkeypatch):
    monkeypatch.setattr(saves, '_unchanged', lambda model, row, vendor: {})
    post, (c1, c2, c3) = _race(_move)
    assert _actual(c2) == []
    assert _cached(c2) == [(post.pk, 'moved by B')]  # stale: what the conditions prevent


def test_a_retry_on_a_child_table_keeps_the_parent_tables_old_values():
    """Multi-table inheritance: the parent's UPDATE matched; the child's didn't, as another
    writer changed it. The retry reads the row again, and sees our own new parent values:
    the parent's old ones must still be invalidated."""
    movie = Movie.objects.create(name='n1', year=2000)

    def writer_a():
        instance = Movie.objects.get(pk=movie.pk)
        instance.name, instance.year = 'n2', 2001
        instance.save()

    with _writer_a_held(writer_a, Movie):
        Movie.objects.filter(pk=movie.pk).update(year=1999)  # B, on the child table only
        assert [m.pk for m in Media.objects.filter(name='n1').cache()] == [movie.pk]
    assert Movie.objects.nocache().get(pk=movie.pk).year == 2001
    assert [m.pk for m in Media.objects.filter(name='n1').cache()] == []


def test_select_on_save_models_keep_djangos_update():
    """Their UPDATE may report 0 rows it changed: a retry would apply it twice."""
    row = SelectOnSave.objects.create(num=1)
    row.num = 2
    with CaptureQueriesContext(connection) as queries:
        row.save()
    update = next(q['sql'] for q in queries if q['sql'].startswith('UPDATE'))
    assert 'num' not in update.split('WHERE')[1]
    assert SelectOnSave.objects.nocache().get(pk=row.pk).num == 2


def _cached_nums(num):
    return [row.pk for row in SelectOnSave.objects.filter(num=num).cache()]


def test_select_on_save_models_invalidate_by_the_values_they_overwrote():
    """No conditional UPDATE for them: the row is read again locked before Django's."""
    row = SelectOnSave.objects.create(num=1)

    def writer_a():
        instance = SelectOnSave.objects.get(pk=row.pk)
        instance.num = 3
        instance.save()

    with _writer_a_held(writer_a, SelectOnSave):
        moved = SelectOnSave.objects.get(pk=row.pk)
        moved.num = 2
        moved.save()
        assert _cached_nums(2) == [row.pk]  # the reader caches B's version
    assert SelectOnSave.objects.nocache().get(pk=row.pk).num == 3
    assert _cached_nums(2) == []
    assert _cached_nums(3) == [row.pk]


def test_a_select_on_save_row_inserted_after_the_locked_read_is_invalidated(monkeypatch):
    """The locked read of a row not there yet locks nothing (PostgreSQL; MySQL under READ
    COMMITTED): Django's update may then meet a row inserted since, whose values the
    save never read."""
    if connection.vendor == 'sqlite':
        pytest.skip('SQLite holds its write lock: nobody inserts meanwhile')
    pk, read, go = 4242, threading.Event(), threading.Event()
    locked_old_values = saves._locked_old_values

    def held_after_reading(instance, using):
        values = locked_old_values(instance, using)
        read.set()
        assert go.wait(10)
        return values
    monkeypatch.setattr(saves, '_locked_old_values', held_after_reading)
    # no row yet: Django tries an update first
    with _running(lambda: SelectOnSave(pk=pk, num=3).save()):
        try:
            assert read.wait(10)
            monkeypatch.setattr(saves, '_locked_old_values', locked_old_values)
            SelectOnSave.objects.create(pk=pk, num=2)  # B inserts the row, commits, invalidates
            assert _cached_nums(2) == [pk]  # a reader caches B's version
        finally:
            go.set()
    assert SelectOnSave.objects.nocache().get(pk=pk).num == 3
    assert _cached_nums(2) == []


def test_a_select_on_save_save_locks_its_row_as_djangos_update_does(monkeypatch):
    """FOR NO KEY UPDATE on PostgreSQL, not FOR UPDATE: a transaction that inserted a row
    referencing this one (holding FOR KEY SHARE on it) doesn't make the save wait."""
    if connection.vendor != 'postgresql':
        pytest.skip('lock strengths of PostgreSQL')
    monkeypatch.setattr(Category._meta, 'select_on_save', True)
    category = Category.objects.create(title='c')
    category.title = 'saved'
    _save_beside_an_uncommitted_child(category)


def test_a_save_whose_row_was_deleted_meanwhile_inserts_it_as_django_does():
    c1, c2 = Category.objects.create(title='c1'), Category.objects.create(title='c2')
    post = Post.objects.create(title='p', category=c1)
    instance = Post.objects.get(pk=post.pk)
    instance._cacheops_old = rows.db_values(instance, 'default')  # as _pre_save does
    Post.objects.filter(pk=post.pk).delete()
    assert _cached(c2) == []
    instance.category = c2
    instance.save()  # pre_save reads no row: Django's update matches none, it inserts
    assert Post.objects.nocache().filter(pk=post.pk).exists()
    _assert_cache_matches_database(c1, c2)


def test_a_save_of_a_row_created_meanwhile_invalidates_the_model():
    c1, c2 = Category.objects.create(title='c1'), Category.objects.create(title='c2')
    instance = Post(pk=10 ** 6, title='mine', category=c1)  # no such row when it reads

    def create_it_meanwhile(sender, instance, **kwargs):
        if instance.title == 'mine':
            Post.objects.bulk_create([Post(pk=10 ** 6, title='theirs', category=c2)])
            assert _cached(c2) == [(10 ** 6, 'theirs')]
    pre_save.connect(create_it_meanwhile, sender=Post, weak=False)
    try:
        instance.save()
    finally:
        pre_save.disconnect(create_it_meanwhile, sender=Post)
    assert Post.objects.nocache().get(pk=10 ** 6).category_id == c1.pk
    _assert_cache_matches_database(c1, c2)


def test_values_of_common_types_make_the_update_conditional_and_it_matches(conditional_updates):
    """Nothing falls back to invalidating the model: the conditions match the values read."""
    row = Assorted.objects.create(
        label='a', decimal='12.30', date='2024-05-17', num=7,
        datetime='2024-05-17T12:00:00+00:00', uuid='12345678-1234-5678-1234-567812345678')
    assert Assorted.objects.filter(num=-1).cache().count() == 0  # no row's values touch it
    row.label = 'b'
    with CaptureQueriesContext(connection) as queries:
        row.save()
    updates = [q['sql'] for q in queries if q['sql'].startswith('UPDATE')]
    assert len(updates) == 1, updates  # no retry, no fallback
    where = updates[0].split('WHERE')[1]
    assert all(column in where for column in ('num', 'decimal', 'date', 'uuid'))
    with CaptureQueriesContext(connection) as queries:
        assert Assorted.objects.filter(num=-1).cache().count() == 0
    assert len(queries) == 0  # still cached: the model was not invalidated


def test_boolean_conditions_follow_the_value_read(conditional_updates):
    """Django renders a boolean condition without a parameter (the bare column, or NOT it):
    each value gets its own compiled clause."""
    category = Category.objects.create(title='c')
    post = Post.objects.create(title='p', category=category, visible=True)
    for visible in (False, True, False):
        assert [p.pk for p in Post.objects.filter(visible=not visible).cache()] == [post.pk]
        post.visible = visible
        with CaptureQueriesContext(connection) as queries:
            post.save()
        assert len([q for q in queries if q['sql'].startswith('UPDATE')]) == 1  # it matched
        assert [p.pk for p in Post.objects.filter(visible=not visible).cache()] == []
        assert [p.pk for p in Post.objects.filter(visible=visible).cache()] == [post.pk]


@override_settings(CACHEOPS_SKIP_FIELDS=())
def test_values_django_prepares_its_own_way_still_make_a_matching_update(either_save_path):
    """A JSON condition's parameter is an adapter, not the value: filter() is used (and
    the one statement's old value, converted from the database's, isn't taken for one a
    custom field spoiled)."""
    doc = JsonDoc.objects.create(data={'a': [1, 2]})
    assert JsonDoc.objects.filter(data={'a': [1, 2]}).cache().count() == 1
    assert JsonDoc.objects.filter(data={'b': 1}).cache().count() == 0  # no row's values touch it
    doc.data = {'a': [3]}
    with CaptureQueriesContext(connection) as queries:
        doc.save()
    assert len([q for q in queries if q['sql'].startswith('UPDATE')]) == 1
    assert JsonDoc.objects.filter(data={'a': [1, 2]}).cache().count() == 0
    assert JsonDoc.objects.nocache().get(pk=doc.pk).data == {'a': [3]}
    with CaptureQueriesContext(connection) as queries:
        assert JsonDoc.objects.filter(data={'b': 1}).cache().count() == 0
    assert len(queries) == 0  # still cached: the model was not invalidated


def test_a_field_the_database_cant_match_falls_back_to_invalidating_the_model(either_save_path):
    row = Lossy.objects.create(num=5, title='mine')
    row = Lossy.objects.get(pk=row.pk)  # reads num as 1005, the database holds 5
    other = Lossy.objects.create(title='theirs')
    assert Lossy.objects.filter(title='other').cache().count() == 0
    unseen_update(Lossy.objects.filter(pk=other.pk), title='other')  # the cache is not told
    row.title = 'saved'
    # the conditional update can't match: Django's, unconditional, runs; the values the
    # one statement returns don't prepare back to the database's
    row.save()
    assert Lossy.objects.nocache().get(pk=row.pk).title == 'saved'
    # its old values unknown, the save dropped every entry of the model, this one too
    assert Lossy.objects.filter(title='other').cache().count() == 1


# One statement (PostgreSQL): the UPDATE returns the values it overwrote

def _statements(func):
    with CaptureQueriesContext(connection) as queries:
        func()
    return [q['sql'] for q in queries]


def _move_while_a_waits_on_the_row_lock(post, to, holding_the_lock=True):
    """Writer A moves post to `to` in a transaction, its UPDATE waiting on the row lock that
    B holds while it moves the post to c2 and commits; a reader caches B's version before
    A commits (and invalidates)."""
    updated, go = threading.Event(), threading.Event()

    def writer_a():
        try:
            instance = Post.objects.get(pk=post.pk)
            with transaction.atomic():  # its invalidation waits for the commit
                _move(instance, to)
                updated.set()
                assert go.wait(10), 'the test never let writer A go on'
        finally:
            updated.set()
            connection.close()

    thread = Worker(writer_a, name='writer A')
    with transaction.atomic():  # B
        moved = Post.objects.select_for_update().get(pk=post.pk)
        thread.start()
        try:
            _wait_for_a_lock_wait()
        except AssertionError:
            go.set()
            thread.join(10)  # raises what writer A failed with, if it did
            raise AssertionError('writer A never waited on the row lock')
        moved.category, moved.title = Category.objects.get(title='c2'), 'moved by B'
        moved.save()
    assert updated.wait(10), 'writer A never updated'
    assert _cached(moved.category) == [(post.pk, 'moved by B')]  # the reader caches B's version
    go.set()
    thread.join(10)


def test_one_statement_returns_the_values_a_writer_committed_while_it_waited_for_the_row():
    _skip_unless_one_statement()
    c1, c2, c3 = (Category.objects.create(title=t) for t in ('c1', 'c2', 'c3'))
    post = Post.objects.create(title='p', category=c1)
    _move_while_a_waits_on_the_row_lock(post, c3)
    assert Post.objects.nocache().get(pk=post.pk).category_id == c3.pk
    _assert_cache_matches_database(c1, c2, c3)


def test_one_statement_reading_the_row_unlocked_would_leave_a_stale_entry(monkeypatch):
    """What the row lock in the statement's subquery is for: without it, the subquery reads
    the version of the statement's snapshot, older than the one its UPDATE replaces."""
    _skip_unless_one_statement()
    original = returning._returning_tail

    def unlocked(*args):
        tail, converters = original(*args)
        return tail.replace(' FOR NO KEY UPDATE', ''), converters
    monkeypatch.setattr(returning, '_returning_tail', unlocked)
    c1, c2, c3 = (Category.objects.create(title=t) for t in ('c1', 'c2', 'c3'))
    post = Post.objects.create(title='p', category=c1)
    _move_while_a_waits_on_the_row_lock(post, c3)
    assert _actual(c2) == []
    assert _cached(c2) == [(post.pk, 'moved by B')]  # stale: what the lock prevents


def test_one_statement_locks_no_more_than_djangos_update():
    """A row inserted (not committed yet) with a foreign key to the saved row holds a key
    share lock on it once the key is checked: Django's UPDATE doesn't wait for it, nor
    does the statement's read (FOR UPDATE would)."""
    _skip_unless_one_statement()
    category = Category.objects.create(title='c')
    category.title = 'renamed'
    _save_beside_an_uncommitted_child(category)
    assert Category.objects.nocache().get(pk=category.pk).title == 'renamed'


def test_a_save_is_one_update_that_invalidates_by_the_values_it_overwrote():
    _skip_unless_one_statement()
    c1, c2, c3 = (Category.objects.create(title=t) for t in ('c1', 'c2', 'c3'))
    post = Post.objects.create(title='p', category=c1)
    stale = Post.objects.get(pk=post.pk)
    unseen_update(Post.objects.filter(pk=post.pk), category=c2)  # the cache is not told
    assert _cached(c2) == [(post.pk, 'p')]
    stale.category = c3
    sqls = _statements(stale.save)
    assert len(sqls) == 1 and sqls[0].startswith('UPDATE') and 'RETURNING' in sqls[0], sqls
    _assert_cache_matches_database(c1, c2, c3)


def test_a_save_of_some_fields_invalidates_where_the_database_has_the_row():
    _skip_unless_one_statement()
    c1, c2 = Category.objects.create(title='c1'), Category.objects.create(title='c2')
    post = Post.objects.create(title='p', category=c1)
    stale = Post.objects.get(pk=post.pk)
    unseen_update(Post.objects.filter(pk=post.pk), category=c2)  # the cache is not told
    assert _cached(c2) == [(post.pk, 'p')]
    stale.title = 'retitled'
    assert len(_statements(lambda: stale.save(update_fields=['title']))) == 1
    assert _actual(c2) == [(post.pk, 'retitled')]
    _assert_cache_matches_database(c1, c2)


def test_an_f_expression_save_invalidates_by_the_value_the_database_computed(either_save_path):
    """The instance may keep the expression (before Django 6; on MySQL): the one statement
    returns the value, elsewhere the save reads it after its UPDATE."""
    category = Category.objects.create(title='c')
    gadget = Gadget.objects.create(category=category, stock=5)
    unseen_update(Gadget.objects.filter(pk=gadget.pk), stock=10)  # the cache is not told
    assert Gadget.objects.filter(stock=10).cache().count() == 1
    assert Gadget.objects.filter(stock=11).cache().count() == 0
    assert Gadget.objects.filter(stock=12).cache().count() == 0
    gadget.stock = F('stock') + 1
    gadget.save()
    assert Gadget.objects.filter(stock=10).cache().count() == 0
    assert Gadget.objects.filter(stock=11).cache().count() == 1
    with CaptureQueriesContext(connection) as queries:
        assert Gadget.objects.filter(stock=12).cache().count() == 0
    assert len(queries) == 0  # another value: still cached


@pytest.mark.skipif(not hasattr(models, 'GeneratedField'), reason='Django 5.0+')
def test_values_the_database_computes_on_save_are_invalidated_by_and_refreshed():
    """Django 6 refreshes a generated field and a field set to its database default from
    the UPDATE's own RETURNING: the one statement returns them after the old values."""
    _skip_unless_one_statement()
    from tests.models import Priced
    row = Priced.objects.create(price=2, quantity=3)
    assert (row.total, row.code) == (6, 7)
    for total in (6, 8):
        Priced.objects.filter(total=total).cache().count()
    row.quantity = 4
    assert len(_statements(row.save)) == 1
    if django.VERSION >= (6, 0):
        assert row.total == 8
    assert [Priced.objects.filter(total=total).cache().count() for total in (6, 8)] == [0, 1]

    unseen_update(Priced.objects.filter(pk=row.pk), code=1)  # the cache is not told
    assert [Priced.objects.filter(code=code).cache().count() for code in (1, 7)] == [1, 0]
    again = Priced(pk=row.pk, price=2, quantity=4)  # code left to the database: DEFAULT
    assert len(_statements(again.save)) == 1
    if django.VERSION >= (6, 0):
        assert again.code == 7
    assert [Priced.objects.filter(code=code).cache().count() for code in (1, 7)] == [0, 1]


def test_a_row_deleted_meanwhile_makes_the_update_return_nothing_and_django_insert():
    _skip_unless_one_statement()
    c1, c2 = Category.objects.create(title='c1'), Category.objects.create(title='c2')
    post = Post.objects.create(title='p', category=c1)
    instance = Post.objects.get(pk=post.pk)
    Post.objects.filter(pk=post.pk).delete()
    assert _cached(c2) == []
    instance.category = c2
    sqls = _statements(instance.save)
    assert [sql.split()[0] for sql in sqls] == ['UPDATE', 'INSERT'], sqls
    _assert_cache_matches_database(c1, c2)


def test_a_statement_that_cant_be_built_falls_back_to_reading_the_old_values(monkeypatch):
    _skip_unless_one_statement()
    monkeypatch.setattr(returning, 'update_returning', lambda *args: None)
    c1, c2, c3 = (Category.objects.create(title=t) for t in ('c1', 'c2', 'c3'))
    post = Post.objects.create(title='p', category=c1)
    stale = Post.objects.get(pk=post.pk)
    unseen_update(Post.objects.filter(pk=post.pk), category=c2)  # the cache is not told
    assert _cached(c2) == [(post.pk, 'p')]
    stale.category = c3
    sqls = _statements(stale.save)
    assert [sql.split()[0] for sql in sqls] == ['SELECT', 'UPDATE'], sqls
    assert 'category_id' in sqls[1].split('WHERE')[1]  # conditional on the values read
    _assert_cache_matches_database(c1, c2, c3)


def test_a_save_beside_a_table_lock_waits_as_djangos_update_does():
    """B holds the table in SHARE ROW EXCLUSIVE mode (as LOCK TABLE, or CREATE INDEX in a
    migration, would), then updates the row. The one statement takes the table in the
    mode an UPDATE does before it locks the row: it waits for B. (A locked read sent
    before the UPDATE would hold the row while waiting for the table: a deadlock.)"""
    _skip_unless_one_statement()
    post = Post.objects.create(title='p', category=Category.objects.create(title='c'))

    def writer_a():
        try:
            instance = Post.objects.get(pk=post.pk)
            instance.title = 'by A'
            instance.save()
        finally:
            connection.close()

    thread = Worker(writer_a, name='writer A')
    with transaction.atomic():  # B
        with connection.cursor() as cursor:
            cursor.execute('LOCK TABLE tests_post IN SHARE ROW EXCLUSIVE MODE')
        thread.start()
        _wait_for_a_lock_wait()
        Post.objects.filter(pk=post.pk).update(title='by B')
    thread.join(10)
    assert Post.objects.nocache().get(pk=post.pk).title == 'by A'


def test_a_save_in_pipeline_mode_is_the_one_statement():
    _skip_unless_one_statement()
    post = Post.objects.create(title='p', category=Category.objects.create(title='c'))
    post.title = 'q'
    connection.ensure_connection()
    with connection.connection.pipeline():
        sqls = _statements(post.save)
    assert len(sqls) == 1 and sqls[0].startswith('UPDATE') and 'RETURNING' in sqls[0], sqls
    assert Post.objects.nocache().get(pk=post.pk).title == 'q'


def _composite_pk_model():
    if not hasattr(models, 'CompositePrimaryKey'):
        pytest.skip('Django 5.2+')
    from tests.models import Pair
    return Pair


@pytest.mark.parametrize('make', [
    lambda: Movie.objects.create(name='n1', year=2000),
    lambda: SelectOnSave.objects.create(num=1),
    lambda: _composite_pk_model().objects.create(left=1, right=2, num=1),
], ids=['multi-table child', 'select_on_save', 'composite primary key'])
def test_models_one_statement_cant_serve_read_the_old_values_first(make):
    _skip_unless_one_statement()
    row = make()
    sqls = _statements(row.save)
    assert sqls[0].startswith('SELECT') and not any('RETURNING' in sql for sql in sqls), sqls


def test_a_proxy_model_is_served_by_one_statement():
    _skip_unless_one_statement()
    post = ProxyPost.objects.create(title='p', category=Category.objects.create(title='c'))
    post.title = 'q'
    sqls = _statements(post.save)
    assert len(sqls) == 1 and 'RETURNING' in sqls[0], sqls


@pytest.mark.skipif(not hasattr(models, 'CompositePrimaryKey'), reason='Django 5.2+')
def test_a_save_of_a_row_with_a_composite_primary_key_invalidates_old_and_new_values():
    from tests.models import Pair
    pair = Pair.objects.create(left=1, right=2, num=5)
    assert [Pair.objects.filter(num=num).cache().count() for num in (5, 6)] == [1, 0]
    pair.num = 6
    pair.save()
    assert [Pair.objects.filter(num=num).cache().count() for num in (5, 6)] == [0, 1]


# Deletes

def test_deleting_an_outdated_instance_invalidates_where_the_row_is():
    c1, c2 = Category.objects.create(title='c1'), Category.objects.create(title='c2')
    post = Post.objects.create(title='p', category=c1)
    outdated = Post.objects.get(pk=post.pk)
    moved = Post.objects.get(pk=post.pk)
    moved.category = c2
    moved.save()
    assert _cached(c2) == [(post.pk, 'p')]
    outdated.delete()
    _assert_cache_matches_database(c1, c2)


def test_deleting_through_a_queryset_reads_rows_as_they_are_when_deleted():
    c1, c2 = Category.objects.create(title='c1'), Category.objects.create(title='c2')
    posts = [Post.objects.create(title='p%d' % i, category=c1) for i in range(3)]
    unseen_update(Post.objects.filter(pk=posts[0].pk), category=c2)  # the cache is not told
    assert _cached(c2) == [(posts[0].pk, 'p0')]
    # the collector loads the rows, then they are read again, locked, before the DELETE
    Post.objects.filter(pk__in=[p.pk for p in posts]).delete()
    _assert_cache_matches_database(c1, c2)


def test_a_delete_reads_the_rows_locked_before_deleting_them():
    post = Post.objects.create(title='p', category=Category.objects.create(title='c'))
    with CaptureQueriesContext(connection) as queries:
        post.delete()
    sqls = [q['sql'] for q in queries]
    delete = next(i for i, sql in enumerate(sqls) if sql.startswith('DELETE') and 'tests_post' in sql)
    if connection.vendor == 'sqlite':  # the write lock first: nobody else writes until commit
        lock = next(i for i, sql in enumerate(sqls) if sql.startswith('UPDATE') and 'WHERE 1 = 0' in sql)
        read = next(i for i, sql in enumerate(sqls) if sql.startswith('SELECT') and i > lock)
    else:
        read = next(i for i, sql in enumerate(sqls) if sql.startswith('SELECT') and 'FOR UPDATE' in sql)
    assert read < delete


def test_invalidated_update_reads_the_rows_locked():
    c1, c2 = Category.objects.create(title='c1'), Category.objects.create(title='c2')
    post = Post.objects.create(title='p', category=c1)
    assert _cached(c2) == []
    with CaptureQueriesContext(connection) as queries:
        assert Post.objects.filter(pk=post.pk).invalidated_update(category=c2) == 1
    sqls = [q['sql'] for q in queries if q['sql'] != 'BEGIN']
    if connection.vendor == 'sqlite':  # the write lock before the first read
        assert sqls[0].startswith('UPDATE') and 'WHERE 1 = 0' in sqls[0]
    else:
        assert any(sql.startswith('SELECT') and 'FOR UPDATE' in sql for sql in sqls)
    _assert_cache_matches_database(c1, c2)


def test_locked_reads_ignore_ordering_joins():
    """Meta.ordering through a nullable key would make FOR UPDATE lock an outer join,
    which PostgreSQL refuses: deletes and invalidated_update() must not order."""
    c1, c2 = Category.objects.create(title='c1'), Category.objects.create(title='c2')
    notes = [Note.objects.create(category=c1, num=i) for i in range(3)]
    assert Note.objects.filter(category=c2).cache().count() == 0
    assert Note.objects.filter(num=0).invalidated_update(category=c2) == 1
    assert Note.objects.filter(category=c2).cache().count() == 1
    notes[0].delete()
    Note.objects.filter(num=1).delete()
    assert Note.objects.filter(category=c2).cache().count() == 0
    assert [n.num for n in Note.objects.cache()] == [2]


@pytest.mark.skipif(not hasattr(models, 'CompositePrimaryKey'), reason='Django 5.2+')
def test_rows_with_a_composite_primary_key_are_deleted():
    from tests.models import Pair
    Pair.objects.create(left=1, right=2, num=5)
    Pair.objects.create(left=1, right=3, num=5)
    assert Pair.objects.filter(num=5).cache().count() == 2
    Pair.objects.get(left=1, right=2).delete()
    assert Pair.objects.filter(num=5).cache().count() == 1
    Pair.objects.filter(num=5).delete()
    assert Pair.objects.filter(num=5).cache().count() == 0


def _wait_for_a_lock_wait(timeout=10):
    """Until another connection waits on a row lock (so an interleaving is in place)."""
    # MariaDB lists a locking read waiting on a primary key lookup in its processlist
    # only (state 'Statistics'), not as a LOCK WAIT transaction
    sql = {'postgresql': "SELECT count(*) FROM pg_locks WHERE NOT granted",
           'mysql': "SELECT count(*) FROM information_schema.processlist "
                    "WHERE info LIKE '%%FOR UPDATE%%' AND id <> CONNECTION_ID()"}
    deadline = time.monotonic() + timeout
    with connections['default'].cursor() as cursor:
        while time.monotonic() < deadline:
            cursor.execute(sql[connection.vendor])
            if cursor.fetchone()[0]:
                return
            time.sleep(0.01)
    raise AssertionError("nobody ever waited on a lock")


def test_a_delete_locks_rows_in_djangos_order_and_so_does_not_deadlock():
    """X updates a post, then its category, in one transaction; meanwhile Y deletes the
    category (cascading to the post). Django deletes (and locks) posts first: locking the
    category first would deadlock with X."""
    if connection.vendor == 'sqlite':
        pytest.skip('SQLite serializes writers: no row locks, no deadlock')
    category = Category.objects.create(title='c')
    post = Post.objects.create(title='p', category=category)

    def deleter():
        try:
            Category.objects.get(pk=category.pk).delete()
        finally:
            connections['default'].close()

    thread = Worker(deleter)
    with transaction.atomic():
        Post.objects.filter(pk=post.pk).update(title='x')  # X holds the post's row lock
        thread.start()
        try:
            _wait_for_a_lock_wait()  # Y waits on the post...
        except AssertionError:
            # not joined: X's transaction may hold what Y waits for
            raise AssertionError(thread.error or 'Y never waited on a lock')
        Category.objects.filter(pk=category.pk).update(title='x')  # ...and X gets the category
    thread.join(30)
    assert not Post.objects.nocache().filter(pk=post.pk).exists()


def test_a_converter_failing_on_the_old_value_neither_fails_the_save_nor_leaves_it_stale(
        monkeypatch, either_save_path):
    """A custom field whose from_db_value() rejects a value already in the column: the row
    is written (PostgreSQL's one statement returned it), so the save succeeds and
    invalidates the model instead."""
    obj = Lossy.objects.create(num=13, title='a')
    titles = lambda: list(Lossy.objects.filter(title='a').cache().values_list('title', flat=True))
    assert titles() == ['a']
    original = LossyIntegerField.from_db_value

    def from_db_value(self, value, expression, connection):
        if value == 13:
            raise ValueError('a legacy value')
        return original(self, value, expression, connection)

    monkeypatch.setattr(LossyIntegerField, 'from_db_value', from_db_value)
    obj = Lossy.objects.only('title').nocache().get(pk=obj.pk)
    obj.title = 'b'
    obj.save()
    assert titles() == []


def test_a_save_inside_a_save_keeps_the_outer_saves_old_values(either_save_path):
    """A post_save receiver connected before cacheops' (at import, as in a models.py)
    saves the instance again: the outer save still invalidates by the values it moved
    the row from."""
    c1, c2 = Category.objects.create(title='c1'), Category.objects.create(title='c2')
    post = Post.objects.create(title='p', category=c1)
    in_c1 = lambda: [p.title for p in Post.objects.filter(category=c1).cache()]
    assert in_c1() == ['p']

    def save_again(sender, instance, created, **kwargs):
        if not created and instance.title == 'p':
            instance.title = 'p2'
            instance.save(update_fields=['title'])

    post_save.connect(save_again, sender=Post, weak=False, dispatch_uid='tests-save-again')
    post_save.receivers.insert(0, post_save.receivers.pop())  # before cacheops' receiver
    post_save.sender_receivers_cache.clear()
    try:
        post.category = c2
        post.save()
    finally:
        post_save.disconnect(sender=Post, dispatch_uid='tests-save-again')
    assert in_c1() == []
    assert [p.title for p in Post.objects.filter(category=c2).cache()] == ['p2']
