"""The cacheops panel in a real browser: headless Chromium loads a page of a live server
with the toolbar, opens the panel, waits for the toolbar's JavaScript to fetch its content,
and the test reads what the panel shows.

One run of runtests.py's matrix runs it (it sets CACHEOPS_TEST_BROWSER=1 there, and
CACHEOPS_TEST_CHROMIUM to the browser tools/bootstrap.py found or installed); elsewhere it
is skipped. Where it runs without a browser it fails under CI=true, and skips, saying why,
on a developer's machine.
"""
import html
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import debug_toolbar
import pytest
from django.test import LiveServerTestCase, modify_settings, override_settings

from .test_debug_toolbar import TOOLBAR_SETTINGS

# The flags that work offline and as root in a container: no sandbox, no GPU, nothing
# fetched in the background, a fresh profile
CHROMIUM_FLAGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
                  '--disable-component-update', '--disable-quic', '--no-first-run', '--disable-sync']
# Virtual milliseconds the page may run for before the DOM is dumped: time only runs on
# while nothing is loading, so it is enough for the panel's fetch on any machine
VIRTUAL_TIME_BUDGET = 20000
# A hang guard, not a timed assertion: a browser that never exits fails the test
CHROMIUM_TIMEOUT = 180


def chromium():
    """The Chromium binary, else skip (no CI) or fail (CI) saying why."""
    found = os.environ.get('CACHEOPS_TEST_CHROMIUM') or shutil.which('chromium')
    if found:
        return found
    why = os.environ.get('CACHEOPS_TEST_CHROMIUM_MISSING') or 'chromium is not on PATH'
    message = f'the browser test needs Debian\'s chromium: {why}'
    if os.environ.get('CI') == 'true':
        pytest.fail(message)
    pytest.skip(message + ' (apt-get install chromium)')


def dump_dom(url):
    """The page's DOM after its scripts ran, as headless Chromium prints it."""
    with tempfile.TemporaryDirectory(prefix='cacheops-chromium-') as profile:
        result = subprocess.run(
            [chromium(), *CHROMIUM_FLAGS, f'--user-data-dir={profile}',
             f'--virtual-time-budget={VIRTUAL_TIME_BUDGET}', '--dump-dom', url],
            capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=CHROMIUM_TIMEOUT)
    assert result.returncode == 0, result.stderr
    return result.stdout


def element_text(dom, element_id):
    found = re.search(r'<(\w+) id="%s">(.*?)</\1>' % element_id, dom, re.S)
    assert found, f'no #{element_id} in the page:\n{dom[-2000:]}'
    return html.unescape(found.group(2))


@pytest.mark.skipif(os.environ.get('CACHEOPS_TEST_BROWSER') != '1',
                    reason='one run of the matrix runs the browser test: runtests.py sets '
                           'CACHEOPS_TEST_BROWSER=1 for py313-dj61-sqlite')
# the live server serves STATIC_URL from STATIC_ROOT: the toolbar's JavaScript and CSS
@override_settings(**TOOLBAR_SETTINGS, STATIC_ROOT=str(Path(debug_toolbar.__file__).parent / 'static'))
@modify_settings(INSTALLED_APPS={'append': 'debug_toolbar'})  # after the others: see toolbar_installed()
class TestPanelInChromium(LiveServerTestCase):
    host = '127.0.0.1'  # in INTERNAL_IPS: the toolbar shows itself

    def test_the_panel_shows_the_requests_reads_stores_and_invalidation(self):
        dom = dump_dom(self.live_server_url + '/page/?write&browser')
        nav = ' '.join(element_text(dom, 'nav').split())
        assert nav == 'Cacheops 1 hit, 3 misses'
        panel = element_text(dom, 'panel')
        lines = [' '.join(line.split()) for line in panel.splitlines() if line.strip()]
        # the event rows: at (ms), event, model or function, key, details
        events = [list(found.groups()) for found in
                  (re.match(r'[\d.]+ (hit|miss|store|invalidation) (\S+)', line) for line in lines) if found]
        assert events == [['miss', 'tests.Category'], ['store', 'tests.Category'],
                          ['hit', 'tests.Category'],
                          ['miss', 'tests.toolbar_urls.doubled'], ['store', 'tests.toolbar_urls.doubled'],
                          ['invalidation', 'tests.Category'], ['miss', 'tests.Category'],
                          ['store', 'tests.Category']]
        assert any("title='written 0'" in line and 'removed' in line for line in lines), panel
