"""CACHEOPS_SERIALIZER: pickle by default; a module, a class or a dotted path to one with
dumps() and loads() - used by querysets, @cached_as, the simple and the file caches."""
import json
import os
import pickle

import pytest
from django.test import override_settings

import cacheops.redis
import cacheops.simple
from cacheops import cache, cached, cached_as, file_cache
from .models import Category, Post

pytestmark = pytest.mark.django_db


class Protocol3:
    """The README's example: pickle with a fixed protocol."""
    dumps = lambda data: pickle.dumps(data, 3)  # noqa: E731
    loads = pickle.loads


class JsonSerializer:
    """Values readable by other programs."""

    @staticmethod
    def dumps(value):
        return json.dumps(value).encode()

    @staticmethod
    def loads(data):
        return json.loads(data)


def raw(key):
    return cacheops.redis.redis_client.get(cacheops.simple._full_key(key))


@pytest.fixture
def file_cache_dir(tmp_path):
    with override_settings(FILE_CACHE_DIR=str(tmp_path)):
        yield tmp_path


def raw_file(path):
    [filename] = [os.path.join(d, f) for d, _, files in os.walk(path) for f in files if f != '.lock']
    with open(filename, 'rb') as f:
        return f.read()


def test_pickle_is_the_default(file_cache_dir):
    cache.set('key', {'a': 1})
    assert pickle.loads(raw('key')) == {'a': 1}
    file_cache.set('key', {'a': 1})
    assert pickle.loads(raw_file(file_cache_dir)) == {'a': 1}


@override_settings(CACHEOPS_SERIALIZER='tests.test_serializer.Protocol3')
def test_a_class_fixing_the_pickle_protocol(file_cache_dir):
    cache.set('key', [1])
    assert raw('key').startswith(b'\x80\x03')
    assert cache.get('key') == [1]
    file_cache.set('key', [1])
    assert raw_file(file_cache_dir).startswith(b'\x80\x03')
    assert file_cache.get('key') == [1]


def test_a_class_object(file_cache_dir):
    with override_settings(CACHEOPS_SERIALIZER=JsonSerializer):
        cache.set('key', {'a': [1, 2]})
        file_cache.set('key', {'a': [1, 2]})
        assert cache.get('key') == file_cache.get('key') == {'a': [1, 2]}
    assert raw('key') == raw_file(file_cache_dir) == b'{"a": [1, 2]}'


@override_settings(CACHEOPS_SERIALIZER='tests.test_serializer.JsonSerializer')
def test_a_dotted_path_for_cached_functions():
    runs = []

    @cached(timeout=60)
    def func():
        runs.append(1)
        return {'runs': len(runs)}

    assert func() == func() == {'runs': 1}
    assert raw(func.key()) == b'{"runs": 1}'


@override_settings(CACHEOPS_SERIALIZER='dill')
def test_dill_stores_what_pickle_cannot(file_cache_dir):
    cache.set('key', lambda x: x + 1)
    assert cache.get('key')(1) == 2
    file_cache.set('key', lambda x: x * 3)
    assert file_cache.get('key')(2) == 6


def test_pickle_cannot_store_a_lambda():
    # what the dill test relies on: the default serializer really is different
    with pytest.raises((pickle.PicklingError, AttributeError, TypeError)):
        cache.set('key', lambda x: x + 1)


@override_settings(CACHEOPS_SERIALIZER='dill')
def test_dill_for_cached_as():
    Category.objects.create(title='c')
    runs = []

    @cached_as(Category)
    def adder():
        runs.append(1)
        count = Category.objects.count()
        return lambda x: x + count

    assert adder()(1) == 2
    assert adder()(1) == 2
    assert len(runs) == 1


class Counting:
    """pickle, counting its calls: shows who goes through the serializer."""
    dumps_calls = 0
    loads_calls = 0

    @classmethod
    def dumps(cls, value):
        cls.dumps_calls += 1
        return pickle.dumps(value)

    @classmethod
    def loads(cls, data):
        cls.loads_calls += 1
        return pickle.loads(data)


def test_querysets_and_cached_as_use_it():
    category = Category.objects.create(title='c')
    Post.objects.create(title='p', category=category)
    Counting.dumps_calls = Counting.loads_calls = 0

    @cached_as(Post)
    def titles():
        return [p.title for p in Post.objects.all()]

    with override_settings(CACHEOPS_SERIALIZER=Counting):
        assert [p.title for p in Post.objects.cache().filter(category=category)] == ['p']
        assert [p.title for p in Post.objects.cache().filter(category=category)] == ['p']
        assert titles() == titles() == ['p']
    assert (Counting.dumps_calls, Counting.loads_calls) == (2, 2)
