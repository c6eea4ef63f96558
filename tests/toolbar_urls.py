"""URLs of the debug toolbar panel's tests (tests/test_debug_toolbar*.py): a page that
reads, stores and invalidates through cacheops, and the toolbar's own URLs. Imported only
while those tests have the toolbar installed: its modules need it."""
from debug_toolbar.toolbar import debug_toolbar_urls
from django.http import HttpResponse
from django.urls import path

from cacheops import cached

from .models import Category, Post
from .utils import Worker

# What the browser test's page does once the toolbar is there: open the cacheops panel,
# wait for the toolbar to fetch its content, and copy that where --dump-dom shows it
# (the toolbar may live in a shadow root, which the dump leaves out)
OPEN_PANEL = """
<script>
function copyPanel() {
    const host = document.getElementById('djDebugRoot');  // toolbar 7 and later
    const root = host && host.shadowRoot || document;
    const link = root && root.querySelector('#djDebugPanelList a.CacheopsPanel');
    if (!link) { setTimeout(copyPanel, 50); return; }
    if (!link.dataset.clicked) { link.dataset.clicked = '1'; link.click(); }
    const content = root.querySelector('#CacheopsPanel .djDebugPanelContent .djdt-scroll');
    if (!content || !content.children.length) { setTimeout(copyPanel, 50); return; }
    document.getElementById('nav').textContent = link.textContent;
    document.getElementById('panel').textContent = content.innerText;
}
window.addEventListener('load', copyPanel);
</script>
"""


@cached(timeout=60)
def doubled(n):
    return n * 2


def page(request):
    """Two reads of one count (a miss and its store, then a hit) and a cached function's
    miss; with ?thread a read in another thread; with ?write (or ?write=N, N times) a
    create (an invalidation) and a read after it (a miss and a store)."""
    Category.objects.cache().count()
    Category.objects.cache().count()
    doubled(21)
    if 'thread' in request.GET:  # a read in another thread, which the request's panel must not see
        worker = Worker(target=lambda: Post.objects.cache().count())
        worker.start()
        worker.join()
    for n in range(int(request.GET.get('write') or 1) if 'write' in request.GET else 0):
        Category.objects.create(title='written %d' % n)
        Category.objects.cache().count()
    browser = 'browser' in request.GET
    return HttpResponse('<html><head><title>cacheops</title></head><body>'
                        '<p id="nav"></p><pre id="panel"></pre>%s</body></html>'
                        % (OPEN_PANEL if browser else ''))


async def async_page(request):
    """An async view: a count's miss, then its hit read in the event loop."""
    await Category.objects.cache().acount()
    await Category.objects.cache().acount()
    return HttpResponse('<html><body>async</body></html>')


urlpatterns = [
    path('async/', async_page),
    path('page/', page),
    *debug_toolbar_urls(),
]

