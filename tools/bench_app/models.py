"""The benchmark's schema. No migrations: bench.py creates the tables with migrate --run-syncdb.

Item is the row the targets talk about: 10 concrete fields of assorted types
(id, category_id, title, slug, price, stock, rating, is_active, created, code),
a foreign key to Category and a many-to-many to Tag.
"""
from django.db import models


class Category(models.Model):
    name = models.CharField(max_length=100)
    slug = models.SlugField(max_length=100)


class Tag(models.Model):
    name = models.CharField(max_length=50)


class Item(models.Model):
    category = models.ForeignKey(Category, on_delete=models.CASCADE, related_name='items')
    title = models.CharField(max_length=200)
    slug = models.SlugField(max_length=200)
    price = models.DecimalField(max_digits=10, decimal_places=2)
    stock = models.IntegerField()
    rating = models.FloatField()
    is_active = models.BooleanField(default=True)
    created = models.DateTimeField()
    code = models.UUIDField()
    tags = models.ManyToManyField(Tag, related_name='items')

    class Meta:
        indexes = [models.Index(fields=['category', 'created'])]
