"""Writes through a queryset that invalidate: bulk_create(), invalidated_update()."""
from django.db import connections, router, transaction

from .. import invalidation
from ..chain import _django
from ..invalidation import invalidate_dicts, obj_dict, run_safely
from ..rows import take_write_lock
from ..utils import is_tracked


class Writes:
    """QuerySetMixin's writing methods (gathered into it)."""

    def bulk_create(self, objs, *args, **kwargs):
        objs = _django['QuerySet.bulk_create'](self, objs, *args, **kwargs)
        if is_tracked(self.model):
            # bulk_create(objs, batch_size, ignore_conflicts, update_conflicts, ...)
            if kwargs.get('update_conflicts', len(args) > 2 and args[2]):
                # rows updated in place: their old values are unknown
                run_safely(invalidation.invalidate_model, self.model, using=self.db)
            else:
                run_safely(invalidate_dicts, self.model, [obj_dict(o) for o in objs], using=self.db)
        return objs

    def invalidated_update(self, **kwargs):
        """update() that invalidates the rows by their values before and after."""
        using = self._db or router.db_for_write(self.model, **self._hints)  # where update() writes
        qs = self.using(using).nocache()
        # one transaction, rows locked from their first read: a write by another process
        # can't slip in between and move a row from values this invalidation doesn't know
        with transaction.atomic(using=using, savepoint=False):
            take_write_lock(self.model, using)
            pks = list(qs.values_list('pk', flat=True))
            if not pks:
                return 0
            # no ordering: Meta.ordering may join, and FOR UPDATE can't lock an outer join
            rows = self.model._base_manager.using(using).filter(pk__in=pks).nocache().order_by()
            if connections[using].features.has_select_for_update:
                rows = rows.select_for_update()
            before = [obj_dict(o) for o in rows]
            count = qs.filter(pk__in=pks).update(**kwargs)
            after = [obj_dict(o) for o in rows.all()]
        run_safely(invalidate_dicts, self.model, before + after, using=using)
        return count
