"""The app: ready() patches Django (monkey.install()); system checks name bad settings by id."""
from django.apps import AppConfig
from django.core import checks
from django.core.exceptions import ImproperlyConfigured


class CacheopsConfig(AppConfig):
    name = 'cacheops'
    verbose_name = 'Cacheops'

    def ready(self):
        from . import monkey
        monkey.install()


# Settings are validated in conf.py, where they are used too; these checks run that
# validation early, so `manage.py check` names every bad setting with an id. The Redis
# client is cacheops.redis's to build, a layer above conf.py: its check_client is passed in.

@checks.register()
def check_settings(app_configs=None, **kwargs):
    from django.apps import apps
    from . import conf, redis, spool
    errors = [checks.Error(message, id=check_id)
              for check_id, message in [*conf.setting_errors(redis.check_client), *_spool_errors(spool)]]
    if errors:
        return errors
    labels = {c.label for c in apps.get_app_configs()}
    return [checks.Warning(message, hint=hint, id=check_id)
            for check_id, message, hint in conf.setting_warnings(labels, _model_exists)]


def _spool_errors(spool):
    # CACHEOPS_SPOOL_DIR is read in spool.py, a layer above conf.py's checks
    try:
        spool.spool_dir()
    except ImproperlyConfigured as e:
        return [('cacheops.E015', str(e))]
    return []


def _model_exists(app_label, model_name):
    from django.apps import apps
    try:
        apps.get_model(app_label, model_name)
    except LookupError:
        return False
    return True
