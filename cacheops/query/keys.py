"""A queryset's cache key and DNFs, made from its fingerprint, and their memos."""
from django.db import connections

from .. import fingerprint as fingerprints  # its VERIFY switch, read at call time
from .. import chain
from ..conf import derived, model_profile, prefix_func
from ..fingerprint import chain_fingerprint, query_fingerprint
from ..keys import prefix_for
from ..tree import query_dnfs
from ..utils import md5hex, remember, tracked_tables


UNSET = object()  # an argument not given (None is a value there)


class CacheKeys:
    """QuerySetMixin's methods that make its keys and DNFs (gathered into it)."""

    def _cache_key(self, op='', fingerprint=UNSET, db=None):
        """The Redis key this queryset's result (or an op on it) is stored at, prefix included."""
        db = db or self.db
        if fingerprint is UNSET:
            fingerprint = self._fingerprint()
        if fingerprint is None or prefix_func() is not None:  # a prefix may change by request
            return self._make_cache_key(op, fingerprint, db)
        memo = _keys_memo()
        memo_key = (op, fingerprint, db, self.model, self._iterable_class, self._fields)
        try:
            return memo[memo_key]
        except KeyError:
            pass
        return remember(memo, memo_key, self._make_cache_key(op, fingerprint, db))

    def _make_cache_key(self, op, fingerprint, db):
        profile = model_profile(self.model)
        if fingerprint is None:
            sql, params = self.query.get_compiler(using=db).as_sql()
            query = ('s' + sql, repr(params))
        else:
            # compiling costs most of a hit: a fingerprint stands for the SQL on one kind
            # of database ('f' and 's' parts never collide)
            query = ('f' + fingerprint, connections.settings[db]['ENGINE'])
        parts = [
            op, *query,
            '' if profile is None or profile.db_agnostic else db,
            # the result class: proxies share the SQL of their concrete model
            self.model._meta.label, self._iterable_class.__name__,
            # values_list() fields: on Django 4.2 their order may not show in the query
            _field_list(self.model), repr(self._fields),
        ]
        return '%sq:%s' % (self._prefix_of(fingerprint), md5hex('\n'.join(parts)))

    @property
    def _prefix(self):
        """The key prefix in force for this queryset."""
        return self._prefix_of(UNSET)

    def _prefix_of(self, fingerprint):
        if prefix_func() is None:
            return ''
        return prefix_for([self.db], list(self._dnfs(fingerprint)))


    def _fingerprint(self):
        """The fingerprint of this queryset's query: of the recorded calls, if any."""
        pending = self.__dict__.get('_pending')
        # the database matters to a fingerprint only when verifying it (finding the
        # database may ask the routers: not on every hit)
        using = self.db if fingerprints.VERIFY else None
        if pending:
            model, (query, calls) = self.model, pending
            made = chain_fingerprint(query, calls, using, lambda: chain.replay(model, query, calls))
            if made is not None:
                return made
        return query_fingerprint(self.query, using)

    # Nothing derived from the query is kept on the queryset between ops: code may change
    # qs.query in place (qs.query.group_by = ...) or replace it. Within an op, the
    # fingerprint made for the key serves the DNFs too.

    def _dnfs(self, fingerprint=UNSET, built=None, db=None):
        if fingerprint is UNSET:
            fingerprint = self._fingerprint()
        return _shared_dnfs(self, fingerprint, built or self._built, db or self.db)

    def _cacheable_dnfs(self, fingerprint=UNSET, built=None, db=None):
        """[(db, dnfs)] for cached_call, or None when a table's writes are not invalidated."""
        db = db or self.db
        result = self._dnfs(fingerprint, built, db)
        return [(db, result)] if tracked_tables().issuperset(result) else None



# Keys of queries seen before in this process, by fingerprint and what else goes in a key:
# hashing a fingerprint costs a tenth of making the key again

@derived
def _keys_memo():
    return {}  # dropped on every setting change: profiles and prefixes go into keys


# DNFs of queries seen before in this process, by fingerprint: insideout mode needs them
# on every hit, and a miss would otherwise build them from a clone of the query

@derived
def _dnfs_memo():
    return {}  # dropped on every setting change: skipped fields and such shape DNFs


def _shared_dnfs(qs, fingerprint, built, db):
    """The DNFs of qs on db, which built() gives built; memoized by fingerprint."""
    if fingerprint is None:
        return query_dnfs(_query_of(built()), db)
    memo = _dnfs_memo()
    # a long fingerprint (of a long IN list) by its digest: there may be many of them
    key = (db, qs.model, fingerprint if len(fingerprint) <= 512 else md5hex(fingerprint.encode('latin-1')))
    try:
        return memo[key]
    except KeyError:
        pass
    return remember(memo, key, query_dnfs(_query_of(built()), db))


def _query_of(built):
    """The Query of a queryset, or the Query itself."""
    return getattr(built, 'query', built)


# A model's concrete fields and default ordering, in every key of its querysets and gets
_field_lists = {}


def _field_list(model):
    try:
        return _field_lists[model]
    except KeyError:
        # and the default ordering: a fingerprint names fields, and a deploy may change it
        value = _field_lists[model] = '%s;%r' % (
            ','.join(sorted(f.attname for f in model._meta.concrete_fields)), model._meta.ordering)
        return value
