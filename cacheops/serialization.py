"""The default serializer: pickle, with model instances in a compact form.

Django pickles an instance as model_unpickle, its class label, a copy of its __dict__
keyed by attribute names, a pickled ModelState and the Django version: most of a small
row's pickle is names. Here an instance is reduced to a call

    _rebuild((app_label, object_name, layout token), values[, state[, omitted]])

values: the concrete field values in _meta.concrete_fields order, but for the fields
flagged in the omitted bit mask (deferred ones, and those set by _restore below); state:
the db alias of a loaded instance (_state.adding False), left out for the default one,
else ModelState's state as a dict. The model id is one object per class, so pickle
writes it once per pickle and refers to it afterwards.

Pickle memoizes an object once its reducing call returned, so nothing in that call may
refer back to the instance. Whatever might - fields_cache, other attributes (prefetched
objects, annotations), field values of types other than plain scalars (a FieldFile
refers to its instance) - is set by a second call, _restore(instance, extra), pickled
after the instance is memoized: cycles through it (prefetch_related sets a
back-reference in every child) unpickle as with Django's own form.

The output is a plain pickle: pickle.loads reads it, as long as cacheops is importable.
The layout token is a checksum of the field attnames and types: when a model's fields
have changed since a value was written, _rebuild raises LayoutChanged, and the cache
takes the value for a miss. Only instances of models that keep Django's own pickling
(__reduce__, __reduce_ex__, __getstate__, __setstate__, no copyreg reducer) are written
compactly; everything else pickles exactly as pickle.dumps does.
"""
import copyreg
import datetime
import decimal
import io
import pickle
import uuid
import zlib

from django.apps import apps
from django.db import DEFAULT_DB_ALIAS
from django.db.models import Model
from django.db.models.base import ModelState

from .utils import remember

try:
    from django.db.models.fetch_modes import FETCH_ONE, FetchMode  # Django 6.1+
except ImportError:
    FETCH_ONE = object()  # no fetch modes: a value no state holds
    FetchMode = ()

PROTOCOL = pickle.DEFAULT_PROTOCOL  # as pickle.dumps(), so other values pickle the same
# ModelState.__getstate__, where Django defines one (6.1 drops weak references to peers);
# without one, pickle takes its __dict__
_model_state_getstate = ModelState.__dict__.get('__getstate__')
# Values of these types can't refer back to an instance: they may go in _rebuild's call
SCALAR_TYPES = frozenset({
    type(None), bool, int, float, str, bytes, decimal.Decimal, uuid.UUID,
    datetime.datetime, datetime.date, datetime.time, datetime.timedelta,
})


class LayoutChanged(pickle.UnpicklingError):
    """A compact value was written for other fields of its model (or a model now gone)."""


class _Layout:
    """What a model's compact form depends on; one per model class."""
    __slots__ = ('cls', 'model_id', 'attnames', 'attname_set', 'plain_size', 'present')

    def __init__(self, cls, token):
        meta = cls._meta
        self.cls = cls
        self.model_id = (meta.app_label, meta.object_name, token)
        self.attnames = tuple(f.attname for f in meta.concrete_fields)
        self.attname_set = frozenset(self.attnames)
        self.plain_size = len(self.attnames) + 1  # every field and _state, nothing else
        self.present = {0: self.attnames}  # omitted bit mask -> the attnames in values


def layout_token(cls):
    """A 31-bit checksum of a model's concrete fields: attnames and types, in order."""
    fields = ','.join('%s:%s' % (f.attname, f.get_internal_type()) for f in cls._meta.concrete_fields)
    return zlib.crc32(fields.encode()) & 0x7FFFFFFF


def keeps_django_pickling(cls):
    """Whether instances of a model class pickle the way Django's Model does."""
    return (cls.__reduce__ is Model.__reduce__ and cls.__reduce_ex__ is Model.__reduce_ex__
            and cls.__getstate__ is Model.__getstate__ and cls.__setstate__ is Model.__setstate__)


def _is_registered(cls):
    # unpickling finds the class by its label, as Django's model_unpickle does
    meta = cls._meta
    try:
        return apps.get_model(meta.app_label, meta.object_name) is cls
    except LookupError:
        return False


_layouts = {}  # model class -> _Layout, or None: pickled the default way


def _layout(cls):
    try:
        return _layouts[cls]
    except KeyError:
        pass
    eligible = keeps_django_pickling(cls) and _is_registered(cls)
    return remember(_layouts, cls, _Layout(cls, layout_token(cls)) if eligible else None)


# Dumping

class Pickler(pickle.Pickler):
    """pickle.Pickler writing model instances in the compact form."""

    def reducer_override(self, obj):
        if isinstance(obj, Model):
            return reduce_instance(obj)
        return NotImplemented


def dumps(value):
    """Pickle value like pickle.dumps(), with model instances in the compact form."""
    buffer = io.BytesIO()
    Pickler(buffer, PROTOCOL).dump(value)
    return buffer.getvalue()


loads = pickle.loads


def reduce_instance(obj):
    """The compact reduce tuple of a model instance, or NotImplemented for pickle's own."""
    cls = obj.__class__
    layout = _layout(cls)
    if layout is None or cls in copyreg.dispatch_table:
        return NotImplemented
    attrs = obj.__dict__
    model_state = attrs.get('_state')
    if model_state.__class__ is not ModelState:
        return NotImplemented
    state = _model_state_getstate(model_state) if _model_state_getstate else model_state.__dict__
    state_arg = _state_arg(state)
    if state_arg is None:
        return NotImplemented
    related = state.get('fields_cache')

    if len(attrs) == layout.plain_size:  # the usual case: every field, nothing else
        try:
            values = tuple([attrs[name] for name in layout.attnames])
        except KeyError:
            values = None
        if values is not None and SCALAR_TYPES.issuperset(map(type, values)):
            args = (layout.model_id, values) if state_arg is DEFAULT_DB_ALIAS else \
                (layout.model_id, values, state_arg)
            if not related:
                return _rebuild, args
            return _rebuild, args, (related, None, ()), None, None, _restore
    return _reduce_general(layout, attrs, state_arg, related)


def _reduce_general(layout, attrs, state_arg, related):
    # deferred fields, other attributes, field values that are not scalars
    values, later, omitted = [], {}, 0
    for i, name in enumerate(layout.attnames):
        if name in attrs and type(attrs[name]) in SCALAR_TYPES:
            values.append(attrs[name])
        else:
            omitted |= 1 << i
            if name in attrs:
                later[name] = attrs[name]
    later.update((name, value) for name, value in attrs.items()
                 if name != '_state' and name not in layout.attname_set)
    # memoryview can't be pickled: stored as bytes, turned back as Django's __setstate__ does
    memoryviews = tuple(name for name, value in later.items() if type(value) is memoryview)
    for name in memoryviews:
        later[name] = bytes(later[name])

    values = tuple(values)
    if omitted:
        args = (layout.model_id, values, state_arg, omitted)
    elif state_arg is DEFAULT_DB_ALIAS:
        args = (layout.model_id, values)
    else:
        args = (layout.model_id, values, state_arg)
    if not (related or later):
        return _rebuild, args
    return _rebuild, args, (related or None, later or None, memoryviews), None, None, _restore


def _state_arg(state):
    """ModelState's state as stored: the db alias alone in the usual case (DEFAULT_DB_ALIAS
    itself for the default one), else a dict; None when it holds what might refer back
    to the instance."""
    rest = {name: value for name, value in state.items()
            # fields_cache travels apart; FETCH_ONE is what ModelState gives when unset
            if name != 'fields_cache' and not (name == 'fetch_mode' and value is FETCH_ONE)}
    db = rest.get('db')
    if len(rest) == 2 and rest.get('adding') is False and db.__class__ is str:
        return DEFAULT_DB_ALIAS if db == DEFAULT_DB_ALIAS else db
    if all(type(value) in SCALAR_TYPES or isinstance(value, FetchMode) for value in rest.values()):
        return rest
    return None


def _present(layout, omitted):
    """The attnames whose values are in _rebuild's call, for an omitted bit mask."""
    try:
        return layout.present[omitted]
    except KeyError:
        names = tuple(name for i, name in enumerate(layout.attnames) if not omitted >> i & 1)
        layout.present[omitted] = names
        return names


# Loading

_loaded = {}  # model id -> _Layout, once checked against the model's current fields


def _checked_layout(model_id):
    try:
        return _loaded[model_id]
    except KeyError:
        pass
    app_label, object_name, _ = model_id
    try:
        cls = apps.get_model(app_label, object_name)
    except LookupError:
        raise LayoutChanged('model %s.%s is gone' % (app_label, object_name))
    layout = _layout(cls)
    if layout is None or layout.model_id != model_id:
        raise LayoutChanged('%s.%s was pickled with other fields' % (app_label, object_name))
    return remember(_loaded, model_id, layout)


# Stored values call _rebuild and _restore by name: keep both, and their arguments, as
# long as values written with them may be around.

def _rebuild(model_id, values, state=DEFAULT_DB_ALIAS, omitted=0):
    """Unpickle a model instance from its compact form."""
    layout = _loaded.get(model_id) or _checked_layout(model_id)
    cls = layout.cls
    obj = cls.__new__(cls)
    model_state = ModelState()
    if state.__class__ is str:
        model_state.db = state
        model_state.adding = False
    else:
        model_state.__dict__.update(state)
    attrs = obj.__dict__
    attrs['_state'] = model_state
    attrs.update(zip(_present(layout, omitted) if omitted else layout.attnames, values))
    return obj


def _restore(obj, extra):
    """Set the rest of an unpickled instance: (fields_cache, other attributes and field
    values, names of those to turn back into memoryviews)."""
    related, later, memoryviews = extra
    attrs = obj.__dict__
    if related:
        attrs['_state'].fields_cache = related
    if later:
        attrs.update(later)
    for name in memoryviews:
        attrs[name] = memoryview(attrs[name])
