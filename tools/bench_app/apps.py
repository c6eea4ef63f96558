from django.apps import AppConfig


class BenchAppConfig(AppConfig):
    name = 'tools.bench_app'
    label = 'bench_app'
    default_auto_field = 'django.db.models.AutoField'
