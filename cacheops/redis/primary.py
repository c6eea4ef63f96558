"""Whether the server a new connection reached is the one the cache was last trusted on
(see docs/design.md, "A new primary, a restored Redis").

A Redis can come back holding entries an invalidation deleted: restarted from an RDB or
AOF written before the invalidation, or, through Sentinel, a replica promoted before it
got an invalidation its primary acknowledged (replication is asynchronous). So every
connection, before any command of cacheops goes over it, asks for the server's run_id
(new with every process) and for PRIMARY_KEY, which names the run_id of the server the
cache was last trusted on. If they differ every entry is suspect: cacheops' keys are
dropped, then PRIMARY_KEY is written. Other connections meeting the old name meanwhile
drop them too, which is only more misses; none trusts the server before the keys are
gone. With no PRIMARY_KEY at all the data set is new (an empty Redis, or one flushed:
invalidate_all() writes it again at once) and it is only written. A hit is still one
GET: the check costs a connection one round trip, two more when the cache is dropped.
A cluster's nodes are not checked (a key lives in one slot, not on every node).
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


def _reply(connection):
    try:
        return connection.read_response()
    except redis.ResponseError as e:
        return e


def _value(reply):
    if isinstance(reply, redis.ResponseError):
        raise reply
    return reply


def check_primary(connection):
    """Drop every cacheops key unless connection's server is the one PRIMARY_KEY names."""
    if _dropping.active:  # the connections dropping the keys take: this thread checks already
        return
    connection.send_packed_command(connection.pack_commands([('INFO', 'server'), ('GET', PRIMARY_KEY)]))
    # both replies read, errors or not: one left unread would pass for the next command's
    replies = [_reply(connection), _reply(connection)]
    try:
        run_id, trusted = _run_id(_value(replies[0])), _text(_value(replies[1]))
    except redis.ResponseError as e:  # INFO refused by an ACL, Redis BUSY, say: no way to tell
        logger.warning('cacheops: cannot tell a new primary from the last (%s)', e)
        return
    if trusted == run_id:
        return
    if trusted is None:  # a new data set, or a flushed one: nothing in it is suspect
        _call(connection, 'SET', PRIMARY_KEY, run_id)
        return
    logger.warning('cacheops: Redis is not the server the cache was trusted on (run_id %s, '
                   'trusted %s: restarted from a snapshot, or a replica promoted): dropping '
                   'the cache', run_id, trusted)
    _dropping.active = True
    try:
        if prefix_func() is None or drop_prefixed is None:
            _call(connection, 'FLUSHDB', 'ASYNC')
        else:
            drop_prefixed()
    finally:
        _dropping.active = False
    _call(connection, 'SET', PRIMARY_KEY, run_id)


def flush_trusted(client):
    """FLUSHDB ASYNC, and PRIMARY_KEY written again in the same transaction: a snapshot
    taken just after never lacks it (restored, it would pass for a new data set)."""
    try:
        run_id = client.info('server')['run_id']
    except redis.ResponseError:  # INFO refused by an ACL: connections can't check either
        client.flushdb(asynchronous=True)
        return
    client.pipeline(transaction=True).flushdb(asynchronous=True).set(PRIMARY_KEY, run_id).execute()


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
