"""The package's public names: listed in __all__, each importable, and typed (py.typed)."""
from pathlib import Path

import cacheops


def test_every_name_in_all_is_there():
    assert all(hasattr(cacheops, name) for name in cacheops.__all__)
    assert len(set(cacheops.__all__)) == len(cacheops.__all__)


def test_the_package_says_it_is_typed_and_ships_the_marker():
    package = Path(cacheops.__file__).parent
    assert (package / 'py.typed').is_file()
    setup = (package.parent / 'setup.py').read_text()
    assert "'py.typed'" in setup  # in package_data: installed with the package


def test_the_caching_decorators_and_caches_are_typed():
    import sys
    import typing

    from cacheops import decorators, simple
    functions = [decorators.cached_as, decorators.cached_view_as, simple.invalidate_fragment,
                 simple.RedisCache.__init__, simple.FileCache.__init__, simple.FileCache.clean,
                 *(getattr(cls, name) for cls in (simple.CacheKey, simple.BaseCache, simple.RedisCache,
                                                  simple.FileCache)
                   for name in ('get', 'set', 'delete'))]
    for function in functions:
        assert 'return' in typing.get_type_hints(function), function  # and they resolve
    if sys.version_info >= (3, 11):  # with or without arguments
        for name in ('cached', 'cached_view'):
            overloads = typing.get_overloads(getattr(simple.BaseCache, name))
            assert [typing.get_type_hints(o)['return'] is not None for o in overloads] == [True, True]
