"""The package's layers: each module imports only from its own layer or the ones below
(docs/design.md, "The shape"). Imports inside functions count too: a lower layer that
calls up through them is what this test exists to catch.

A module not listed in LAYERS fails the test: a new module gets a place in the layers.
"""
import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / 'cacheops'

# Bottom up. A name is a module or a package (which covers its submodules).
LAYERS = [
    # settings and pure helpers: no Redis, no ORM state
    {'conf', 'signals', 'utils', 'serialization', 'keys', 'tree', 'fingerprint', 'outage', 'removed', 'stats',
     'signing'},
    # state: transactions, failed invalidations to replay
    {'transaction'},
    # records on disk of what failed.py keeps, for other processes
    {'spool'},
    {'failed'},
    # Redis access
    {'redis'},
    # the read/store protocol, invalidation, the reaper, what a commit runs
    {'getset', 'invalidation', 'reaper', 'commits', 'orphans'},
    # rows as the write paths read and lock them; recorded queryset calls
    {'rows', 'chain'},
    # the queryset layer
    {'query'},
    # model events: signal receivers, saves, deletes
    {'events'},
    # what users call besides querysets
    {'decorators', 'simple', 'templatetags', 'jinja2', 'management'},
    # wiring: patches, app config, compatibility aliases, the package's public names
    {'monkey', 'apps', 'compat', '__init__'},
    # integrations with other apps (the debug toolbar's panel), imported by projects only
    {'contrib'},
]

# Imports that go up a layer today, to be removed (issue 15); the list only shrinks.
KNOWN_UPWARD = set()


def layer_of(unit):
    for number, layer in enumerate(LAYERS):
        if unit in layer:
            return number
    raise AssertionError(f'cacheops.{unit} is in no layer of tests/test_layers.py')


def unit_of(path):
    """'query' for cacheops/query.py and cacheops/query/keys.py alike."""
    parts = path.relative_to(PACKAGE).with_suffix('').parts
    return parts[0]


def imported_units(path, source=None):
    """The cacheops units a module imports, at module level or in functions."""
    tree = ast.parse(path.read_text() if source is None else source, str(path))
    package = ('cacheops', *path.relative_to(PACKAGE).parent.parts)
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name.split('.') for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = list(package[:len(package) - node.level + 1]) if node.level else []
            module = base + (node.module.split('.') if node.module else [])
            # 'from . import query' names a module; 'from .query import x' a module's name
            names = [module + [alias.name] for alias in node.names] if not node.module else [module]
        else:
            continue
        for name in names:
            if name[0] == 'cacheops' and len(name) > 1:
                found.add(name[1])
    return found


def modules():
    return sorted(p for p in PACKAGE.rglob('*.py'))


def upward_imports():
    upward = set()
    for path in modules():
        unit = unit_of(path)
        for other in imported_units(path) - {unit}:
            if layer_of(other) > layer_of(unit):
                upward.add((unit, other))
    return upward


def test_every_module_has_a_layer():
    for path in modules():
        layer_of(unit_of(path))


def test_no_module_imports_from_a_higher_layer():
    found = upward_imports()
    assert found <= KNOWN_UPWARD, sorted(found - KNOWN_UPWARD)


def test_the_known_upward_imports_are_still_there():
    # one removed must leave KNOWN_UPWARD too, so it can't come back unnoticed
    assert upward_imports() >= KNOWN_UPWARD, sorted(KNOWN_UPWARD - upward_imports())


@pytest.mark.parametrize('source, expected', [
    ('from .query import x', {'query'}),
    ('from . import query, events', {'query', 'events'}),
    ('import cacheops.redis', {'redis'}),
    ('def f():\n    from .events import g', {'events'}),
    ('from django.db import models', set()),
])
def test_imports_are_read_as_written(source, expected):
    assert imported_units(PACKAGE / 'utils.py', source) == expected


def test_relative_imports_in_a_subpackage_are_read_from_it():
    path = PACKAGE / 'management' / 'commands' / 'invalidate.py'
    assert imported_units(path, 'from ...keys import x\nfrom .. import y') == {'keys', 'management'}
