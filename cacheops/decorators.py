"""@cached_as and @cached_view_as: functions and views cached and invalidated like querysets.

A decorated call is cached at '<prefix>as:<md5>' through getset.cached_call, so it gets
what querysets get: race-free stores (no lasting stale entry), the dog-pile lock, the
cache_read signal and degrade-on-failure. It depends on the samples' conjunctions, so
any write a sample queryset would see invalidates it.

The view wrapper and the key helpers at the bottom are shared with simple.py.
"""
import inspect
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

from asgiref.sync import async_to_sync, iscoroutinefunction, markcoroutinefunction, sync_to_async
from django.core.exceptions import EmptyResultSet, ImproperlyConfigured, SynchronousOnlyOperation
from funcy import cat, identity, ldistinct
from django.db.models import Model, QuerySet
from django.http import HttpResponseBase

from .conf import derived, model_profile, prefix_func, settings
from .getset import cached_call
from .keys import prefix_for
from .query.async_reads import MISS, may_read_in_loop, read_hit
from .transaction import transaction_states
from .utils import checked_timeout, keyed_arguments, md5hex, stable_repr

CACHEABLE_METHODS = frozenset({'GET', 'HEAD'})

F = TypeVar('F', bound=Callable[..., Any])
# what a function is cached like: querysets, models, instances (or one list: a page)
Sample = QuerySet | type[Model] | Model | list


def cached_as(*samples: Sample, timeout: int | None = None, extra: Any = None,
              lock: bool | None = None, keep_fresh: bool = False) -> Callable[[F], F]:
    """Cache a function's result, invalidated like these querysets, models or instances.

    timeout=None takes the smallest timeout of the samples' profiles; lock=None takes
    the lock option of their profiles. extra is a value, or a callable of the function's
    arguments, that goes into the key. Results are always stored race-free, so
    keep_fresh is accepted for compatibility and changes nothing.
    """
    checked_timeout(timeout, 'cached_as()')
    querysets = _sample_querysets(samples)
    if querysets is None:
        return identity

    def decorator(func):
        cacher = _Cacher(querysets, timeout, lock, func)
        signature = signature_of(func)
        if iscoroutinefunction(func):
            @wraps(func)
            async def awrapper(*args, **kwargs):
                if not settings.CACHEOPS_ENABLED:
                    return await func(*args, **kwargs)
                return await cacher.acall(call_key_parts(signature, extra, args, kwargs),
                                          lambda: async_to_sync(func)(*args, **kwargs))
            return awrapper

        @wraps(func)
        def wrapper(*args, **kwargs):
            if not settings.CACHEOPS_ENABLED:
                return func(*args, **kwargs)
            return cacher.call(call_key_parts(signature, extra, args, kwargs),
                               lambda: func(*args, **kwargs))
        return wrapper
    return decorator


def cached_view_as(*samples: Sample, timeout: int | None = None, extra: Any = None,
                   lock: bool | None = None, keep_fresh: bool = False) -> Callable[[F], F]:
    """Cache a view's responses, invalidated like these samples, keyed on the request's URI.

    Only GET and HEAD requests answered with status 200 are cached; a TemplateResponse
    is rendered before it is stored; a value that is not a response is cached as it is.
    Works for function views and View.as_view().
    """
    checked_timeout(timeout, 'cached_view_as()')
    querysets = _sample_querysets(samples)
    if querysets is None:
        return identity

    def decorator(view):
        cacher = _Cacher(querysets, timeout, lock, view)
        signature = signature_of(view)

        def call(request, args, kwargs, compute):
            return cacher.call(view_key_parts(signature, extra, request, args, kwargs), compute)

        def acall(request, args, kwargs, compute):
            return cacher.acall(view_key_parts(signature, extra, request, args, kwargs), compute)
        return cached_view_wrapper(view, call, acall)
    return decorator


# Samples

def _sample_querysets(samples):
    """Each sample as a queryset, or None when the decorator should do nothing."""
    if not samples:
        raise TypeError('cached_as() needs a queryset, a model or an instance to cache like')
    # Paginator gives a plain list for a page of a list: there is nothing to depend on
    if len(samples) == 1 and isinstance(samples[0], list):
        return None
    return [_as_queryset(sample) for sample in samples]


def _as_queryset(sample):
    if isinstance(sample, QuerySet):
        return sample
    if isinstance(sample, type) and issubclass(sample, Model):
        # the sample's role is invalidation: every row of the table, whatever managers filter
        return sample._base_manager.all()
    if isinstance(sample, Model):
        manager = type(sample)._base_manager
        if sample._state.db:
            manager = manager.db_manager(sample._state.db)
        return manager.filter(pk=sample.pk)
    raise TypeError('cached_as() samples are querysets, models or model instances, got %r'
                    % (sample,))


@derived
def _generation():
    """A new token after each settings change: what is derived from settings is stale then."""
    return object()


class _Settled:
    """What a set of samples gives under the settings in force: timeout, lock, key part, dbs."""
    __slots__ = ('generation', 'timeout', 'lock', 'signature', 'dbs')


class _Cacher:
    """The caching shared by @cached_as and @cached_view_as for one decorated function."""

    def __init__(self, querysets, timeout, lock, func):
        self.querysets = querysets
        self.timeout = timeout
        self.lock = lock
        self.func = func
        self.identity = func_identity(func)
        self.settled = None

    def _settle(self):
        settled = self.settled
        generation = _generation()
        if settled is not None and settled.generation is generation:
            return settled
        settled = _Settled()
        profiles = [self._profile(qs.model) for qs in self.querysets]
        settled.timeout = min(p.timeout for p in profiles) if self.timeout is None else self.timeout
        settled.lock = any(p.lock for p in profiles) if self.lock is None else bool(self.lock)
        settled.signature = md5hex('\n'.join(map(sample_signature, self.querysets)))
        settled.dbs = ldistinct(qs.db for qs in self.querysets)
        settled.generation = generation
        self.settled = settled
        return settled

    def _profile(self, model):
        profile = model_profile(model)
        if profile is None:
            raise ImproperlyConfigured(
                'cacheops: %s has no profile in CACHEOPS (or it is None), so writes to it are '
                'not tracked and a function cached like it would go stale; add a profile for %r'
                % (model.__name__, model._meta.label_lower))
        return profile

    def dnfs(self):
        """[(db, {table: conjs})] of all samples, or None if one touches an untracked table."""
        result = []
        for qs in self.querysets:
            qs_dnfs = qs._cacheable_dnfs()
            if qs_dnfs is None:
                return None
            result.extend(qs_dnfs)
        return result

    def _prefix(self, dbs):
        if prefix_func() is None:
            return ''
        tables = ldistinct(cat(qs._dnfs() for qs in self.querysets))
        return prefix_for(dbs, tables)

    def call(self, parts, compute):
        """The cached result for these key parts, else compute() stored race-free."""
        settled = self._settle()
        key = self._key(settled, parts)
        if key is None:
            return compute()
        return cached_call(key, self.dnfs, settled.timeout, compute, lock=settled.lock,
                           func=self.func)

    async def acall(self, parts, compute):
        """call() awaited: a hit read in the event loop; else call() in a thread, where
        compute() (sync: it awaits the coroutine function in the loop) runs on a miss."""
        if may_read_in_loop():
            try:
                key = self._key(self._settle(), parts)
            except SynchronousOnlyOperation:  # a sample's SQL: its database's features ask it
                key = None
            if key is not None:
                value = await read_hit(key, self.dnfs, func=self.func)
                if value is not MISS:
                    return value
        return await sync_to_async(self.call)(parts, compute)

    def _key(self, settled, parts):
        """The key of a call, or None when it must not use the cache."""
        if transaction_states.any_open() and transaction_states.bypass_cache(settled.dbs):
            # a transaction that wrote, or reads a snapshot: don't read or share the cache
            return None
        return '%sas:%s' % (self._prefix(settled.dbs),
                            md5hex('\n'.join((self.identity, settled.signature, *parts))))


def sample_signature(qs):
    """What tells one sample queryset from another: its database and SQL."""
    try:
        sql, params = qs.query.get_compiler(using=qs.db).as_sql()
    except EmptyResultSet:
        # matches no rows whatever the database holds; the model still tells it apart
        sql, params = 'EMPTY', ()
    return '%s|%s|%s|%s|%r' % (qs.db, qs.model._meta.label, qs._iterable_class.__name__,
                               sql, params)


# Views

class _NotCacheable(Exception):
    """Raised from inside a cached call to return a response without storing it."""
    def __init__(self, response):
        super().__init__(response)
        self.response = response


def _cacheable_response(response):
    """A rendered response to store, or _NotCacheable for anything but a plain 200; a view
    may return any value, which is stored as it is."""
    if not isinstance(response, HttpResponseBase):
        return response
    if response.status_code != 200 or getattr(response, 'streaming', False):
        raise _NotCacheable(response)
    render = getattr(response, 'render', None)
    if callable(render):
        response = render()  # a TemplateResponse: only rendered content can be stored
    return response


def cached_view_wrapper(view, call, acall):
    """view, whose 200 responses to GET and HEAD come from call(request, args, kwargs, compute).

    compute() runs the view and returns the response to store; other responses are
    returned without being stored. An async view's come from acall(...), awaited: its
    compute() runs in a thread, the view awaited in the event loop, the response
    rendered in the thread (a template may query).
    """
    if iscoroutinefunction(view):
        @wraps(view)
        async def awrapper(request, *args, **kwargs):
            if not settings.CACHEOPS_ENABLED or request.method not in CACHEABLE_METHODS:
                return await view(request, *args, **kwargs)
            compute = lambda: _cacheable_response(async_to_sync(view)(request, *args, **kwargs))  # noqa: E731
            try:
                return await acall(request, args, kwargs, compute)
            except _NotCacheable as e:
                return e.response
        return markcoroutinefunction(awrapper)

    @wraps(view)
    def wrapper(request, *args, **kwargs):
        if not settings.CACHEOPS_ENABLED or request.method not in CACHEABLE_METHODS:
            return view(request, *args, **kwargs)
        compute = lambda: _cacheable_response(view(request, *args, **kwargs))  # noqa: E731
        try:
            return call(request, args, kwargs, compute)
        except _NotCacheable as e:
            return e.response
    return wrapper


def request_uri(request_or_uri):
    """The absolute URI (query string included) of a request; a string is one already."""
    if isinstance(request_or_uri, str):
        return request_or_uri
    return request_or_uri.build_absolute_uri()


# Key parts

def call_key_parts(signature, extra, args, kwargs):
    """Key parts of a function call: its arguments and extra."""
    return args_repr(signature, args, kwargs), extra_repr(extra, args, kwargs)


def view_key_parts(signature, extra, request_or_uri, args, kwargs):
    """Key parts of a view call: the request's absolute URI stands for the request.

    A callable extra gets what the view got, or the URI passed instead of a request.
    """
    return (args_repr(signature, (request_uri(request_or_uri), *args), kwargs),
            extra_repr(extra, (request_or_uri, *args), kwargs))


def func_identity(func):
    """Module and qualified name of a function (and of its class for View.as_view())."""
    parts = [getattr(func, '__module__', None) or '',
             getattr(func, '__qualname__', None) or repr(func)]
    if parts[1].endswith('<lambda>'):  # the lambdas of a scope share their qualname
        parts.append(str(func.__code__.co_firstlineno))
    view_class = getattr(func, 'view_class', None)
    if view_class is not None:  # every as_view() function has the same qualname
        parts += [view_class.__module__, view_class.__qualname__]
    return '.'.join(parts)


def signature_of(func):
    """func's signature, to key calls by their arguments' values; None when it has none."""
    try:
        return inspect.signature(func)
    except (TypeError, ValueError):
        return None


def args_repr(signature, args, kwargs):
    """The key part of a call's arguments: the same whether they are passed by position or
    by name, and whether defaults are passed or not."""
    if signature is not None:
        try:
            bound = signature.bind(*args, **kwargs)
        except TypeError:
            pass  # the call itself will fail
        else:
            bound.apply_defaults()
            return keyed_arguments(bound.arguments, key_repr)
    return key_repr((args, kwargs))


def extra_repr(extra, args, kwargs):
    """The key part of extra: a value, or what a callable extra returns for the call's arguments."""
    if callable(extra):
        extra = extra(*args, **kwargs)
    return key_repr(extra)


def key_repr(value):
    """A text standing for a value in keys: model instances by label and pk, querysets by SQL.

    repr() would evaluate querysets and show model instances by str(), which need not be unique.
    """
    if isinstance(value, Model):
        if value.pk is None:  # unsaved: only its field values tell it from another
            return '<%s:%s>' % (value._meta.label, key_repr(
                [getattr(value, field.attname) for field in value._meta.concrete_fields]))
        return '<%s:%r>' % (value._meta.label, value.pk)
    if isinstance(value, QuerySet):
        return '<qs:%s>' % sample_signature(value)
    if isinstance(value, type) and issubclass(value, Model):
        return '<model:%s>' % value._meta.label
    if isinstance(value, dict):
        items = sorted((key_repr(k), key_repr(v)) for k, v in value.items())
        return '{%s}' % ', '.join('%s: %s' % item for item in items)
    if isinstance(value, (list, tuple)):
        text = ', '.join(map(key_repr, value))
        return '[%s]' % text if isinstance(value, list) else '(%s)' % text
    if isinstance(value, (set, frozenset)):
        return '{%s}' % ', '.join(sorted(map(key_repr, value)))
    return stable_repr(value)
