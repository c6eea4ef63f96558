"""Small models for the test suite.

The CACHEOPS profiles in tests/settings.py are keyed by these model names:
    tests.all              -> ops 'all' (automatic caching of everything)
    tests.genericcontainer -> ops ('fetch', 'get', 'count')
    tests.local            -> local_get
    tests.cacheonsaveprofile -> cache_on_save
    tests.dbagnostic, tests.dbbinded -> db_agnostic False
    tests.noprofile        -> None (no caching at all, not even manual)
    tests.*                -> {} (manual caching with .cache(), automatic invalidation)
"""
from django.db import models


# Blog-like core: Category <- Post <- Extra

class Category(models.Model):
    title = models.CharField(max_length=128)

    def __str__(self):
        return self.title


class Post(models.Model):
    title = models.CharField(max_length=128)
    category = models.ForeignKey(Category, on_delete=models.CASCADE, related_name='posts')
    visible = models.BooleanField(default=True)
    text = models.TextField(blank=True, default='')

    def __str__(self):
        return self.title


class Extra(models.Model):
    post = models.OneToOneField(Post, on_delete=models.CASCADE, related_name='extra')
    tag = models.IntegerField(default=0)
    to_tag = models.ForeignKey('self', on_delete=models.SET_NULL, null=True, blank=True)


class ProxyPost(Post):
    class Meta:
        proxy = True


# A model with a nullable foreign key, for __isnull conditions

class Task(models.Model):
    title = models.CharField(max_length=128, default='')
    category = models.ForeignKey(Category, on_delete=models.SET_NULL, null=True, blank=True)


# Many-to-many: plain and through a model with an extra field

class Label(models.Model):
    text = models.CharField(max_length=64)


class Brand(models.Model):
    name = models.CharField(max_length=64)
    labels = models.ManyToManyField(Label, related_name='brands')


class Tag(models.Model):
    name = models.CharField(max_length=64)


class Product(models.Model):
    name = models.CharField(max_length=64)
    tags = models.ManyToManyField(Tag, through='ProductTag', related_name='products')


class ProductTag(models.Model):
    product = models.ForeignKey(Product, on_delete=models.CASCADE)
    tag = models.ForeignKey(Tag, on_delete=models.CASCADE)
    weight = models.IntegerField(default=0)


# Multi-table inheritance

class Media(models.Model):
    name = models.CharField(max_length=128)


class Movie(Media):
    year = models.IntegerField(default=2000)


# Abstract inheritance: children of one abstract model are not family

class AbstractThing(models.Model):
    name = models.CharField(max_length=64)

    class Meta:
        abstract = True


class ThingA(AbstractThing):
    pass


class ThingB(AbstractThing):
    pass


# Multi-table inheritance through an abstract model: Magazine is a child of Publication

class Publication(models.Model):
    title = models.CharField(max_length=64, default='')


class AbstractIssue(Publication):
    class Meta:
        abstract = True


class Magazine(AbstractIssue):
    number = models.IntegerField(default=0)


class ProxyMagazine(Magazine):
    class Meta:
        proxy = True


# Models named after profiles in tests/settings.py

class All(models.Model):
    """Profile 'tests.all': {'ops': 'all'} - everything is cached automatically."""
    tag = models.IntegerField(default=0)
    title = models.CharField(max_length=128, default='')
    category = models.ForeignKey(Category, on_delete=models.CASCADE, null=True, blank=True)


class GenericContainer(models.Model):
    """Profile 'tests.genericcontainer': {'ops': ('fetch', 'get', 'count')}."""
    name = models.CharField(max_length=64, default='')
    owner = models.OneToOneField(All, on_delete=models.CASCADE, null=True, blank=True,
                                 related_name='container')


class NoProfile(models.Model):
    """Profile 'tests.noprofile': None - caching is forbidden."""
    title = models.CharField(max_length=128, default='')


class Local(models.Model):
    """Profile 'tests.local': {'local_get': True}."""
    tag = models.IntegerField(default=0)
    title = models.CharField(max_length=128, default='')


class CacheOnSaveProfile(models.Model):
    """Profile 'tests.cacheonsaveprofile': {'cache_on_save': True}."""
    title = models.CharField(max_length=128, default='')


class DbAgnostic(models.Model):
    """Profile 'tests.dbagnostic': {'db_agnostic': False}."""
    title = models.CharField(max_length=128, default='')


class DbBinded(models.Model):
    """Profile 'tests.dbbinded': {'db_agnostic': False}."""
    title = models.CharField(max_length=128, default='')


# Assorted field types, for granularity tests

class Assorted(models.Model):
    label = models.CharField(max_length=64, default='')
    decimal = models.DecimalField(max_digits=8, decimal_places=2, null=True, blank=True)
    date = models.DateField(null=True, blank=True)
    datetime = models.DateTimeField(null=True, blank=True)
    uuid = models.UUIDField(null=True, blank=True)
    num = models.IntegerField(null=True, blank=True)
    text = models.TextField(blank=True, default='')
    binary = models.BinaryField(null=True, blank=True)
    file = models.FileField(blank=True, default='')


# Profile options, for tests/test_profile_options.py (profiles appended to tests/settings.py)

class CacheOnSaveSlug(models.Model):
    """Profile 'tests.cacheonsaveslug': {'cache_on_save': 'slug'}."""
    slug = models.CharField(max_length=64, unique=True)
    title = models.CharField(max_length=128, default='')


class Locked(models.Model):
    """Profile 'tests.locked': {'lock': True}."""
    title = models.CharField(max_length=128, default='')


# Pickling (tests/test_serialization.py)

class JsonDoc(models.Model):
    data = models.JSONField(null=True, blank=True)


class CustomReduce(models.Model):
    """Pickles through its own __reduce__, which leaves a mark on the unpickled copy."""
    title = models.CharField(max_length=128, default='')

    def __reduce__(self):
        unpickle, args, state = super().__reduce__()
        return unpickle, args, {**state, 'reduced_by': 'CustomReduce'}


class CustomGetstate(models.Model):
    """Leaves its 'secret' attribute out of pickles."""
    title = models.CharField(max_length=128, default='')

    def __getstate__(self):
        state = super().__getstate__()
        state.pop('secret', None)
        return state


# Query fingerprints (tests/test_fingerprint.py): the shape of bench.py's Item

class Gadget(models.Model):
    category = models.ForeignKey(Category, on_delete=models.CASCADE, related_name='gadgets')
    title = models.CharField(max_length=128, default='')
    price = models.DecimalField(max_digits=10, decimal_places=2, default=0)
    stock = models.IntegerField(default=0)
    rating = models.FloatField(default=0)
    is_active = models.BooleanField(default=True)
    created = models.DateTimeField(null=True, blank=True)
    tags = models.ManyToManyField(Tag, related_name='gadgets', blank=True)


# A string primary key and a foreign key to it (MySQL compares both by collation)

class Country(models.Model):
    code = models.CharField(max_length=2, primary_key=True)


class City(models.Model):
    country = models.ForeignKey(Country, on_delete=models.CASCADE)


# Multi-table inheritance from two concrete parents: the second parent's key differs
# from the child's

class Owner(models.Model):
    owner_id = models.AutoField(primary_key=True)
    owner_name = models.CharField(max_length=64, default='')


class Vehicle(models.Model):
    vehicle_id = models.AutoField(primary_key=True)
    wheels = models.IntegerField(default=4)


class OwnedVehicle(Owner, Vehicle):
    pass


# Time and duration values (tests/test_lazy_chain.py)

class Shift(models.Model):
    starts = models.TimeField(null=True, blank=True)
    length = models.DurationField(null=True, blank=True)


# A field whose database comparison disagrees with the values it reads back (as a
# custom field may): a save can't make its update conditional on them

class LossyIntegerField(models.IntegerField):
    def from_db_value(self, value, expression, connection):
        return None if value is None else value + 1000


class Lossy(models.Model):
    num = LossyIntegerField(default=0)
    title = models.CharField(max_length=128, default='')


class Note(models.Model):
    # Meta.ordering through a nullable key: an outer join, which FOR UPDATE can't lock
    category = models.ForeignKey(Category, null=True, blank=True, on_delete=models.SET_NULL)
    num = models.IntegerField(default=0)

    class Meta:
        ordering = ['category__title']


class SelectOnSave(models.Model):
    num = models.IntegerField(default=0)

    class Meta:
        select_on_save = True


if hasattr(models, 'CompositePrimaryKey'):  # Django 5.2+
    class Pair(models.Model):
        pk = models.CompositePrimaryKey('left', 'right')
        left = models.IntegerField()
        right = models.IntegerField()
        num = models.IntegerField(default=0)


if hasattr(models, 'GeneratedField'):  # Django 5.0+
    class Priced(models.Model):
        """Values the database computes on save: a generated column and a database default."""
        price = models.IntegerField(default=0)
        quantity = models.IntegerField(default=1)
        total = models.GeneratedField(expression=models.F('price') * models.F('quantity'),
                                      output_field=models.IntegerField(), db_persist=True)
        code = models.IntegerField(db_default=7)


# Django 5.2+/6.1 features (tests/test_django_features.py)

class Memo(models.Model):
    """A key with no reverse accessor (related_name='+'): deleting the category nulls it."""
    category = models.ForeignKey(Category, on_delete=models.SET_NULL, null=True, related_name='+')
    text = models.CharField(max_length=64, default='')


class NoProfileRef(models.Model):
    """A cached model keyed to one that is never cached."""
    target = models.ForeignKey(NoProfile, on_delete=models.SET_NULL, null=True)
    text = models.CharField(max_length=64, default='')


if hasattr(models, 'DB_CASCADE'):  # Django 6.1+: the database acts on delete, no signals
    class Shelf(models.Model):
        number = models.IntegerField(primary_key=True)

    class Book(models.Model):
        """Deleted by the database with its shelf."""
        shelf = models.ForeignKey(Shelf, on_delete=models.DB_CASCADE, related_name='books')
        title = models.CharField(max_length=64, default='')

    class Page(models.Model):
        """Deleted by the database with its book: a chain of DB_CASCADEs."""
        book = models.ForeignKey(Book, on_delete=models.DB_CASCADE)
        num = models.IntegerField(default=0)
        see_also = models.ForeignKey('self', on_delete=models.DB_SET_NULL, null=True)

    class Bookmark(models.Model):
        """Loses its book when the database deletes it with its shelf."""
        book = models.ForeignKey(Book, on_delete=models.DB_SET_NULL, null=True)
        note = models.CharField(max_length=64, default='')

    class Sticker(models.Model):
        """Nulled by the database, through a key with no reverse accessor."""
        shelf = models.ForeignKey(Shelf, on_delete=models.DB_SET_NULL, null=True, related_name='+')
        color = models.CharField(max_length=16, default='')

    class Slot(models.Model):
        """Moved by the database to the spare shelf, 99 (not on MySQL, which can't)."""
        shelf = models.ForeignKey(Shelf, on_delete=models.DB_SET_DEFAULT, db_default=99,
                                  related_name='slots')
        num = models.IntegerField(default=0)

        class Meta:
            required_db_features = {'supports_on_delete_db_default'}


# Differential test (tests/test_differential.py): an author's works, a multi-table child
# with a many-to-many of its own and a proxy. The test's per-model profiles name Author
# and Work only, leaving Poem, ShortWork and Poem.fans' table to be tracked as family.

class Author(models.Model):
    name = models.CharField(max_length=16, default='')
    age = models.IntegerField(default=0)


class Work(models.Model):
    title = models.CharField(max_length=16, default='')
    pages = models.IntegerField(default=0)
    author = models.ForeignKey(Author, on_delete=models.CASCADE, null=True, blank=True,
                               related_name='works')


class Poem(Work):
    lines = models.IntegerField(default=0)
    fans = models.ManyToManyField(Author, related_name='fan_poems', blank=True)


class ShortWork(Work):
    class Meta:
        proxy = True


# A unique decimal: get() by it is keyed by the value (tests/test_key_identity.py)

class UniquePrice(models.Model):
    price = models.DecimalField(max_digits=8, decimal_places=2, unique=True)
