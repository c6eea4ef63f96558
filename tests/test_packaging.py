"""setup.py claims what CI tests: its classifiers and lower bounds name the Python, Django
and redis-py versions of runtests.py's VENVS, no more and no fewer.

setup.py is read, not run: setup() would build the distribution."""
import ast
import re
from pathlib import Path

import runtests

ROOT = Path(__file__).resolve().parent.parent


def setup_arguments():
    """The literal keyword arguments setup.py passes to setup()."""
    tree = ast.parse((ROOT / 'setup.py').read_text(encoding='utf-8'))
    call = next(node for node in ast.walk(tree)
                if isinstance(node, ast.Call) and getattr(node.func, 'id', None) == 'setup')
    arguments = {}
    for keyword in call.keywords:
        try:
            arguments[keyword.arg] = ast.literal_eval(keyword.value)
        except ValueError:  # long_description, read from README.rst
            pass
    return arguments


def version(text):
    return tuple(int(part) for part in text.split('.'))


def ci_versions(package):
    """The X.Y versions of a package the venvs pin with '<package>>=X.Y,<...'."""
    found = set()
    for venv in runtests.VENVS.values():
        for requirement in venv.requirements:
            match = re.fullmatch(r'%s>=(\d+\.\d+),<[\d.]+' % package, requirement, re.IGNORECASE)
            if match:
                found.add(match.group(1))
    return found


def classified(prefix):
    return {c[len(prefix):] for c in setup_arguments()['classifiers']
            if c.startswith(prefix) and re.fullmatch(r'\d+\.\d+', c[len(prefix):])}


def lower_bound(package):
    for requirement in setup_arguments()['install_requires']:
        match = re.fullmatch(r'%s>=([\d.]+)' % package, requirement, re.IGNORECASE)
        if match:
            return match.group(1)
    raise AssertionError('setup.py requires no %s>=...' % package)


PYTHONS = {venv.python for venv in runtests.VENVS.values()}


def test_python_classifiers_are_the_pythons_ci_runs():
    assert classified('Programming Language :: Python :: ') == PYTHONS


def test_django_classifiers_are_the_djangos_ci_runs():
    assert classified('Framework :: Django :: ') == ci_versions('Django')


def test_python_requires_is_the_oldest_python_ci_runs():
    assert setup_arguments()['python_requires'] == '>=' + min(PYTHONS, key=version)


def test_the_oldest_django_and_redis_py_allowed_are_run():
    assert lower_bound('django') == min(ci_versions('Django'), key=version)
    assert lower_bound('redis') in ci_versions('redis')
