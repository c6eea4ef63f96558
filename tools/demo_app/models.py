"""The demo's models. No migrations: demo.py creates the tables with migrate --run-syncdb."""
from django.db import models


class Category(models.Model):
    title = models.CharField(max_length=100)


class Article(models.Model):
    category = models.ForeignKey(Category, on_delete=models.CASCADE, related_name='articles')
    title = models.CharField(max_length=200)
    body = models.TextField()
    views = models.IntegerField(default=0)
