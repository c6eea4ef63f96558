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

On a Redis Cluster a replica promoted, or a node restored, brings back its own slots'
keys only, and a key lives in one slot, not on every node: each primary has a marker of
its own, NODE_KEY in a slot it serves (the first short tag hashing into one of its
slots: the same on its replica, which serves those slots once promoted). Every
connection to a node checks it as above (check_node); one that finds a replica (no
slots: cacheops reads none) checks again before each command, as redis-py may keep it
past a promotion. A mismatch drops the node's cacheops keys (FLUSHDB ASYNC on the
node, or with a prefix its keys under cacheops' prefixes), and in conj-set mode the
cache keys on every primary (_drop_cache_keys_everywhere: the node may have lost
registrations of keys stored on others). A check that can't be made now, or a drop
that fails, fails the connection: it is not used. A hit is still one GET; a
connection costs one round trip once the process knows the node's marker, one more the
first time (CLUSTER NODES).
"""
import logging
import threading
from binascii import crc_hqx

import redis

from ..conf import prefix_func, settings

logger = logging.getLogger('cacheops')

PRIMARY_KEY = 'cacheops:primary'
# a cluster primary's: no prefix, as PRIMARY_KEY; the tag puts it in a slot the node serves
NODE_KEY = 'cacheops:primary:{%s}'

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
    taken just after never lacks it (restored, it would pass for a new data set). On a
    cluster, each primary with its NODE_KEY."""
    if hasattr(client, 'get_nodes'):
        _flush_nodes(client)
        return
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


# Redis Cluster (see the module's docstring)

# (host, port) of a node -> its marker's key, as the last check of the node there found it:
# a new connection asks for it with INFO, and asks CLUSTER NODES only when it moved
_node_keys = {}


def node_key(ranges):
    """NODE_KEY of a primary serving these (first, last) slot ranges: the first of the
    tags 0, 1, 2... (in hex) whose slot is one of them, found in about 16384 / served
    slots tries (microseconds for a third of the slots; for one slot 5 ms typically,
    150 ms at worst), once per node address and process."""
    mine = bytearray(16384)
    for first, last in ranges:
        mine[first:last + 1] = b'\x01' * (last + 1 - first)
    n = 0
    # a key's slot is its CRC16 (XMODEM: crc_hqx) modulo 16384, as redis.crc.key_slot()
    # computes it, less the call and the check for a tag these have none of
    while not mine[crc_hqx(b'%x' % n, 0) & 16383]:
        n += 1
    return NODE_KEY % ('%x' % n)


def served(nodes):
    """[(first, last)] slot ranges the node answering CLUSTER NODES (its reply) serves as
    a primary (slots being imported or migrated, [...], left out); None for a replica."""
    for line in nodes.splitlines():
        fields = line.split()
        if len(fields) >= 8 and 'myself' in fields[2].split(','):
            if 'master' not in fields[2].split(','):
                return None
            return [(int(first), int(last or first)) for first, _, last in
                    (field.partition('-') for field in fields[8:] if not field.startswith('['))]
    return []


def _replies(connection, *commands):
    """The replies to commands sent together over connection, errors among them; none
    asks for a health check, which is where a replica's connection is checked again."""
    connection.send_packed_command(connection.pack_commands(commands), check_health=False)
    return [_reply(connection) for _ in commands]  # all read: one left unread would pass for the next's


def check_node(connection):
    """check_primary() for a connection to a node of a Redis Cluster, against NODE_KEY.
    Where the node can't be told trusted now (CLUSTERDOWN while a promotion settles, a
    slot moving, BUSY), or its keys can't be dropped, the connection is not used: it
    raises ConnectionError, an outage to cacheops, and the next connection checks again."""
    if _dropping.active:
        return
    connection.__dict__.pop('check_health', None)  # a replica's watch (_watch): checked now
    address = (connection.host, connection.port)
    try:
        found = _node_trust(connection, address)
        if found is None:
            return
        key, run_id, trusted = found
        if trusted is not None:
            everywhere = not settings.CACHEOPS_INSIDEOUT
            logger.warning('cacheops: Redis Cluster node %s:%s is not the server the cache was trusted on '
                           '(run_id %s, trusted %s: restarted from a snapshot, or a replica promoted): '
                           "dropping cacheops' keys %s", *address, run_id, trusted,
                           'on it, and cache keys on every primary' if everywhere else 'on it')
            _drop_node(connection)
            if everywhere:
                _drop_cache_keys_everywhere()
        _value(_replies(connection, ('SET', key, run_id))[0])  # only once they are gone
    except redis.ResponseError as e:
        if _never_answers(e):  # INFO or CLUSTER refused by an ACL: no way to tell, ever
            logger.warning('cacheops: cannot tell a new primary from the last on Redis Cluster node %s:%s (%s)',
                           *address, e)
            return
        raise redis.ConnectionError('cacheops: Redis Cluster node %s:%s could not be checked (%s)'
                                    % (*address, e)) from e


def _never_answers(error):
    """Whether a check's error reply will be the same next time (an ACL's), not a state."""
    return str(error).startswith(('NOPERM', 'unknown command', "ERR unknown command"))


def _node_trust(connection, address):
    """None if the node is trusted (or a replica, then watched); else (its NODE_KEY, its
    run_id, the run_id the key names: None for a new data set)."""
    key = _node_keys.get(address)
    replies = _replies(connection, ('INFO', 'server'), ('GET', key) if key else ('CLUSTER', 'NODES'))
    run_id = _run_id(_value(replies[0]))
    if key is not None:
        if not isinstance(replies[1], redis.ResponseError) and _text(replies[1]) == run_id:
            return None
        replies = _replies(connection, ('CLUSTER', 'NODES'))  # MOVED: its slot went elsewhere
    ranges = served(_text(_value(replies[-1])))
    if ranges is None:
        _watch(connection)
        return None
    if not ranges:  # a primary serving no slot yet: nothing of it can be read
        return None
    key = _node_keys[address] = node_key(ranges)
    trusted = _text(_value(_replies(connection, ('GET', key))[0]))
    return None if trusted == run_id else (key, run_id, trusted)


def _watch(connection):
    """Check connection, made to a replica, again before its next command: after a
    failover redis-py sends the promoted node's slots' commands over what it has."""
    checked = type(connection).check_health

    def check_health():
        checked(connection)
        check_node(connection)  # takes the watch off, or puts it on again
    connection.check_health = check_health


# invalidation.py's _whole_prefixes(), set there: {prefix: tables} -> the prefixes all of
# whose keys are cacheops', those invalidate_all() deletes whole
whole_prefixes = None


def own_patterns():
    """SCAN patterns of cacheops' keys where a prefix says they share the db with others:
    every key under a prefix all of whose keys are cacheops', and the keys of tables
    whose prefix is empty."""
    from ..keys import conj_prefix, epoch_key, handover_key, prefixed_tables, schemes_key
    from ..utils import glob_escape
    by_prefix = prefixed_tables()
    prefixes = whole_prefixes(by_prefix) if whole_prefixes else sorted(set(by_prefix) - {''})
    patterns = [glob_escape(prefix) + '*' for prefix in prefixes]
    for table in sorted(by_prefix.get('', ())):
        patterns += [glob_escape(conj_prefix('', table)) + '*', glob_escape(schemes_key('', table)),
                     glob_escape(epoch_key('', table)), glob_escape(handover_key('', '', table)) + '*']
    return patterns


def _drop_node(connection):
    """Drop cacheops' keys on the node connection reached, and on no other."""
    if prefix_func() is None:
        _value(_replies(connection, ('FLUSHDB', 'ASYNC'))[0])
    else:
        _unlink_matching(connection, own_patterns())


# the replies to a key in a slot migrating away
_MOVING = tuple(getattr(redis.exceptions, name) for name in ('AskError', 'MovedError', 'TryAgainError')
                if hasattr(redis.exceptions, name))


def _unlink_matching(connection, patterns):
    """UNLINK the keys of the node connection reached that match these SCAN patterns."""
    for pattern in patterns:
        cursor = b'0'
        while True:
            cursor, keys = _value(_replies(connection, ('SCAN', cursor, 'MATCH', pattern, 'COUNT', 1000))[0])
            if keys:
                # one key a command: UNLINK takes keys of one slot; one of a slot migrating
                # away may be gone (ASK, MOVED, TRYAGAIN), and has nothing to drop here.
                # Any other refusal leaves a key that must go: the drop fails
                for reply in _replies(connection, *(('UNLINK', key) for key in keys)):
                    if isinstance(reply, redis.ResponseError) and not isinstance(reply, _MOVING):
                        raise reply
            if int(cursor) == 0:
                break


# The kinds of cacheops' cache keys (docs/design.md, "The Redis layout"): querysets,
# @cached_as, @cached and @cached_view results, and their pending markers
CACHE_KEY_KINDS = ('q:', 'as:', 'c:', 'v:')


def cache_key_patterns():
    """SCAN patterns of cacheops' cache keys, under each prefix they may have."""
    from ..keys import prefixed_tables
    from ..utils import glob_escape
    prefixes = {''}
    if prefix_func() is not None:
        by_prefix = prefixed_tables()
        prefixes = set(by_prefix) | set(whole_prefixes(by_prefix) if whole_prefixes else ())
    return [glob_escape(prefix) + kind + '*' for prefix in sorted(prefixes) for kind in CACHE_KEY_KINDS]


def _drop_cache_keys_everywhere():
    """Delete cacheops' cache keys on every primary (conj-set mode), over a client of its
    own: the one whose connection is being checked may be mid-build, or mid-refresh of
    the slots after a failover.

    A node that lost writes may have lost registrations: a cache key stored on another
    node, registered in a conj set of this one, would be out of reach of every later
    invalidation. Which keys those are can't be told, so every cache key goes. Not
    their conj sets: a registration made meanwhile (after the node's own keys were
    dropped, so on the trusted data) must stay with its key, and a key whose marker
    was placed before is deleted here whenever it was stored (a store finding its
    marker gone is dropped). Insideout mode needs none of it: a value whose stamps are
    gone never validates."""
    from .client import make_client
    _dropping.active = True  # its connections: this thread checks already
    try:
        client = make_client()
        try:
            patterns = cache_key_patterns()
            for node in client.get_primaries():
                pool = client.get_redis_connection(node).connection_pool
                connection = pooled(pool)
                try:
                    _unlink_matching(connection, patterns)
                finally:
                    pool.release(connection)
        finally:
            for node in client.get_nodes():
                if node.redis_connection is not None:
                    node.redis_connection.connection_pool.disconnect()
    finally:
        _dropping.active = False


def checking_node(connected=None):
    """A redis_connect_func for RedisCluster: connected (the project's own, if it gave
    one), then check_node(). redis-py runs it on every connection to a node, once it
    has sent AUTH."""
    def on_connect(connection):
        if connected is not None:
            connected(connection)
        check_node(connection)
    return on_connect


def _flush_nodes(client):
    """flush_trusted() for a Redis Cluster: each primary flushed, its NODE_KEY written again
    in the same transaction."""
    for node in client.get_primaries():
        redis_node = client.get_redis_connection(node)
        pool = redis_node.connection_pool
        connection = pooled(pool)
        try:
            replies = _replies(connection, ('INFO', 'server'), ('CLUSTER', 'NODES'))
        finally:
            pool.release(connection)
        try:
            run_id, ranges = _run_id(_value(replies[0])), served(_text(_value(replies[1])))
            if ranges:
                key = _node_keys[(node.host, node.port)] = node_key(ranges)
                redis_node.pipeline(transaction=True).flushdb(asynchronous=True).set(key, run_id).execute()
                continue
        except redis.ResponseError:  # refused by an ACL, or the slot moved (MOVED in the MULTI)
            pass
        redis_node.flushdb(asynchronous=True)  # what the node's connections will take for new


def pooled(pool):
    """A connection of a redis-py pool, connected."""
    try:
        return pool.get_connection()
    except TypeError:  # redis-py < 5.3 names the command
        return pool.get_connection('GET')
