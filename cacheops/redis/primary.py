"""Whether the server a new connection reached is the primary the cache was last trusted
on (see docs/design.md, "A new primary").

Replication is asynchronous: a primary acknowledges an invalidation before its replica
has it. If it dies then, the replica Sentinel promotes still holds what the invalidation
deleted, until its timeout. So every connection made through Sentinel asks, before any
command of cacheops goes over it, for the server's run_id (new with every process) and
for PRIMARY_KEY, which names the run_id of the server the cache was last trusted on. If
they differ (a replica promoted, or a Redis restarted, from an old RDB or AOF perhaps)
every entry is suspect: cacheops' keys are dropped, then PRIMARY_KEY is written. Other
connections meeting the old name meanwhile drop them too, which is only more misses;
none trusts the server before the keys are gone. A hit is still one GET: the check costs
a connection one round trip, two more after a failover.
"""
import logging
import threading

import redis

from ..conf import prefix_func

logger = logging.getLogger('cacheops')

PRIMARY_KEY = 'cacheops:primary'

# invalidation.py's invalidate_all(), set there: how cacheops' keys are dropped where a
# prefix says they share the db with others (without one: FLUSHDB over the connection)
drop_prefixed = None


class _Dropping(threading.local):
    active = False


_dropping = _Dropping()


def _text(reply):
    return reply.decode() if isinstance(reply, bytes) else reply


def _run_id(info):
    for line in _text(info).splitlines():
        if line.startswith('run_id:'):
            return line[len('run_id:'):].strip()
    raise redis.ResponseError('INFO server has no run_id')


def _call(connection, *args):
    connection.send_command(*args)
    return connection.read_response()


def check_primary(connection):
    """Drop every cacheops key unless connection's server is the one PRIMARY_KEY names."""
    if _dropping.active:  # the connections dropping the keys take: this thread checks already
        return
    try:
        connection.send_packed_command(connection.pack_commands([('INFO', 'server'), ('GET', PRIMARY_KEY)]))
        run_id, trusted = _run_id(connection.read_response()), _text(connection.read_response())
    except redis.ResponseError as e:  # INFO refused by an ACL, say: no way to tell
        logger.warning('cacheops: cannot tell a new primary from the last (%s)', e)
        return
    if trusted == run_id:
        return
    if trusted is None:  # a new Redis, a flushed one, or the first run of this check
        logger.info('cacheops: Redis (run_id %s) names no primary the cache was trusted on: '
                    'dropping the cache', run_id)
    else:
        logger.warning('cacheops: a new Redis primary (run_id %s; the cache was trusted on %s): '
                       'dropping the cache', run_id, trusted)
    _dropping.active = True
    try:
        if prefix_func() is None or drop_prefixed is None:
            _call(connection, 'FLUSHDB')
        else:
            drop_prefixed()
    finally:
        _dropping.active = False
    _call(connection, 'SET', PRIMARY_KEY, run_id)


def checking(connection_class):
    """A subclass of a redis-py connection class that checks its server once connected,
    after AUTH and SELECT."""
    # redis-py 5.1+ connects through on_connect_check_health, older through on_connect
    hook = 'on_connect_check_health' if hasattr(connection_class, 'on_connect_check_health') else 'on_connect'
    connected = getattr(connection_class, hook)

    def on_connect(self, *args, **kwargs):
        connected(self, *args, **kwargs)
        check_primary(self)
    return type(connection_class.__name__, (connection_class,), {hook: on_connect, '__module__': __name__})
