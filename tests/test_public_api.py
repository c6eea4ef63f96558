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
