"""cacheops.contrib.debug_toolbar.CacheopsPanel in the real toolbar, through the Django
test client: the request's reads (hit or miss, model or function, key), stores and
invalidations (model, conditions, keys removed), totals in its title, and nothing
recorded outside a request the panel is enabled for."""
import asyncio
import re
from contextlib import contextmanager
from pathlib import Path

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from django.db import connections
from django.test import AsyncClient, override_settings

import cacheops
from cacheops.conf import settings as cacheops_settings
from cacheops.redis import redis_client
from cacheops.signals import cache_read
from cacheops.stats import recorder

pytestmark = pytest.mark.django_db


@contextmanager
def toolbar_installed():
    """The settings the toolbar tests run with: the toolbar installed (for them only), its
    middleware alone, tests/toolbar_urls.py, and the cacheops panel. The app comes last:
    its ready() reads the panels, and Django installs apps before it sets the others."""
    from django.conf import settings
    with override_settings(**TOOLBAR_SETTINGS), \
            override_settings(INSTALLED_APPS=[*settings.INSTALLED_APPS, 'debug_toolbar']):
        yield


TOOLBAR_SETTINGS = {
    'MIDDLEWARE': ['debug_toolbar.middleware.DebugToolbarMiddleware'],
    'ROOT_URLCONF': 'tests.toolbar_urls',
    # the toolbar's own way to show itself: DEBUG, and a request from INTERNAL_IPS
    'DEBUG': True,
    'INTERNAL_IPS': ['127.0.0.1'],
    'STATIC_URL': '/static/',
    'DEBUG_TOOLBAR_PANELS': ['cacheops.contrib.debug_toolbar.CacheopsPanel'],
}


@pytest.fixture(autouse=True)
def toolbar():
    with toolbar_installed():
        yield


def request_id(response):
    found = re.search(r'data-request-id="([0-9a-f]+)"', response.content.decode())
    assert found, 'the toolbar is not in the page'
    return found.group(1)


def panel(client, response):
    """The panel's content as the toolbar's JavaScript fetches it."""
    reply = client.get('/__debug__/render_panel/',
                       {'request_id': request_id(response), 'panel_id': 'CacheopsPanel'})
    assert reply.status_code == 200
    return reply.json()['content']


def rows(content, kind):
    """The cells of the event rows of one kind."""
    found = re.findall(r'<tr class="cacheops-%s">(.*?)</tr>' % kind, content, re.S)
    return [[cell.strip() for cell in re.findall(r'<td>(.*?)</td>', row, re.S)] for row in found]


def test_the_panel_button_shows_the_totals(client):
    response = client.get('/page/')
    assert response.status_code == 200
    page = response.content.decode()
    assert 'Cacheops' in page
    # a count's miss and hit, a cached function's miss
    assert '1 hit, 2 misses' in page
    assert 'Cacheops: 1 hit, 2 misses, 2 stores, 0 invalidations' in page


def test_the_panel_lists_each_read_and_store_with_its_key(client):
    content = panel(client, client.get('/page/'))
    misses, hits, stores = rows(content, 'miss'), rows(content, 'hit'), rows(content, 'store')
    assert [row[2] for row in misses] == ['tests.Category', 'tests.toolbar_urls.doubled']
    assert [row[2] for row in hits] == ['tests.Category']
    assert [row[2] for row in stores] == ['tests.Category', 'tests.toolbar_urls.doubled']
    count_key = re.sub(r'</?code>', '', misses[0][3])
    assert count_key == re.sub(r'</?code>', '', hits[0][3])
    assert redis_client.exists(count_key)  # the key shown is the one in Redis
    assert 'ms after the miss' in stores[0][4]
    assert float(hits[0][0]) >= float(misses[0][0])  # when, in ms into the request


def test_an_invalidation_shows_its_model_conditions_and_what_it_removed(client):
    content = panel(client, client.get('/page/?write'))
    [invalidation] = rows(content, 'invalidation')
    assert invalidation[2] == 'tests.Category'
    assert 'title=&#x27;written 0&#x27;' in invalidation[4]
    # the count's entry (conj-set mode) or its stamp (insideout mode), and its conj key
    if cacheops_settings.CACHEOPS_INSIDEOUT:
        assert 'removed 0 cached results and 1 conj keys' in invalidation[4]
    else:
        assert 'removed 1 cached results and 1 conj keys' in invalidation[4]
    assert [row[2] for row in rows(content, 'miss')] == [
        'tests.Category', 'tests.toolbar_urls.doubled', 'tests.Category']  # read again after it


def test_each_invalidation_shows_what_it_removed_itself(client):
    content = panel(client, client.get('/page/?write=2'))
    removed = [re.search(r'removed (\d+) cached results and (\d+) conj keys', row[4]).groups()
               for row in rows(content, 'invalidation')]
    # the count stored again after the first is removed by the second
    each = ('0', '1') if cacheops_settings.CACHEOPS_INSIDEOUT else ('1', '1')
    assert removed == [each, each]


def test_the_panel_shows_the_process_counts(client):
    cacheops.stats(reset=True)
    content = panel(client, client.get('/page/'))
    process = content.split('This process')[1]
    assert re.search(r'<td>model</td><td>tests.Category</td>\s*<td>1</td><td>1</td>\s*<td>1</td><td>0</td>',
                     process)


def test_nothing_is_connected_or_recorded_once_the_request_is_done(client):
    client.get('/page/')
    assert not cache_read.receivers
    assert recorder() is None


def test_a_disabled_panel_records_nothing(client):
    client.cookies['djdtCacheopsPanel'] = 'off'
    seen = []

    def receiver(sender, **kwargs):
        seen.append(len(cache_read.receivers))
    cache_read.connect(receiver)
    try:
        response = client.get('/page/')
    finally:
        cache_read.disconnect(receiver)
    assert response.status_code == 200
    assert seen == [1, 1, 1]  # only ours: the panel connected none
    assert '1 hit' not in response.content.decode()


def test_another_threads_reads_are_not_the_requests(client):
    # a read by another thread meanwhile (another request's, say) has a context of its own
    content = panel(client, client.get('/page/?thread'))
    assert 'tests.Post' not in content.split('This process')[0]
    assert [row[2] for row in rows(content, 'miss')] == ['tests.Category', 'tests.toolbar_urls.doubled']


def test_an_asgi_request_records_its_reads_too():
    async def get():
        return await AsyncClient().get('/page/')
    response = async_to_sync(get)()  # the view runs in this thread, the test's connection
    assert response.status_code == 200
    assert '1 hit, 2 misses' in response.content.decode()


def test_an_async_views_hits_show_their_key(client):
    async def get():
        try:
            return await AsyncClient().get('/async/')
        finally:  # the connection of the thread the miss read the database in
            await sync_to_async(connections.close_all)()
    # from no sync thread (as under an ASGI server), so that hits are read in the event loop
    content = panel(client, asyncio.run(get()))
    [miss], [hit] = rows(content, 'miss'), rows(content, 'hit')
    assert hit[2] == miss[2] == 'tests.Category'
    assert hit[3] == miss[3]  # the key, as the hit read in the event loop gives it too



def test_the_panels_template_ships_with_the_package():
    from cacheops.contrib.debug_toolbar import CacheopsPanel  # the toolbar's modules need it installed
    package = Path(cacheops.__file__).parent
    assert (package / CacheopsPanel.template.replace('cacheops/', 'templates/cacheops/', 1)).is_file()
    setup = (package.parent / 'setup.py').read_text()
    assert "'templates/cacheops/*.html'" in setup  # in package_data: installed with the package
