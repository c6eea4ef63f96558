"""Faults for a Redis Cluster started by tools/redis_server.cluster_for_run(), made while
clients run: slots migrated a few keys at a time, a primary killed and its replica
promoted. Standard library only, as redis_server.py.

    with cluster_for_run() as nodes:
        failing_over_within(nodes, 1000)
        moved = migrate_slots(nodes, ['schemes:{tests_post}'])   # {slot: (from, to)}
        killed, promoted, lost = kill_primary(nodes, 'schemes:{tests_post}')
        killed, promoted = kill_primary_losing(nodes, 'schemes:{tests_post}', save)  # save() lost
"""
import os
import signal
import time
from contextlib import contextmanager

# _wait_for: a condition asked every 0.1 s for 30 s, a node busy with the change asked again
from .redis_server import _wait_for, call, info, ping


def cluster_ports(nodes):
    """'host:port,host:port,...' (what cluster_for_run yields) -> [port, ...]."""
    return [int(node.rpartition(':')[2]) for node in nodes.split(',')]


def live_ports(nodes):
    return [port for port in cluster_ports(nodes) if ping(f'redis://127.0.0.1:{port}')]


def failing_over_within(nodes, node_timeout):
    """Have every node take a node silent for node_timeout ms for failed: a replica then
    takes over from a dead primary about twice that later."""
    for port in live_ports(nodes):
        call(port, 'CONFIG', 'SET', 'cluster-node-timeout', node_timeout)


def _view(port):
    """CLUSTER NODES on port: {node id: (port, flags, [slot ranges])}."""
    view = {}
    for line in call(port, 'CLUSTER', 'NODES').splitlines():
        node_id, address, flags, _, *rest = line.split()
        node_port = int(address.split('@')[0].rpartition(':')[2] or 0)
        # rest: ping sent, pong received, config epoch, link state, then slots and
        # [slot->-id] marks of slots moving
        view[node_id] = (node_port, set(flags.split(',')), [r for r in rest[4:] if not r.startswith('[')])
    return view


def _primaries(port):
    """[(port, id)] of the primaries the node on port takes for alive."""
    return sorted((node_port, node_id) for node_id, (node_port, flags, _) in _view(port).items()
                  if 'master' in flags and not flags & {'fail', 'fail?'})


def owner(port, slot):
    """(id, port) of the primary serving slot, as the node on port sees it."""
    for node_id, (node_port, flags, ranges) in _view(port).items():
        if 'master' in flags and 'fail' not in flags:
            for slots in ranges:
                first, _, last = slots.partition('-')
                if int(first) <= slot <= int(last or first):
                    return node_id, node_port
    raise RuntimeError(f'Redis Cluster: no node serves slot {slot}')


def migrate_slots(nodes, keys, batch=2, pause=0.05):
    """Move the slots of these keys, each from its primary to the next primary, as
    redis-cli --cluster reshard does: the slot IMPORTING on the target and MIGRATING on
    the source, its keys MIGRATEd a batch at a time (pause seconds apart, so that
    clients meet the slot half moved: ASK and TRYAGAIN), then given to the target on
    every primary. Returns {slot: (source port, target port)}."""
    moved = {}
    for slot in dict.fromkeys(call(live_ports(nodes)[0], 'CLUSTER', 'KEYSLOT', key) for key in keys):
        with migrating(nodes, slot, batch, pause) as (source, target):
            moved[slot] = (source, target)
    return moved


@contextmanager
def migrating(nodes, slot, batch=2, pause=0.05):
    """The slot MIGRATING from its primary to the next one, none of its keys moved yet,
    for the block, which gets (source port, target port); then moved as migrate_slots()
    moves it. Meanwhile a command with keys of the slot only some of which are there
    gets TRYAGAIN."""
    first = live_ports(nodes)[0]
    primaries = _primaries(first)
    source_id, source = owner(first, slot)
    n = [port for port, _ in primaries].index(source)
    target, target_id = primaries[(n + 1) % len(primaries)]
    call(target, 'CLUSTER', 'SETSLOT', slot, 'IMPORTING', source_id)
    call(source, 'CLUSTER', 'SETSLOT', slot, 'MIGRATING', target_id)
    try:
        yield source, target
    finally:
        # keys made on the source meanwhile are found by the next GETKEYSINSLOT
        while True:
            found = call(source, 'CLUSTER', 'GETKEYSINSLOT', slot, batch)
            if not found:
                break
            call(source, 'MIGRATE', '127.0.0.1', target, '', 0, 5000, 'KEYS', *found)
            time.sleep(pause)
        # the target first: it takes a new config epoch, which wins over the others' views
        for port in dict.fromkeys([target, source, *(port for port, _ in primaries)]):
            call(port, 'CLUSTER', 'SETSLOT', slot, 'NODE', target_id)
        _wait_for(lambda: all(owner(port, slot)[1] == target for port in live_ports(nodes)),
                  'every node to see the slot moved')


def kill_primary(nodes, key):
    """SIGKILL the primary serving key's slot; wait until its replica serves the slot and
    every node left says cluster_state:ok. Returns (killed port, promoted port, bytes of
    the replication stream the primary had just before the kill and the promoted
    replica never got: what the primary acknowledged and the cluster lost)."""
    live = live_ports(nodes)
    slot = call(live[0], 'CLUSTER', 'KEYSLOT', key)
    _, primary = owner(live[0], slot)
    offset = int(info(primary, 'replication')['master_repl_offset'])
    os.kill(int(info(primary, 'server')['process_id']), signal.SIGKILL)  # no goodbye, no last write to its replica
    replica = _promoted(live, slot, primary)
    # second_repl_offset: one past the last byte of the old primary's stream it had
    had = int(info(replica, 'replication')['second_repl_offset']) - 1
    return primary, replica, max(0, offset - had)


def kill_primary_losing(nodes, key, write):
    """write() acknowledged by the primary serving key's slot and lost with it: its
    replica stopped (SIGSTOP) and dropped by the primary, write() done, the primary
    SIGKILLed, the replica resumed; then as kill_primary() once the replica has taken
    over. Returns (killed port, promoted port)."""
    live = live_ports(nodes)
    slot = call(live[0], 'CLUSTER', 'KEYSLOT', key)
    primary_id, primary = owner(live[0], slot)
    replicas = [port for node_id, (port, flags, _) in _view(primary).items()
                if 'slave' in flags and _master_of(primary, node_id) == primary_id]
    assert len(replicas) == 1, f'{primary} has replicas {replicas}, not one'
    replica_pid = int(info(replicas[0], 'server')['process_id'])
    os.kill(replica_pid, signal.SIGSTOP)
    try:
        # else the stream waits in the link's buffers, and the replica reads it on resuming
        assert call(primary, 'CLIENT', 'KILL', 'TYPE', 'replica') == 1
        write()
        os.kill(int(info(primary, 'server')['process_id']), signal.SIGKILL)
    finally:
        os.kill(replica_pid, signal.SIGCONT)
    return primary, _promoted(live, slot, primary)


def _master_of(port, node_id):
    """The id of the primary node_id replicates, as the node on port sees it."""
    for line in call(port, 'CLUSTER', 'NODES').splitlines():
        fields = line.split()
        if fields[0] == node_id:
            return fields[3]
    return None


def _promoted(live, slot, primary):
    """The port of the node serving slot once primary (killed) is replaced there and
    every node left says cluster_state:ok."""
    left = [port for port in live if port != primary]

    def promoted():
        owners = {owner(port, slot)[1] for port in left}
        return (len(owners) == 1 and owners != {primary}
                and all('cluster_state:ok' in call(port, 'CLUSTER', 'INFO') for port in left))
    _wait_for(promoted, f'a replica of {primary} to take over')
    return owner(left[0], slot)[1]


def error_replies(nodes):
    """{error code: how often the live nodes replied with it} (INFO errorstats, Redis 7:
    MOVED, ASK, TRYAGAIN, CLUSTERDOWN...): what the clients met."""
    counts = {}
    for port in live_ports(nodes):
        for name, value in info(port, 'errorstats').items():
            code = name.removeprefix('errorstat_')
            counts[code] = counts.get(code, 0) + int(value.split('=')[1].split(',')[0])
    return counts

