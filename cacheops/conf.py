"""Settings with defaults, validated in one place, and profile lookup."""
import importlib
import inspect
import os
import pickle
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

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
    'CACHEOPS_CLUSTER': {},
    'CACHEOPS_CLIENT_CLASS': None,
    'CACHEOPS_DEFAULTS': {},
    'CACHEOPS': {},
    'CACHEOPS_PREFIX': None,
    'CACHEOPS_INSIDEOUT': False,
    'CACHEOPS_DEGRADE_ON_FAILURE': False,
    'CACHEOPS_SKIP_FIELDS': ('FileField', 'TextField', 'BinaryField', 'JSONField'),
    'CACHEOPS_LONG_DISJUNCTION': 8,
    'CACHEOPS_INVALIDATE_UPDATES': True,
    'CACHEOPS_SERIALIZER': 'pickle',
    'CACHEOPS_LOCK_WAIT': 30,
    'CACHEOPS_SPOOL_DIR': None,  # checked in spool.py
    'CACHEOPS_STRICT_KEYS': False,
    'FILE_CACHE_DIR': '/tmp/cacheops_file_cache',
    'FILE_CACHE_TIMEOUT': 60 * 60 * 24 * 30,
}


# Read where they are used, so checked on every read: a flag given a string ('no') would
# read as true, a number given one fails far from the setting
FLAGS = frozenset({'CACHEOPS_ENABLED', 'CACHEOPS_INSIDEOUT', 'CACHEOPS_DEGRADE_ON_FAILURE',
                   'CACHEOPS_INVALIDATE_UPDATES', 'CACHEOPS_STRICT_KEYS'})
DURATIONS = frozenset({'CACHEOPS_LOCK_WAIT', 'FILE_CACHE_TIMEOUT'})
# a Redis expiry (the dog-pile lock's), which Redis takes in whole seconds only
WHOLE_DURATIONS = frozenset({'CACHEOPS_LOCK_WAIT'})


class Settings:
    """Each CACHEOPS_* attribute reads the Django setting or its default, so override_settings works."""
    def __getattr__(self, name):
        if name not in DEFAULTS:
            raise AttributeError(name)
        value = getattr(django_settings, name, DEFAULTS[name])
        if name in FLAGS and not isinstance(value, int):  # True and False are ints
            raise ImproperlyConfigured('%s must be True or False, got %r' % (name, value))
        if name in DURATIONS and not _is_duration(value, name in WHOLE_DURATIONS):
            raise ImproperlyConfigured('%s must be a positive %s of seconds, got %r' % (
                name, 'whole number' if name in WHOLE_DURATIONS else 'number', value))
        return value


def _is_duration(value, whole=False):
    return isinstance(value, int if whole else (int, float)) and not isinstance(value, bool) and value > 0


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


def _serializer_gives_bytes():
    """CACHEOPS_SERIALIZER's dumps() must give bytes: insideout mode prefixes them with a
    checksum (conj-set mode gets by with a str, which Redis encodes, until the mode switches)."""
    value = serializer()
    try:
        dumped = value.dumps(['cacheops', 1])
    except Exception:  # noqa: BLE001 - one for model instances only, say: not this check's to tell
        return
    if not isinstance(dumped, bytes):
        raise ImproperlyConfigured('CACHEOPS_SERIALIZER: dumps() must return bytes, got %s from %r'
                                   % (type(dumped).__name__, value))


def unsafe_directory(path):
    """Why the file cache must not use this directory, or None: whoever else can write in
    it can plant a pickle this process loads. A missing one is fine (the cache makes it)."""
    try:
        stat = os.stat(path)
    except FileNotFoundError:
        return None
    if hasattr(os, 'getuid') and stat.st_uid != os.getuid():
        return 'it is owned by another user (uid %d)' % stat.st_uid
    if stat.st_mode & 0o022:
        return 'others can write in it (mode %o)' % (stat.st_mode & 0o777)
    return None


def _file_cache_dir_safe():
    path = settings.FILE_CACHE_DIR
    if not isinstance(path, (str, os.PathLike)):
        raise ImproperlyConfigured('FILE_CACHE_DIR must be a path, got %r' % (path,))
    reason = unsafe_directory(path)
    if reason:
        raise ImproperlyConfigured('FILE_CACHE_DIR %r is refused: %s; point FILE_CACHE_DIR at a '
                                   'directory of your own that only you can write' % (path, reason))


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
        hint = ' (redis.cluster needs redis-py 4.1 or newer)' if str(path).startswith('redis.cluster') else ''
        raise ImproperlyConfigured('CACHEOPS_CLIENT_CLASS: cannot import %r: %s%s' % (path, e, hint))
    if not isinstance(cls, type):
        raise ImproperlyConfigured('CACHEOPS_CLIENT_CLASS must name a redis client class, got %r' % (cls,))
    return cls


@derived
def is_cluster():
    """Whether the client is a Redis Cluster's: CACHEOPS_CLUSTER is set, or the client class
    has get_nodes, as redis-py's RedisCluster. Known from the settings, without a client, so
    the key layout (keys.py) can ask it."""
    if settings.CACHEOPS_CLUSTER:
        return True
    cls = client_class()
    return cls is not None and hasattr(cls, 'get_nodes')


# Redis Cluster: CACHEOPS_CLUSTER, or CACHEOPS_REDIS with a cluster client class. Each
# check below passes when no cluster is asked for; validate_cluster() runs them all.

def _cluster_class_named():
    """Whether CACHEOPS_CLIENT_CLASS names a cluster client (False when it names nothing importable)."""
    try:
        cls = client_class()
    except ImproperlyConfigured:  # E002's to report
        return False
    return cls is not None and hasattr(cls, 'get_nodes')


def _wants_cluster():
    return bool(settings.CACHEOPS_CLUSTER) or _cluster_class_named()


def _cluster_client_available():
    if not settings.CACHEOPS_CLUSTER:
        return
    try:
        importlib.import_module('redis.cluster')
    except ImportError:
        raise ImproperlyConfigured(
            'CACHEOPS_CLUSTER needs redis.cluster, which redis-py has from 4.1 on: '
            'upgrade redis-py (pip install "redis>=4.1")')


def _cluster_alone():
    if not _wants_cluster():
        return
    if settings.CACHEOPS_SENTINEL:
        raise ImproperlyConfigured(
            'CACHEOPS_SENTINEL and a Redis Cluster exclude each other: a cluster fails over by '
            'itself; remove CACHEOPS_SENTINEL')
    if settings.CACHEOPS_CLUSTER and settings.CACHEOPS_REDIS:
        raise ImproperlyConfigured(
            'CACHEOPS_CLUSTER and CACHEOPS_REDIS are both set: remove CACHEOPS_REDIS (or, for '
            'a cluster given by URL, CACHEOPS_CLUSTER, with CACHEOPS_CLIENT_CLASS = '
            "'redis.cluster.RedisCluster')")


@derived
def cluster_options():
    """CACHEOPS_CLUSTER as ([(host, port), ...], {the other RedisCluster options}), or None."""
    conf = settings.CACHEOPS_CLUSTER
    if not conf:
        return None
    shape = "CACHEOPS_CLUSTER must be a dict with 'startup_nodes': [(host, port), ...]"
    if not isinstance(conf, dict):
        raise ImproperlyConfigured('%s, got %r' % (shape, conf))
    nodes = conf.get('startup_nodes')
    if isinstance(nodes, (str, bytes)) or not isinstance(nodes, (list, tuple)) or not nodes:
        raise ImproperlyConfigured('%s; startup_nodes is %r' % (shape, nodes))
    pairs = [_node_pair(node) for node in nodes]
    if None in pairs:
        raise ImproperlyConfigured('%s (a host name and a port number each); got %r'
                                   % (shape, nodes[pairs.index(None)]))
    if settings.CACHEOPS_CLIENT_CLASS and not _cluster_class_named():
        raise ImproperlyConfigured(
            'CACHEOPS_CLIENT_CLASS %r is no cluster client: with CACHEOPS_CLUSTER leave it '
            'unset or name a subclass of redis.cluster.RedisCluster' % (settings.CACHEOPS_CLIENT_CLASS,))
    replicas = sorted(set(conf) & {'read_from_replicas', 'load_balancing_strategy'})
    if any(conf[option] for option in replicas):  # a replica lags its primary: invariant 1
        raise ImproperlyConfigured('CACHEOPS_CLUSTER sets %s: cacheops reads from primaries only, as a '
                                   'replica may lack an invalidation; remove it' % ' and '.join(replicas))
    return pairs, {k: v for k, v in conf.items() if k != 'startup_nodes'}


def _node_pair(node):
    """(host, port) of a startup node given as a pair or as redis-py's ClusterNode, else None."""
    if isinstance(node, (list, tuple)) and len(node) == 2:
        host, port = node
    elif hasattr(node, 'host') and hasattr(node, 'port'):
        host, port = node.host, node.port
    else:
        return None
    if not isinstance(host, str) or not host or isinstance(port, bool) or not isinstance(port, int):
        return None
    return (host, port) if 0 < port < 65536 else None


def _cluster_db_zero():
    if not _wants_cluster():
        return
    conf = settings.CACHEOPS_CLUSTER or settings.CACHEOPS_REDIS
    name = 'CACHEOPS_CLUSTER' if settings.CACHEOPS_CLUSTER else 'CACHEOPS_REDIS'
    db = _db_asked(conf)
    if db not in (None, 0, '0'):
        raise ImproperlyConfigured(
            'A Redis Cluster has db 0 only, and %s asks for db %s: remove the db from it '
            '(tell projects sharing a cluster apart with CACHEOPS_PREFIX)' % (name, db))


def _db_asked(conf):
    """The db a connection setting (a dict or a URL) names, or None."""
    if isinstance(conf, dict):
        return conf.get('db')
    if not isinstance(conf, str):
        return None
    url = urlsplit(conf)
    db = parse_qs(url.query).get('db', [None])[0]  # redis-py takes ?db= over the path
    if db is None and url.scheme != 'unix':
        db = url.path.strip('/') or None
    return int(db) if isinstance(db, str) and db.isdigit() else db


CLUSTER_CHECKS = [
    ('cacheops.E012', _cluster_client_available),
    ('cacheops.E009', _cluster_alone),
    ('cacheops.E011', cluster_options),
    ('cacheops.E010', _cluster_db_zero),
]


def validate_cluster():
    """Raise ImproperlyConfigured for the first cluster setting a cluster or redis-py would refuse."""
    for _, validate in CLUSTER_CHECKS:
        validate()


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
    from CACHEOPS_REDIS, CACHEOPS_SENTINEL, CACHEOPS_CLUSTER and CACHEOPS_CLIENT_CLASS as a
    use would, so that whatever redis-py refuses is caught: apps.py passes cacheops.redis's
    (a cluster down is no bad setting), a layer above this one."""
    # without redis.cluster nothing else about a cluster can be told; and a client is built
    # only from cluster settings that passed, or its error would repeat theirs under E002
    cluster = _errors(CLUSTER_CHECKS[:1]) or _errors(CLUSTER_CHECKS[1:])
    validations = [
        ('cacheops.E001', profiles),
        *([] if cluster else [('cacheops.E002', make_client)]),
        ('cacheops.E003', prefix_func),
        ('cacheops.E004', _serializer_gives_bytes),  # serializer() first
        ('cacheops.E005', skip_field_types),
        ('cacheops.E006', long_disjunction),
        *(('cacheops.E007', _reader(name)) for name in sorted(FLAGS)),
        *(('cacheops.E008', _reader(name)) for name in sorted(DURATIONS)),
        ('cacheops.E013', _file_cache_dir_safe),
        ('cacheops.E014', lambda: importlib.import_module('cacheops.signing').signing_on()),  # imports conf
    ]
    return sorted(_errors(validations) + cluster)


def _errors(validations):
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
