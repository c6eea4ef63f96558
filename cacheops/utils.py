"""Small pure helpers shared by reads and invalidation."""
import datetime
import decimal
import hashlib
import logging
import os
import re

import funcy
from django.apps import apps

from .conf import derived, model_profile, skip_field_types

# MySQL/MariaDB compare strings by collation (case, trailing spaces, accents), so
# equal strings there may differ byte-wise: such conditions must not narrow.
COLLATED_TYPES = frozenset({'CharField', 'SlugField', 'TextField', 'EmailField', 'URLField'})


def md5hex(data):
    """The hex md5 of data (str or bytes), for key names: no security rests on it, so
    FIPS builds of Python, which refuse md5 for security, allow it."""
    return hashlib.md5(data.encode() if isinstance(data, str) else data, usedforsecurity=False).hexdigest()


# Longer canonical values go into conj key names as their md5 ('md5:<32 hex>'): a filter
# value from a request (a query string) would otherwise make a key of any length. Equal
# values still give equal strings; distinct ones sharing one only invalidate more
CONJ_VALUE_MAX = 100


def _capped(text):
    return text if len(text) <= CONJ_VALUE_MAX else 'md5:' + md5hex(text)


def conj_value(value):
    """The canonical string of a prepared field value, the same for a query and a row."""
    if value is None:
        return 'None'
    if isinstance(value, bool):
        return '1' if value else '0'
    if isinstance(value, decimal.Decimal):
        value = value.normalize()
        # normalize() gives 1E+2 for 100: spell integers out so 100 and 100.00 agree
        return '%d' % value if value == value.to_integral_value() else _capped(str(value))
    if isinstance(value, float) and value.is_integer():
        return '%d' % value
    if isinstance(value, datetime.datetime) and value.tzinfo is not None:
        return value.astimezone(datetime.timezone.utc).replace(tzinfo=None).isoformat()
    if isinstance(value, bytes):
        return _capped(value.hex())
    return _capped(str(value))


def is_granular_field(field, vendor):
    """Whether an exact condition on this field can narrow invalidation."""
    names = {cls.__name__ for cls in type(field).__mro__}
    if names.intersection(skip_field_types()):
        return False
    if vendor == 'mysql' and _compared_type(field) in COLLATED_TYPES:
        return False
    return True


def _compared_type(field):
    """The internal type of the values a field holds: a foreign key's is its target's."""
    for _ in range(10):  # a key to a key...; bounded, in case of a cycle
        target = getattr(field, 'target_field', None) if field.is_relation else None
        if target is None or target is field:
            break
        field = target
    return field.get_internal_type()


def model_family(model):
    """Non-abstract models whose events affect each other: concrete bases and all their subclasses."""
    if model._meta.abstract:
        return set()
    bases = {b for b in model.__mro__ if getattr(b, '_meta', None) is not None
             and not b._meta.abstract and not b._meta.proxy}
    family, seen = set(), set()
    stack = list(bases)
    while stack:
        m = stack.pop()
        if m in seen:
            continue
        seen.add(m)
        # an abstract subclass is no member, but its concrete subclasses are children
        if not m._meta.abstract:
            family.add(m)
        stack.extend(m.__subclasses__())
    return family


@derived
def table_models():
    """{db_table: [models using it]}, proxies and auto-created through models included."""
    return dict(funcy.group_by(lambda model: model._meta.db_table,
                               apps.get_models(include_auto_created=True)))


@derived
def tracked_models():
    """Models whose writes are invalidated: those with a profile, the models that write
    the same tables (multi-table family, proxies, with or without a profile of their own),
    and the auto-created through models of their many-to-many fields, from either side.

    A profile says what may be cached; the tables a cached query reads must all have
    their writes tracked, whoever writes them (see docs/design.md)."""
    models = apps.get_models(include_auto_created=True)
    tracked = set()
    for model in models:
        if model_profile(model) is not None:
            tracked |= model_family(model)
    for model in list(tracked):
        for field in model._meta.get_fields(include_hidden=True):
            if not field.many_to_many:
                continue
            # a field has its through model on its remote_field, a reverse relation on itself
            through = getattr(field, 'through', None) or getattr(field.remote_field, 'through', None)
            if through is not None and not isinstance(through, str) and through._meta.auto_created:
                tracked.add(through)
    return frozenset(tracked)


def is_tracked(model):
    """Whether cacheops invalidates on this model's writes."""
    return model in tracked_models()


@derived
def tracked_tables():
    """Tables whose every model is tracked, so all their writes are invalidated."""
    tracked = tracked_models()
    return frozenset(
        table for table, models in table_models().items()
        if all(m in tracked for m in models))


def table_columns(model):
    """[(column, attname, field)] of the model's own table (local concrete fields)."""
    return [(f.column, f.attname, f) for f in model._meta.local_concrete_fields]


def written_tables(model):
    """The concrete model and its multi-table parents: [(db_table, columns)] a save writes."""
    concrete = model._meta.concrete_model
    models = [concrete, *concrete._meta.get_parent_list()]
    return [(m._meta.db_table, table_columns(m)) for m in models]


@derived
def written_granular_columns(model, vendor):
    """written_tables() with only the columns whose conditions can narrow invalidation:
    the only ones schemes name, so the only ones an invalidation needs of a row."""
    return [(table, [c for c in columns if is_granular_field(c[2], vendor)])
            for table, columns in written_tables(model)]


MEMO_SIZE = 10000  # entries per per-process memo


def remember(memo, key, value):
    """Store value in a per-process memo, and return it: every memo whose keys may grow
    with what a process sees (queries, lookups, names from requests, models made on the
    fly) is filled through this. Crude, but bounded: a full memo is emptied (never
    replaced: readers hold it), and a busy process refills it with what it uses."""
    if len(memo) >= MEMO_SIZE:
        memo.clear()
    memo[key] = value
    return value


_undecodable_seen = {}


def undecodable(key, data, error):
    """Log a cached value that can't be decoded (it is taken for a miss) once per key and
    bytes: a foreign value a program keeps writing there would log on every read."""
    seen = (key, md5hex(data))
    if seen not in _undecodable_seen:
        remember(_undecodable_seen, seen, True)
        logging.getLogger('cacheops').warning(
            'cacheops: the value at %s can not be decoded (%s: %s); taken for a miss',
            key, type(error).__name__, error)


def checked_timeout(timeout, where, whole=True):
    """timeout if None or a positive number of seconds (whole ones where Redis expires the
    entry); else TypeError or ValueError naming where, raised at the call, not at a miss."""
    if timeout is None:
        return None
    what = 'whole number' if whole else 'number'
    if isinstance(timeout, bool) or not isinstance(timeout, int if whole else (int, float)):
        raise TypeError('%s: timeout must be None or a positive %s of seconds, got %r'
                        % (where, what, timeout))
    if timeout <= 0:
        raise ValueError('%s: timeout must be None or a positive %s of seconds, got %r'
                         % (where, what, timeout))
    return timeout


# what object.__repr__ (and many a C type's) shows: an address, new in every process
_MEMORY_ADDRESS = re.compile(r' at 0x[0-9a-fA-F]+')


class UnkeyableValue(TypeError):
    """A value no cache key can be made of."""


def stable_repr(value):
    """repr(value), for a cache key; TypeError for one showing a memory address (a class
    with no __repr__ of its own): its key would differ in every process and for every
    object, and each call would store an entry no later call reads."""
    text = repr(value)
    # a default repr is '<... at 0x...>'; a string's starts with a quote, whatever it holds
    if text.startswith('<') and _MEMORY_ADDRESS.search(text):
        raise UnkeyableValue('%s can not be part of a cache key: its repr() shows a memory address; '
                             'give %s a __repr__ that shows its value, or key the call with extra='
                             % (text, type(value).__qualname__))
    return text


def keyed_arguments(arguments, key_repr):
    """key_repr({name: value}) of a call's arguments; an argument no key can be made of is
    named in the TypeError."""
    try:
        return key_repr(arguments)
    except UnkeyableValue:
        for name, value in arguments.items():
            try:
                key_repr(value)
            except UnkeyableValue as e:
                raise UnkeyableValue('cacheops: argument %r: %s' % (name, e)) from None
        raise


def chunks(iterable, size):
    """Up to size items of an iterable at a time (lists; slices of a sequence), consumed lazily."""
    return funcy.chunks(size, iterable)


def glob_escape(text):
    """text as a literal in a SCAN pattern."""
    return ''.join('\\' + c if c in '*?[]\\' else c for c in text)


def glob_regex(pattern):
    """A regex for a SCAN pattern of literals, escapes and '*' (as glob_escape and invalidate.lua make them)."""
    parts = re.findall(r'\\.|.', pattern, re.DOTALL)
    return ''.join('.*' if part == '*' else re.escape(part[-1]) for part in parts)


def common_glob_head(patterns):
    """The literal start all these patterns share, as a pattern (escapes kept whole)."""
    heads = [re.match(r'(?:\\.|[^*?\[\\])*', pattern, re.DOTALL).group() for pattern in patterns]
    head = os.path.commonprefix(heads)
    return head[:-1] if re.search(r'(?<!\\)(?:\\\\)*\\$', head) else head  # not half an escape
