"""aggregate()'s arguments read directly when plain: Avg('price'), Count('*')."""
from django.db.models import aggregates, expressions
from django.db.models.constants import LOOKUP_SEP

from . import expressions as _registered  # noqa: F401  the walk's handlers, which plain ones fall back to
from .values import _handlers


# aggregate()'s arguments: a hit fingerprints them every time, and they are mostly built-in
# aggregates of a field name, Avg('price') or Count('*'). Those are read directly, as
# their class and the name, when every other attribute is what constructing them with
# no options sets; anything else (distinct=True, filter=, default=, output_field=, any
# other expression) takes the walk above. The direct reading is tagged with the class
# name and the source's kind, 'Avg(F)' or 'Count(*)': no class tag or container tag,
# so it never equals what the walk gives.

# What constructing an aggregate with no options sets these to. Read by identity: an
# equal value of another type may compile otherwise (a default of 0.0 is not None).
_FRESH_OPTIONS = {'distinct': False, 'filter': None, 'default': None, 'order_by': None}
# The rest of a fresh aggregate: _constructor_args is derived (see _EXPRESSION_ATTRS),
# and StdDev and Variance set 'function' (by sample=)
_PLAIN_PARTS = frozenset({'_constructor_args', 'source_expressions', 'extra', 'function'})


def _plain_aggregate_reader(cls):
    """Fingerprints instances of cls, directly when built from a field name (or '*') with
    no options. None instead if this Django gives a fresh instance anything not known
    here, or not as known: an attribute the reader doesn't check would be ignored."""
    fresh = cls('name').__dict__
    if not fresh.keys() <= _PLAIN_PARTS.union(_FRESH_OPTIONS) or \
            not {'distinct', 'filter', 'default', 'source_expressions', 'extra'} <= fresh.keys() or \
            any(fresh[name] is not value for name, value in _FRESH_OPTIONS.items() if name in fresh):
        return None
    keys = frozenset(fresh)
    of_name, of_star = cls.__qualname__ + '(F)', cls.__qualname__ + '(*)'
    has_function = 'function' in keys
    walk = _handlers[cls]

    def read(aggregate):
        attrs = aggregate.__dict__
        # the same attributes as a fresh one (so order_by is there only if this Django
        # sets it), with the fresh values; output_field= and the like add one
        if attrs.keys() == keys and attrs['distinct'] is False and attrs['filter'] is None \
                and attrs['default'] is None and attrs.get('order_by') is None \
                and type(attrs['extra']) is dict and not attrs['extra']:
            sources = attrs['source_expressions']
            if type(sources) is list and len(sources) == 1:
                name = _plain_name(sources[0])
                if name is not None:
                    parts = (of_name, name) if name is not _STAR else (of_star,)
                    if not has_function:
                        return parts
                    if type(attrs['function']) is str:
                        return (*parts, attrs['function'])
        return walk(aggregate)
    return read


_STAR = ('star',)


def _read_plainly(part):
    """Whether an expression's fingerprint is a direct reading (tagged 'Avg(F)'...)."""
    return type(part) is tuple and bool(part) and type(part[0]) is str and part[0].endswith(('(F)', '(*)'))


def _plain_name(source):
    """The field name an F() names, _STAR for a Star(), else None. A name with a separator
    may end in a transform, and __date, __year and the like read the current time zone
    (see _EXPRESSIONS): that is for the walk to judge."""
    cls = type(source)
    if cls is expressions.F:
        attrs = source.__dict__
        name = attrs.get('name')
        # two attributes, these two (cheaper than comparing the keys with _F_KEYS)
        if type(name) is str and len(attrs) == 2 and '_constructor_args' in attrs \
                and LOOKUP_SEP not in name:
            return name
    elif cls is expressions.Star and source.__dict__.keys() == _STAR_KEYS:
        return _STAR
    return None


_F_KEYS = frozenset({'_constructor_args', 'name'})
_STAR_KEYS = frozenset({'_constructor_args'})
_PLAIN_AGGREGATES = ('Avg', 'Count', 'Max', 'Min', 'Sum', 'StdDev', 'Variance')

# aggregate()'s arguments: exact classes (a subclass may compile otherwise) read directly
# when plain. Only if F() and Star() are as this Django builds them: else an attribute
# they gained would be ignored.
_aggregate_readers = {}
if expressions.F('name').__dict__.keys() == _F_KEYS and expressions.Star().__dict__.keys() == _STAR_KEYS:
    for _name in _PLAIN_AGGREGATES:
        _cls = getattr(aggregates, _name)
        _read = _plain_aggregate_reader(_cls)
        if _read is not None:
            _aggregate_readers[_cls] = _read
