"""Settings with defaults, validated in one place, and profile lookup."""
import importlib
import inspect
import pickle
from dataclasses import dataclass

from django.conf import settings as django_settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.utils.module_loading import import_string

ALL_OPS = frozenset({'get', 'fetch', 'count', 'aggregate', 'exists'})
PROFILE_OPTIONS = frozenset({'ops', 'timeout', 'local_get', 'db_agnostic', 'cache_on_save', 'lock'})

DEFAULTS = {
    'CACHEOPS_ENABLED': True,
    'CACHEOPS_REDIS': {},
    'CACHEOPS_SENTINEL': {},
    'CACHEOPS_CLIENT_CLASS': None,
    'CACHEOPS_DEFAULTS': {},
    'CACHEOPS': {},
    'CACHEOPS_PREFIX': None,
    'CACHEOPS_INSIDEOUT': False,
    'CACHEOPS_DEGRADE_ON_FAILURE': False,
    'CACHEOPS_SKIP_FIELDS': ('FileField', 'TextField', 'BinaryField', 'JSONField'),
    'CACHEOPS_LONG_DISJUNCTION': 8,
    'CACHEOPS_SERIALIZER': 'pickle',
    'CACHEOPS_LOCK_WAIT': 30,
    'FILE_CACHE_DIR': '/tmp/cacheops_file_cache',
    'FILE_CACHE_TIMEOUT': 60 * 60 * 24 * 30,
}


# Read where they are used, so checked on every read: a flag given a string ('no') would
# read as true, a number given one fails far from the setting
FLAGS = frozenset({'CACHEOPS_ENABLED', 'CACHEOPS_INSIDEOUT', 'CACHEOPS_DEGRADE_ON_FAILURE'})
DURATIONS = frozenset({'CACHEOPS_LOCK_WAIT', 'FILE_CACHE_TIMEOUT'})


class Settings:
    """Each CACHEOPS_* attribute reads the Django setting or its default, so override_settings works."""
    def __getattr__(self, name):
        if name not in DEFAULTS:
            raise AttributeError(name)
        value = getattr(django_settings, name, DEFAULTS[name])
        if name in FLAGS and not isinstance(value, int):  # True and False are ints
            raise ImproperlyConfigured('%s must be True or False, got %r' % (name, value))
        if name in DURATIONS and not _is_duration(value):
            raise ImproperlyConfigured('%s must be a positive number of seconds, got %r' % (name, value))
        return value


def _is_duration(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0


settings = Settings()


# Derived values are computed once and dropped whenever a setting changes.
_derived = {}


def derived(func):
    """Memoize a function of settings until the next setting_changed."""
    code = func.__code__
    if code.co_argcount == 0 and not code.co_flags & inspect.CO_VARARGS:
        # most are asked on every cache hit, several times: the function alone is the key
        def wrapper():
            try:
                return _derived[func]
            except KeyError:
                value = _derived[func] = func()
                return value
    else:
        def wrapper(*args):
            key = (func, args)
            try:
                return _derived[key]
            except KeyError:
                value = _derived[key] = func(*args)
                return value
    wrapper.__name__ = func.__name__
    wrapper.__doc__ = func.__doc__
    return wrapper


def _reset_derived(setting, **kwargs):
    if setting.startswith('CACHEOPS') or setting in ('DATABASES', 'FILE_CACHE_DIR', 'FILE_CACHE_TIMEOUT'):
        _derived.clear()


setting_changed.connect(_reset_derived)


# Profiles

@dataclass(frozen=True)
class Profile:
    name: str
    ops: frozenset
    timeout: int
    local_get: bool = False
    db_agnostic: bool = True
    cache_on_save: object = False
    lock: bool = False


def normalize_ops(ops, where):
    """'all', a single op or a collection of ops -> frozenset of op names."""
    if ops is None:
        return frozenset()
    if isinstance(ops, str):
        ops = ALL_OPS if ops == 'all' else {ops}
    try:
        ops = frozenset(ops)
    except TypeError:
        raise ImproperlyConfigured(
            '%s: ops must be a string or a collection of strings, got %r' % (where, ops))
    if 'all' in ops:
        ops = (ops - {'all'}) | ALL_OPS
    unknown = ops - ALL_OPS
    if unknown:
        raise ImproperlyConfigured(
            '%s: unknown ops %s; use any of %s or "all"'
            % (where, ', '.join(sorted(map(repr, unknown))), ', '.join(sorted(ALL_OPS))))
    return ops


def _make_profile(name, options, defaults):
    where = 'CACHEOPS[%r]' % name
    if not isinstance(options, dict):
        raise ImproperlyConfigured('%s must be a dict of options or None, got %r' % (where, options))
    merged = {**defaults, **options}
    unknown = set(merged) - PROFILE_OPTIONS
    if unknown:
        raise ImproperlyConfigured('%s: unknown options %s; known ones are %s' % (
            where, ', '.join(sorted(unknown)), ', '.join(sorted(PROFILE_OPTIONS))))
    timeout = merged.get('timeout')
    if isinstance(timeout, bool) or not isinstance(timeout, int) or timeout <= 0:
        raise ImproperlyConfigured(
            '%s needs a positive integer timeout in seconds, got %r; '
            'set it there or in CACHEOPS_DEFAULTS' % (where, timeout))
    cache_on_save = merged.get('cache_on_save', False)
    if not isinstance(cache_on_save, (bool, str)):
        raise ImproperlyConfigured('%s: cache_on_save must be True or a field name' % where)
    return Profile(
        name=name,
        ops=normalize_ops(merged.get('ops'), where),
        timeout=timeout,
        local_get=bool(merged.get('local_get', False)),
        db_agnostic=bool(merged.get('db_agnostic', True)),
        cache_on_save=cache_on_save,
        lock=bool(merged.get('lock', False)),
    )


def _check_profile_name(name):
    parts = name.split('.') if isinstance(name, str) else ()
    if len(parts) != 2 or not all(parts) or (parts[0] == '*' and parts[1] != '*'):
        raise ImproperlyConfigured(
            "CACHEOPS keys are 'app_label.model_name', 'app_label.*' or '*.*', got %r" % (name,))


@derived
def profiles():
    """{'app.model' | 'app.*' | '*.*': Profile or None}, validated."""
    defaults = settings.CACHEOPS_DEFAULTS
    if not isinstance(defaults, dict):
        raise ImproperlyConfigured('CACHEOPS_DEFAULTS must be a dict, got %r' % (defaults,))
    config = settings.CACHEOPS
    if not isinstance(config, dict):
        raise ImproperlyConfigured('CACHEOPS must be a dict of profiles, got %r' % (config,))
    result = {}
    for name, options in config.items():
        _check_profile_name(name)
        result[name.lower()] = None if options is None else _make_profile(name, options, defaults)
    return result


@derived
def model_profile(model):
    """The profile in force for a model ('app.model' > 'app.*' > '*.*'), or None."""
    if not settings.CACHEOPS_ENABLED:
        return None
    meta = model._meta
    table = profiles()
    for name in ('%s.%s' % (meta.app_label, meta.model_name), '%s.*' % meta.app_label, '*.*'):
        if name in table:
            return table[name]
    return None


# Other derived settings

@derived
def prefix_func():
    """CACHEOPS_PREFIX as a callable of a query, or None for no prefix."""
    prefix = settings.CACHEOPS_PREFIX
    if prefix is None or prefix == '':
        return None
    if isinstance(prefix, str):
        try:
            prefix = import_string(prefix)
        except ImportError as e:
            raise ImproperlyConfigured(
                'CACHEOPS_PREFIX must be a callable or a dotted path to one: %s' % e)
    if not callable(prefix):
        raise ImproperlyConfigured('CACHEOPS_PREFIX must be a callable or a dotted path to one, '
                                   'got %r' % (prefix,))
    return prefix


@derived
def insideout():
    """CACHEOPS_INSIDEOUT, read once per setting change: every cache read asks."""
    return bool(settings.CACHEOPS_INSIDEOUT)


@derived
def serializer():
    """CACHEOPS_SERIALIZER resolved to an object with dumps() and loads()."""
    value = settings.CACHEOPS_SERIALIZER
    if isinstance(value, str):
        try:
            value = importlib.import_module(value)
        except ImportError:
            try:
                value = import_string(value)
            except ImportError as e:
                raise ImproperlyConfigured('CACHEOPS_SERIALIZER: cannot import %r: %s' % (value, e))
    if not (callable(getattr(value, 'dumps', None)) and callable(getattr(value, 'loads', None))):
        raise ImproperlyConfigured(
            'CACHEOPS_SERIALIZER must be a module or class with dumps() and loads(), got %r' % (value,))
    if value is pickle:
        # the same pickle format, with model instances written compactly
        from . import serialization
        return serialization
    return value


@derived
def skip_field_types():
    """CACHEOPS_SKIP_FIELDS as a tuple of field class names."""
    value = settings.CACHEOPS_SKIP_FIELDS
    if isinstance(value, str) or not all(isinstance(v, (str, type)) for v in value):
        raise ImproperlyConfigured('CACHEOPS_SKIP_FIELDS must be a list of field classes or their names')
    return tuple(v if isinstance(v, str) else v.__name__ for v in value)


@derived
def client_class():
    """CACHEOPS_CLIENT_CLASS resolved to a class, or None for redis-py's redis.Redis."""
    path = settings.CACHEOPS_CLIENT_CLASS
    if not path:
        return None
    try:
        cls = import_string(path) if isinstance(path, str) else path
    except ImportError as e:
        raise ImproperlyConfigured('CACHEOPS_CLIENT_CLASS: cannot import %r: %s' % (path, e))
    if not isinstance(cls, type):
        raise ImproperlyConfigured('CACHEOPS_CLIENT_CLASS must name a redis client class, got %r' % (cls,))
    return cls


@derived
def is_cluster():
    """Whether the client is a Redis Cluster's: its class has get_nodes, as redis-py's
    RedisCluster. Known from the settings, without a client, so the key layout (keys.py)
    can ask it."""
    cls = client_class()
    return cls is not None and hasattr(cls, 'get_nodes')


@derived
def long_disjunction():
    value = settings.CACHEOPS_LONG_DISJUNCTION
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ImproperlyConfigured('CACHEOPS_LONG_DISJUNCTION must be a positive integer, got %r'
                                   % (value,))
    return value


# System checks (registered in apps.py): every validation above, run early

def setting_errors(make_client):
    """[(check id, message)] of every bad setting. make_client() builds the Redis client
    from CACHEOPS_REDIS, CACHEOPS_SENTINEL and CACHEOPS_CLIENT_CLASS as a use would, so
    that whatever redis-py refuses is caught: apps.py passes cacheops.redis's, a layer
    above this one."""
    validations = [
        ('cacheops.E001', profiles),
        ('cacheops.E002', make_client),
        ('cacheops.E003', prefix_func),
        ('cacheops.E004', serializer),
        ('cacheops.E005', skip_field_types),
        ('cacheops.E006', long_disjunction),
        *(('cacheops.E007', _reader(name)) for name in sorted(FLAGS)),
        *(('cacheops.E008', _reader(name)) for name in sorted(DURATIONS)),
    ]
    errors = []
    for check_id, validate in validations:
        try:
            validate()
        except ImproperlyConfigured as e:
            errors.append((check_id, str(e)))
    return errors


def _reader(name):
    return lambda: getattr(settings, name)


def setting_warnings(installed_labels, model_exists):
    """[(check id, message, hint or None)] of valid profiles that likely say what was not meant."""
    table = profiles()
    warnings = []
    wide = table.get('*.*')
    if wide is not None and wide.ops:
        warnings.append((
            'cacheops.W001',
            "CACHEOPS['*.*'] caches %s for every model, migrations' and other apps' included"
            % ', '.join(sorted(wide.ops)),
            "Enable automatic caching per app with 'app_label.*' and keep '*.*' ops empty."))
    for name in table:
        app, model = name.split('.')
        if app == '*':
            continue
        if app not in installed_labels:
            warnings.append(('cacheops.W002', "CACHEOPS[%r] names an app that is not installed" % name, None))
        elif model != '*' and not model_exists(app, model):
            warnings.append(('cacheops.W002', "CACHEOPS[%r] names a model that does not exist" % name, None))
    return warnings
