"""Views cached in the view caching tests (test_cached_view_as, test_simple_cache, test_file_cache).

`calls` counts how many times each view's body ran, so a test can tell a cache hit
from a computed response.
"""
from collections import Counter

from django.http import HttpResponse, HttpResponseNotFound, HttpResponseRedirect, StreamingHttpResponse
from django.template.response import TemplateResponse
from django.views import View
from django.views.generic import ListView

from cacheops import cached_view, cached_view_as, file_cache
from .models import Category, Post

calls = Counter()


def _titles():
    return ','.join(Post.objects.order_by('pk').values_list('title', flat=True))


@cached_view_as(Post)
def post_titles(request):
    calls['post_titles'] += 1
    return HttpResponse(_titles())


@cached_view_as(Post.objects.filter(visible=True), Category)
def visible_posts(request, category_id):
    calls['visible_posts'] += 1
    titles = Post.objects.filter(visible=True, category_id=category_id).values_list('title', flat=True)
    return HttpResponse(','.join(titles))


@cached_view_as(Post, extra=lambda request: request.headers.get('X-Staff') == '1')
def staff_aware(request):
    calls['staff_aware'] += 1
    staff = request.headers.get('X-Staff') == '1'
    return HttpResponse('%s %s' % ('staff' if staff else 'guest', _titles()))


@cached_view_as(Post)
def post_titles_template(request):
    calls['post_titles_template'] += 1
    return TemplateResponse(request, 'cacheops_tests/post_titles.html',
                            {'posts': Post.objects.order_by('pk')})


@cached_view_as(Post)
def answer(request, status):
    """Answers with the status the URL asks for; counts every run."""
    calls['answer'] += 1
    if status == 404:
        return HttpResponseNotFound('missing')
    if status == 302:
        return HttpResponseRedirect('/elsewhere/')
    if status == 999:
        return StreamingHttpResponse(iter([_titles()]))
    return HttpResponse('%d %s' % (status, _titles()))


class PostTitlesView(View):
    def get(self, request):
        calls['PostTitlesView'] += 1
        return HttpResponse('view:' + _titles())

    post = get


class PostListView(ListView):
    template_name = 'cacheops_tests/post_titles.html'
    context_object_name = 'posts'

    def get_queryset(self):
        calls['PostListView'] += 1
        return Post.objects.order_by('pk')


post_titles_class = cached_view_as(Post)(PostTitlesView.as_view())
post_list_class = cached_view_as(Post)(PostListView.as_view())


# Time-based

def _time_view(name):
    def view(request, n=0):
        calls[name] += 1
        return HttpResponse('%s %d %d' % (name, n, calls[name]))
    view.__name__ = view.__qualname__ = name
    return view


simple_view = cached_view(timeout=60)(_time_view('simple_view'))
simple_view_bare = cached_view(_time_view('simple_view_bare'))
simple_view_extra = cached_view(timeout=60, extra=lambda request, n: request.headers.get('X-Lang'))(
    _time_view('simple_view_extra'))
file_view = file_cache.cached_view(timeout=60)(_time_view('file_view'))


@cached_view(timeout=60)
def simple_template_view(request):
    calls['simple_template_view'] += 1
    return TemplateResponse(request, 'cacheops_tests/post_titles.html',
                            {'posts': Post.objects.order_by('pk')})


@cached_view(timeout=60)
def simple_answer(request, status):
    calls['simple_answer'] += 1
    if status == 404:
        return HttpResponseNotFound('missing')
    return HttpResponse('ok %d' % calls['simple_answer'])
