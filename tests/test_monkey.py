"""monkey.uninstall() undoes everything install() did, and install() works again after it.

What is checked after uninstall() does not rest on monkey's own list alone: the classes
install() patches must hold nothing made in cacheops/ (functions, properties, values of
its types), must have the attribute names a process without cacheops gives them, and the
model signals must have no cacheops receiver left.
"""
import json
import os
import subprocess
import sys
import weakref
from pathlib import Path

import pytest
from django.db import connections, transaction
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.backends.utils import CursorDebugWrapper, CursorWrapper
from django.db.models import Model, QuerySet, signals
from django.db.models.deletion import Collector
from django.db.models.manager import BaseManager, Manager
from django.dispatch import Signal

import cacheops
from cacheops import invalidate_all, monkey
from cacheops.redis import redis_client

from .models import All, Category, Post
from .utils import queries, warm

pytestmark = pytest.mark.django_db

PACKAGE = str(Path(cacheops.__file__).resolve().parent)
ROOT = Path(__file__).resolve().parent.parent

# every class install() patches, and the classes whose attributes go through them
CLASSES = [QuerySet, BaseManager, Manager, Model, Collector, BaseDatabaseWrapper, CursorWrapper,
           CursorDebugWrapper]


def classes():
    """CLASSES and the configured backends' wrapper classes, Django's own."""
    found = list(CLASSES)
    for alias in connections:
        for cls in type(connections[alias]).__mro__:
            if cls.__module__.startswith('django.') and cls not in found and cls is not object:
                found.append(cls)
    return found


def made_in_cacheops(value):
    """Whether a class attribute's value was made by cacheops' code: a function (a wrapper
    too, though functools.wraps gives it the wrapped one's __module__), a property or
    method descriptor over one, or an instance of a cacheops type."""
    if isinstance(value, property):
        return any(made_in_cacheops(f) for f in (value.fget, value.fset, value.fdel) if f)
    if isinstance(value, (staticmethod, classmethod)):
        return made_in_cacheops(value.__func__)
    code = getattr(value, '__code__', None)
    if code is not None:
        return os.path.realpath(code.co_filename).startswith(PACKAGE)
    return type(value).__module__.startswith('cacheops')


def cacheops_attributes():
    return {(cls.__qualname__, name) for cls in classes()
            for name, value in vars(cls).items() if made_in_cacheops(value)}


def model_signals():
    return [value for value in vars(signals).values() if isinstance(value, Signal)]


def cacheops_receivers():
    found = []
    for signal in model_signals():
        for entry in signal.receivers:
            lookup_key, receiver = entry[0], entry[1]
            if isinstance(receiver, weakref.ReferenceType):
                receiver = receiver()
            if lookup_key[0] == monkey.DISPATCH_UID or made_in_cacheops(receiver):
                found.append((signal, receiver))
    return found


def attribute_names_without_cacheops(paths):
    """{'module:qualname': sorted attribute names} in a process where Django is set up
    without cacheops."""
    script = '''
import importlib, json, sys
import django
from django.conf import settings
try:
    import MySQLdb  # noqa: F401
except ImportError:
    try:
        import pymysql
    except ImportError:
        pass
    else:
        # as in tests/settings.py, so the MySQL backend's classes can be read
        pymysql.version_info = (2, 2, 7, 'final', 0)
        pymysql.install_as_MySQLdb()
settings.configure(INSTALLED_APPS=['django.contrib.contenttypes', 'django.contrib.auth'],
                   DATABASES={'default': {'ENGINE': 'django.db.backends.sqlite3', 'NAME': ':memory:'}})
django.setup()
assert not any(name.startswith('cacheops') for name in sys.modules)
names = {}
for path in json.loads(sys.argv[1]):
    module, qualname = path.split(':')
    names[path] = sorted(set(vars(getattr(importlib.import_module(module), qualname))) - {'__slotnames__'})
assert not any(name.startswith('cacheops') for name in sys.modules)
print(json.dumps(names))
'''
    env = {k: v for k, v in os.environ.items() if k != 'DJANGO_SETTINGS_MODULE'}
    out = subprocess.run([sys.executable, '-c', script, json.dumps(paths)], capture_output=True,
                         text=True, check=True, env=env, cwd=ROOT / 'tests')
    return json.loads(out.stdout)


def attribute_names(cls):
    # pickling an instance makes copyreg cache __slotnames__ on its class
    return sorted(set(vars(cls)) - {'__slotnames__'})


def path_of(cls):
    return '%s:%s' % (cls.__module__, cls.__qualname__)


def test_install_is_idempotent():
    patches, commit = list(monkey.PATCHES), BaseDatabaseWrapper.commit
    monkey.install()
    assert monkey.PATCHES == patches
    assert BaseDatabaseWrapper.commit is commit


def test_uninstall_puts_back_every_patched_attribute():
    patches = list(monkey.PATCHES)
    assert len(patches) > 40
    assert cacheops_attributes() and cacheops_receivers()
    monkey.uninstall()
    try:
        left = cacheops_attributes()
        receivers = cacheops_receivers()
        names = {path_of(cls): attribute_names(cls) for cls in classes()}
        for cls, name, original in patches:
            if original is monkey._ADDED:
                assert name not in vars(cls), (cls, name)
            else:
                assert vars(cls)[name] is original, (cls, name)
        assert not monkey.PATCHES
    finally:
        monkey.install()
    assert left == set()
    assert receivers == []
    assert names == attribute_names_without_cacheops(list(names))
    # and installed again as it was
    assert [(cls, name) for cls, name, _ in monkey.PATCHES] == [(cls, name) for cls, name, _ in patches]
    assert cacheops_attributes() and cacheops_receivers()


def redis_contents():
    return {key: redis_client.dump(key) for key in redis_client.scan_iter()}


def test_uninstalled_reads_hit_the_database_and_writes_leave_redis_alone(redis_commands):
    category = Category.objects.create(title='c')
    Post.objects.create(title='p', category=category)
    obj = All.objects.create(tag=1, title='a')
    tagged = lambda: sorted(o.title for o in All.objects.filter(tag=1))  # noqa: E731
    warm(tagged)
    warm(lambda: All.objects.filter(tag=1).count())
    stored = redis_contents()
    assert stored

    monkey.uninstall()
    try:
        redis_commands.clear()
        assert not hasattr(QuerySet, 'cache') and not hasattr(Manager, 'nocache')
        for _ in range(2):
            assert queries(tagged) == (['a'], 1)
            assert queries(lambda: All.objects.filter(tag=1).count()) == (1, 1)
            assert queries(lambda: Post.objects.get(title='p').title) == ('p', 1)
        obj.title = 'b'
        obj.save()
        All.objects.create(tag=1, title='c')
        with transaction.atomic():
            All.objects.filter(title='c').update(title='d')
            post = Post.objects.get(title='p')
            post.delete()
        category.delete()
        assert queries(tagged) == (['b', 'd'], 1)
        assert redis_commands == []
        assert redis_contents() == stored  # what was cached stays, stale now
    finally:
        monkey.install()

    # installed again: what the writes changed meanwhile was never invalidated
    assert tagged() == ['a']
    invalidate_all()
    assert warm(tagged) == ['b', 'd']
    obj.title = 'e'
    obj.save()
    assert queries(tagged) == (['d', 'e'], 1)
    assert queries(tagged) == (['d', 'e'], 0)
