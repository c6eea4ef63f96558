from django.apps import AppConfig


class DemoAppConfig(AppConfig):
    name = 'tools.demo_app'
    label = 'demo_app'
    default_auto_field = 'django.db.models.AutoField'
