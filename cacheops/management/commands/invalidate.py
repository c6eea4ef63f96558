"""manage.py invalidate app.Model.pk | app.Model | app | all"""
from django.apps import apps
from django.core.exceptions import ImproperlyConfigured, ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.db import DEFAULT_DB_ALIAS, connections

from cacheops.conf import prefix_func
from cacheops.invalidation import REDIS_FAILURES, invalidate_all, invalidate_model, invalidate_obj
from cacheops.keys import table_prefix
from cacheops.redis import get_client, is_cluster
from cacheops.removed import counting_removed
from cacheops.utils import written_tables


class Command(BaseCommand):
    help = ('Invalidate cached queries: of an object (app.Model.pk), of a model (app.Model), '
            'of all models of an app (app), or everything cacheops cached (all).')

    def add_arguments(self, parser):
        parser.add_argument('target', help='app_label.ModelName.pk, app_label.ModelName, app_label or all')
        parser.add_argument('--database', default=DEFAULT_DB_ALIAS,
                            help='the database to read an object from and invalidate it on '
                                 '(default: %(default)s); models are invalidated on all databases')

    def handle(self, target, database, **options):
        if database not in connections:
            raise CommandError('Unknown database %r; DATABASES has %s'
                               % (database, ', '.join(map(repr, connections))))
        try:
            with counting_removed() as removed:
                message = self.invalidate(target, database)
        except ImproperlyConfigured as e:
            raise CommandError(str(e))
        except REDIS_FAILURES as e:
            # may have removed part: running it again is safe, and finishes it
            raise CommandError('Redis failed, %s may be invalidated in part only: %s: %s'
                               % (target, type(e).__name__, e))
        if options['verbosity'] >= 1:
            self.stdout.write(message)
            if removed.conj_keys or removed.cache_keys:
                self.stdout.write('Removed %d cached results and %d conj keys.'
                                  % (removed.cache_keys, removed.conj_keys))

    def invalidate(self, target, database):
        """Invalidate what target names; returns the line to report."""
        if target == 'all':
            if prefix_func() is None:
                flushed = _key_count(get_client())
                invalidate_all()
                return 'Invalidated everything cacheops cached: flushed %d keys.' % flushed
            invalidate_all()
            return 'Invalidated everything cacheops cached.'
        app_label, _, rest = target.partition('.')
        app_config = _app_config(app_label)
        if not rest:
            # auto-created m2m tables too: queries across a relation depend on them
            models = list(app_config.get_models(include_auto_created=True))
            for model in models:
                invalidate_model_everywhere(model)
            return 'Invalidated %d models of %s.' % (len(models), app_label)
        model_name, _, pk = rest.partition('.')
        model = _model(app_config, model_name)
        if not pk:
            invalidate_model_everywhere(model)
            return 'Invalidated %s.' % model._meta.label
        obj = _object(model, pk, database)
        invalidate_obj(obj, using=database)
        return 'Invalidated %s with pk %s on %s.' % (model._meta.label, obj.pk, database)


def _key_count(client):
    # a cluster client asks its default node only, unless told
    return client.dbsize(target_nodes=client.PRIMARIES) if is_cluster() else client.dbsize()


def _app_config(label):
    try:
        return apps.get_app_config(label)
    except LookupError:
        raise CommandError('Unknown app %r; installed apps are %s'
                           % (label, ', '.join(sorted(c.label for c in apps.get_app_configs()))))


def _model(app_config, name):
    try:
        return app_config.get_model(name)
    except LookupError:
        raise CommandError('Unknown model %r in app %r; it has %s' % (
            name, app_config.label,
            ', '.join(sorted(m.__name__ for m in app_config.get_models())) or 'no models'))


def _object(model, pk, database):
    try:
        value = model._meta.pk.to_python(pk)
    except ValidationError as e:
        raise CommandError('%r is not a valid pk for %s: %s'
                           % (pk, model._meta.label, ' '.join(e.messages)))
    try:
        return model._base_manager.db_manager(database).nocache().get(pk=value)
    except model.DoesNotExist:
        raise CommandError('No %s with pk %r in database %r' % (model._meta.label, pk, database))


def invalidate_model_everywhere(model):
    """invalidate_model() on every database whose prefixes differ for this model's tables."""
    tables = [table for table, _ in written_tables(model)]
    seen = set()
    for db in connections:
        prefixes = tuple(table_prefix(db, table) for table in tables)
        if prefixes not in seen:
            seen.add(prefixes)
            invalidate_model(model, using=db)
