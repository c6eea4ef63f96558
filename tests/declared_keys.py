"""Every key a script touches is in its KEYS (docs/design.md, "Declared keys"): with
CACHEOPS_TEST_DECLARED_KEYS=1 each of cacheops' scripts runs behind a prelude that
publishes any key it touches and was not given, and a test whose scripts did so fails
(conftest.py's _scripts_touch_declared_keys_only). Servers such as Dragonfly refuse
those keys; Redis runs them, so this is how the suite shows there are none.
"""
import hashlib
import os
import socket

from cacheops.redis import scripts
from tools.redis_server import _command  # a command in RESP

ACTIVE = os.environ.get('CACHEOPS_TEST_DECLARED_KEYS') == '1'
CHANNEL = 'cacheops-test:undeclared:%d' % os.getpid()  # forked workers publish to their parent's

# The commands cacheops' scripts send, by where their keys are: every argument, the
# first two, or (any other) the first
_ALL_KEYS = ('del', 'exists', 'unlink', 'touch', 'mget')
_TWO_KEYS = ('rename', 'renamenx', 'smove')

PRELUDE = '''
local __declared = {}
for _, key in ipairs(KEYS) do __declared[key] = true end
local __all, __two = {%s}, {%s}
local __call, __pcall, __published = redis.call, redis.pcall, 0
local function __check(command, ...)
    local args, name = {...}, string.lower(command)
    local count = __all[name] and #args or (__two[name] and 2 or 1)
    for i = 1, math.min(count, #args) do
        if not __declared[args[i]] then
            -- a name for the message, as a cluster's other nodes hand it on later too
            __published = __published + 1
            local now = __call('time')
            __call('publish', '%s', table.concat({now[1], now[2], __published}, '.')
                   .. ' ' .. name .. ' ' .. tostring(args[i]))
        end
    end
end
-- Redis 7 makes the redis table read-only: a local of the same name shadows it for the
-- script that follows
local redis = setmetatable({
    call = function(command, ...) __check(command, ...) return __call(command, ...) end,
    pcall = function(command, ...) __check(command, ...) return __pcall(command, ...) end,
}, {__index = redis})
''' % (', '.join('%s = true' % name for name in _ALL_KEYS),
       ', '.join('%s = true' % name for name in _TWO_KEYS), CHANNEL)


def checked(code):
    """code behind the prelude."""
    return PRELUDE.encode() + b'\n' + code


def install():
    """Every script of cacheops/lua behind the prelude, from now on in this process."""
    for file in os.listdir(scripts.LUA_DIR):
        if file.endswith('.lua'):
            name = file[:-len('.lua')]
            scripts._scripts.pop(name, None)
            code = checked(scripts._script(name)[0])
            scripts._scripts[name] = code, hashlib.sha1(code).hexdigest()


def subscribers(addresses):
    """A subscription to CHANNEL on each server ('host:port'; every node of a cluster: a
    node hands a message published there to its own subscribers first, in order). Over
    sockets of its own, past redis-py, whose connection classes tests patch to fail,
    and in db 0, which tests killing their run's connections leave alone."""
    found = []
    for address in addresses:
        host, _, port = address.rpartition(':')
        sock = socket.create_connection((host, int(port)), timeout=5)
        sock.sendall(_command('SUBSCRIBE', CHANNEL))
        reader = sock.makefile('rb')
        _read(reader)  # the subscription's confirmation
        found.append((sock, reader))
    return found


def published(subscriptions):
    """The undeclared keys published since the last call: each server is PINGed over
    its subscription, so that whatever it published before is read up to the PONG."""
    found = []
    for sock, reader in subscriptions:
        sock.sendall(_command('PING'))
        while True:
            kind, *rest = _read(reader)
            if kind == b'pong':
                break
            if kind == b'message':
                name, _, undeclared = rest[1].decode().partition(' ')
                if name not in _seen:  # each node of a cluster hands on every message
                    _seen.add(name)
                    found.append(undeclared)
    return found


_seen = set()  # the names of the messages published() returned


def close(subscriptions):
    for sock, reader in subscriptions:
        reader.close()
        sock.close()


def _read(reader):
    """One pub/sub reply: an array of bulk strings and integers (RESP 2)."""
    line = reader.readline()
    if not line.startswith(b'*'):
        raise AssertionError('unexpected reply on a subscription: %r' % line)
    items = []
    for _ in range(int(line[1:])):
        line = reader.readline()
        if line.startswith(b'$'):
            items.append(reader.read(int(line[1:]) + 2)[:-2])
        else:
            items.append(int(line[1:]))
    return items
