"""Values in a fingerprint, and the dispatch table every part of the walk goes through.

Values go into the tree as they are when marshal writes them, else tagged; each class
the walk knows has a handler in `_handlers`, registered by the module that reads it
(expressions.py, query.py). A class without one is Unknown: the caller compiles.
"""
import datetime
import decimal
import uuid
import zoneinfo

from django.conf import settings
from django.core.signals import setting_changed


class Unknown(Exception):
    """The query holds something the fingerprint can't vouch for."""


_handlers = {}  # class: its handler; filled below and by the other modules of the walk


def _fingerprint(obj):
    handler = _handlers.get(type(obj))
    if handler is None:
        raise Unknown(type(obj))
    return handler(obj)


fingerprint_value = _fingerprint  # for chain.py: a recorded value as the walk reads it


# Values go into the tree as they are when marshal writes them (it refuses subclasses),
# else as their repr, which tells equal values from different ones for the whitelisted
# types. Containers are tagged, so that a tuple of values never reads as an expression
# (tagged with its class name).

MARSHALLED = frozenset({type(None), bool, int, float, str, bytes})


def _plain(value):
    """Plain data as it is: marshal refuses any type but the plain ones inside."""
    return value


def _repr(value):
    return ('repr', repr(value))


def _datetime(value):
    # the repr of other tzinfo classes may not tell two zones apart
    tz = value.tzinfo
    if tz is None or type(tz) is datetime.timezone or (type(tz) is zoneinfo.ZoneInfo and tz.key):
        return ('repr', repr(value))
    raise Unknown(type(tz))


def _list(value):
    return ('list', *map(_fingerprint, value))


def _tuple(value):
    return ('tuple', *map(_fingerprint, value))


def _set(value):
    # in iteration order, which is the order their items reach the params in
    return ('set', *map(_fingerprint, value))


def _frozenset(value):
    return ('frozenset', *map(_fingerprint, value))


def _dict(value):
    return ('dict', *[(_str(key), _fingerprint(item)) for key, item in value.items()])


def _str(value):
    if type(value) is not str:
        raise Unknown(type(value))
    return value


def _names(names):
    """A set of names (masks, deferred fields), in an order stable across processes."""
    if names is None:
        return None
    return tuple(sorted(map(_str, names)))


_settings_cache = {}


def _settings():
    """What adapting datetimes to the database depends on besides the value."""
    try:
        return _settings_cache['']
    except KeyError:
        value = _settings_cache[''] = (settings.USE_TZ, settings.TIME_ZONE)
        return value


def _forget_settings(setting, **kwargs):
    if setting in ('USE_TZ', 'TIME_ZONE'):
        _settings_cache.clear()


setting_changed.connect(_forget_settings)

def _empty(value):
    """What must be empty for us to know the SQL (extra tables, filtered relations...)."""
    if value:
        raise Unknown(value)
    return None


_handlers.update({cls: _plain for cls in MARSHALLED})
_handlers.update({cls: _repr for cls in (decimal.Decimal, datetime.date, datetime.timedelta, uuid.UUID)})
_handlers.update({
    datetime.datetime: _datetime,
    datetime.time: _datetime,
    list: _list,
    tuple: _tuple,
    set: _set,
    frozenset: _frozenset,
})
# handlers whose output is a value or a tagged container, not a class's tag
VALUE_HANDLERS = (_plain, _repr, _datetime, _list, _tuple, _set, _frozenset)
