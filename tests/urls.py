from django.urls import path

from . import views

# The views of the view caching tests, under views/
urlpatterns = [
    path('views/post-titles/', views.post_titles),
    path('views/visible-posts/<int:category_id>/', views.visible_posts),
    path('views/staff-aware/', views.staff_aware),
    path('views/post-titles-template/', views.post_titles_template),
    path('views/answer/<int:status>/', views.answer),
    path('views/post-titles-class/', views.post_titles_class),
    path('views/post-list-class/', views.post_list_class),
    path('views/simple/<int:n>/', views.simple_view),
    path('views/simple-bare/', views.simple_view_bare),
    path('views/simple-extra/<int:n>/', views.simple_view_extra),
    path('views/simple-template/', views.simple_template_view),
    path('views/simple-answer/<int:status>/', views.simple_answer),
    path('views/file/<int:n>/', views.file_view),
]
