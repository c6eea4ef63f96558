"""Invalidation by row, by model and of everything; no_invalidation.

A write must never fail because of the cache (docs/design.md, invariant 2): invalidations
run from model events go through run_safely(), which logs a Redis failure and keeps
the invalidation to retry before this process next uses the cache.
"""
import contextvars
import inspect
import logging
import os
import re
from collections.abc import Iterable, Mapping
from functools import wraps
from typing import Any

import redis
from django.db import DEFAULT_DB_ALIAS, connections
from django.db.models import Model
from funcy import distinct, lcat

from .conf import prefix_func, settings
from . import failed as failed_module
from .failed import REDIS_FAILURES, failed, failed_lock, keep_step, retry_failed, run_safely  # noqa: F401
from .keys import (PrefixQuery, conj_prefix, drain_keys, epoch_key, handover_key, hash_tag, is_conj_key,
                   known_schemes, learn_schemes, prefix_for, prefixed_tables, row_conj_keys,
                   row_conj_patterns, row_of,  # noqa: F401
                   _rows_of, scan_conj_keys, schemes_key)
from .redis import get_client, is_cluster, primary, run_script
from .removed import count_removed
from .signals import cache_invalidated
from .stats import count_invalidation
from .transaction import queue_when_in_transaction, transaction_states
from .utils import (chunks, common_glob_head, glob_escape, glob_regex, written_granular_columns,
                    written_tables)

logger = logging.getLogger('cacheops')

UNLINK_CHUNK = 1000


def kept_on_failure(sets, replay=None):
    """An invalidation step that, if Redis fails, is kept to replay as it is (or through
    replay, given the same arguments): the same handover set then gives back the cache
    keys a run whose reply was lost took. sets(args) names the sets of cache keys it may
    leave behind, recorded for other processes."""
    def decorator(func):
        @wraps(func)
        def wrapper(*args):
            try:
                return func(*args)
            except ScriptRefused:
                raise  # it did nothing: the call it is a step of, kept whole, does it all
            except REDIS_FAILURES:
                keep_step(_replay(replay or func), args, [_text(name) for name in sets(args)])
                raise
        return wrapper
    return decorator


class ScriptRefused(redis.ResponseError):
    """Redis refused to run an invalidation's script (out of memory, NOPERM, BUSY...): it
    did nothing, so the step need not be kept, only the call it is part of."""


def _script(name, keys, args):
    """run_script(), its refusal raised as ScriptRefused."""
    try:
        return run_script(name, keys, args)
    except redis.ResponseError as e:
        raise ScriptRefused(*e.args) from e


def _replay(func):
    def replay(client, *args):
        func(get_client(), *args)  # the client of now: settings may have changed
    replay.step = func  # the same step, for failed.keep_step
    return replay


def _delete_keys(client, keys):
    """UNLINK keys in chunks; how many existed."""
    return sum(client.unlink(*chunk) for chunk in chunks(keys, UNLINK_CHUNK))


def _delete_dropped_keys(client, keys, handover):
    """Delete cache keys whose conj sets are gone already, and the handover set that
    remembers them in Redis. If Redis fails, they are kept for replay themselves."""
    keys = [*keys, handover]
    try:
        # the handover set exists whenever there are keys: one of those deleted
        count_removed(cache_keys=max(0, _delete_keys(client, keys) - 1))
    except REDIS_FAILURES:
        keep_step(_delete_keys_again, (keys,), [_text(handover)])
        raise


def _delete_keys_again(keys):
    _delete_keys(get_client(), keys)


# The most cache keys one invalidation deletes inside Redis; more go back to the client
# to delete in chunks, so that a big invalidation never blocks Redis for long.
SERVER_DELETE_BUDGET = 5000
# The most conj set members one script reads; a bigger set is renamed to a drain set,
# which the client empties DRAIN_CHUNK members at a time (docs/design.md, "Bounded work").
SERVER_READ_LIMIT = 10000
DRAIN_CHUNK = 1000


def invalidate_rows(table, rows, using=DEFAULT_DB_ALIAS):
    """Invalidate queries on a table that any of these rows ({column: canonical string}) falls into."""
    invalidate_tables([(table, rows)], using=using)


def invalidate_tables(tables, using=DEFAULT_DB_ALIAS):
    """invalidate_rows() for [(table, rows)]: one round trip on one Redis."""
    client = get_client()
    # a cluster keeps each table's keys in their own slot: one script per table there,
    # and the cache keys, which live anywhere, are deleted by the client; so they are
    # with CACHEOPS_STRICT_KEYS, for servers that refuse a key a script is not given
    cluster = is_cluster()
    batches = [[t] for t in tables] if cluster else [tables]
    budget = 0 if cluster or settings.CACHEOPS_STRICT_KEYS else SERVER_DELETE_BUDGET
    for batch in batches:
        _invalidate_batch(client, [(prefix_for([using], [table]), table, rows) for table, rows in batch], budget)


# Runs of invalidate.lua for one batch, each on keys derived from what the last reported:
# more only if schemes keep appearing between runs
MAX_DERIVATIONS = 3


def _invalidate_batch(client, batch, budget):
    """Run invalidate.lua for [(prefix, table, rows)], given the conj keys the rows fall
    into under the schemes known in use (docs/design.md, "Declared keys")."""
    for _ in range(MAX_DERIVATIONS):
        keys, args = _invalidation_call(batch)
        if _run_invalidation(client, keys, budget, args, batch):
            return
    logger.warning('cacheops: schemes kept appearing on %s while invalidating by rows: '
                   'invalidated whole', ', '.join(table for _, table, _ in batch))
    invalidate_prefixed_tables(client, [(prefix, table) for prefix, table, _ in batch])


def _invalidation_call(batch):
    """(KEYS, ARGV tail) of invalidate.lua for [(prefix, table, rows)]."""
    schemes = [list(known_schemes(prefix, table)) for prefix, table, _ in batch]
    conjs = lcat(row_conj_keys(prefix, table, table_schemes, rows)
                 for (prefix, table, rows), table_schemes in zip(batch, schemes))
    # epochs and stamps in conj-set mode too: a deploy switching modes runs both
    keys = [*(schemes_key(prefix, table) for prefix, table, _ in batch),
            *(epoch_key(prefix, table) for prefix, table, _ in batch)]
    # the handover set (and so the drain sets) in the first table's slot
    prefix, table, _ = batch[0]
    handover = handover_key(prefix, new_epoch(), table)
    keys += [handover, *conjs, *drain_keys(handover, len(conjs))]
    return keys, [len(batch), *lcat([len(table_schemes), *table_schemes] for table_schemes in schemes)]


def _invalidation_step(client, keys, budget, args, batch):
    """Run invalidate.lua and delete what it leaves to the client; False if it reported a
    scheme the keys were not derived from, and so did nothing. Each run has a fresh
    token, from which the script derives the new epochs."""
    complete, in_use, *rest = _script('invalidate', keys, [budget, SERVER_READ_LIMIT, new_epoch(), *args])
    in_use = [[_scheme(scheme) for scheme in table_schemes] for table_schemes in in_use]
    for (prefix, table, _), table_schemes in zip(batch, in_use):
        learn_schemes(prefix, table, table_schemes)
    if not complete:
        return False
    members, conjs_deleted, deleted_here, drains = rest
    count_removed(conj_keys=conjs_deleted, cache_keys=deleted_here)
    if members:
        _delete_dropped_keys(client, members, keys[2 * len(batch)])
    for drain in drains:
        drain_set(client, drain)
    patterns = lcat(row_conj_patterns(prefix, table, table_schemes, rows)
                    for (prefix, table, rows), table_schemes in zip(batch, in_use))
    if patterns:
        prefix, table, _ = batch[0]
        invalidate_conjs(client, _scan_any(client, patterns), prefix, table)
    return True


def _invalidation_step_again(client, keys, budget, args, batch):
    """A kept step's replay: the same call, so that it finds what a run whose reply was
    lost left; derived anew where it reports schemes that appeared since."""
    if not _invalidation_step(client, keys, budget, args, batch):
        _invalidate_batch(client, batch, budget)


# the handover set follows the schemes sets and epochs in KEYS
_run_invalidation = kept_on_failure(lambda args: [args[1][2 * len(args[4])]],
                                    replay=_invalidation_step_again)(_invalidation_step)


def _scheme(member):
    """A schemes set's member as known_schemes() keeps it: text, or bytes for one that is
    not UTF-8 (not cacheops', whose columns are text), which the script is given back as
    it is and no conj key is derived from."""
    try:
        return member.decode() if isinstance(member, bytes) else member
    except UnicodeDecodeError:
        return member


def new_epoch():
    return os.urandom(8).hex()


def _replace_epochs(client, prefixed):
    """Give these (prefix, table) pairs new epochs (insideout mode; in conj-set mode too,
    for a deploy switching modes), before their conj keys are scanned for: a miss that
    read the old ones drops its store; one that stored before has its stamps where the
    scan finds them."""
    keys = [epoch_key(prefix, table) for prefix, table in prefixed]
    if is_cluster():  # keys of one table's slot per script
        for key in keys:
            run_script('replace_epochs', [key], [new_epoch()], client)
    elif keys:
        run_script('replace_epochs', keys, [new_epoch()], client)


def invalidate_conjs(client, conjs, prefix='', table=None):
    """Delete these conjunction keys and the cache keys they reference (a handover set
    with prefix, in table's slot on a cluster, keeps those until they are deleted)."""
    groups = {table: conjs}
    if is_cluster() and table is None:  # found over many tables: a script per table's slot
        groups = {}
        for conj in conjs:
            groups.setdefault(hash_tag(_text(conj)), []).append(conj)
    for table, conjs in groups.items():
        for chunk in chunks(conjs, UNLINK_CHUNK):
            handover = handover_key(prefix, new_epoch(), table)
            _run_invalidate_conjs(client, [handover, *chunk, *drain_keys(handover, len(chunk))])


def _text(key):
    return key.decode(errors='replace') if isinstance(key, bytes) else key


@kept_on_failure(lambda args: [args[1][0]])  # the handover set, first of keys
def _run_invalidate_conjs(client, keys):
    """Run invalidate_conjs.lua and delete the cache keys it returns."""
    members, drains, deleted = _script('invalidate_conjs', keys, [SERVER_READ_LIMIT])
    count_removed(conj_keys=deleted)
    if members:
        _delete_dropped_keys(client, members, keys[0])
    for drain in drains:
        drain_set(client, drain)


# what follows a prefix in a handover set's name (keys.handover_key), or a drain set's
HANDOVER_NAME = re.compile(rb'handover:(?:.+:)?[0-9a-f]{16}(?::\d+)?')


def drain_leftovers(client, chunk_size=UNLINK_CHUNK, drained=lambda: None):
    """Drain the sets of cache keys invalidations left to their client (their process died
    first, say), calling drained() after each. One still running may be draining the same
    set: deleting a key twice is harmless."""
    for prefix in sorted(prefixed_tables()):
        start = len(prefix.encode())
        for key in client.scan_iter(match=glob_escape(prefix) + 'handover:*', count=chunk_size):
            if HANDOVER_NAME.fullmatch(key[start:]) and client.type(key) in (b'set', 'set'):
                drain_set(client, key)
                drained()


@kept_on_failure(lambda args: [args[1]])
def drain_set(client, drain):
    """Delete the cache keys a drain set (a renamed conj set) references, DRAIN_CHUNK at a
    time, each removed from the set only once deleted: a process that dies meanwhile
    leaves the rest for reapconjs to drain."""
    while members := client.srandmember(drain, DRAIN_CHUNK):
        count_removed(cache_keys=_delete_keys(client, members))
        client.srem(drain, *members)


def _invalidate_values(model, dicts, using):
    """Invalidate every table a write to model touches by these rows' values."""
    tables = written_granular_columns(model, connections[using or DEFAULT_DB_ALIAS].vendor)
    invalidate_tables([(table, _rows_of(columns, dicts)) for table, columns in tables], using=using)


@queue_when_in_transaction
def _invalidate_dicts(model, dicts, using=DEFAULT_DB_ALIAS):
    _invalidate_values(model, dicts, using)
    count_invalidation(model, conditions=dicts)
    if cache_invalidated.receivers:
        for values in dicts:
            _send_invalidated(model, values)


def _send_invalidated(sender, values):
    """cache_invalidated to every receiver. The invalidation is done: one raising is
    logged with its traceback, the others still get the signal, and the write that
    invalidated goes on (docs/design.md, "not a Redis error")."""
    for receiver, result in cache_invalidated.send_robust(sender=sender, obj_dict=values):
        if isinstance(result, Exception):
            logger.error('cacheops: cache_invalidated receiver %r raised', receiver,
                         exc_info=(type(result), result, result.__traceback__))


def invalidate_dict(model: type[Model], obj_dict: Mapping[str, Any], using: str = DEFAULT_DB_ALIAS) -> None:
    """Invalidate queries a row with these field values (by attname or column) falls into."""
    invalidate_dicts(model, [obj_dict], using=using)


def invalidate_dicts(model: type[Model], dicts: Iterable[Mapping[str, Any]],
                     using: str = DEFAULT_DB_ALIAS) -> None:
    """invalidate_dict() for several rows of one model, in one go per table."""
    if not no_invalidation.active:
        _invalidate_dicts(model, list(dicts), using=using)


def obj_dict(obj):
    """{attname: value} of an instance's loaded concrete fields (deferred ones left out)."""
    loaded = obj.__dict__
    return {f.attname: loaded[f.attname] for f in obj._meta.concrete_fields if f.attname in loaded}


def invalidate_obj(obj: Model, using: str | None = None) -> None:
    """Invalidate queries this object falls into."""
    invalidate_dict(type(obj), obj_dict(obj), using=using or obj._state.db or DEFAULT_DB_ALIAS)


def _scan(client, pattern):
    return list(client.scan_iter(match=pattern, count=UNLINK_CHUNK))


def _scan_any(client, patterns):
    """The keys matching any of these SCAN patterns, in one pass over the keyspace: each
    SCAN walks all of it, whatever it matches, and rows lacking a column give a pattern
    each (a bulk_create of 200 rows without pks gave 200 SCANs)."""
    patterns = [_text(pattern) for pattern in distinct(patterns)]
    if len(patterns) == 1:
        return _scan(client, patterns[0])
    matches = re.compile('|'.join(map(glob_regex, patterns)), re.DOTALL)
    found = _scan(client, common_glob_head(patterns) + '*')
    return [key for key in found if matches.fullmatch(_text(key))]


def invalidate_model(model: type[Model], using: str = DEFAULT_DB_ALIAS) -> None:
    """Invalidate all queries on a model (and its multi-table parents' tables)."""
    if not no_invalidation.active:
        _invalidate_model(model, using=using)


@queue_when_in_transaction
def _invalidate_model(model, using=DEFAULT_DB_ALIAS):
    prefixed = [(prefix_for([using], [table]), table) for table, _ in written_tables(model)]
    invalidate_prefixed_tables(get_client(), prefixed)
    count_invalidation(model)
    if cache_invalidated.receivers:
        _send_invalidated(model, None)


def invalidate_prefixed_tables(client, prefixed):
    """Invalidate all queries on these (prefix, table) pairs."""
    _replace_epochs(client, prefixed)
    if len(prefixed) == 1:
        [(prefix, table)] = prefixed
        invalidate_conjs(client, _scan(client, glob_escape(conj_prefix(prefix, table)) + '*'), prefix, table)
        return
    by_prefix = {}
    for prefix, table in prefixed:
        by_prefix.setdefault(prefix, []).append(glob_escape(conj_prefix(prefix, table)) + '*')
    for prefix, patterns in by_prefix.items():  # one pass over the keyspace for their tables
        invalidate_conjs(client, _scan_any(client, patterns), prefix)


def invalidate_all() -> None:
    """Drop everything cacheops cached, and nothing else.

    Without CACHEOPS_PREFIX the Redis db is cacheops' own, and it is flushed. With one,
    the entries registered in conj keys go first (a callable prefix may give a query on
    several tables a prefix no single table has), then every key under a prefix cacheops
    computes; keys with an empty prefix are deleted only if they are cacheops' own.
    Readers keep registering meanwhile: the schemes sets of known tables are kept, or a
    value registered after the scan would be out of reach of later writes, and a conj
    key found under a prefix is dropped with the values it references, as it may
    reference one stored after the scan passed it.
    In a transaction it runs at once and again at the outermost commit of each database
    with one open.
    """
    if no_invalidation.active:
        return
    _invalidate_all()
    # meanwhile a reader on another connection may store rows the transactions' writes
    # replace (docs/design.md, invariant 1); at the commits only, it would never run in
    # the transaction a test suite wraps each test in and rolls back
    for alias in connections:
        if transaction_states.in_transaction(alias):
            _invalidate_all_at_commit(using=alias)


@queue_when_in_transaction
def _invalidate_all_at_commit(using):
    _invalidate_all()


def _invalidate_all():
    client = get_client()
    if prefix_func() is None:
        # freed in a background thread: a big database would block Redis for seconds
        primary.flush_trusted(client)
    else:
        by_prefix = prefixed_tables()
        # under an empty prefix they'd outlive the scans below, their conj sets gone
        drain_leftovers(client)
        _replace_epochs(client, [(prefix, table) for prefix, tables in by_prefix.items()
                                 for table in sorted(tables)])
        for prefix, conjs in scan_conj_keys(client, UNLINK_CHUNK):
            invalidate_conjs(client, conjs, prefix)
        kept = {form for prefix, tables in by_prefix.items() for table in tables
                for form in (schemes_key(prefix, table), schemes_key(prefix, table).encode())}
        conj_prefixes = {conj_prefix(prefix, table) for prefix, tables in by_prefix.items()
                         for table in tables}
        for prefix in _whole_prefixes(by_prefix):
            found = client.scan_iter(match=glob_escape(prefix) + '*', count=UNLINK_CHUNK)
            for keys in chunks(found, UNLINK_CHUNK):
                conjs = [key for key in keys if is_conj_key(key, conj_prefixes)]
                invalidate_conjs(client, conjs, prefix)
                dropped = kept.union(conjs)
                count_removed(cache_keys=_delete_keys(client, [key for key in keys if key not in dropped]))
        _delete_keys(client, [epoch_key('', table) for table in by_prefix.get('', ())])
    count_invalidation(None)
    if cache_invalidated.receivers:
        _send_invalidated(None, None)


# a new primary drops cacheops' keys so, where a prefix shares the db (see redis/primary.py)
primary.drop_prefixed = _invalidate_all
# a kept queue past failed.MAX_KEPT collapses into this, not skipped under no_invalidation
failed_module.drop_everything = _invalidate_all


def _whole_prefixes(by_prefix):
    """Non-empty prefixes whose keys are all cacheops': of tables, and of queries on no table."""
    prefixes = set(by_prefix)
    dbs = list(connections)
    for query_dbs in [[], dbs, *([db] for db in dbs)]:
        try:
            prefixes.add(prefix_func()(PrefixQuery(query_dbs, [])) or '')
        except Exception:  # a prefix for tables only, e.g. it uses query.table
            pass
    prefixes.discard('')
    return sorted(prefixes)


# a Redis Cluster node found older drops the keys under these on it (redis/primary.py)
primary.whole_prefixes = _whole_prefixes


# The depth of no_invalidation blocks in the current context. A ContextVar, not a thread
# local: asave() runs save() in a worker thread with a copy of the caller's context
# (asgiref), and coroutines on one loop share a thread but each task has its own context
_no_invalidation_depth = contextvars.ContextVar('cacheops_no_invalidation', default=0)


class NoInvalidation:
    """Context manager and decorator turning invalidation off in the current context
    (the thread, or the coroutine, and what it awaits in worker threads); nestable."""

    @property
    def depth(self) -> int:
        return _no_invalidation_depth.get()

    @property
    def active(self) -> bool:
        return _no_invalidation_depth.get() > 0

    def __enter__(self):
        _no_invalidation_depth.set(_no_invalidation_depth.get() + 1)

    def __exit__(self, *exc):
        _no_invalidation_depth.set(_no_invalidation_depth.get() - 1)

    def __call__(self, func):
        if inspect.iscoroutinefunction(func):
            @wraps(func)
            async def async_wrapper(*args, **kwargs):
                with self:
                    return await func(*args, **kwargs)
            return async_wrapper

        @wraps(func)
        def wrapper(*args, **kwargs):
            with self:
                return func(*args, **kwargs)
        return wrapper


no_invalidation = NoInvalidation()
