"""Django template tags: {% cached_as %}, {% cached %}, invalidate_fragment() and tags
made with CacheopsLibrary.decorator_tag (tests/templatetags/cacheops_test_tags.py),
rendered by the DjangoTemplates backend of tests/settings.py."""
import pytest
from django.template import TemplateSyntaxError, engines
from django.test import override_settings

import cacheops.redis
from cacheops import CacheopsLibrary, invalidate_fragment
from cacheops.templatetags.cacheops import register
from .cluster import redis_keys
from .models import Category, Post
from .utils import Tick

pytestmark = pytest.mark.django_db


def render(source, **context):
    return engines['django'].from_string(source).render(context).strip()


def redis():
    return cacheops.redis.redis_client


@pytest.fixture
def posts():
    category = Category.objects.create(title='c')
    return [Post.objects.create(title='p%d' % i, category=category) for i in range(2)]


# {% cached_as %}

CACHED_AS = '{% load cacheops %}{% cached_as posts 60 "titles" %}' \
    '{% for p in posts %}{{ p.title }};{% endfor %}{{ tick }}{% endcached_as %}'


def test_cached_as_caches_the_fragment(posts):
    tick = Tick()
    qs = Post.objects.order_by('pk')
    assert render(CACHED_AS, posts=qs, tick=tick) == 'p0;p1;1'
    assert render(CACHED_AS, posts=qs, tick=tick) == 'p0;p1;1'
    assert tick.count == 1


def test_cached_as_is_invalidated_like_its_queryset(posts):
    tick = Tick()
    render(CACHED_AS, posts=Post.objects.order_by('pk'), tick=tick)
    posts[0].title = 'changed'
    posts[0].save()
    assert render(CACHED_AS, posts=Post.objects.order_by('pk'), tick=tick) == 'changed;p1;2'


def test_cached_as_from_a_template_file(posts):
    tick = Tick()
    template = engines['django'].get_template('cacheops_tests/fragments.html')
    for _ in range(2):
        assert template.render({'posts': Post.objects.order_by('pk'), 'tick': tick}).strip() == 'p0;p1;1'


def test_cached_as_timeout_and_none_timeout(posts):
    render(CACHED_AS, posts=Post.objects.all(), tick=Tick())
    [key] = redis_keys('*as:*')
    assert 50 < redis().ttl(key) <= 60
    redis().flushdb()
    with override_settings(CACHEOPS={'tests.*': {'timeout': 345}}):
        render('{% load cacheops %}{% cached_as posts None "titles" %}x{% endcached_as %}',
               posts=Post.objects.all())
    [key] = redis_keys('*as:*')
    assert 335 < redis().ttl(key) <= 345


def test_cached_as_name_and_extra_make_separate_entries(posts):
    tick = Tick()
    source = '{% load cacheops %}{% cached_as posts 60 name extra %}{{ tick }}{% endcached_as %}'
    qs = Post.objects.all()
    results = [render(source, posts=qs, tick=tick, name=name, extra=extra)
               for name, extra in [('a', 1), ('b', 1), ('a', 2), ('a', 1), ('b', 1)]]
    assert results == ['1', '2', '3', '1', '2']


def test_cached_as_keyword_form(posts):
    tick = Tick()
    source = '{% load cacheops %}{% cached_as queryset=posts timeout=60 fragment_name="kw" %}' \
        '{{ tick }}{% endcached_as %}'
    assert render(source, posts=Post.objects.all(), tick=tick) == '1'
    assert render(source, posts=Post.objects.all(), tick=tick) == '1'


def test_cached_as_takes_instances(posts):
    # not a model: Django templates call a class found in the context, making an instance
    tick = Tick()
    source = '{% load cacheops %}{% cached_as sample 60 "s" %}{{ tick }}{% endcached_as %}'
    assert render(source, sample=posts[0], tick=tick) == '1'
    assert render(source, sample=posts[0], tick=tick) == '1'
    posts[1].save()  # another row
    assert render(source, sample=posts[0], tick=tick) == '1'
    posts[0].save()
    assert render(source, sample=posts[0], tick=tick) == '2'


# {% cached %}

CACHED = '{% load cacheops %}{% cached 60 "block" extra %}{{ tick }}{% endcached %}'


def test_cached_caches_the_fragment():
    tick = Tick()
    assert [render(CACHED, tick=tick, extra=e) for e in (1, 1, 2, 2)] == ['1', '1', '2', '2']
    [key, _] = redis_keys('*')
    assert 50 < redis().ttl(key) <= 60


def test_cached_with_none_timeout_never_expires():
    render('{% load cacheops %}{% cached None "forever" %}x{% endcached %}')
    [key] = redis_keys('*')
    assert redis().ttl(key) == -1


def test_cached_keyword_form():
    tick = Tick()
    source = '{% load cacheops %}{% cached timeout=60 fragment_name="kw" %}{{ tick }}{% endcached %}'
    assert render(source, tick=tick) == render(source, tick=tick) == '1'


def test_invalidate_fragment():
    tick = Tick()
    render(CACHED, tick=tick, extra=1)
    render(CACHED, tick=tick, extra=2)
    invalidate_fragment('block', 1)
    assert render(CACHED, tick=tick, extra=1) == '3'
    assert render(CACHED, tick=tick, extra=2) == '2'


def test_several_extras_and_invalidate_fragment_with_them():
    tick = Tick()
    source = '{% load cacheops %}{% cached 60 "menu" lang part %}{{ tick }}{% endcached %}'
    variants = [('en', 'top'), ('en', 'bottom'), ('fr', 'top')]
    assert [render(source, tick=tick, lang=lang, part=part) for lang, part in variants * 2] == \
        ['1', '2', '3'] * 2
    invalidate_fragment('menu', 'en', 'bottom')
    assert [render(source, tick=tick, lang=lang, part=part) for lang, part in variants] == \
        ['1', '4', '3']


@pytest.mark.parametrize('serializer', ['pickle', 'tests.test_serializer.JsonSerializer'])
def test_fragments_are_not_escaped_twice(serializer):
    # a serializer like JSON gives back a plain str for the SafeString the fragment rendered
    source = '{% load cacheops %}{% cached 60 "html" %}<b>{{ text }}</b>{% endcached %}'
    with override_settings(CACHEOPS_SERIALIZER=serializer):
        assert render(source, text='<i>') == render(source, text='<i>') == '<b>&lt;i&gt;</b>'


@override_settings(CACHEOPS_ENABLED=False)
def test_disabled_cacheops_renders_fragments_every_time(posts):
    tick = Tick()
    render(CACHED, tick=tick, extra=1)
    render(CACHED_AS, posts=Post.objects.all(), tick=tick)
    render(CACHED, tick=tick, extra=1)
    render(CACHED_AS, posts=Post.objects.all(), tick=tick)
    assert tick.count == 4
    assert redis_keys('*') == []


def test_tag_syntax_errors():
    with pytest.raises(TemplateSyntaxError):
        render('{% load cacheops %}{% cached 60 %}x{% endcached %}')  # no fragment name
    with pytest.raises(TemplateSyntaxError):
        render('{% load cacheops %}{% cached 60 "a" %}x')  # not closed


# CacheopsLibrary.decorator_tag

def test_the_library_is_a_cacheops_library():
    assert isinstance(register, CacheopsLibrary)
    assert {'cached_as', 'cached'} <= set(register.tags)


def test_a_decorator_tag(posts):
    tick = Tick()
    source = '{% load cacheops_test_tags %}{% cache_posts category %}{{ tick }}{% endcache_posts %}'
    category = posts[0].category
    assert render(source, category=category, tick=tick) == '1'
    assert render(source, category=category, tick=tick) == '1'
    Post.objects.create(title='new', category=category)
    assert render(source, category=category, tick=tick) == '2'


def test_a_decorator_tag_with_keyword_arguments(posts):
    tick = Tick()
    source = '{% load cacheops_test_tags %}{% cache_posts category label=label %}{{ tick }}' \
        '{% endcache_posts %}'
    category = posts[0].category
    results = [render(source, category=category, tick=tick, label=label) for label in 'abab']
    assert results == ['1', '2', '1', '2']


def test_a_decorator_tag_taking_the_context():
    tick = Tick()
    source = '{% load cacheops_test_tags %}{% cache_menu "top" %}{{ tick }}{% endcache_menu %}' \
        '{% cache_menu "bottom" %}{{ tick }}{% endcache_menu %}'
    assert render(source, tick=tick) == '12'
    assert render(source, tick=tick) == '12'
    assert render(source, tick=tick, staff=True) == '34'  # bypasses the cache
    Category.objects.create(title='c')
    assert render(source, tick=tick) == '56'


def test_a_decorator_tag_declared_with_empty_parentheses():
    tick = Tick()
    source = '{% load cacheops_test_tags %}{% cache_for 60 %}{{ tick }}{% endcache_for %}'
    assert render(source, tick=tick) == render(source, tick=tick) == '1'


def test_takes_context_needs_a_context_parameter():
    library = CacheopsLibrary()
    with pytest.raises(TemplateSyntaxError, match='context'):
        @library.decorator_tag(takes_context=True)
        def no_context(name):
            pass
