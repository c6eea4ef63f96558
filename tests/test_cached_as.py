"""@cached_as: a function cached and invalidated like the querysets, models and
instances it is given as samples."""
import threading

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.db import connection, transaction
from django.test import override_settings

import cacheops.redis
from cacheops import cached_as
from cacheops.signals import cache_read
from .cluster import redis_keys
from .models import All, Category, NoProfile, Post
from .utils import Worker

pytestmark = pytest.mark.django_db


@pytest.fixture
def posts():
    news, sport = Category.objects.create(title='news'), Category.objects.create(title='sport')
    return [Post.objects.create(title='n%d' % i, category=news) for i in range(2)] + \
        [Post.objects.create(title='s0', category=sport)]


class Counted:
    """A function to decorate that counts its runs and returns what the database holds."""

    def __init__(self, result=None):
        self.runs = 0
        self.result = result or (lambda *args, **kwargs: sorted(
            Post.objects.values_list('title', flat=True)))

    def __call__(self, *args, **kwargs):
        self.runs += 1
        return self.result(*args, **kwargs)


def decorate(*samples, **options):
    counted = Counted()
    # keys depend on the function's module and qualname: give each one its own
    wrapper = cached_as(*samples, **options)(_named(counted, 'f%d' % id(counted)))
    return wrapper, counted


def _named(func, name):
    def function(*args, **kwargs):
        return func(*args, **kwargs)
    function.__qualname__ = function.__name__ = name
    return function


def cached_keys():
    return [k.decode() for k in redis_keys('*as:*')]


# Caching and invalidation

def test_the_result_is_cached(posts):
    func, counted = decorate(Post)
    assert func() == func() == ['n0', 'n1', 's0']
    assert counted.runs == 1


def test_a_model_sample_is_invalidated_by_any_change_to_it(posts):
    func, counted = decorate(Post)
    func()
    Post.objects.create(title='new', category=posts[0].category)
    assert func() == ['n0', 'n1', 'new', 's0']
    posts[0].title = 'changed'
    posts[0].save()
    assert func() == ['changed', 'n1', 'new', 's0']
    posts[1].delete()
    assert func() == ['changed', 'new', 's0']
    assert counted.runs == 4


def test_a_queryset_sample_is_invalidated_granularly(posts):
    news = posts[0].category
    func, counted = decorate(Post.objects.filter(category=news))
    func()
    posts[2].title = 'sport changed'  # not in the sample queryset
    posts[2].save()
    assert func() == ['n0', 'n1', 's0']  # still the cached result
    assert counted.runs == 1
    posts[0].title = 'news changed'
    posts[0].save()
    assert func() == ['n1', 'news changed', 'sport changed']
    assert counted.runs == 2


def test_an_instance_sample_is_invalidated_by_changes_to_that_row(posts):
    func, counted = decorate(posts[0])
    func()
    posts[1].title = 'other'
    posts[1].save()
    assert func() == ['n0', 'n1', 's0']
    posts[0].title = 'mine'
    posts[0].save()
    assert func() == ['mine', 'other', 's0']
    assert counted.runs == 2


def test_mixed_samples_are_invalidated_by_any_of_them(posts):
    func, counted = decorate(Post.objects.filter(visible=False), Category, posts[2])
    func()
    Category.objects.create(title='new')
    func()
    assert counted.runs == 2
    Post.objects.filter(pk=posts[2].pk).get().save()
    func()
    assert counted.runs == 3
    Post.objects.create(title='hidden', category=posts[0].category, visible=False)
    assert func() == ['hidden', 'n0', 'n1', 's0']
    assert counted.runs == 4


def test_caches_whatever_the_profile_ops(posts):
    # Post's profile caches no op automatically, All's caches all: both work as samples
    for sample in (Post, All):
        func, counted = decorate(sample)
        func()
        func()
        assert counted.runs == 1


def test_the_key_depends_on_the_arguments(posts):
    counted = Counted(lambda *args, **kwargs: (args, kwargs))
    func = cached_as(Post)(_named(counted, 'by_args'))
    assert func(1) == ((1,), {})
    assert func(2) == ((2,), {})
    assert func(1, x=3) == ((1,), {'x': 3})
    assert func(1, x=4) == ((1,), {'x': 4})
    assert counted.runs == 4
    assert func(1) == ((1,), {})
    assert func(1, x=4) == ((1,), {'x': 4})
    assert counted.runs == 4


def test_arguments_are_keyed_by_value_however_they_are_passed(posts):
    runs = []

    @cached_as(Post)
    def block(category, count=5):
        runs.append((category, count))
        return count

    assert block(1) == block(1, 5) == block(category=1) == block(1, count=5) == 5
    assert block(1, 6) == 6
    assert runs == [(1, 5), (1, 6)]


def test_model_instances_in_arguments_are_keyed_by_pk(posts):
    twin = Post.objects.create(title='n0', category=posts[0].category)  # same str(), other pk
    counted = Counted(lambda post: post.pk)
    func = cached_as(Post)(_named(counted, 'by_post'))
    assert func(posts[0]) == posts[0].pk
    assert func(twin) == twin.pk


def test_unsaved_instances_in_arguments_are_keyed_by_their_values(posts):
    category = posts[0].category
    counted = Counted(lambda post: post.title)
    func = cached_as(Post)(_named(counted, 'by_unsaved_post'))
    assert func(Post(title='x', category=category)) == 'x'
    assert func(Post(title='y', category=category)) == 'y'
    assert func(Post(title='x', category=category)) == 'x'
    assert counted.runs == 2


def test_lambdas_of_one_scope_do_not_share_entries(posts):
    first = cached_as(Post)(lambda: 'first')
    second = cached_as(Post)(lambda: 'second')
    assert (first(), second()) == ('first', 'second')


def test_a_queryset_argument_is_keyed_without_being_evaluated(posts, django_assert_num_queries):
    counted = Counted(lambda qs: 'computed')
    func = cached_as(Post)(_named(counted, 'by_qs'))
    with django_assert_num_queries(0):
        func(Post.objects.filter(title='n0'))
        func(Post.objects.filter(title='n1'))
        func(Post.objects.filter(title='n0'))
    assert counted.runs == 2


def test_the_key_depends_on_the_function(posts):
    first, first_counted = decorate(Post)
    second, second_counted = decorate(Post)
    first()
    second()
    assert (first_counted.runs, second_counted.runs) == (1, 1)
    assert len(cached_keys()) == 2


def test_the_key_depends_on_the_samples(posts):
    counted = Counted()
    function = _named(counted, 'same_function')
    cached_as(Post.objects.filter(title='n0'))(function)()
    cached_as(Post.objects.filter(title='n1'))(function)()
    cached_as(Post.objects.filter(title='n0'))(function)()
    assert counted.runs == 2


def test_extra_value_goes_into_the_key(posts):
    counted = Counted(lambda: 'x')
    function = _named(counted, 'with_extra')
    for extra in (1, 2, 1, 2):
        cached_as(Post, extra=extra)(function)()
    assert counted.runs == 2


def test_extra_callable_receives_the_arguments(posts):
    seen = []

    def extra(*args, **kwargs):
        seen.append((args, kwargs))
        return kwargs['lang']

    counted = Counted(lambda n, lang: n)
    func = cached_as(Post, extra=extra)(_named(counted, 'extra_callable'))
    func(1, lang='en')
    func(1, lang='en')
    func(1, lang='fr')
    assert seen == [((1,), {'lang': 'en'})] * 2 + [((1,), {'lang': 'fr'})]
    assert counted.runs == 2


def test_a_local_function_with_extra(posts):
    """The README's pattern: a local function per call, told apart by extra."""
    runs = []

    def articles_block(category, count):
        qs = Post.objects.filter(category=category)

        @cached_as(qs, extra=count)
        def _articles_block():
            runs.append(count)
            return [p.title for p in qs.order_by('pk')[:count]]

        return _articles_block()

    news = posts[0].category
    assert articles_block(news, 1) == ['n0']
    assert articles_block(news, 2) == ['n0', 'n1']
    assert articles_block(news, 1) == ['n0']
    assert runs == [1, 2]
    Post.objects.create(title='n2', category=news)
    assert articles_block(news, 5) == ['n0', 'n1', 'n2']
    assert articles_block(news, 1) == ['n0']
    assert runs == [1, 2, 5, 1]


def test_methods_are_keyed_by_their_instance(posts):
    class Summary:
        def __init__(self, category):
            self.category = category

        def __repr__(self):
            return 'Summary(%r)' % self.category.pk

        @cached_as(Post)
        def titles(self):
            return sorted(p.title for p in Post.objects.filter(category=self.category))

    assert Summary(posts[0].category).titles() == ['n0', 'n1']
    assert Summary(posts[2].category).titles() == ['s0']


# Timeouts

def ttl_of_the_key():
    keys = cached_keys()
    assert len(keys) == 1
    return cacheops.redis.redis_client.ttl(keys[0])


@override_settings(CACHEOPS={'tests.post': {'timeout': 300}, 'tests.category': {'timeout': 200},
                             'tests.*': {'timeout': 3600}})
def test_timeout_none_takes_the_smallest_profile_timeout(posts):
    func, _ = decorate(Post, Category.objects.filter(title='news'))
    func()
    assert 190 < ttl_of_the_key() <= 200


def test_timeout_is_the_keys_ttl(posts):
    func, _ = decorate(Post, timeout=77)
    func()
    assert 67 < ttl_of_the_key() <= 77


# Wrong and special samples

def test_no_sample_is_a_type_error():
    with pytest.raises(TypeError):
        cached_as()
    with pytest.raises(TypeError):
        cached_as(timeout=10)


@pytest.mark.parametrize('sample', [42, 'tests.post', object(), [Post]])
def test_a_sample_that_is_no_model_queryset_or_instance_is_a_type_error(sample):
    with pytest.raises(TypeError):
        cached_as(Post, sample)


def test_an_empty_list_sample_gives_an_identity_decorator(posts):
    counted = Counted()
    function = _named(counted, 'identity')
    assert cached_as([])(function) is function


def test_a_model_without_profile_is_improperly_configured():
    func, _ = decorate(NoProfile)
    with pytest.raises(ImproperlyConfigured, match='NoProfile'):
        func()
    func, _ = decorate(Post, NoProfile.objects.filter(title='x'), timeout=10)
    with pytest.raises(ImproperlyConfigured, match='NoProfile'):
        func()


def test_a_sample_reading_an_untracked_table_is_not_cached(posts):
    func, counted = decorate(Post.objects.filter(title__in=NoProfile.objects.values('title')))
    func()
    func()
    assert counted.runs == 2
    assert cached_keys() == []


@override_settings(CACHEOPS_ENABLED=False)
def test_disabled_cacheops_makes_it_a_pass_through(posts):
    func, counted = decorate(Post)
    func()
    func()
    assert counted.runs == 2
    assert cached_keys() == []


def test_cache_read_signal():
    reads = []

    def receiver(sender, func, hit, **kwargs):
        reads.append((sender, func, hit))

    counted = Counted(lambda: 1)
    function = _named(counted, 'signalled')
    wrapped = cached_as(Post)(function)
    cache_read.connect(receiver)
    try:
        wrapped()
        wrapped()
    finally:
        cache_read.disconnect(receiver)
    assert reads == [(None, function, False), (None, function, True)]


@override_settings(CACHEOPS_PREFIX=lambda query: 'pre:%s:%s:' % (','.join(query.dbs), ','.join(query.tables)))
def test_the_key_gets_the_prefix_for_the_samples_dbs_and_tables(posts):
    func, counted = decorate(Post.objects.filter(category__title='news'))
    func()
    [key] = cached_keys()
    assert key.startswith('pre:default:tests_post,tests_category:as:')
    Category.objects.filter(title='news').get().save()  # invalidation finds it under the prefix
    func()
    assert counted.runs == 2


# Transactions

@pytest.mark.django_db(transaction=True)
def test_not_cached_in_a_dirty_transaction():
    category = Category.objects.create(title='c')
    func, counted = decorate(Post)
    with transaction.atomic():
        Post.objects.create(title='uncommitted', category=category)
        assert func() == ['uncommitted']
        assert func() == ['uncommitted']
        assert counted.runs == 2
        assert cached_keys() == []
    assert func() == ['uncommitted']
    assert func() == ['uncommitted']
    assert counted.runs == 3


@pytest.mark.django_db(transaction=True)
def test_cached_in_a_clean_transaction():
    Category.objects.create(title='c')
    func, counted = decorate(Category)
    with transaction.atomic():
        func()
        func()
    assert counted.runs == 1


# No lasting stale entry (docs/design.md, invariant 1)

@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize('keep_fresh', [False, True])
def test_a_call_racing_a_write_leaves_no_stale_entry(keep_fresh):
    """A call reads the database, a write commits and invalidates, then the call stores."""
    category = Category.objects.create(title='c')
    post = Post.objects.create(title='old', category=category)
    selected, written = threading.Event(), threading.Event()

    @cached_as(Post.objects.filter(category=category), keep_fresh=keep_fresh)
    def titles():
        result = [p.title for p in Post.objects.filter(category=category)]
        if threading.current_thread().name == 'reader':
            selected.set()
            assert written.wait(10), 'the writer never finished'
        return result

    read = []

    def reader():
        try:
            read.append(titles())
        finally:
            connection.close()

    thread = Worker(reader, name='reader')
    thread.start()
    assert selected.wait(10), 'the reader never queried'
    post.title = 'new'
    post.save()  # autocommit: committed, then invalidated
    written.set()
    thread.join(10)
    assert read == [['old']]
    assert titles() == ['new']


def test_a_sample_matching_nothing_is_cached(posts):
    func, counted = decorate(Post.objects.filter(pk__in=[]))
    func()
    func()
    assert counted.runs == 1
