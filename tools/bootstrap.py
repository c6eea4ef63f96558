"""Virtualenvs for the test runs and the demo, made once and reused.

Standard library only: this runs before any virtualenv exists.
"""
import hashlib
import os
import re
import shutil
import subprocess
import sys
import threading
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


# The browser test's (tests/test_debug_toolbar_browser.py): Debian's chromium package
CHROMIUM = 'chromium'
APT_TIMEOUT = 900  # seconds: a held dpkg lock or a stalled mirror must not hang the run


def ensure_chromium():
    """Environment for the browser test: CACHEOPS_TEST_CHROMIUM, the path of Debian's
    chromium, installed with apt-get where missing; else CACHEOPS_TEST_CHROMIUM_MISSING
    saying why not (the test then fails under CI, and skips elsewhere)."""
    try:
        return {'CACHEOPS_TEST_CHROMIUM': _chromium()}
    except BootstrapError as e:
        return {'CACHEOPS_TEST_CHROMIUM_MISSING': str(e)}


def chromium_in_background():
    """ensure_chromium() in a thread, so that apt runs while the venvs are made. Returns
    a function that waits for it and gives its environment."""
    found = {}
    thread = threading.Thread(target=lambda: found.update(ensure_chromium()), daemon=True)
    thread.start()

    def result():
        thread.join()
        return found
    return result


def _chromium():
    found = shutil.which(CHROMIUM)
    if found:
        return found
    apt = shutil.which('apt-get')
    if apt is None:
        raise BootstrapError(f'{CHROMIUM} is not installed, and there is no apt-get to install it')
    print(f'[bootstrap] installing {CHROMIUM} with apt-get ...', flush=True)
    install = [apt, 'install', '-y', '-q', CHROMIUM]
    # a fresh machine's package lists may be missing or old: update, and try again
    error = _apt(install) and (_apt([apt, 'update', '-q']) or _apt(install))
    if error:
        raise BootstrapError(f'apt-get could not install {CHROMIUM}: {error}')
    found = shutil.which(CHROMIUM)
    if found is None:
        raise BootstrapError(f'apt-get installed {CHROMIUM}, but it is not on PATH')
    print(f'[bootstrap] {CHROMIUM} installed', flush=True)
    return found


def _apt(cmd):
    """Run an apt-get command: '' if it succeeded, else what went wrong."""
    env = {**os.environ, 'DEBIAN_FRONTEND': 'noninteractive'}
    try:
        result = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL,
                                env=env, timeout=APT_TIMEOUT)
    except (OSError, subprocess.TimeoutExpired) as e:
        return str(e)
    if result.returncode:
        return f'{" ".join(cmd)} failed ({result.returncode}): {result.stderr.strip()[-500:]}'
    return ''
