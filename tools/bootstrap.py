"""Virtualenvs for the test runs and the demo, made once and reused.

Standard library only: this runs before any virtualenv exists.
"""
import hashlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENVS = ROOT / '.venvs'
REQUIREMENTS = ROOT / 'requirements-test.txt'
# What an installed venv depends on: a change to any of these makes a fresh venv.
STAMPED_FILES = [ROOT / 'setup.py', REQUIREMENTS]
# 'compat' puts the checkout itself on sys.path. The default editable mode maps only the
# packages that existed at install time, so a package added later would not import.
PIP_INSTALL = ['-m', 'pip', 'install', '-q', '--disable-pip-version-check',
               '--config-settings', 'editable_mode=compat', '-e', str(ROOT)]


class BootstrapError(Exception):
    pass


def find_python(version):
    """An interpreter for version '3.11': the newest pyenv 3.11.x, else python3.11 on PATH."""
    pyenv_root = Path(os.environ.get('PYENV_ROOT') or Path.home() / '.pyenv')
    found = sorted(pyenv_root.glob(f'versions/{version}.*/bin/python'), key=_version_key)
    if found:
        return str(found[-1])
    on_path = shutil.which(f'python{version}')
    if on_path:
        return on_path
    raise BootstrapError(f'Python {version} not found (looked in {pyenv_root}/versions and PATH)')


def _version_key(path):
    return [int(n) for n in re.findall(r'\d+', path.parent.parent.name)]


def ensure_venv(name, python, packages):
    """Path of the python in .venvs/<name>: a venv of `python` with `-e .` and `packages`
    installed. Reused as is while its stamp matches; otherwise made again from scratch,
    so packages from an older setup never linger."""
    venv = VENVS / name
    venv_python = venv / 'bin' / 'python'
    stamp_path = venv / '.cacheops-stamp'
    stamp = _stamp(python, packages)
    if venv_python.exists() and stamp_path.exists() and stamp_path.read_text() == stamp:
        return str(venv_python)
    print(f'[bootstrap] making .venvs/{name} with {python} ...', flush=True)
    _run([python, '-m', 'venv', '--clear', str(venv)])
    _run([str(venv_python), *PIP_INSTALL, *packages])
    stamp_path.write_text(stamp)
    print(f'[bootstrap] .venvs/{name} ready', flush=True)
    return str(venv_python)


def packages_for_tests(*requirements):
    """pip arguments for a test venv: the test requirements and the run's own pins."""
    return ['-r', str(REQUIREMENTS), *requirements]


def _stamp(python, packages):
    digest = hashlib.sha256()
    for path in STAMPED_FILES:
        digest.update(path.read_bytes())
    # PIP_INSTALL names ROOT: the editable install points there, so a moved checkout gets a new venv.
    digest.update('\0'.join([os.path.realpath(python), *PIP_INSTALL, *packages]).encode())
    return digest.hexdigest()


def _run(cmd):
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if result.returncode:
        raise BootstrapError(f'{" ".join(cmd)} failed ({result.returncode}):\n{result.stdout}{result.stderr}')


def running_in(name):
    """True if this interpreter runs inside .venvs/<name>."""
    return Path(sys.prefix).resolve() == (VENVS / name).resolve()
