"""Writes through a queryset that invalidate: bulk_create(), update(), bulk_update(),
invalidated_update().

update() and bulk_update() invalidate the rows they change by their values before and
after, read in the write's transaction, rows locked; above CACHEOPS_LONG_DISJUNCTION
rows, the whole model instead (docs/design.md, "Mass updates" under the write path)."""
import threading

from django.db import DatabaseError, connections, router, transaction

from .. import invalidation
from ..chain import _django
from ..conf import long_disjunction, settings
from ..invalidation import invalidate_dicts, no_invalidation, obj_dict, run_safely
from ..rows import locked_rows, rows_by_pk, rows_to_update, take_write_lock, update_attnames
from ..utils import is_tracked


class _Plain(threading.local):
    depth = 0  # > 0 inside our bulk_update(), whose update() calls it invalidates itself


_plain = _Plain()


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

    def update(self, **kwargs):
        query = self.query
        # what Django refuses, it refuses before any read of ours
        if not _invalidates(self) or query.is_sliced or query.combinator or query.distinct_fields:
            return _django['QuerySet.update'](self, **kwargs)
        using = self._db or router.db_for_write(self.model, **self._hints)  # where update() writes
        model = self.model
        with transaction.atomic(using=using, savepoint=False):
            rows = _safely_read(rows_to_update, self, using, _attnames(model, using), long_disjunction())
            if rows is None:
                count = _django['QuerySet.update'](self, **kwargs)
            else:
                # only the rows read: one another writer moved into the filter meanwhile
                # would change unseen (as if this update had run a moment before)
                pks = [row.pop('pk') for row in rows]
                count = _django['QuerySet.update'](self.filter(pk__in=pks), **kwargs)
                self._for_write, self._result_cache = True, None  # as Django's update() leaves self
                after = _new_rows(model, using, dict(zip(pks, rows)), [kwargs] * len(pks))
        _invalidate(model, using, None if rows is None else rows + after)
        return count

    def bulk_update(self, objs, fields, batch_size=None):
        objs = tuple(objs)
        if not objs or not fields or not _invalidates(self):  # Django raises or returns 0
            return _django['QuerySet.bulk_update'](self, objs, fields, batch_size=batch_size)
        using = self._db or router.db_for_write(self.model, **self._hints)  # where it writes
        model = self.model
        pks = list(dict.fromkeys(obj.pk for obj in objs))
        with transaction.atomic(using=using, savepoint=False):
            rows = None
            if len(pks) <= long_disjunction():
                rows = _safely_read(_locked_by_pk, model, using, pks, _attnames(model, using))
            _plain.depth += 1
            try:
                count = _django['QuerySet.bulk_update'](self, objs, fields, batch_size=batch_size)
            finally:
                _plain.depth -= 1
            if rows is not None:
                attnames = [model._meta.get_field(name).attname for name in fields]
                changes = [{name: getattr(obj, name) for name in attnames} for obj in objs]
                after = _new_rows(model, using, rows, changes, [obj.pk for obj in objs])
                rows = list(rows.values()) + after
        _invalidate(model, using, rows)
        return count

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
            count = _django['QuerySet.update'](qs.filter(pk__in=pks), **kwargs)
            after = [obj_dict(o) for o in rows.all()]
        run_safely(invalidate_dicts, self.model, before + after, using=using)
        return count


def _invalidates(qs):
    """Whether qs's update() and bulk_update() invalidate (else they are Django's alone)."""
    return (is_tracked(qs.model) and not _plain.depth and not no_invalidation.active
            and settings.CACHEOPS_INVALIDATE_UPDATES)


def _attnames(model, using):
    return update_attnames(model, connections[using].vendor)


def _locked_by_pk(model, using, pks, attnames):
    take_write_lock(model, using)
    return locked_rows(model._meta.concrete_model, using, pks, attnames)


def _safely_read(read, *args):
    """read(*args), or None (invalidate the whole model) if it fails on something other
    than the database: a converter, say. The update must not fail for it."""
    try:
        return read(*args)
    except DatabaseError:
        raise  # the transaction can't go on, nor could the update
    except Exception:
        invalidation.logger.exception('cacheops: could not read the rows before an update')
        return None


def _new_rows(model, using, before, changes, pks=None):
    """The rows after the write: each old row ({pk: row} before) with its change
    ({attname or name: value}, one per pk of pks, before's by default), or all of them as
    read back if a value is an expression (F(), Subquery, Case...) only the database computes."""
    if not before:
        return []
    pks = list(before) if pks is None else pks
    opts = model._meta
    new = []
    for pk, change in zip(pks, changes):
        values = {}
        for name, value in change.items():
            if hasattr(value, 'resolve_expression'):
                attnames = _attnames(model, using)
                return list(rows_by_pk(model, using, list(before), attnames).values())
            field = opts.get_field(name)
            if field.remote_field is not None and hasattr(value, 'prepare_database_save'):
                value = value.prepare_database_save(field)  # an instance: its key, as Django does
            values[field.attname] = value
        if pk in before:
            new.append({**before[pk], **values})
    return new


def _invalidate(model, using, rows):
    """Invalidate by these rows' values, or (rows None) the whole model; after commit."""
    if rows is None:
        run_safely(invalidation.invalidate_model, model, using=using)
    elif rows:
        run_safely(invalidate_dicts, model, rows, using=using)
