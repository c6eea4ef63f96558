"""The Jinja2 extension: add 'cacheops.jinja2.cache' to the environment's extensions.

    {% cached_as <queryset> [, timeout=<timeout>] [, extra=<key addition>] %}...{% endcached_as %}
    {% cached [timeout=<timeout>] [, extra=<key addition>] %}...{% endcached %}

Both work as the decorators of the same names. A block's key also depends on its
template, its rank there and its content, so that two blocks never share an entry.
"""
from itertools import count

from jinja2 import nodes
from jinja2.ext import Extension

from . import decorators, simple
from .utils import md5hex

PARAMS = {'cached_as': ('queryset', 'timeout', 'extra'), 'cached': ('timeout', 'extra')}


def _place(parser, body):
    """What tells a block from the others: its template, its rank there and its content.

    The content counts for templates made from strings, which have no name.
    """
    ranks = parser.__dict__.setdefault('_cacheops_blocks', count())
    return parser.name, next(ranks), md5hex(repr(body))


class cache(Extension):  # noqa: N801 - the name is the documented import path
    """{% cached_as %} and {% cached %} blocks."""
    tags = frozenset(PARAMS)

    def parse(self, parser):
        token = next(parser.stream)
        tag, lineno = token.value, token.lineno
        kwargs = self._parse_arguments(parser, tag)
        body = parser.parse_statements(('name:end' + tag,), drop_needle=True)
        kwargs.append(nodes.Keyword('place', nodes.Const(_place(parser, body))))
        call = self.call_method('_' + tag, kwargs=kwargs)
        return nodes.CallBlock(call, [], [], body).set_lineno(lineno)

    def _parse_arguments(self, parser, tag):
        """Positional and name=value arguments, comma-separated, as keywords."""
        params = PARAMS[tag]
        kwargs = {}
        keywords = False
        while parser.stream.current.type != 'block_end':
            if kwargs:
                parser.stream.expect('comma')
            lineno = parser.stream.current.lineno
            if parser.stream.current.type == 'name' and parser.stream.look().type == 'assign':
                name = next(parser.stream).value
                next(parser.stream)
                keywords = True
                if name not in params or name in kwargs:
                    parser.fail('{%% %s %%}: unexpected or repeated argument %r; it takes %s'
                                % (tag, name, ', '.join(params)), lineno)
            elif not keywords and len(kwargs) < len(params):
                name = params[len(kwargs)]  # positional arguments come first
            else:
                parser.fail('{%% %s %%}: a positional argument after a keyword one, or too '
                            'many; it takes %s' % (tag, ', '.join(params)), lineno)
            kwargs[name] = parser.parse_expression()
        if tag == 'cached_as' and 'queryset' not in kwargs:
            parser.fail('{% cached_as %} needs a queryset, a model or an instance',
                        parser.stream.current.lineno)
        return [nodes.Keyword(name, value) for name, value in kwargs.items()]

    def _cached_as(self, queryset, timeout=None, extra=None, place=None, caller=None):
        decorator = decorators.cached_as(queryset, timeout=timeout, extra=(place, extra))
        return self._render(decorator, caller)

    def _cached(self, timeout=None, extra=None, place=None, caller=None):
        return self._render(simple.cached(timeout=timeout, extra=(place, extra)), caller)

    def _render(self, decorator, caller):
        # a call block's output is not escaped again, whatever type the serializer gives back
        return decorator(simple.fragment_function(caller))()
