"""Per-connection transaction state: dirty flags and invalidations queued to the commit.

A connection's state is a stack of levels: the transaction, then one per savepoint.
Writes mark the current level dirty; a dirty connection neither reads nor stores cache.
Invalidations queue on the current level; a released savepoint hands its queue to the
level below, a rolled back one drops it, and the outermost commit runs them all, before
Django's on_commit callbacks. The connection methods that drive this are patched in
monkey.py.
"""
import inspect
import re
import threading
from collections import defaultdict
from contextlib import contextmanager
from functools import wraps

from django.db import DEFAULT_DB_ALIAS, connections
from funcy import lcat, lmapcat


class Level:
    __slots__ = ('sid', 'queue', 'dirty')

    def __init__(self, sid=None):
        self.sid = sid
        self.queue = []
        self.dirty = False


class TransactionState(list):
    """The stack of levels of one connection; empty when no transaction is open."""

    def begin(self, sid=None):
        self.append(Level(sid))

    def _index(self, sid):
        for i in range(len(self) - 1, -1, -1):
            if self[i].sid == sid:
                return i
        return None

    def release(self, sid):
        """A savepoint was released: hand its work to the level below, or run it if none."""
        i = self._index(sid)
        if i is None:
            return []
        released = self[i:]
        del self[i:]
        queue = lcat(level.queue for level in released)
        if not self:
            return queue
        self[-1].queue.extend(queue)
        self[-1].dirty = self[-1].dirty or any(level.dirty for level in released)
        return []

    def rollback_to(self, sid):
        """Rolled back to a savepoint: its work and the levels above are gone, it stays."""
        i = self._index(sid)
        if i is not None:
            del self[i + 1:]
            self[i].queue = []
            self[i].dirty = False

    def commit(self):
        """The transaction committed: return the queue to run."""
        queue = lcat(level.queue for level in self)
        self.clear()
        return queue

    @property
    def dirty(self):
        return any(level.dirty for level in self)

    def mark_dirty(self):
        self[-1].dirty = True


class TransactionStates(threading.local):
    """Per-thread registry: _states maps a database alias to its TransactionState."""

    def __init__(self):
        self._states = defaultdict(TransactionState)

    def __setattr__(self, name, value):
        # test suites replace _states with an empty defaultdict to mean "no transaction is
        # open" (see docs/design.md); one of another factory, or a plain dict, must still
        # give states
        if name == '_states' and getattr(value, 'default_factory', None) is not TransactionState:
            value = defaultdict(TransactionState, value)
        super().__setattr__(name, value)

    def __getitem__(self, alias):
        return self._states[alias]

    def is_dirty(self, dbs):
        states = self._states
        return any(states[db].dirty for db in dbs if db in states)

    def in_transaction(self, alias):
        state = self._states.get(alias)
        return bool(state)

    @contextmanager
    def hidden(self):
        """No transaction seems open in this thread meanwhile."""
        states, self._states = self._states, defaultdict(TransactionState)
        try:
            yield
        finally:
            self._states = states

    def any_open(self):
        """Whether a transaction is open on any database (in this thread)."""
        return any(self._states.values())

    def bypass_cache(self, dbs):
        """Whether reads on these databases must neither use nor fill the cache."""
        states = self._states
        # after a write a transaction sees its own changes; under snapshot isolation
        # it may read rows older than an invalidation that already ran
        return any(states[db].dirty or reads_snapshot(connections[db]) for db in dbs if states.get(db))


transaction_states = TransactionStates()


def queue_when_in_transaction(func):
    """Run func(..., using=) now outside a transaction; inside one, at the outermost commit."""
    position, default = _using_parameter(func)

    @wraps(func)
    def wrapper(*args, **kwargs):
        # the arguments go to func as given: the alias may be passed by position
        if position is not None and len(args) > position:
            using = args[position]
        else:
            using = kwargs.get('using', default)
        state = transaction_states._states.get(using or DEFAULT_DB_ALIAS)
        if state:
            state[-1].queue.append((func, args, kwargs))
        else:
            return func(*args, **kwargs)
    return wrapper


def _using_parameter(func):
    """(position of func's using parameter, or None if it can't be passed by position; its default)."""
    try:
        parameters = inspect.signature(func).parameters
    except (TypeError, ValueError):
        return None, DEFAULT_DB_ALIAS
    parameter = parameters.get('using')
    if parameter is None:
        return None, DEFAULT_DB_ALIAS
    positional = parameter.kind in (parameter.POSITIONAL_ONLY, parameter.POSITIONAL_OR_KEYWORD)
    default = DEFAULT_DB_ALIAS if parameter.default is parameter.empty else parameter.default
    return (list(parameters).index('using') if positional else None), default


def reads_snapshot(connection):
    """Whether the connection's transactions read a snapshot (repeatable read, serializable)."""
    level = getattr(connection, 'isolation_level', None)
    name = getattr(level, 'name', level)  # PostgreSQL: an IsolationLevel; MySQL: a string
    return isinstance(name, str) and name.replace('_', ' ').lower() in ('repeatable read', 'serializable')


# Dirty SQL

_CLEAN_STATEMENTS = frozenset({
    'select', 'savepoint', 'release', 'rollback', 'set', 'show', 'explain', 'pragma',
    'begin', 'start', 'commit', 'describe', 'values', 'table', 'declare', 'fetch', 'close',
})
# comments and opening parentheses ((SELECT ...) UNION ...) skipped
_FIRST_WORD = re.compile(r'\s*(?:(?:--[^\n]*\n|/\*.*?\*/|\()\s*)*(\w+)', re.S)
_WRITE_WORD = re.compile(r'\b(insert|update|delete|merge|replace|truncate)\b', re.I)
# a statement after the first
_MORE_STATEMENTS = re.compile(r';\s*\S')


def _sql_text(sql):
    if isinstance(sql, str):
        return sql
    if isinstance(sql, bytes):
        return sql.decode(errors='replace')
    return ' '.join(_composed_parts(sql))


def _composed_parts(obj):
    """The SQL text pieces of a psycopg2/psycopg sql.Composed (identifiers and literals skipped)."""
    seq = getattr(obj, 'seq', None) or getattr(obj, '_obj', None)
    if isinstance(seq, str):
        return [seq] if type(obj).__name__ == 'SQL' else []
    string = getattr(obj, 'string', None)
    if isinstance(string, str):
        return [string] if type(obj).__name__ == 'SQL' else []
    if isinstance(seq, (list, tuple)):
        return lmapcat(_composed_parts, seq)
    return []


def is_sql_dirty(sql):
    """True for SQL that writes (insert, update, delete, DDL...)."""
    text = _sql_text(sql)
    if _MORE_STATEMENTS.search(text):
        # several statements (psycopg 3 runs them), or a ';' in a literal or a comment,
        # which may hide a statement's first word: a write word anywhere, or a piece
        # that writes. A false alarm only bypasses the cache
        return bool(_WRITE_WORD.search(text)) or any(map(_is_statement_dirty, text.split(';')))
    return _is_statement_dirty(text)


def _is_statement_dirty(text):
    match = _FIRST_WORD.match(text)
    if not match:
        return False
    word = match.group(1).lower()
    if word in ('with', 'explain'):  # a data-modifying CTE; EXPLAIN ANALYZE runs what it explains
        return bool(_WRITE_WORD.search(text))
    return word not in _CLEAN_STATEMENTS
