"""The Redis client cacheops talks to: built from settings on first use, rebuilt after
a setting it is made of changes, and what a failure to reach it does.

Everything else in this package sends its commands through this client, or past its
command layer over its connection pool (held.py); this module alone knows settings.
"""
from functools import wraps

import redis
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.utils.functional import SimpleLazyObject, empty

from ..conf import client_class, cluster_options, settings, validate_cluster
from ..outage import answered, read_failed, state as outage
from .primary import checking, checking_node

# A cluster that can't serve a slot now (no node answers, the slot is unassigned or
# failing over, or migrating: ClusterError covers CLUSTERDOWN and redis-py's 'TTL
# exhausted', redirects and TRYAGAIN past what it follows) is, for a read, what a lost
# connection is: degrade to the database. redis-py 4.0 has none of these;
# RedisClusterException itself also means misuse.
_CLUSTER_OUTAGES = tuple(getattr(redis.exceptions, name) for name in (
    'ClusterError', 'TryAgainError', 'RedisClusterUnreachableError', 'SlotNotCoveredError')
    if hasattr(redis.exceptions, name))
CONNECTION_ERRORS = (redis.ConnectionError, redis.TimeoutError, *_CLUSTER_OUTAGES)
# What a read degrades on: every error Redis gives, not only a lost connection: out of
# memory, BUSY, READONLY (a demoted primary), NOPERM, WRONGTYPE...; the cluster outages
READ_FAILURES = (redis.RedisError, *_CLUSTER_OUTAGES)

# Where the settings (or a URL's query) give none. redis-py before 6 waits forever on a
# Redis that accepts and never answers, and every save() with it; 6 and later wait 5 s
# per try. Short, as a cache has the database to fall back on (docs/design.md, "Timeouts").
DEFAULT_TIMEOUTS = {'socket_connect_timeout': 1.0, 'socket_timeout': 3.0}


def default_timeouts(conf):
    """DEFAULT_TIMEOUTS for a client of CACHEOPS_REDIS conf (a URL or a dict): the read
    one only for a Unix socket, whose connections take no connect timeout in redis-py 4."""
    unix = conf.startswith('unix:') if isinstance(conf, str) else 'unix_socket_path' in conf
    return {'socket_timeout': DEFAULT_TIMEOUTS['socket_timeout']} if unix else DEFAULT_TIMEOUTS


def _handle_connection_failure(func):
    """With CACHEOPS_DEGRADE_ON_FAILURE, a Redis call failing returns None (counted in the
    outage, outage.py); without, it raises an error naming the setting."""
    @wraps(func)
    def wrapper(*args, **kwargs):
        try:
            result = func(*args, **kwargs)
        except READ_FAILURES as e:
            read_failed(e)
            return None
        if outage.down:
            answered()
        return result
    return wrapper


def make_client():
    """A client for CACHEOPS_CLUSTER, else CACHEOPS_SENTINEL, else CACHEOPS_REDIS (a dict, a URL or empty)."""
    validate_cluster()
    if cluster_options():
        return _cluster_client(*cluster_options())
    cls = client_class() or redis.Redis
    if hasattr(cls, 'get_nodes'):  # a cluster by CACHEOPS_REDIS: it connects when built
        return _reaching_cluster(lambda: _client_from_settings(cls, _checking_nodes))
    sentinel = settings.CACHEOPS_SENTINEL
    if sentinel:
        return _sentinel_client(cls, sentinel)
    return _plain_client(cls)


def _plain_client(cls):
    """The client for CACHEOPS_REDIS; its connections check they reached the server the
    cache was trusted on (primary.py: a Redis restored from a snapshot)."""
    return _checked(_client_from_settings(cls))


def _checking_nodes(options):
    """options, for RedisCluster, with a redis_connect_func that checks each connection's
    node (primary.py: a replica promoted, a node restored), after the project's own."""
    return {**options, 'redis_connect_func': checking_node(options.get('redis_connect_func'))}


def _checked(client):
    """client, whose connections check their server before use (primary.py)."""
    pool = client.connection_pool
    pool.connection_class = checking(pool.connection_class)
    return client


def _client_from_settings(cls, options=dict):
    """cls from CACHEOPS_REDIS, its keyword arguments passed through options()."""
    conf = settings.CACHEOPS_REDIS
    if isinstance(conf, str):
        try:
            # a URL's query wins over these (redis-py's from_url)
            return cls.from_url(conf, **options(default_timeouts(conf)))
        except ValueError as e:
            raise ImproperlyConfigured('CACHEOPS_REDIS is not a valid Redis URL: %s' % e)
    if isinstance(conf, dict):
        try:
            return cls(**options({**default_timeouts(conf), **conf}))
        except TypeError as e:
            raise ImproperlyConfigured('CACHEOPS_REDIS has an option the client does not take: %s' % e)
    raise ImproperlyConfigured(
        'CACHEOPS_REDIS must be a dict of connection options or a redis:// URL, got %r' % (conf,))


def _sentinel_client(cls, conf):
    from redis.sentinel import Sentinel
    if not isinstance(conf, dict) or not conf.get('locations') or not conf.get('service_name'):
        raise ImproperlyConfigured(
            "CACHEOPS_SENTINEL must be a dict with 'locations' and 'service_name'")
    conf = dict(conf)
    locations = conf.pop('locations')
    service = conf.pop('service_name')
    db = conf.pop('db', 0)
    sentinel = Sentinel(locations, **{**DEFAULT_TIMEOUTS, **conf})
    # a replica promoted may hold what the dead primary acknowledged deleting (primary.py)
    return _checked(sentinel.master_for(service, redis_class=cls, db=db))


def _cluster_client(nodes, options):
    from redis.cluster import ClusterNode, RedisCluster
    cls = client_class() or RedisCluster
    nodes = [ClusterNode(host, port) for host, port in nodes]
    try:
        return _reaching_cluster(lambda: cls(startup_nodes=nodes, **_checking_nodes({**DEFAULT_TIMEOUTS, **options})))
    except TypeError as e:
        raise ImproperlyConfigured('CACHEOPS_CLUSTER has an option the client does not take: %s' % e)


def _reaching_cluster(build):
    """build(), a cluster client, which asks a node for the slots as it is made: a cluster
    that cannot be reached raises ConnectionError, as any Redis call does, so that with it
    down a write still goes through; what redis-py refuses to build raises ImproperlyConfigured."""
    from redis.exceptions import RedisClusterException
    try:
        return build()
    except RedisClusterException as e:
        # redis-py raises these for its settings and for the cluster's state alike: the
        # nodes' errors are chained to the second, and a slot table not agreed on is one too
        if e.__cause__ is not None or 'slots' in str(e):
            raise redis.ConnectionError('cacheops: Redis Cluster unreachable: %s' % e) from e
        raise ImproperlyConfigured('The Redis Cluster settings are refused by redis-py: %s' % e)


def check_client():
    """make_client() for the system checks: a cluster down is no bad setting."""
    try:
        make_client()
    except CONNECTION_ERRORS:
        pass


redis_client = SimpleLazyObject(make_client)


def get_client():
    """The real client behind redis_client (skips the lazy proxy on hot paths)."""
    client = redis_client.__dict__['_wrapped']  # the proxy's own attribute, read past its hooks
    if client is empty:
        redis_client._setup()
        client = redis_client._wrapped
    return client


def _reset_client(setting, **kwargs):
    if setting in ('CACHEOPS_REDIS', 'CACHEOPS_SENTINEL', 'CACHEOPS_CLUSTER', 'CACHEOPS_CLIENT_CLASS'):
        redis_client._wrapped = empty


setting_changed.connect(_reset_client)
