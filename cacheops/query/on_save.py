"""cache_on_save: a saved instance stored where get() by its profile's field reads it."""
from django.core.exceptions import ImproperlyConfigured
from django.db.models.query import MAX_GET_RESULTS

from ..conf import model_profile
from ..failed import stores_only
from ..getset import cached_call
from ..transaction import transaction_states
from .gets import fast_get


@stores_only
def cache_on_save(instance, using):
    """Store a saved instance where get(<its profile's cache_on_save field>=value) reads."""
    model = type(instance)
    profile = model_profile(model)
    if not profile or not profile.cache_on_save or transaction_states.in_transaction(using):
        return
    field = 'pk' if profile.cache_on_save is True else profile.cache_on_save
    qs = model._default_manager.db_manager(using).all()
    kwargs = {field: getattr(instance, field)}
    fast = fast_get(qs, (), kwargs)
    if fast is None:
        raise ImproperlyConfigured('cacheops: cache_on_save=%r of %s must name a unique field'
                                   % (profile.cache_on_save, model._meta.label))
    get_qs = qs.filter(**kwargs).order_by()
    get_qs.query.set_limits(high=MAX_GET_RESULTS)
    cached_call(fast[0], get_qs._cacheable_dnfs, profile.timeout, lambda: [instance], sender=model)
