"""Plain filter()/exclude()/order_by()/slice calls recorded (chain.py); a Query shared with clones."""
import threading

import django
from django.db.utils import DJANGO_VERSION_PICKLE_KEY

from .. import chain
from ..chain import _django  # Django's own methods that the mixins wrap
from ..conf import model_profile
from ..fingerprint import plain_ordering_name
from .cacheconf import NO_CACHE, NO_CONF


class _Lent:
    """What .query gives Django's _clone() while a call is recorded: chain() shares it."""
    __slots__ = ('query',)

    def __init__(self, query):
        self.query = query

    def chain(self):
        return self.query


class _Lending(threading.local):
    qs = query = None  # in this thread: the queryset lending its Query, and the Query lent


_lending = _Lending()


class CallRecording:
    """QuerySetMixin's methods that record calls and share the Query (gathered into it)."""
    # Recorded calls (chain.py): (the Query they build on, the calls), in one attribute so
    # that a thread cloning this queryset never sees the one without the other; whether
    # _query is shared with other querysets (how to copy it then: 'chain' or 'clone');
    # whether .query ever handed it out
    _pending = ()
    _query_shared = False
    _query_seen = False

    @property
    def query(self):
        """The Query, built first from the recorded calls if there are any."""
        d = self.__dict__
        if _lending.qs is self:
            return _Lent(_lending.query)
        pending = d.get('_pending')
        if pending:
            d['_query'] = chain.replay(self.model, *pending)
            d['_pending'] = ()  # after _query: a thread reading () finds the built one
            d['_query_shared'] = False
        elif d.get('_query_shared'):  # other querysets build on it: copy it first
            query = d['_query']
            d['_query'] = query.chain() if d['_query_shared'] == 'chain' else query.clone()
            d['_query_shared'] = False
        d['_query_seen'] = True
        return _django['QuerySet.query'].fget(self)

    @query.setter
    def query(self, value):
        self.__dict__.update(_pending=(), _query_shared=False, _query_seen=True)
        _django['QuerySet.query'].fset(self, value)

    def filter(self, *args, **kwargs):
        recorded = self._recorded_filter(False, args, kwargs)
        return _django['QuerySet.filter'](self, *args, **kwargs) if recorded is None else recorded

    def exclude(self, *args, **kwargs):
        recorded = self._recorded_filter(True, args, kwargs)
        return _django['QuerySet.exclude'](self, *args, **kwargs) if recorded is None else recorded

    def _recorded_filter(self, negate, args, kwargs):
        """A clone with this filter() (or exclude()) call recorded, or None to make it."""
        if (args or kwargs) and self._may_record():
            call = chain.filter_call(self.model, negate, args, kwargs)
            if call is not None and self._plain_base():
                return self._record(call)
        return None

    def order_by(self, *field_names):
        if self._may_record():
            call = chain.order_by_call(self.model, field_names, plain_ordering_name)
            if call is not None and self._plain_base():
                return self._record(call)
        return _django['QuerySet.order_by'](self, *field_names)

    def __getitem__(self, k):
        if type(k) is slice and self._result_cache is None and self._may_record():
            call = chain.slice_call(k)
            if call is not None:
                return self._record(call)
        return _django['QuerySet.__getitem__'](self, k)

    def _may_record(self):
        """Whether calls on this queryset may be recorded instead of made (chain.py)."""
        d = self.__dict__
        conf = self._cacheconf
        # Django 6.1 may turn cloning off for a while: then calls change the queryset itself
        return self.model is not None and not d.get('_query_seen') \
            and not conf.inplace and conf.ops != NO_CACHE.ops \
            and d.get('_cloning_enabled', True) \
            and not self._sticky_filter and not self._defer_next_filter \
            and self._deferred_filter is None and chain.recordable_class(type(self)) \
            and model_profile(self.model) is not None

    def _plain_base(self):
        """Whether a filter() or order_by() call may be recorded on this queryset: its names
        resolve against the model's fields alone (no annotations, extra or filtered
        relations to shadow them), and Django would take the call (no slice, no union)."""
        query, calls = self._recorded()
        return not (query.annotations or query.extra or query._filtered_relations
                    or query.combinator or chain.is_sliced(query, calls))

    def _record(self, call):
        """A clone with this call recorded."""
        clone = self._shared_clone()
        query, calls = clone._recorded()
        clone._pending = (query, calls + (call,))
        return clone

    def _recorded(self):
        """(the Query as it stands, the calls recorded on it), read at once (see _pending)."""
        d = self.__dict__
        return d.get('_pending') or (d['_query'], ())

    def _shared_clone(self):
        """Django's clone, but sharing the Query until either queryset needs it."""
        query, calls = self._recorded()
        _lending.qs, _lending.query = self, query
        try:
            clone = _django['QuerySet._clone'](self)
        finally:
            _lending.qs = _lending.query = None
        if calls:
            clone._pending = (query, calls)
        elif not self.__dict__.get('_query_shared'):
            # this queryset's own Query: copied before either hands it out or changes it
            self._query_shared = 'clone'
        clone._query_shared = 'chain'  # as Django's clone would have had it
        if self._cacheconf is not NO_CONF:
            clone._cacheconf = self._cacheconf
        return clone

    def _built(self):
        """This queryset, or if it has recorded calls a clone with its Query built: ops on
        it keep their calls recorded, and so the key their result was stored at."""
        if not self.__dict__.get('_pending'):
            return self
        clone = self._shared_clone()
        clone.query  # noqa: B018 - builds it
        return clone


    def _clone(self):
        conf = self._cacheconf
        if conf.inplace:
            # the caller changes self next: its Query must be its own and built, and what
            # was derived from the query is outdated
            self.query  # noqa: B018
            self._result_cache = None
            self._prefetch_done = False
            return self
        if self._may_record():
            return self._shared_clone()
        clone = _django['QuerySet._clone'](self)
        if conf is not NO_CONF:
            clone._cacheconf = conf
        return clone

    def __getstate__(self):
        if self._result_cache is None:
            state = _django['QuerySet.__getstate__'](self)
        else:
            # what Django's gives without evaluating: these results may be being
            # pickled for the cache, before prefetch_related() has run on them
            state = {**self.__dict__, DJANGO_VERSION_PICKLE_KEY: django.__version__}
        if state.get('_pending'):
            # a process without recorded calls (an older deploy) must get the query whole;
            # this queryset keeps its calls, and so its key
            state.update(_query=chain.replay(self.model, *state['_pending']), _pending=(),
                         _query_shared=False)
        return state

    def _filter_or_exclude_inplace(self, negate, args, kwargs):
        d = self.__dict__
        if d.get('_pending') or d.get('_query_shared'):
            self.query  # what this changes must be this queryset's own Query
        return _django['QuerySet._filter_or_exclude_inplace'](self, negate, args, kwargs)
