"""Invariant 1 of DESIGN.md with writers racing writers: invalidation knows the values
a row had when it was written, not those an instance or an earlier read had.

The interleaving that matters: writer A reads a row's old values; writer B moves the
row and commits; a reader caches B's version; then A writes. A's invalidation must
cover the values B left, or the reader's entry outlives both writes.
"""
import threading
import time

import pytest
from django.db import connection, connections, models, transaction
from django.db.models.signals import pre_save
from django.test import override_settings
from django.test.utils import CaptureQueriesContext

from cacheops import events
from tests.models import Assorted, Category, JsonDoc, Lossy, Media, Movie, Note, Post, SelectOnSave

pytestmark = pytest.mark.django_db(transaction=True)


def _cached(category):
    return [(p.pk, p.title) for p in Post.objects.filter(category=category).cache()]


def _actual(category):
    return [(p.pk, p.title) for p in Post.objects.filter(category=category).nocache()]


def _assert_cache_matches_database(*categories):
    for category in categories:
        assert _cached(category) == _actual(category), category.title


class _HeldAfterOldValuesRead:
    """Holds a save made in the thread named 'writer A' after cacheops read the row's
    old values (its pre_save receiver ran) and before Django's UPDATE."""

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


def _race(save_a, in_transaction=False):
    """Writer A saves with save_a(post) while B moves the post to c2 and a reader caches c2."""
    c1, c2, c3 = (Category.objects.create(title=t) for t in ('c1', 'c2', 'c3'))
    post = Post.objects.create(title='p', category=c1)
    errors = []

    def writer_a():
        try:
            instance = Post.objects.get(pk=post.pk)
            if in_transaction:
                with transaction.atomic():
                    save_a(instance, c3)
            else:
                save_a(instance, c3)
        except Exception as e:  # reported by the test thread
            errors.append(e)
        finally:
            connection.close()

    with _HeldAfterOldValuesRead() as held:
        thread = threading.Thread(target=writer_a, name='writer A')
        thread.start()
        assert held.read.wait(10), 'writer A never read the old values'
        moved = Post.objects.get(pk=post.pk)
        moved.category, moved.title = c2, 'moved by B'
        moved.save()
        assert _cached(c2) == [(post.pk, 'moved by B')]  # the reader caches B's version
        held.go.set()
        thread.join(10)
    assert not errors, errors
    return post, (c1, c2, c3)


def _move(instance, category):
    instance.category = category
    instance.save()


def _retitle(instance, category):
    instance.title = 'retitled by A'
    instance.save(update_fields=['title'])


@pytest.mark.parametrize('in_transaction', [False, True], ids=['autocommit', 'in a transaction'])
def test_a_save_racing_another_invalidates_the_values_the_other_left(in_transaction):
    if in_transaction and connection.vendor == 'sqlite':
        pytest.skip("SQLite can't interleave so: A's read in a transaction blocks B's commit")
    post, (c1, c2, c3) = _race(_move, in_transaction)
    assert Post.objects.nocache().get(pk=post.pk).category_id == c3.pk
    _assert_cache_matches_database(c1, c2, c3)


def test_a_save_of_other_fields_racing_a_move_invalidates_where_the_row_is():
    post, (c1, c2, c3) = _race(_retitle)
    assert _actual(c2) == [(post.pk, 'retitled by A')]
    _assert_cache_matches_database(c1, c2, c3)


def test_without_conditional_updates_the_same_race_leaves_a_stale_entry(monkeypatch):
    monkeypatch.setattr(events, '_unchanged', lambda model, row, vendor: {})
    post, (c1, c2, c3) = _race(_move)
    assert _actual(c2) == []
    assert _cached(c2) == [(post.pk, 'moved by B')]  # stale: what the conditions prevent


def test_a_retry_on_a_child_table_keeps_the_parent_tables_old_values():
    """Multi-table inheritance: the parent's UPDATE matched; the child's didn't, as another
    writer changed it. The retry reads the row again, and sees our own new parent values:
    the parent's old ones must still be invalidated."""
    movie = Movie.objects.create(name='n1', year=2000)
    errors = []

    def writer_a():
        try:
            instance = Movie.objects.get(pk=movie.pk)
            instance.name, instance.year = 'n2', 2001
            instance.save()
        except Exception as e:  # reported by the test thread
            errors.append(e)
        finally:
            connection.close()

    with _HeldAfterOldValuesRead(Movie) as held:
        thread = threading.Thread(target=writer_a, name='writer A')
        thread.start()
        assert held.read.wait(10), 'writer A never read the old values'
        Movie.objects.filter(pk=movie.pk).update(year=1999)  # B, on the child table only
        assert [m.pk for m in Media.objects.filter(name='n1').cache()] == [movie.pk]
        held.go.set()
        thread.join(10)
    assert not errors, errors
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


def test_a_save_whose_row_was_deleted_meanwhile_inserts_it_as_django_does():
    c1, c2 = Category.objects.create(title='c1'), Category.objects.create(title='c2')
    post = Post.objects.create(title='p', category=c1)
    instance = Post.objects.get(pk=post.pk)
    instance._cacheops_old = events._db_values(instance, 'default')  # as _pre_save does
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


def test_values_of_common_types_make_the_update_conditional_and_it_matches():
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


def test_boolean_conditions_follow_the_value_read():
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
def test_values_django_prepares_its_own_way_still_make_a_matching_update():
    """A JSON condition's parameter is an adapter, not the value: filter() is used."""
    doc = JsonDoc.objects.create(data={'a': [1, 2]})
    assert JsonDoc.objects.filter(data={'a': [1, 2]}).cache().count() == 1
    doc.data = {'a': [3]}
    with CaptureQueriesContext(connection) as queries:
        doc.save()
    assert len([q for q in queries if q['sql'].startswith('UPDATE')]) == 1
    assert JsonDoc.objects.filter(data={'a': [1, 2]}).cache().count() == 0
    assert JsonDoc.objects.nocache().get(pk=doc.pk).data == {'a': [3]}


def test_a_field_the_database_cant_match_falls_back_to_invalidating_the_model():
    row = Lossy.objects.create(num=5, title='mine')
    row = Lossy.objects.get(pk=row.pk)  # reads num as 1005, the database holds 5
    other = Lossy.objects.create(title='theirs')
    assert Lossy.objects.filter(title='other').cache().count() == 0
    Lossy.objects.filter(pk=other.pk).update(title='other')  # a mass update: no invalidation
    row.title = 'saved'
    row.save()  # the conditional update can't match: Django's, unconditional, runs
    assert Lossy.objects.nocache().get(pk=row.pk).title == 'saved'
    # its old values unknown, the save dropped every entry of the model, this one too
    assert Lossy.objects.filter(title='other').cache().count() == 1


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
    Post.objects.filter(pk=posts[0].pk).update(category=c2)  # no invalidation: a mass update
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
    errors = []

    def deleter():
        try:
            Category.objects.get(pk=category.pk).delete()
        except Exception as e:  # reported by the test thread
            errors.append(e)
        finally:
            connections['default'].close()

    thread = threading.Thread(target=deleter)
    with transaction.atomic():
        Post.objects.filter(pk=post.pk).update(title='x')  # X holds the post's row lock
        thread.start()
        try:
            _wait_for_a_lock_wait()  # Y waits on the post...
        except AssertionError:
            raise AssertionError(errors or 'Y never waited on a lock')
        Category.objects.filter(pk=category.pk).update(title='x')  # ...and X gets the category
    thread.join(30)
    assert not errors, errors
    assert not Post.objects.nocache().filter(pk=post.pk).exists()
