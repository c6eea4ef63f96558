"""Transactions:
1. Once a transaction is dirty (has changes) caching turns off for that connection.
2. Invalidation is scheduled to run on the outer commit of the transaction,
   before Django's on_commit callbacks.
3. Savepoints and rollbacks are handled: rolled back work drops its invalidation.
These tests need real transactions, so they use transaction=True."""
from collections import defaultdict

import pytest
from django.db import connection, connections, transaction
from django.test import TestCase
from django.test.utils import CaptureQueriesContext

from cacheops import invalidate_all, invalidate_model, invalidate_obj
from cacheops.transaction import TransactionState, queue_when_in_transaction, transaction_states
from . import conftest
from .models import All, Category, DbBinded, Post
from .utils import Worker, queries, unseen_update, warm

pytestmark = pytest.mark.django_db(transaction=True)


def titles(tag):
    return [o.title for o in All.objects.filter(tag=tag).order_by('pk')]


def in_other_thread(func):
    """Run func in a new thread (with its own DB connection and no transaction),
    return (result, number of DB queries it ran)."""
    outcome = {}

    def run():
        try:
            with CaptureQueriesContext(connection) as ctx:
                outcome['result'] = func()
            outcome['queries'] = len(ctx)
        finally:
            connection.close()

    thread = Worker(run)
    thread.start()
    thread.join()
    return outcome['result'], outcome['queries']


class Rollback(Exception):
    pass


@pytest.fixture
def rows():
    return [All.objects.create(tag=1, title='a'), All.objects.create(tag=2, title='b')]


def test_reads_before_a_write_use_the_cache(rows, django_assert_num_queries):
    assert titles(1) == ['a']
    with transaction.atomic():
        with django_assert_num_queries(0):
            assert titles(1) == ['a']
        # and a miss in a clean transaction is stored
        with django_assert_num_queries(1):
            assert titles(2) == ['b']
        with django_assert_num_queries(0):
            assert titles(2) == ['b']
    with django_assert_num_queries(0):
        assert titles(2) == ['b']


def test_reads_after_a_write_skip_the_cache(rows, django_assert_num_queries):
    assert warm(lambda: titles(1)) == ['a']  # cached before the transaction
    with transaction.atomic():
        Category.objects.create(title='unrelated write')
        # does not read the cache
        with django_assert_num_queries(1):
            assert titles(1) == ['a']
        # does not store
        for _ in range(2):
            with django_assert_num_queries(1):
                assert titles(2) == ['b']
    # after commit caching works again; nothing was stored inside
    with django_assert_num_queries(0):
        assert titles(1) == ['a']
    with django_assert_num_queries(1):
        assert titles(2) == ['b']
    with django_assert_num_queries(0):
        assert titles(2) == ['b']


def test_transaction_sees_its_own_changes(rows, django_assert_num_queries):
    assert warm(lambda: titles(1)) == ['a']
    with transaction.atomic():
        rows[0].title = 'changed'
        rows[0].save()
        assert titles(1) == ['changed']
        assert All.objects.get(pk=rows[0].pk).title == 'changed'


@pytest.mark.django_db(transaction=True, databases=['default', 'slave'])
def test_dirty_state_is_per_connection(django_assert_num_queries):
    DbBinded.objects.using('slave').create(title='s')

    def slave_titles():
        return [o.title for o in DbBinded.objects.cache().using('slave')]
    slave = connections['slave']
    assert slave_titles() == ['s']
    with CaptureQueriesContext(slave) as hit:
        assert slave_titles() == ['s']
    assert len(hit) == 0
    with transaction.atomic():
        Category.objects.create(title='write on default')
        with django_assert_num_queries(0, connection=slave):
            assert slave_titles() == ['s']


def test_invalidation_waits_for_commit(rows, django_assert_num_queries):
    assert warm(lambda: titles(1)) == ['a']
    with transaction.atomic():
        rows[0].title = 'changed'
        rows[0].save()
        # another connection still sees the committed state, from the cache
        result, queries = in_other_thread(lambda: titles(1))
        assert (result, queries) == (['a'], 0)
    with django_assert_num_queries(1):
        assert titles(1) == ['changed']
    result, queries = in_other_thread(lambda: titles(1))
    assert (result, queries) == (['changed'], 0)


def test_invalidation_waits_for_outermost_commit(rows, django_assert_num_queries):
    assert warm(lambda: titles(1)) == ['a']
    with transaction.atomic():
        with transaction.atomic():
            rows[0].title = 'changed'
            rows[0].save()
        # the inner block is released, but nothing is committed yet
        result, queries = in_other_thread(lambda: titles(1))
        assert (result, queries) == (['a'], 0)
    with django_assert_num_queries(1):
        assert titles(1) == ['changed']


def test_savepoint_rollback_drops_its_invalidation(rows, django_assert_num_queries):
    assert warm(lambda: titles(1)) == ['a']
    assert warm(lambda: titles(2)) == ['b']
    with transaction.atomic():
        rows[0].title = 'outer'
        rows[0].save()
        with pytest.raises(Rollback):
            with transaction.atomic():
                rows[1].title = 'inner'
                rows[1].save()
                raise Rollback
    # the outer change is committed and invalidated
    with django_assert_num_queries(1):
        assert titles(1) == ['outer']
    # the inner change was rolled back: tag=2 is still cached and still right
    with django_assert_num_queries(0):
        assert titles(2) == ['b']
    assert All.objects.nocache().get(pk=rows[1].pk).title == 'b'


def test_full_rollback_drops_invalidation(rows, django_assert_num_queries):
    assert warm(lambda: titles(1)) == ['a']
    with pytest.raises(Rollback):
        with transaction.atomic():
            rows[0].title = 'changed'
            rows[0].save()
            All.objects.create(tag=1, title='new')
            raise Rollback
    with django_assert_num_queries(0):
        assert titles(1) == ['a']
    assert [o.title for o in All.objects.nocache().filter(tag=1)] == ['a']


def test_caching_resumes_after_rollback(rows, django_assert_num_queries):
    with pytest.raises(Rollback):
        with transaction.atomic():
            Category.objects.create(title='x')
            raise Rollback
    with django_assert_num_queries(1):
        assert titles(2) == ['b']
    with django_assert_num_queries(0):
        assert titles(2) == ['b']


def test_autocommit_write_invalidates_immediately(rows, django_assert_num_queries):
    assert warm(lambda: titles(1)) == ['a']
    rows[0].title = 'changed'
    rows[0].save()
    result, queries = in_other_thread(lambda: titles(1))
    assert (result, queries) == (['changed'], 1)


def test_invalidation_runs_before_on_commit_callbacks(rows):
    assert warm(lambda: titles(1)) == ['a']
    seen = []

    def callback():
        # a reader outside this transaction must already miss and read new data
        seen.append(in_other_thread(lambda: titles(1)))

    with transaction.atomic():
        rows[0].title = 'changed'
        rows[0].save()
        transaction.on_commit(callback)
    assert seen == [(['changed'], 1)]


def test_manual_cache_in_transaction(django_assert_num_queries):
    cat = Category.objects.create(title='c')
    Post.objects.create(title='p', category=cat)

    def post_titles():
        return [p.title for p in Post.objects.cache().filter(category=cat)]
    assert warm(post_titles) == ['p']
    with transaction.atomic():
        with django_assert_num_queries(0):
            assert post_titles() == ['p']
        Post.objects.create(title='q', category=cat)
        with django_assert_num_queries(1):
            assert sorted(post_titles()) == ['p', 'q']
        result, queries = in_other_thread(post_titles)
        assert (result, queries) == (['p'], 0)
    with django_assert_num_queries(1):
        assert sorted(post_titles()) == ['p', 'q']


# Rule 2 covers the invalidation API too: run only at once, it would let a reader on
# another connection store the committed rows the transaction's writes replace

@pytest.mark.parametrize('invalidate', [
    lambda row: invalidate_obj(row), lambda row: invalidate_model(All), lambda row: invalidate_all(),
], ids=['invalidate_obj', 'invalidate_model', 'invalidate_all'])
def test_invalidation_calls_in_a_transaction_run_at_its_commit(rows, invalidate):
    assert warm(lambda: titles(1)) == ['a']
    with transaction.atomic():
        unseen_update(All.objects.filter(pk=rows[0].pk), title='changed')
        invalidate(rows[0])
        assert in_other_thread(lambda: titles(1))[0] == ['a']
    assert queries(lambda: titles(1)) == (['changed'], 1)


@pytest.mark.django_db(transaction=True, databases=['default', 'slave'])
def test_invalidate_all_runs_again_at_the_commit_on_another_database():
    DbBinded.objects.using('slave').create(title='old')

    def slave_titles():
        return [o.title for o in DbBinded.objects.cache().using('slave')]
    assert warm(slave_titles, 'slave') == ['old']
    with transaction.atomic(using='slave'):
        unseen_update(DbBinded.objects.using('slave'), title='new')
        invalidate_all()
        assert in_other_thread(slave_titles)[0] == ['old']
    assert queries(slave_titles, 'slave') == (['new'], 1)


def test_invalidate_all_in_a_transaction_rolled_back_has_still_run(rows):
    """As a test suite's setUp does, in the transaction its TestCase never commits."""
    assert warm(lambda: titles(1)) == ['a']
    with pytest.raises(Rollback):
        with transaction.atomic():
            invalidate_all()
            raise Rollback
    assert queries(lambda: titles(1)) == (['a'], 1)


# A project's test suite replaces transaction_states._states with an empty defaultdict
# in its base TestCase: the transaction TestCase wraps each test in is then not open
# for cacheops, and restoring the old value afterwards is allowed.

class SuiteHidingTestCaseTransactions(TestCase):
    """The base TestCase of such a suite; empty_states() makes the replacement."""

    def setUp(self):
        # tests/conftest.py hides TestCase's transactions already: undo that here, so
        # the test starts where a project's suite starts, in an open transaction
        transaction_states._states = conftest._hidden_states[-1]
        assert transaction_states.any_open()
        self.kept_states = transaction_states._states
        transaction_states._states = self.empty_states()

    def tearDown(self):
        transaction_states._states = self.kept_states

    def empty_states(self):
        return defaultdict(TransactionState)

    def test_a_write_invalidates_at_once_and_reads_use_the_cache(self):
        cat = Category.objects.create(title='c')
        post = Post.objects.create(title='old', category=cat)

        def post_titles():
            return [p.title for p in Post.objects.cache().filter(category=cat)]
        assert warm(post_titles) == ['old']
        post.title = 'new'
        post.save()
        assert queries(post_titles) == (['new'], 1)
        assert queries(post_titles) == (['new'], 0)

    def test_a_committed_atomic_block_invalidates_at_its_end(self):
        cat = Category.objects.create(title='c')

        def post_titles():
            return [p.title for p in Post.objects.cache().filter(category=cat)]
        assert warm(post_titles) == []
        with transaction.atomic():
            Post.objects.create(title='p', category=cat)
        assert queries(post_titles) == (['p'], 1)
        assert queries(post_titles) == (['p'], 0)


class SuiteHidingWithAnotherFactory(SuiteHidingTestCaseTransactions):
    """The same with a defaultdict of lists (any empty defaultdict means no transaction)."""

    def empty_states(self):
        return defaultdict(list)


# queue_when_in_transaction passes the arguments as given

@queue_when_in_transaction
def _record_call(using='default', *, calls):
    calls.append(using)


@pytest.mark.parametrize('call', [
    lambda calls: _record_call('default', calls=calls),
    lambda calls: _record_call(using='default', calls=calls),
], ids=['by-position', 'by-name'])
def test_a_queued_function_gets_the_alias_once_as_given(call):
    calls = []
    call(calls)
    assert calls == ['default']
    with transaction.atomic():
        call(calls)
        assert calls == ['default']  # queued to the commit
    assert calls == ['default', 'default']


def test_a_function_queued_by_alias_position_is_dropped_on_rollback():
    calls = []
    with pytest.raises(Rollback):
        with transaction.atomic():
            _record_call('default', calls=calls)
            raise Rollback
    assert calls == []
