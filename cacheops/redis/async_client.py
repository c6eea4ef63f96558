"""The redis.asyncio client async hits read through: one per event loop (a redis.asyncio
client and its connections are bound to the loop they were made in), built from the
settings client.py builds the sync client from (see docs/design.md, "Async").

Where no async client can stand for the sync one (redis-py without redis.asyncio, a
CACHEOPS_CLIENT_CLASS of the project's own) there is none: async reads then take the
sync path in a thread, as Django's async API does by default.
"""
import asyncio

import redis
from django.core.signals import setting_changed

from ..conf import client_class, cluster_options, settings
from ..utils import remember
from .client import DEFAULT_TIMEOUTS, default_timeouts
from .primary import PRIMARY_KEY, _node_keys, _run_id, _text, _value, check_primary, pooled
from .wire import _pack_plain

try:
    from redis import asyncio as aioredis
except ImportError:  # redis-py < 4.2
    aioredis = None

# event loop -> its client, or None when there is none (see above). Not weak: a client's
# connections refer to their loop; a closed loop's client is dropped when the next is made
_clients = {}


def async_client():
    """The redis.asyncio client of the running event loop, or None where there is none."""
    loop = asyncio.get_running_loop()
    try:
        return _clients[loop]
    except KeyError:
        pass
    for other in list(_clients):  # other threads' loops may come meanwhile
        if other.is_closed():
            _clients.pop(other, None)  # its connections' sockets close as they are collected
    client = _clients[loop] = _make_async_client()
    return client


def _make_async_client():
    if aioredis is None:
        return None
    try:
        if cluster_options():
            return _cluster(*cluster_options())
        cls = client_class()
        if cls is not None and cls not in (redis.Redis, redis.StrictRedis):
            if hasattr(cls, 'get_nodes') and isinstance(settings.CACHEOPS_REDIS, str):
                return _checked_cluster(aioredis.cluster.RedisCluster.from_url(settings.CACHEOPS_REDIS))
            return None  # the project's own class: the sync path keeps what it does
        if settings.CACHEOPS_SENTINEL:
            return _sentinel(settings.CACHEOPS_SENTINEL)
        conf = settings.CACHEOPS_REDIS
        # the sync client's timeouts where the settings give none, and its check of the
        # server (a Redis restored from a snapshot: primary.py)
        if isinstance(conf, str):
            return _checked(aioredis.Redis.from_url(conf, **default_timeouts(conf)))
        if isinstance(conf, dict):
            return _checked(aioredis.Redis(**{**default_timeouts(conf), **conf}))
    except (TypeError, ValueError):
        pass  # an option redis.asyncio doesn't take: the sync client says what is wrong
    return None


def _cluster(nodes, options):
    from redis.asyncio.cluster import ClusterNode, RedisCluster
    return _checked_cluster(RedisCluster(startup_nodes=[ClusterNode(host, port) for host, port in nodes],
                                         **{**DEFAULT_TIMEOUTS, **options}))


def _sentinel(conf):
    from redis.asyncio.sentinel import Sentinel
    conf = dict(conf)
    locations, service, db = conf.pop('locations'), conf.pop('service_name'), conf.pop('db', 0)
    return _checked(Sentinel(locations, **{**DEFAULT_TIMEOUTS, **conf}).master_for(service, db=db))


def _checked(client):
    """_Plain(client), whose connections check their server first (_checking)."""
    pool = client.connection_pool
    pool.connection_class = _checking(pool.connection_class)
    return _Plain(client)


def _checking(connection_class):
    """An async connection class that, once connected, checks its server is the primary the
    cache was last trusted on (primary.py); if not, the sync client drops the cache first."""
    # redis-py 5.1+ connects through on_connect_check_health, older through on_connect
    hook = 'on_connect_check_health' if hasattr(connection_class, 'on_connect_check_health') else 'on_connect'
    connected = getattr(connection_class, hook)

    async def on_connect(self, *args, **kwargs):
        await connected(self, *args, **kwargs)
        await self.send_packed_command(self.pack_commands([('INFO', 'server'), ('GET', PRIMARY_KEY)]))
        # both replies read, errors or not: one left unread would pass for the next command's
        replies = [await _connection_reply(self), await _connection_reply(self)]
        try:
            run_id, trusted = _run_id(_value(replies[0])), _text(_value(replies[1]))
        except redis.ResponseError:  # INFO refused, Redis BUSY: the sync check tells, and logs
            run_id, trusted = None, ''
        if trusted != run_id:
            from asgiref.sync import sync_to_async
            await sync_to_async(_check_through_sync, thread_sensitive=False)()
    return type(connection_class.__name__, (connection_class,), {hook: on_connect, '__module__': __name__})


async def _connection_reply(connection):
    # not _reply() below, which reads a stream by hand: with one name, the later one won
    try:
        return await connection.read_response()
    except redis.ResponseError as e:
        return e


def _check_through_sync():
    """check_primary() over a connection of the sync client, which drops the cache the way
    and with the guards it always does."""
    from .client import get_client
    pool = get_client().connection_pool
    try:
        connection = pool.get_connection()
    except TypeError:  # redis-py < 5.3 names the command
        connection = pool.get_connection('GET')
    try:
        check_primary(connection)
    finally:
        pool.release(connection)


def _checked_cluster(client):
    """_Cluster(client), each of whose connections checks its node first (_checking_node);
    None where redis-py's insides differ: async reads then take the sync path, checked."""
    manager = getattr(client, 'nodes_manager', None)
    kwargs = getattr(manager, 'connection_kwargs', None)
    startup = getattr(manager, 'startup_nodes', None)
    if not isinstance(kwargs, dict) or not isinstance(startup, dict) or not all(
            isinstance(getattr(node, 'connection_kwargs', None), dict) for node in startup.values()):
        return None
    # the nodes found later are made with the manager's kwargs, the startup ones were made
    # with a copy of them
    hook = _checking_node(kwargs.get('redis_connect_func'))
    for node_kwargs in [kwargs, *(node.connection_kwargs for node in startup.values())]:
        node_kwargs['redis_connect_func'] = hook
    return _Cluster(client)


def _checking_node(connected):
    """A redis_connect_func for redis.asyncio's RedisCluster: connected (its own, which
    sends READONLY for reads from replicas) or AUTH and the rest, then _check_node()."""
    async def on_connect(connection):
        if connected is None:
            await connection.on_connect()
        elif asyncio.iscoroutinefunction(connected):
            await connected(connection)
        else:
            connected(connection)
        await _check_node(connection)
    return on_connect


async def _check_node(connection):
    """The node connection reached checked as the sync client checks it
    (primary.check_node): in one round trip where this process knows the node's marker
    and finds it naming the node, else through the sync client."""
    connection.__dict__.pop('check_health', None)  # a replica's watch (_watch): checked now
    key = _node_keys.get((connection.host, connection.port))
    if key is not None:
        await connection.send_packed_command(
            connection.pack_commands([('INFO', 'server'), ('GET', key)]), check_health=False)
        replies = [await _connection_reply(connection), await _connection_reply(connection)]
        try:
            if _run_id(_value(replies[0])) == _text(_value(replies[1])):
                return
        except redis.ResponseError:  # INFO refused, the slot moved: the sync check tells
            pass
    from asgiref.sync import sync_to_async
    if not await sync_to_async(_check_node_through_sync, thread_sensitive=False)(
            connection.host, connection.port):
        _watch(connection)


def _watch(connection):
    """As primary._watch: a connection to a replica checked again before its next command."""
    checked = type(connection).check_health

    async def check_health():
        await checked(connection)
        await _check_node(connection)
    connection.check_health = check_health


def _check_node_through_sync(host, port):
    """Check the node at host:port over a new connection of the sync client, which drops
    its keys the way and with the guards it always does: whether it serves slots."""
    from redis.cluster import ClusterNode
    from .client import get_client
    # a node of its own: a new pool, whose first connection is checked as it connects
    redis_node = get_client().get_redis_connection(ClusterNode(host, port))
    pool = redis_node.connection_pool
    try:
        connection = pooled(pool)
        pool.release(connection)
        return 'check_health' not in connection.__dict__  # not watched: not a replica
    finally:
        pool.disconnect()


class _Plain:
    """One Redis (or Sentinel's primary): hot reads over connections this loop keeps free
    between reads, the command packed and the reply read by hand (wire.py does the former
    for threads): redis-py's async command layer and parser cost a hit more than the
    round trip's wait in the loop."""
    cluster = False

    def __init__(self, client):
        self.client = client
        self.free = []  # connections no coroutine is reading over

    async def read(self, *args):
        """The reply to a GET or MGET."""
        packed = _packed(args)
        if packed is None:
            return await self.client.execute_command(*args)
        free = self.free
        connection = free.pop() if free else await self._connection()
        reader, writer = getattr(connection, '_reader', None), getattr(connection, '_writer', None)
        if reader is None or writer is None:  # not connected, or a redis-py of other insides
            await _released(self.client.connection_pool, connection)
            return await self.client.execute_command(*args)
        try:
            writer.write(packed)
            timeout = connection.socket_timeout
            if timeout is None or _timeout is None:
                reply = await _reply(reader)
            else:
                async with _timeout(timeout):
                    reply = await _reply(reader)
        except BaseException as e:
            # its reply may still come: the connection goes back to the pool closed
            await connection.disconnect()
            await _released(self.client.connection_pool, connection)
            if isinstance(e, (OSError, EOFError)):  # the server went away
                raise redis.ConnectionError('cacheops: lost the connection to Redis: %r' % e) from e
            if isinstance(e, (asyncio.TimeoutError, TimeoutError)):
                raise redis.TimeoutError('cacheops: Redis did not answer in time') from e
            raise
        free.append(connection)
        return reply

    async def _connection(self):
        pool = self.client.connection_pool
        try:
            return await pool.get_connection()
        except TypeError:  # redis-py < 5.3 names the command
            return await pool.get_connection('GET')


def _packed(args):
    """The command packed (a hit sends the same one again and again: packed once)."""
    try:
        return _packs[args]
    except KeyError:
        packed = _pack_plain(args)
        if packed is not None and all(type(arg) is str for arg in args):
            remember(_packs, args, packed)
        return packed
    except TypeError:  # an unhashable argument: redis-py's command layer says what it takes
        return None


_packs = {}

_timeout = getattr(asyncio, 'timeout', None)  # Python 3.11+; before, no hand-read deadline


async def _reply(reader):
    """A reply of GET or MGET (RESP2 or RESP3) read off an asyncio stream."""
    line = await reader.readuntil(b'\r\n')
    kind = line[:1]
    if kind == b'$':
        size = int(line[1:-2])
        return None if size < 0 else (await reader.readexactly(size + 2))[:-2]
    if kind == b'*':
        size = int(line[1:-2])
        return None if size < 0 else [await _reply(reader) for _ in range(size)]
    if kind == b'_':  # RESP3's null
        return None
    if kind == b'-':
        raise redis.ResponseError(line[1:-2].decode(errors='replace'))
    raise redis.ConnectionError('cacheops: a reply GET or MGET do not give: %r' % line[:40])


async def _released(pool, connection):
    released = pool.release(connection)  # a coroutine since redis-py 5.0.1
    if asyncio.iscoroutine(released):
        await released


class _Cluster:
    """A Redis Cluster: reads through redis-py's cluster client, an MGET split by slot."""
    cluster = True

    def __init__(self, client):
        self.client = client

    async def read(self, *args):
        if args[0] == 'GET':
            return await self.client.get(args[1])
        from redis.crc import key_slot
        keys = args[1:]
        by_slot = {}
        for i, key in enumerate(keys):
            by_slot.setdefault(key_slot(key.encode()), []).append(i)
        values = [None] * len(keys)
        for indexes in by_slot.values():
            for i, value in zip(indexes, await self.client.mget([keys[i] for i in indexes])):
                values[i] = value
        return values


def _reset(setting, **kwargs):
    if setting in ('CACHEOPS_REDIS', 'CACHEOPS_SENTINEL', 'CACHEOPS_CLUSTER', 'CACHEOPS_CLIENT_CLASS'):
        _clients.clear()


setting_changed.connect(_reset)
