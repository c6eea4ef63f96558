"""Template tags caching fragments: {% cached_as %} and {% cached %}, and CacheopsLibrary.

    {% load cacheops %}
    {% cached_as <queryset> <timeout> <fragment_name> [<extra> ...] %}...{% endcached_as %}
    {% cached <timeout> <fragment_name> [<extra> ...] %}...{% endcached %}
"""
from functools import partial
from inspect import getfullargspec, signature, unwrap

from django import template
from django.template.library import parse_bits

from cacheops import decorators, simple


# Django 6.1 dropped parse_bits()' takes_context argument; we strip 'context' ourselves
_PARSE_BITS_TAKES_CONTEXT = 'takes_context' in signature(parse_bits).parameters


def _parse_bits(parser, bits, spec, name):
    takes_context = (False,) if _PARSE_BITS_TAKES_CONTEXT else ()
    return parse_bits(parser, bits, *spec, *takes_context, name)


class CacheopsLibrary(template.Library):
    """A template tag library that can also make tags out of caching decorators."""

    def decorator_tag(self, func=None, takes_context=False):
        """Turn a function returning a decorator into a block tag decorating its fragment.

        {% name args %}...{% endname %} renders the fragment as func(args) would run a
        function it decorates; with takes_context=True func gets the context first.
        """
        if func is None:
            return partial(self.decorator_tag, takes_context=takes_context)
        name = func.__name__
        params, varargs, varkw, defaults, kwonly, kwonly_defaults, _ = getfullargspec(unwrap(func))
        if takes_context:
            if not params or params[0] != 'context':
                raise template.TemplateSyntaxError(
                    "%r is decorated with takes_context=True so it must have a first argument "
                    "of 'context'" % name)
            del params[0]
        spec = (params, varargs, varkw, defaults, kwonly, kwonly_defaults)

        def compile_tag(parser, token):
            bits = token.split_contents()[1:]
            args, kwargs = _parse_bits(parser, bits, spec, name)
            nodelist = parser.parse(('end' + name,))
            parser.delete_first_token()
            return DecoratorNode(func, takes_context, args, kwargs, nodelist)

        self.tag(name, compile_tag)
        return func


class DecoratorNode(template.Node):
    """A fragment rendered through the decorator a tag's function returns."""

    def __init__(self, func, takes_context, args, kwargs, nodelist):
        self.func = func
        self.takes_context = takes_context
        self.args = args
        self.kwargs = kwargs
        self.nodelist = nodelist

    def render(self, context):
        args = [arg.resolve(context) for arg in self.args]
        if self.takes_context:
            args.insert(0, context)
        kwargs = {name: value.resolve(context) for name, value in self.kwargs.items()}
        decorator = self.func(*args, **kwargs)
        render = decorator(simple.fragment_function(lambda: self.nodelist.render(context)))
        # a node's output is not escaped again, whatever type the serializer gives back
        return render()


register = CacheopsLibrary()


@register.decorator_tag
def cached_as(queryset, timeout, fragment_name, *extra):
    """{% cached_as qs timeout name extra... %}: a fragment invalidated like qs.

    A None timeout takes the one of the queryset's profile.
    """
    return decorators.cached_as(queryset, timeout=timeout, extra=(fragment_name, *extra))


@register.decorator_tag
def cached(timeout, fragment_name, *extra):
    """{% cached timeout name extra... %}: a fragment cached for timeout seconds."""
    return simple.cached(timeout=timeout, extra=(fragment_name, *extra))
