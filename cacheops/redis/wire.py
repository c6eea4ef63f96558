"""Hot reads past redis-py, and commands packed by hand.

A hit is a GET or an MGET, whose replies redis-py hands back as they come: they go
straight to the connection the thread keeps (held.py). redis-py's command layer around
it (retry wrapper, metrics, argument checks) costs a hit 8-12 µs of Python, a tenth of
the round trip, and its packer, in Python without hiredis, 2-5 µs more: a fifth of a
hit's Python. So the commands sent over that connection are packed here, and a hot
read's once per process. A connection error falls back to redis-py's command layer,
retries and all.
"""
from ..utils import remember
from .client import CONNECTION_ERRORS
from .held import _DROPPED, _connection, _direct_pool, _keep_connection, _over_held, _thread_held


def read_command(client, *args):
    """client.execute_command(*args), for GET and MGET."""
    pool = _direct_pool(client)
    if pool is None or client.connection is not None:  # single_connection_client
        return client.execute_command(*args)
    held = _thread_held.held
    if held is None or held.pool is not pool:
        held = _keep_connection(pool)
        if held is None:  # none free (max_connections), or not for this pool
            return _pooled_read(client, pool, args)
    reply = _over_held(held, _packed_read(held, args))
    return client.execute_command(*args) if reply is _DROPPED else reply


def _pooled_read(client, pool, args):
    connection = _connection(pool)
    try:
        connection.send_packed_command(connection.pack_command(*args))
        return connection.read_response()
    except CONNECTION_ERRORS:  # the connection was dropped: it is reconnected on next use
        return client.execute_command(*args)
    finally:
        pool.release(connection)


def _packed(held, args):
    """The command to send over this thread's connection: packed by _pack_plain() where
    that packs as the connection would, else by redis-py."""
    packed = _pack_plain(args) if held.utf8 else None
    return [packed] if packed else held.connection.pack_command(*args)


def _packed_read(held, args):
    """_packed() for a hot read (GET, MGET): commands of str arguments alone are packed
    once, as a hit sends the same one again and again."""
    if not held.utf8:
        return held.connection.pack_command(*args)
    try:
        packed = _packs.get(args)
    except TypeError:  # an argument that can't be hashed: redis-py packs it, or refuses
        return held.connection.pack_command(*args)
    if packed is None:
        packed = _pack_plain(args)
        if packed is None:
            return held.connection.pack_command(*args)
        # only str: a tuple equal to one of them is of str too, and packs the same
        if all(type(arg) is str for arg in args):
            remember(_packs, args, packed)
    return [packed]


_packs = {}  # a command of str arguments -> its packed bytes


def _packed_all(held, commands):
    """Commands to send in one write over this thread's connection, packed as _packed()."""
    if held.utf8:
        packed = [_pack_plain(args) for args in commands]
        if None not in packed:
            return [b''.join(packed)]
    return held.connection.pack_commands(commands)


def _pack_plain(args):
    """A command as Redis reads it, if its arguments are all str, bytes or int (as
    redis-py packs them with a UTF-8 encoder); else None."""
    parts = [b'*%d\r\n' % len(args)]
    for arg in args:
        kind = type(arg)
        if kind is str:
            arg = arg.encode()
        elif kind is int:
            arg = b'%d' % arg
        elif kind is not bytes:
            return None
        parts.append(b'$%d\r\n%s\r\n' % (len(arg), arg))
    return b''.join(parts)
