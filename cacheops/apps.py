from django.apps import AppConfig
from django.core import checks
from django.core.exceptions import ImproperlyConfigured


class CacheopsConfig(AppConfig):
    name = 'cacheops'
    verbose_name = 'Cacheops'

    def ready(self):
        from . import monkey
        monkey.install()


# Settings are validated where they are used (conf.py, redis.py); these checks run that
# validation early, so `manage.py check` names every bad setting with an id.

def _validation(check_id, validate):
    try:
        validate()
    except ImproperlyConfigured as e:
        return [checks.Error(str(e), id=check_id)]
    return []


@checks.register()
def check_settings(app_configs=None, **kwargs):
    from . import conf, redis
    errors = []
    errors += _validation('cacheops.E001', conf.profiles)
    errors += _validation('cacheops.E002', redis.make_client)
    errors += _validation('cacheops.E003', conf.prefix_func)
    errors += _validation('cacheops.E004', conf.serializer)
    errors += _validation('cacheops.E005', conf.skip_field_types)
    errors += _validation('cacheops.E006', conf.long_disjunction)
    if not errors:
        errors += _profile_warnings(conf.profiles())
    return errors


def _profile_warnings(profiles):
    from django.apps import apps
    warnings = []
    wide = profiles.get('*.*')
    if wide is not None and wide.ops:
        warnings.append(checks.Warning(
            "CACHEOPS['*.*'] caches %s for every model, migrations' and other apps' included"
            % ', '.join(sorted(wide.ops)),
            hint="Enable automatic caching per app with 'app_label.*' and keep '*.*' ops empty.",
            id='cacheops.W001'))
    labels = {c.label for c in apps.get_app_configs()}
    for name in profiles:
        app, model = name.split('.')
        if app == '*':
            continue
        if app not in labels:
            warnings.append(checks.Warning(
                "CACHEOPS[%r] names an app that is not installed" % name, id='cacheops.W002'))
        elif model != '*':
            try:
                apps.get_model(app, model)
            except LookupError:
                warnings.append(checks.Warning(
                    "CACHEOPS[%r] names a model that does not exist" % name, id='cacheops.W002'))
    return warnings
