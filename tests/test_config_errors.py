"""Bad settings give ImproperlyConfigured naming the setting, at the latest
when the profile or the client is first used, and are reported by Django's
system checks with ids starting with 'cacheops.'."""
import pytest
from django.core.checks.registry import registry
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings

from .models import All, Category

pytestmark = pytest.mark.django_db

BAD_PROFILES = [
    {'tests.category': {'ops': 'bogus'}},
    {'tests.category': {'ops': ['get', 'fetchh']}},
    {'tests.category': {'opz': 'all'}},
    {'tests.category': {'ops': 'all', 'timeout': 'soon'}},
    {'tests.category': 'all'},
]
BAD_PROFILE_IDS = ['ops-bogus', 'ops-list-typo', 'unknown-key', 'timeout-type', 'not-a-dict']


def cacheops_checks():
    """The system checks cacheops registers (other apps' checks are not run here:
    they may need parts of the project that are irrelevant to these tests)."""
    return [check for check in registry.get_checks()
            if getattr(check, '__module__', '').startswith('cacheops')]


def cacheops_messages():
    checks = cacheops_checks()
    assert checks, 'cacheops registers no system checks'
    messages = []
    for check in checks:
        messages.extend(check(app_configs=None, databases=None))
    return [m for m in messages if m.id and m.id.startswith('cacheops.')]


@pytest.mark.parametrize('cacheops', BAD_PROFILES, ids=BAD_PROFILE_IDS)
def test_bad_profile_raises_on_use(cacheops):
    Category.objects.create(title='c')
    with pytest.raises(ImproperlyConfigured, match='CACHEOPS'):
        with override_settings(CACHEOPS=cacheops):
            list(Category.objects.cache().filter(title='c'))
            Category.objects.get(title='c')


@pytest.mark.parametrize('cacheops', BAD_PROFILES, ids=BAD_PROFILE_IDS)
def test_bad_profile_fails_system_checks(cacheops):
    with override_settings(CACHEOPS=cacheops):
        messages = cacheops_messages()
        assert messages and all(m.is_serious() for m in messages)


@pytest.mark.parametrize('conf', [42, ['redis://localhost'], 3.5])
def test_bad_redis_setting_raises_on_use(conf):
    with pytest.raises(ImproperlyConfigured, match='CACHEOPS_REDIS'):
        with override_settings(CACHEOPS_REDIS=conf):
            All.objects.create(tag=1)
            list(All.objects.filter(tag=1))


@pytest.mark.parametrize('conf', [42, ['redis://localhost']])
def test_bad_redis_setting_fails_system_checks(conf):
    with override_settings(CACHEOPS_REDIS=conf):
        assert cacheops_messages()


@pytest.mark.parametrize('defaults', [{'ops': 'bogus'}, {'timeoutt': 10}])
def test_bad_defaults(defaults):
    Category.objects.create(title='c')
    with override_settings(CACHEOPS_DEFAULTS=defaults):
        assert cacheops_messages()
    with pytest.raises(ImproperlyConfigured, match='CACHEOPS'):
        with override_settings(CACHEOPS_DEFAULTS=defaults):
            list(Category.objects.cache().filter(title='c'))


def test_good_settings_pass_checks():
    assert [m for m in cacheops_messages() if m.is_serious()] == []
