"""The Jinja2 extension cacheops.jinja2.cache: {% cached_as %} and {% cached %}, rendered
by the Jinja2 backend of tests/settings.py."""
import pytest
from django.template import engines
from django.test import override_settings
from jinja2 import TemplateSyntaxError

import cacheops.redis
from .cluster import redis_keys
from .models import Category, Post
from .utils import Tick

pytestmark = pytest.mark.django_db


def env():
    return engines['jinja2'].env


def render(source, **context):
    return env().from_string(source).render(**context).strip()


def redis():
    return cacheops.redis.redis_client


@pytest.fixture
def posts():
    category = Category.objects.create(title='c')
    return [Post.objects.create(title='p%d' % i, category=category) for i in range(2)]


def test_the_extension_is_installed():
    from cacheops.jinja2 import cache
    assert cache in {type(e) for e in env().extensions.values()}


CACHED_AS = '{% cached_as posts, timeout=60 %}{% for p in posts %}{{ p.title }};{% endfor %}' \
    '{{ tick() }}{% endcached_as %}'


def test_cached_as_caches_the_block(posts):
    tick = Tick()
    qs = Post.objects.order_by('pk')
    assert render(CACHED_AS, posts=qs, tick=tick) == render(CACHED_AS, posts=qs, tick=tick) == 'p0;p1;1'


def test_cached_as_is_invalidated_like_its_queryset(posts):
    tick = Tick()
    render(CACHED_AS, posts=Post.objects.order_by('pk'), tick=tick)
    Post.objects.create(title='p2', category=posts[0].category)
    assert render(CACHED_AS, posts=Post.objects.order_by('pk'), tick=tick) == 'p0;p1;p2;2'


def test_cached_as_timeout(posts):
    render(CACHED_AS, posts=Post.objects.all(), tick=Tick())
    [key] = redis_keys('*as:*')
    assert 50 < redis().ttl(key) <= 60


@override_settings(CACHEOPS={'tests.*': {'timeout': 456}})
def test_cached_as_without_timeout_takes_the_profiles(posts):
    render('{% cached_as posts %}x{% endcached_as %}', posts=Post.objects.all())
    [key] = redis_keys('*as:*')
    assert 446 < redis().ttl(key) <= 456


def test_cached_as_extra(posts):
    tick = Tick()
    source = '{% cached_as posts, extra=extra %}{{ tick() }}{% endcached_as %}'
    results = [render(source, posts=Post.objects.all(), tick=tick, extra=e) for e in 'abab']
    assert results == ['1', '2', '1', '2']


def test_cached_as_positional_arguments(posts):
    tick = Tick()
    source = '{% cached_as posts, 70, "x" %}{{ tick() }}{% endcached_as %}'
    assert render(source, posts=Post.objects.all(), tick=tick) == '1'
    assert render(source, posts=Post.objects.all(), tick=tick) == '1'
    [key] = redis_keys('*as:*')
    assert 60 < redis().ttl(key) <= 70


def test_cached_as_takes_models_and_instances(posts):
    tick = Tick()
    source = '{% cached_as sample %}{{ tick() }}{% endcached_as %}'
    assert render(source, sample=posts[1], tick=tick) == render(source, sample=posts[1], tick=tick) == '1'
    posts[0].save()  # another row
    assert render(source, sample=posts[1], tick=tick) == '1'
    posts[1].save()
    assert render(source, sample=posts[1], tick=tick) == '2'
    assert render(source, sample=Category, tick=tick) == render(source, sample=Category, tick=tick) == '3'
    Category.objects.create(title='new')
    assert render(source, sample=Category, tick=tick) == '4'


def test_cached_caches_the_block():
    tick = Tick()
    source = '{% cached timeout=60, extra=extra %}{{ tick() }}{% endcached %}'
    assert [render(source, tick=tick, extra=e) for e in (1, 1, 2, 2)] == ['1', '1', '2', '2']
    keys = redis_keys('*')
    assert len(keys) == 2
    for key in keys:
        assert 50 < redis().ttl(key) <= 60


def test_cached_without_arguments_never_expires():
    tick = Tick()
    source = '{% cached %}{{ tick() }}{% endcached %}'
    assert render(source, tick=tick) == render(source, tick=tick) == '1'
    [key] = redis_keys('*')
    assert redis().ttl(key) == -1


def test_blocks_with_the_same_arguments_do_not_share_entries():
    tick = Tick()
    source = '{% cached %}{{ tick() }}{% endcached %}-{% cached %}{{ tick() }}{% endcached %}'
    assert render(source, tick=tick) == render(source, tick=tick) == '1-2'


@pytest.mark.parametrize('serializer', ['pickle', 'tests.test_serializer.JsonSerializer'])
def test_autoescaped_blocks_are_not_escaped_twice(serializer):
    # a serializer like JSON gives back a plain str for the Markup the block rendered
    source = '{% cached %}<b>{{ text }}</b>{% endcached %}'
    with override_settings(CACHEOPS_SERIALIZER=serializer):
        assert render(source, text='<i>') == render(source, text='<i>') == '<b>&lt;i&gt;</b>'


def test_a_template_file(posts):
    tick = Tick()
    template = engines['jinja2'].get_template('cacheops_tests/fragments.jinja')
    for _ in range(2):
        lines = template.render({'posts': Post.objects.order_by('pk'), 'tick': tick}).split()
        assert lines == ['p0;p1;1', '2']


@override_settings(CACHEOPS_ENABLED=False)
def test_disabled_cacheops_renders_blocks_every_time(posts):
    tick = Tick()
    for _ in range(2):
        render(CACHED_AS, posts=Post.objects.all(), tick=tick)
        render('{% cached %}{{ tick() }}{% endcached %}', tick=tick)
    assert tick.count == 4
    assert redis_keys('*') == []


@pytest.mark.parametrize('source', [
    '{% cached_as %}x{% endcached_as %}',
    '{% cached_as posts, lifetime=1 %}x{% endcached_as %}',
    '{% cached timeout=1, 2 %}x{% endcached %}',
    '{% cached 1, 2, 3 %}x{% endcached %}',
    '{% cached %}x',
])
def test_syntax_errors(source):
    with pytest.raises(TemplateSyntaxError):
        env().from_string(source)
