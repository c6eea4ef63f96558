"""A tag library made with CacheopsLibrary.decorator_tag, for test_templatetags.py."""
from cacheops import CacheopsLibrary, cached, cached_as
from tests.models import Category, Post

register = CacheopsLibrary()


@register.decorator_tag
def cache_posts(category, label='posts'):
    """Posts of a category, invalidated like them."""
    return cached_as(Post.objects.filter(category=category), extra=('posts', label))


@register.decorator_tag(takes_context=True)
def cache_menu(context, menu_name):
    """The README's example: staff bypass the cache, the others share it per menu."""
    if context.get('staff'):
        return lambda func: func  # a no-op decorator: no caching for staff
    return cached_as(Category, extra=('menu', menu_name), timeout=24 * 60 * 60)


@register.decorator_tag()
def cache_for(timeout):
    return cached(timeout=timeout, extra='cache_for')
