"""Recorded calls: querysets of cached models keep plain filter()/exclude()/order_by()/slicing
calls instead of building Django's Query, and a cache hit never builds it.

A queryset of a model with a profile (caching on, not nocache(), not inplace(), of a class
that doesn't override Django's chaining methods, whose query nobody read yet) records
filter()/exclude() with keyword arguments and Q objects joined by AND (negated or not), of
plain values or saved instances of the related model on a field, its attname, pk, a forward
m2m field or a foreign key's target column (category__pk) and the lookups exact, in, gt, gte,
lt, lte, isnull; order_by() with field or relation names; slices with non-negative bounds.
The recorded calls stay in qs._pending (a non-empty tuple) until something needs the query:
a miss, qs.query, any other method.

What this must never change, tested here:
1. the SQL and results are Django's, for every chain;
2. errors are raised at the call that makes them, as in Django;
3. querysets made from one another stay independent;
4. a hit builds nothing, and different chains don't share a cache entry;
5. invalidation of recorded chains, granular where the conditions are;
6. the rest of the queryset API on top of recorded calls;
7. QuerySet subclasses overriding the chaining methods are left to do it their way.

tests/conftest.py turns fingerprint.VERIFY on: every fingerprint made here is compiled too.
"""
import copy
import datetime
import pickle
import re
import uuid
from decimal import Decimal
from types import SimpleNamespace
from zoneinfo import ZoneInfo

import pytest
from django.core.exceptions import EmptyResultSet, FieldError, ValidationError
from django.core.paginator import Paginator
from django.db import connection, models, transaction
from django.db.models import (Count, Exists, F, FilteredRelation, IntegerChoices, Manager, Max,
                              OuterRef, Prefetch, Q, QuerySet, Subquery, Sum, TextChoices, Value)
from django.db.models.functions import Lower
from django.test import override_settings
from django.test.utils import CaptureQueriesContext

from .cluster import redis_keys
from .models import (All, Assorted, Brand, Category, City, Country, DbAgnostic, Gadget, JsonDoc,
                     Label, Media, Movie, NoProfile, OwnedVehicle, Owner, Post, Product,
                     ProductTag, ProxyPost, Shift, Tag, Task, Vehicle)
from .utils import queries, warm

pytestmark = pytest.mark.django_db

UTC = datetime.timezone.utc
DAY = datetime.date(2024, 5, 17)
NOON = datetime.datetime(2024, 5, 17, 12, 0, tzinfo=UTC)
# 21:00 the day before in the default TIME_ZONE (America/Chicago): a DateField takes that day
LATE = datetime.datetime(2024, 5, 17, 2, 0, tzinfo=UTC)
HOUR = datetime.timedelta(hours=1)
U1 = uuid.UUID('12345678-1234-4678-9234-567812345678')
U2 = uuid.UUID('87654321-4321-4765-a321-876543218765')
HUGE = 2 ** 70  # beyond any database's integers


class Letter(TextChoices):
    A = 'a'
    C = 'c'


class Level(IntegerChoices):
    ONE = 1
    TWO = 2


# Helpers

def pending(qs):
    """The calls qs recorded and hasn't built into its query yet (documented: qs._pending)."""
    return getattr(qs, '_pending', ())


def is_recorded(qs):
    calls = pending(qs)
    return isinstance(calls, tuple) and len(calls) > 0


def plain(func):
    """func() as plain Django runs it: cacheops off while querysets are made and used."""
    with override_settings(CACHEOPS_ENABLED=False):
        return func()


def sql(qs):
    """(str(qs.query), compiled sql, repr(params)), or how compiling fails."""
    query = qs.query
    try:
        text = str(query)
    except Exception as e:
        text = ('raises', type(e).__name__, str(e))
    try:
        compiled, params = query.clone().get_compiler(using=qs.db).as_sql()
    except EmptyResultSet:
        return text, 'EmptyResultSet'
    except Exception as e:
        return text, ('raises', type(e).__name__, str(e))
    return text, compiled, repr(tuple(params))


def row(obj):
    if isinstance(obj, models.Model):
        return type(obj).__name__, obj.pk
    if isinstance(obj, tuple):  # named values_list() rows: a class per query
        return tuple(obj)
    return obj


def rows(qs):
    return [row(o) for o in qs]


def outcome(func):
    """('ok', value) or ('raises', exception class name, message)."""
    try:
        if connection.vendor == 'postgresql':
            # in a savepoint: a database error must not abort the test's transaction
            with transaction.atomic():
                return 'ok', func()
        return 'ok', func()
    except Exception as e:
        return 'raises', type(e).__name__, str(e)


def executed(func):
    """(outcome of func(), [the SQL it ran]); server-side cursors are named per call."""
    with CaptureQueriesContext(connection) as ctx:
        result = outcome(func)
    return result, [re.sub(r'_django_curs_\w+', '_django_curs', q['sql']) for q in ctx.captured_queries
                    if 'SAVEPOINT' not in q['sql']]


def cached(qs):
    """qs with every op cached (Post, Category... cache only through .cache())."""
    return qs if qs.model is NoProfile else qs.cache()


def titles(qs):
    return [o.title for o in qs]


def long_range(d):
    """Over 1000 pks, the rows of All among them: a long disjunction."""
    return list(range(d.all[0].pk, d.all[0].pk + 1500))


def manager_of(model, queryset_class=QuerySet, manager_class=Manager):
    """A manager as a model declares it (objects = Manager.from_queryset(...)()), bound to
    model without adding it to the model class."""
    manager = manager_class.from_queryset(queryset_class)()
    manager.model = model
    manager.name = 'objects'
    return manager


@pytest.fixture
def d():
    """A bit of everything, kept in a namespace: d.c1, d.pa, d.red..."""
    n = SimpleNamespace()
    n.c1, n.c2, n.c3 = [Category.objects.create(title=t) for t in ('one', 'two', 'three')]
    for title, cat, visible, text in [('a', n.c1, True, 'a'), ('b', n.c1, False, 'x'),
                                      ('c', n.c2, True, 'c'), ('d', n.c2, True, ''),
                                      ('e', n.c3, False, 'e'), ('f', n.c1, True, '')]:
        setattr(n, 'p' + title, Post.objects.create(title=title, category=cat, visible=visible,
                                                    text=text))
    n.ta = Task.objects.create(title='t1', category=n.c1)
    n.tb = Task.objects.create(title='t2', category=None)
    n.tc = Task.objects.create(title='t3', category=n.c2)
    n.td = Task.objects.create(title='t4', category=None)

    n.red, n.green, n.blue = [Tag.objects.create(name=t) for t in ('red', 'green', 'blue')]
    n.g1 = Gadget.objects.create(category=n.c1, title='g1', price=Decimal('1.50'), stock=3,
                                 rating=1.5, is_active=True, created=NOON)
    n.g2 = Gadget.objects.create(category=n.c1, title='g2', price=Decimal('2.00'), stock=0,
                                 rating=0.5, is_active=False, created=None)
    n.g3 = Gadget.objects.create(category=n.c2, title='g3', price=Decimal('10.00'), stock=7,
                                 rating=4.0, is_active=True, created=NOON - 24 * HOUR)
    n.g4 = Gadget.objects.create(category=n.c3, title='g4', price=Decimal('0.00'), stock=1,
                                 rating=2.5, is_active=True, created=NOON + HOUR)
    n.g1.tags.add(n.red, n.green)
    n.g2.tags.add(n.red)
    n.g3.tags.add(n.green, n.blue)

    n.l1, n.l2, n.l3 = [Label.objects.create(text=t) for t in ('l1', 'l2', 'l3')]
    n.b1, n.b2, n.b3 = [Brand.objects.create(name=t) for t in ('b1', 'b2', 'b3')]
    n.b1.labels.add(n.l1, n.l2)
    n.b2.labels.add(n.l2)
    n.pr1, n.pr2 = Product.objects.create(name='pr1'), Product.objects.create(name='pr2')
    ProductTag.objects.create(product=n.pr1, tag=n.red, weight=1)
    ProductTag.objects.create(product=n.pr2, tag=n.red, weight=2)
    ProductTag.objects.create(product=n.pr2, tag=n.blue, weight=5)

    # titles that are equal as Python values (1 == True == 1.0 == Decimal('1.00')) but not as
    # the strings a CharField makes of them
    n.all = [All.objects.create(tag=tag, title=title, category=cat) for tag, title, cat in [
        (0, '1', n.c1), (1, 'True', n.c1), (2, '1.0', None), (3, '1.00', n.c2), (1, 'x', None),
        (-1, '', None)]]

    n.a1 = Assorted.objects.create(label='x', decimal=Decimal('1.50'), date=DAY, datetime=NOON,
                                   uuid=U1, num=1)
    n.a2 = Assorted.objects.create(label='y', decimal=None, date=DAY - datetime.timedelta(days=1),
                                   datetime=NOON - HOUR, uuid=U2, num=None)
    n.a3 = Assorted.objects.create(label='x', decimal=Decimal('2.25'), date=None, datetime=None,
                                   uuid=None, num=2)
    n.a4 = Assorted.objects.create(label='z', decimal=Decimal('0.10'),
                                   date=DAY + datetime.timedelta(days=1), datetime=LATE, num=3)

    Media.objects.create(name='not a movie')
    n.m1 = Movie.objects.create(name='alien', year=1979)
    n.m2 = Movie.objects.create(name='heat', year=1995)
    n.m3 = Movie.objects.create(name='up', year=2009)

    # plain parents first, so that an owned vehicle's owner and vehicle ids differ (the
    # sequences of PostgreSQL and MySQL go on from earlier tests: the gap is made here)
    owner = Owner.objects.create(owner_name='solo')
    vehicle = Vehicle.objects.create(wheels=18)
    while vehicle.pk <= owner.pk + 1:
        vehicle = Vehicle.objects.create(wheels=3)
    n.ov1 = OwnedVehicle.objects.create(owner_name='ann', wheels=4)
    n.ov2 = OwnedVehicle.objects.create(owner_name='bob', wheels=2)
    assert n.ov1.vehicle_id != n.ov1.owner_id

    for code in ('fr', 'de', 'it'):
        Country.objects.create(code=code)
    n.city1 = City.objects.create(country_id='fr')
    n.city2 = City.objects.create(country_id='fr')
    n.city3 = City.objects.create(country_id='de')

    n.s1 = Shift.objects.create(starts=datetime.time(9), length=datetime.timedelta(hours=8))
    n.s2 = Shift.objects.create(starts=datetime.time(22, 30), length=datetime.timedelta(hours=6))
    n.s3 = Shift.objects.create(starts=None, length=None)
    for data in ({'a': 1}, 'x', 1, True, None):
        JsonDoc.objects.create(data=data)
    JsonDoc.objects.create(data=Value(None, models.JSONField()))
    return n


# Querysets of other kinds

class PlainQuerySet(QuerySet):
    """Overrides nothing."""


class HelperQuerySet(QuerySet):
    """Only adds methods."""

    def visible(self):
        return self.filter(visible=True)


class VisibleManager(Manager):
    def get_queryset(self):
        return super().get_queryset().filter(visible=True)


plain_posts = manager_of(Post, PlainQuerySet)
helper_posts = manager_of(Post, HelperQuerySet)
visible_posts = manager_of(Post, manager_class=VisibleManager)


# The corpus: (id, make(d) -> queryset, kind). kind 'recorded': every call of the chain is
# one the spec says is recorded, so the result has _pending; 'built': the chain ends with
# a call that needs the query, so nothing is pending; None: either may do.

class Chain:
    def __init__(self, id, make, kind=None, random=False):
        self.id, self.make, self.kind, self.random = id, make, kind, random

    def __repr__(self):
        return self.id


def R(id, make, **kw):
    return Chain(id, make, 'recorded', **kw)


def B(id, make, **kw):
    return Chain(id, make, 'built', **kw)


def U(id, make, **kw):
    return Chain(id, make, None, **kw)


CHAINS = [
    # filter()/exclude() with each lookup
    R('exact', lambda d: Post.objects.filter(title='a')),
    R('exact spelled out', lambda d: Post.objects.filter(title__exact='a')),
    R('in list', lambda d: Post.objects.filter(title__in=['a', 'c', 'zz'])),
    R('in tuple', lambda d: Post.objects.filter(title__in=('c', 'a'))),
    R('in empty', lambda d: Post.objects.filter(title__in=[])),
    R('in with duplicates', lambda d: Post.objects.filter(pk__in=[d.pa.pk, d.pc.pk, d.pa.pk])),
    R('in with None', lambda d: Post.objects.filter(pk__in=[d.pa.pk, None])),
    R('in only None', lambda d: Post.objects.filter(pk__in=[None])),
    R('gt', lambda d: Post.objects.filter(title__gt='b')),
    R('gte', lambda d: Post.objects.filter(title__gte='b')),
    R('lt', lambda d: Post.objects.filter(title__lt='c')),
    R('lte', lambda d: Post.objects.filter(title__lte='c')),
    R('isnull true', lambda d: Task.objects.filter(category__isnull=True)),
    R('isnull false', lambda d: Task.objects.filter(category__isnull=False)),
    R('isnull false, not null column', lambda d: Post.objects.filter(category__isnull=False)),
    R('exclude', lambda d: Post.objects.exclude(title='a')),
    R('exclude several kwargs', lambda d: Post.objects.exclude(category=d.c1.pk, visible=True)),
    R('exclude in', lambda d: Post.objects.exclude(title__in=['a', 'b'])),
    R('exclude nullable fk', lambda d: Task.objects.exclude(category=d.c1.pk)),
    R('exclude nullable fk in', lambda d: Task.objects.exclude(category__in=[d.c1.pk, d.c3.pk])),
    R('exclude isnull', lambda d: Task.objects.exclude(category__isnull=True)),
    R('exclude gt', lambda d: Post.objects.exclude(pk__gt=d.pc.pk)),
    R('exclude in empty', lambda d: Post.objects.exclude(pk__in=[])),
    R('in empty then more', lambda d: Post.objects.filter(pk__in=[]).exclude(title='a').order_by('pk')[:2]),
    U('filter() without arguments', lambda d: Post.objects.filter()),
    U('exclude() without arguments', lambda d: Post.objects.exclude()),
    R('unsorted kwargs', lambda d: Post.objects.filter(visible=True, title__in=['a', 'c', 'f'],
                                                       category=d.c1.pk)),

    # pk, foreign keys by name and attname, None
    R('pk', lambda d: Post.objects.filter(pk=d.pa.pk)),
    R('id', lambda d: Post.objects.filter(id=d.pa.pk)),
    R('pk in tuple', lambda d: Post.objects.filter(pk__in=(d.pb.pk, d.pd.pk))),
    R('pk range by two filters', lambda d: Post.objects.filter(pk__gt=d.pb.pk).filter(pk__lte=d.pe.pk)),
    R('exclude pk in', lambda d: Post.objects.exclude(pk__in=[d.pa.pk, d.pe.pk])),
    R('fk by name', lambda d: Post.objects.filter(category=d.c1.pk)),
    R('fk by attname', lambda d: Post.objects.filter(category_id=d.c1.pk)),
    R('fk exact spelled out', lambda d: Post.objects.filter(category__exact=d.c2.pk)),
    R('fk in', lambda d: Post.objects.filter(category__in=[d.c1.pk, d.c3.pk])),
    R('fk attname in tuple', lambda d: Post.objects.filter(category_id__in=(d.c2.pk,))),
    R('fk in empty', lambda d: Post.objects.filter(category__in=[])),
    R('fk gte', lambda d: Post.objects.filter(category__gte=d.c2.pk)),
    R('fk lt by attname', lambda d: Post.objects.filter(category_id__lt=d.c2.pk)),
    R('fk None', lambda d: Task.objects.filter(category=None)),
    R('fk attname None', lambda d: Task.objects.filter(category_id=None)),
    R('exclude fk None', lambda d: Task.objects.exclude(category=None)),
    R('fk in with None', lambda d: Task.objects.filter(category__in=[d.c1.pk, None])),
    U('fk as string', lambda d: Post.objects.filter(category=str(d.c1.pk))),
    U('pk as string', lambda d: Post.objects.filter(pk=str(d.pb.pk))),
    U('pk True', lambda d: Post.objects.filter(pk=True)),
    U('pk too big', lambda d: Post.objects.filter(pk=HUGE)),
    U('pk less than too big', lambda d: Post.objects.filter(pk__lt=HUGE)),
    U('pk greater than too small', lambda d: Post.objects.filter(pk__gt=-HUGE)),
    R('bool', lambda d: Post.objects.filter(visible=True)),
    R('bool false', lambda d: Post.objects.filter(visible=False)),
    U('bool as int', lambda d: Post.objects.filter(visible=0)),
    U('text field', lambda d: Post.objects.filter(text='')),
    R('several filters', lambda d: Post.objects.filter(category=d.c1.pk).filter(visible=True)
      .exclude(title='b')),
    R('filter then exclude the same field', lambda d: Post.objects.filter(title__in=['a', 'b', 'c'])
      .exclude(title='b')),
    R('exclude then filter', lambda d: Post.objects.exclude(visible=False).filter(category=d.c2.pk)),
    U('choices', lambda d: Post.objects.filter(title__in=[Letter.A, Letter.C])),
    U('integer choices', lambda d: All.objects.filter(tag=Level.ONE)),
    R('proxy', lambda d: ProxyPost.objects.filter(title='a')),

    # values a field turns into something else
    U('int for a char field', lambda d: All.objects.filter(title=1)),
    U('True for a char field', lambda d: All.objects.filter(title=True)),
    U('float for a char field', lambda d: All.objects.filter(title=1.0)),
    U('decimal for a char field', lambda d: All.objects.filter(title=Decimal('1.00'))),
    U('True for an integer field', lambda d: All.objects.filter(tag=True)),
    U('string for an integer field', lambda d: All.objects.filter(tag='1')),
    U('float for an integer field', lambda d: All.objects.filter(tag=1.0)),
    U('gt float, integer field', lambda d: All.objects.filter(tag__gt=1.5)),
    U('gte float, integer field (rounds up)', lambda d: All.objects.filter(tag__gte=1.5)),
    U('lt float, integer field (rounds up)', lambda d: All.objects.filter(tag__lt=1.5)),
    U('lte float, integer field', lambda d: All.objects.filter(tag__lte=1.5)),
    U('in floats, integer field', lambda d: All.objects.filter(tag__in=[1.5, 3])),
    U('decimal for an integer field', lambda d: All.objects.filter(tag=Decimal('2'))),
    U('integer too big', lambda d: All.objects.filter(tag=HUGE)),
    U('less than too big', lambda d: All.objects.filter(tag__lt=HUGE)),
    U('greater than too big', lambda d: All.objects.filter(tag__gte=HUGE)),
    R('negative int', lambda d: All.objects.filter(tag=-1)),
    R('empty string', lambda d: All.objects.filter(title='')),
    R('nullable fk, ops all', lambda d: All.objects.filter(category=None)),
    R('long in list', lambda d: All.objects.filter(pk__in=long_range(d))),

    # assorted field types
    R('decimal', lambda d: Assorted.objects.filter(decimal=Decimal('1.50'))),
    R('decimal, other exponent', lambda d: Assorted.objects.filter(decimal=Decimal('1.5'))),
    U('float for a decimal field', lambda d: Assorted.objects.filter(decimal=1.5)),
    U('string for a decimal field', lambda d: Assorted.objects.filter(decimal='2.25')),
    R('decimal gt int', lambda d: Assorted.objects.filter(decimal__gt=1)),
    R('decimal in', lambda d: Assorted.objects.filter(decimal__in=[Decimal('1.50'), Decimal('2.25')])),
    R('decimal None', lambda d: Assorted.objects.filter(decimal=None)),
    R('date', lambda d: Assorted.objects.filter(date=DAY)),
    U('string for a date field', lambda d: Assorted.objects.filter(date='2024-05-17')),
    U('aware datetime for a date field', lambda d: Assorted.objects.filter(date=LATE)),
    R('date lt', lambda d: Assorted.objects.filter(date__lt=DAY)),
    R('date isnull', lambda d: Assorted.objects.filter(date__isnull=True)),
    R('datetime', lambda d: Assorted.objects.filter(datetime=NOON)),
    R('datetime gte', lambda d: Assorted.objects.filter(datetime__gte=NOON - HOUR)),
    R('datetime in', lambda d: Assorted.objects.filter(datetime__in=[NOON, LATE])),
    R('datetime in another zone', lambda d: Assorted.objects.filter(
        datetime=NOON.astimezone(ZoneInfo('Asia/Tokyo')))),
    U('naive datetime', lambda d: Assorted.objects.filter(datetime=NOON.replace(tzinfo=None))),
    U('date for a datetime field', lambda d: Assorted.objects.filter(datetime__lt=DAY)),
    R('uuid', lambda d: Assorted.objects.filter(uuid=U1)),
    U('uuid as string', lambda d: Assorted.objects.filter(uuid=str(U1))),
    U('uuid as hex', lambda d: Assorted.objects.filter(uuid=U2.hex)),
    R('uuid in', lambda d: Assorted.objects.filter(uuid__in=(U1, U2))),
    R('uuid None', lambda d: Assorted.objects.filter(uuid=None)),
    R('int None', lambda d: Assorted.objects.filter(num=None)),
    R('int in with None', lambda d: Assorted.objects.filter(num__in=[1, None, 3])),
    R('int isnull', lambda d: Assorted.objects.filter(num__isnull=True)),
    R('exclude int None', lambda d: Assorted.objects.exclude(num=None)),
    R('label in', lambda d: Assorted.objects.filter(label__in=['x', 'z'])),
    U('json None (JSON null)', lambda d: JsonDoc.objects.filter(data=None)),
    U('json string', lambda d: JsonDoc.objects.filter(data='x')),
    U('json 1', lambda d: JsonDoc.objects.filter(data=1)),
    U('json True', lambda d: JsonDoc.objects.filter(data=True)),
    R('json isnull', lambda d: JsonDoc.objects.filter(data__isnull=True)),
    R('time', lambda d: Shift.objects.filter(starts=datetime.time(9))),
    R('time gt', lambda d: Shift.objects.filter(starts__gt=datetime.time(12))),
    U('string for a time field', lambda d: Shift.objects.filter(starts='09:00')),
    R('time isnull', lambda d: Shift.objects.filter(starts__isnull=True)),
    R('duration', lambda d: Shift.objects.filter(length=datetime.timedelta(hours=8))),
    R('duration lte', lambda d: Shift.objects.filter(length__lte=datetime.timedelta(hours=7))),
    R('duration in', lambda d: Shift.objects.filter(
        length__in=[datetime.timedelta(hours=6), datetime.timedelta(seconds=8 * 3600)])),
    R('duration None', lambda d: Shift.objects.filter(length=None)),
    U('string for a duration field (fails compiling)', lambda d: Shift.objects.filter(length='nope')),
    U('string for isnull (fails compiling)', lambda d: Assorted.objects.filter(num__isnull='yes')),
    U('int for isnull (fails compiling)', lambda d: Assorted.objects.filter(num__isnull=1)),
    R('float', lambda d: Gadget.objects.filter(rating=1.5)),
    U('string for a float field', lambda d: Gadget.objects.filter(rating='1.5')),
    U('decimal for a float field', lambda d: Gadget.objects.filter(rating=Decimal('4.0'))),
    R('float gt int', lambda d: Gadget.objects.filter(rating__gt=1)),
    R('price', lambda d: Gadget.objects.filter(price=Decimal('1.50'))),
    R('price lt int', lambda d: Gadget.objects.filter(price__lt=2)),
    R('stock zero', lambda d: Gadget.objects.filter(stock=0)),
    R('created', lambda d: Gadget.objects.filter(created=NOON)),
    R('created isnull', lambda d: Gadget.objects.filter(created__isnull=True)),
    R('created lt', lambda d: Gadget.objects.filter(created__lt=NOON)),

    # many-to-many
    R('m2m', lambda d: Gadget.objects.filter(tags=d.red.pk)),
    R('m2m in', lambda d: Gadget.objects.filter(tags__in=[d.red.pk, d.blue.pk])),
    R('m2m in empty', lambda d: Gadget.objects.filter(tags__in=[])),
    R('m2m twice: two joins', lambda d: Gadget.objects.filter(tags=d.red.pk).filter(tags=d.green.pk)),
    R('m2m in one call: one join', lambda d: Gadget.objects.filter(tags=d.red.pk, tags__in=[d.green.pk])),
    R('m2m exclude', lambda d: Gadget.objects.exclude(tags=d.red.pk)),
    R('m2m isnull', lambda d: Gadget.objects.filter(tags__isnull=True)),
    R('m2m isnull false', lambda d: Gadget.objects.filter(tags__isnull=False)),
    R('m2m None', lambda d: Gadget.objects.filter(tags=None)),
    R('m2m exclude None', lambda d: Gadget.objects.exclude(tags=None)),
    R('m2m gt', lambda d: Gadget.objects.filter(tags__gt=d.red.pk)),
    R('m2m and fk', lambda d: Gadget.objects.filter(category=d.c1.pk).filter(tags=d.green.pk)),
    R('m2m plain', lambda d: Brand.objects.filter(labels=d.l1.pk)),
    R('m2m plain in tuple', lambda d: Brand.objects.filter(labels__in=(d.l1.pk, d.l3.pk))),
    R('m2m plain exclude', lambda d: Brand.objects.exclude(labels=d.l2.pk)),
    R('m2m through', lambda d: Product.objects.filter(tags=d.red.pk)),
    R('m2m through twice', lambda d: Product.objects.filter(tags=d.red.pk).filter(tags=d.blue.pk)),
    R('m2m ordered and sliced', lambda d: Gadget.objects.filter(tags=d.red.pk).order_by('-pk')[:1]),
    R('m2m in, duplicate rows', lambda d: Gadget.objects.filter(tags__in=[d.red.pk, d.green.pk])
      .order_by('pk')),

    # inheritance, string keys
    R('child pk', lambda d: Movie.objects.filter(pk=d.m1.pk)),
    R('child parent link', lambda d: Movie.objects.filter(media_ptr=d.m2.pk)),
    R('child parent link attname', lambda d: Movie.objects.filter(media_ptr_id=d.m2.pk)),
    R('child own field', lambda d: Movie.objects.filter(year__gte=1990)),
    U('child inherited field', lambda d: Movie.objects.filter(name='heat')),
    U('child inherited pk name', lambda d: Movie.objects.filter(id=d.m3.pk)),
    U('child ordered by inherited field', lambda d: Movie.objects.order_by('-name')[:2]),
    R('child ordered', lambda d: Movie.objects.order_by('-year')[:2]),
    R('two parents: pk', lambda d: OwnedVehicle.objects.filter(pk=d.ov1.pk)),
    R('two parents: first link', lambda d: OwnedVehicle.objects.filter(owner_ptr=d.ov1.pk)),
    R('two parents: second link', lambda d: OwnedVehicle.objects.filter(vehicle_ptr=d.ov1.vehicle_id)),
    R('two parents: second link attname', lambda d: OwnedVehicle.objects.filter(
        vehicle_ptr_id=d.ov2.vehicle_id)),
    U('two parents: second key, also an attname', lambda d: OwnedVehicle.objects.filter(
        vehicle_id=d.ov1.vehicle_id)),
    U('two parents: first key', lambda d: OwnedVehicle.objects.filter(owner_id=d.ov2.owner_id)),
    U('two parents: inherited field', lambda d: OwnedVehicle.objects.filter(wheels=4)),
    U('two parents: ordered by inherited key', lambda d: OwnedVehicle.objects.order_by('-vehicle_id')),
    R('string pk', lambda d: Country.objects.filter(pk='fr')),
    R('string pk in', lambda d: Country.objects.filter(pk__in=['fr', 'xx'])),
    R('string pk gt, ordered', lambda d: Country.objects.filter(code__gt='de').order_by('-code')),
    R('fk to a string pk', lambda d: City.objects.filter(country='fr')),
    R('fk attname to a string pk, in', lambda d: City.objects.filter(country_id__in=['fr', 'de'])),

    # order_by()
    R('order by pk', lambda d: Post.objects.order_by('pk')),
    R('order by -pk', lambda d: Post.objects.order_by('-pk')),
    R('order by field', lambda d: Post.objects.order_by('title')),
    R('order by -field, pk', lambda d: Post.objects.order_by('-title', 'pk')),
    R('order by relation field', lambda d: Post.objects.order_by('category__title', 'pk')),
    R('order by -relation field', lambda d: Post.objects.order_by('-category__title', 'title')),
    R('order by relation', lambda d: Post.objects.order_by('category', '-pk')),
    R('order by -relation', lambda d: Post.objects.order_by('-category', 'pk')),
    R('order by attname', lambda d: Post.objects.order_by('category_id', 'pk')),
    R('order by relation pk', lambda d: Post.objects.order_by('category__pk', 'pk')),
    R('order by nullable relation field', lambda d: Task.objects.order_by('category__title', 'pk')),
    R('order by m2m', lambda d: Gadget.objects.order_by('tags', 'pk')),
    R('order by -created', lambda d: Gadget.objects.order_by('-created', 'pk')),
    R('order by bool then field', lambda d: Post.objects.order_by('visible', '-title')),
    R('order by random', lambda d: Post.objects.order_by('?'), random=True),
    R('order_by() clears', lambda d: Post.objects.order_by('title').order_by()),
    R('order_by() replaces', lambda d: Post.objects.order_by('title').order_by('-pk')),
    R('order then filter', lambda d: Post.objects.order_by('-title').filter(visible=True)),
    U('order by reverse relation', lambda d: Category.objects.order_by('posts__title')),

    # slices
    R('slice :b', lambda d: Post.objects.order_by('pk')[:2]),
    R('slice a:', lambda d: Post.objects.order_by('pk')[2:]),
    R('slice a:b', lambda d: Post.objects.order_by('pk')[1:3]),
    R('slice of slice', lambda d: Post.objects.order_by('pk')[2:10][1:3]),
    R('slice of slice, clamped', lambda d: Post.objects.order_by('pk')[1:3][1:10]),
    R('slice of slice, beyond', lambda d: Post.objects.order_by('pk')[1:3][5:]),
    R('open slices', lambda d: Post.objects.order_by('pk')[1:][1:]),
    R('open slice of slice', lambda d: Post.objects.order_by('pk')[:4][1:]),
    R('empty slice', lambda d: Post.objects.order_by('pk')[0:0]),
    R('slice :0', lambda d: Post.objects.order_by('pk')[:0]),
    R('backwards slice', lambda d: Post.objects.order_by('pk')[3:1]),
    R('slice beyond the rows', lambda d: Post.objects.order_by('pk')[100:]),
    R('slice of an unordered queryset', lambda d: Post.objects.filter(category=d.c1.pk)[:5]),
    U('filter() without arguments after a slice', lambda d: Post.objects.order_by('pk')[:3].filter()),
    U('slice with float bounds', lambda d: Post.objects.order_by('pk')[1.0:3]),
    U('filter after [:], which slices nothing',
      lambda d: Post.objects.order_by('pk')[:].filter(visible=True)),
    U('order_by() after [0:], which slices nothing', lambda d: Post.objects.filter(visible=True)[0:]
      .order_by('-pk')),
    R('the spec example', lambda d: Post.objects.filter(category=d.c1.pk).order_by('-id')[:5]),
    R('filter, exclude, order, slice', lambda d: Post.objects.filter(category__in=[d.c1.pk, d.c2.pk])
      .exclude(title='b').order_by('title')[1:3]),
    R('all() in between', lambda d: Post.objects.all().filter(visible=True).all().order_by('pk')
      .all()[:3].all()),
    R('cache() first', lambda d: Post.objects.cache().filter(category=d.c2.pk).order_by('-pk')),
    U('cache(ops) last', lambda d: Post.objects.filter(category=d.c2.pk).cache(ops='count')),
    U('using()', lambda d: Post.objects.using('default').filter(title='a').order_by('pk')),
    R('subclass overriding nothing', lambda d: plain_posts.filter(category=d.c1.pk).order_by('-pk')[:2]),
    R('subclass adding methods', lambda d: helper_posts.visible().order_by('title')[1:]),
    U('manager filtering in get_queryset', lambda d: visible_posts.filter(category=d.c1.pk)
      .order_by('-pk')),

    # calls that build the query at once
    B('Q object', lambda d: Post.objects.filter(Q(title='a') | Q(title='c'))),
    U('Q object then kwargs', lambda d: Post.objects.filter(Q(title='a')).filter(visible=True)),
    R('kwargs then Q object', lambda d: Post.objects.filter(visible=True).exclude(Q(title='a'))),
    B('F()', lambda d: Post.objects.filter(title=F('text'))),
    R('model instance', lambda d: Post.objects.filter(category=d.c1)),
    R('model instances in', lambda d: Post.objects.filter(category__in=[d.c1, d.c3])),
    B('join through a fk', lambda d: Post.objects.filter(category__title='one')),
    R('join through a fk, by pk', lambda d: Post.objects.filter(category__pk=d.c1.pk)),
    B('m2m by target field', lambda d: Gadget.objects.filter(tags__id=d.red.pk)),
    B('reverse relation', lambda d: Category.objects.filter(posts=d.pa.pk)),
    B('transform', lambda d: Gadget.objects.filter(created__date=DAY)),
    B('other lookup', lambda d: Post.objects.filter(title__icontains='A')),
    B('range', lambda d: All.objects.filter(tag__range=(0, 2))),
    B('in set', lambda d: Post.objects.filter(title__in={'a', 'c'})),
    B('in string', lambda d: Post.objects.filter(title__in='ac')),
    B('in generator', lambda d: Post.objects.filter(pk__in=(p.pk for p in [d.pa, d.pc]))),
    B('in queryset', lambda d: Post.objects.filter(category__in=Category.objects.filter(title='two'))),
    B('order by expression', lambda d: Post.objects.order_by(F('title').desc())),
    B('order by function', lambda d: Post.objects.order_by(Lower('title'), 'pk')),
    B('reverse()', lambda d: Post.objects.filter(category=d.c1.pk).order_by('title').reverse()),
    B('none()', lambda d: Post.objects.filter(title='a').none()),
    U('none() then filter', lambda d: Post.objects.none().filter(title='a')),
    U('none() then all() and slice', lambda d: Post.objects.filter(title='a').none().all()
      .order_by('pk')[:1]),
    B('distinct()', lambda d: Gadget.objects.filter(tags__in=[d.red.pk, d.green.pk]).distinct()
      .order_by('pk')),
    B('select_related() then filter', lambda d: Post.objects.select_related('category')
      .filter(title='a')),
    B('filter then select_related()', lambda d: Post.objects.filter(category=d.c1.pk)
      .select_related('category').order_by('pk')),
    U('prefetch_related()', lambda d: Post.objects.filter(visible=True).prefetch_related('category')
      .order_by('pk')),
    B('only()', lambda d: Post.objects.filter(category=d.c2.pk).only('title').order_by('pk')),
    B('values() then filter', lambda d: Post.objects.values('title').filter(visible=True)),
    U('values() then filter, ordered', lambda d: Post.objects.values('title').filter(visible=True)
      .order_by('title')),
    U('annotate() then filter', lambda d: Category.objects.annotate(n=Count('posts')).filter(n__gt=1)
      .order_by('pk')),
    B('annotate() after filters', lambda d: Category.objects.filter(pk__in=[d.c1.pk, d.c2.pk])
      .annotate(n=Count('posts')).order_by('-n', 'pk')),
    # bases whose query holds names beside the model's fields: calls after all() may meet them
    U('annotated base', lambda d: Category.objects.annotate(n=Count('posts')).all()
      .filter(title__in=['one', 'two']).order_by('-n', 'pk')),
    U('aliased base', lambda d: Category.objects.alias(n=Count('posts')).all().filter(n__gt=1)
      .exclude(title='two')),
    U('base with an extra select named like a field', lambda d: Post.objects.extra(
        select={'title': "'z'"}).all().filter(visible=True).order_by('title', '-pk')),
    U('base with a filtered relation', lambda d: Category.objects.annotate(
        shown=FilteredRelation('posts', condition=Q(posts__visible=True))).all()
      .filter(pk__in=[d.c1.pk, d.c2.pk]).order_by('shown__title', 'pk')),
    B('nocache()', lambda d: Post.objects.nocache().filter(title='a')),
    U('nocache() last', lambda d: Post.objects.filter(title='a').nocache()),
    B('inplace()', lambda d: Post.objects.inplace().filter(category=d.c1.pk).order_by('-pk')),
    B('no profile', lambda d: NoProfile.objects.filter(title='a').order_by('pk')[:2]),
    B('related manager', lambda d: d.c1.posts.filter(visible=True)),
    U('related manager, ordered', lambda d: d.c1.posts.filter(visible=True).order_by('-pk')),
    B('related manager all()', lambda d: d.c1.posts.all()),
    B('related manager sliced', lambda d: d.c1.posts.order_by('title')[:2]),
    B('m2m related manager', lambda d: d.g1.tags.filter(name='red')),
    B('m2m reverse related manager', lambda d: d.red.gadgets.order_by('pk')),
    B('m2m related manager exclude', lambda d: d.b1.labels.exclude(text='l1')),
    # the first filter on an m2m related manager reuses its join (a sticky filter); after all()
    # it doesn't
    B('m2m related manager filtering the same relation',
      lambda d: d.red.gadgets.filter(tags=d.green.pk)),
    U('m2m related manager filtering the same relation, then more',
      lambda d: d.red.gadgets.filter(tags__in=[d.green.pk, d.blue.pk]).exclude(stock=0).order_by('pk')),
    U('m2m related manager all() then filtering the same relation',
      lambda d: d.red.gadgets.all().filter(tags=d.green.pk)),

    # values(), combinations and subqueries on top of recorded calls
    B('values()', lambda d: Post.objects.filter(category=d.c1.pk).order_by('-pk')
      .values('title', 'category')),
    B('values_list() flat', lambda d: Post.objects.filter(visible=True).order_by('title')
      .values_list('title', flat=True)),
    B('values_list() named', lambda d: Post.objects.exclude(title='a').order_by('pk')
      .values_list('pk', 'title', named=True)),
    B('values() after a slice', lambda d: Post.objects.order_by('title')[:3].values('title')),
    B('values() grouped', lambda d: Post.objects.filter(visible=True).values('category')
      .annotate(n=Count('pk')).order_by('category')),
    B('dates()', lambda d: Gadget.objects.filter(is_active=True).dates('created', 'day')),
    B('union', lambda d: Post.objects.filter(category=d.c1.pk).union(
        Post.objects.filter(visible=False)).order_by('pk')),
    U('union, ordered and sliced', lambda d: Post.objects.filter(category=d.c1.pk).union(
        Post.objects.filter(visible=False)).order_by('-pk')[1:3]),
    U('union, all() and sliced', lambda d: Post.objects.filter(title__in=['a', 'd']).union(
        Post.objects.filter(title='e')).all()[:2]),
    B('union all of sliced', lambda d: Post.objects.order_by('pk')[:2].union(
        Post.objects.order_by('-pk')[:2], all=True)),
    B('union of values', lambda d: Post.objects.filter(title='a').values_list('title').union(
        Category.objects.filter(title='two').values_list('title')).order_by('title')),
    B('|', lambda d: Post.objects.filter(category=d.c1.pk) | Post.objects.filter(title='c')),
    B('| with m2m', lambda d: Gadget.objects.filter(tags=d.red.pk) | Gadget.objects.filter(stock=7)),
    B('| with a sliced side', lambda d: Post.objects.order_by('pk')[:2] | Post.objects.filter(title='e')),
    B('&', lambda d: Post.objects.filter(category=d.c1.pk) & Post.objects.filter(visible=True)),
    B('& of excludes', lambda d: Post.objects.exclude(title='a') & Post.objects.exclude(category=d.c2.pk)),
    B('subquery of values()', lambda d: Post.objects.filter(
        pk__in=Post.objects.filter(category=d.c1.pk).values('pk'))),
    B('subquery of a queryset', lambda d: Post.objects.filter(
        pk__in=Post.objects.filter(category=d.c2.pk).exclude(title='d'))),
    B('subquery of a sliced queryset', lambda d: Post.objects.filter(
        pk__in=Post.objects.order_by('-pk')[:2].values('pk'))),
    U('subquery of another model', lambda d: Category.objects.filter(
        pk__in=Post.objects.filter(visible=False).values('category')).order_by('pk')),
    U('Exists()', lambda d: Category.objects.filter(
        Exists(Post.objects.filter(visible=False).filter(category=OuterRef('pk')))).order_by('pk')),
    B('Subquery()', lambda d: Category.objects.annotate(last=Subquery(
        Post.objects.filter(category=OuterRef('pk')).order_by('-pk').values('title')[:1]))
      .order_by('pk')),
]

CHAIN_IDS = [c.id for c in CHAINS]
assert len(set(CHAIN_IDS)) == len(CHAIN_IDS)
RECORDED = [c for c in CHAINS if c.kind == 'recorded']
BUILT = [c for c in CHAINS if c.kind == 'built']


def batches(chains, size=25):
    """The chains in batches, one test per batch: the data fixture is made once per test,
    and making it for each of the hundreds of chains took most of the suite's time."""
    return pytest.mark.parametrize(
        'batch', [chains[i:i + size] for i in range(0, len(chains), size)],
        ids=['%s .. %s' % (chains[i].id, chains[min(i + size, len(chains)) - 1].id)
             for i in range(0, len(chains), size)])


def _first(qs):
    return row(qs.first())


def _last(qs):
    return row(qs.last())


OPS = {
    'list': rows,
    'count': lambda qs: qs.count(),
    'exists': lambda qs: qs.exists(),
    'aggregate': lambda qs: qs.aggregate(n=Count('pk'), top=Max('pk')),
    'values_list': lambda qs: list(qs.values_list('pk', flat=True)),
    'first': _first,
    'last': _last,
    'get': lambda qs: row(qs.get()),
    'len and bool': lambda qs: (len(qs), bool(qs)),
    'index': lambda qs: row(qs[1]),
    'repr': repr,
    'iterator': lambda qs: rows(qs.iterator()),
    'in_bulk': lambda qs: sorted(qs.in_bulk()),
}
RANDOM_OPS = {
    'list': lambda qs: sorted(rows(qs)),
    'count': OPS['count'],
    'exists': OPS['exists'],
    'aggregate': OPS['aggregate'],
}


def ops_of(chain):
    return RANDOM_OPS if chain.random else OPS


# 1. The SQL and results are Django's

@batches(CHAINS)
def test_same_sql_as_django(batch, d):
    for chain in batch:
        expected = plain(lambda: sql(chain.make(d)))
        qs = chain.make(d)
        assert sql(qs) == expected, chain.id
        assert sql(qs) == expected, chain.id  # a second read of a built query
        assert chain.make(d).ordered == plain(lambda: chain.make(d).ordered), chain.id


@batches(CHAINS)
def test_same_results_as_django(batch, d, _redis):
    """Each op on a fresh queryset: the miss runs Django's SQL and gets Django's result; hits
    (with .cache(): the chain's model may cache nothing by itself) get it too."""
    for chain in batch:
        for name, op in ops_of(chain).items():
            name = '%s: %s' % (chain.id, name)
            expected, expected_sql = plain(lambda: executed(lambda: op(chain.make(d))))
            _redis.flushdb()
            got, got_sql = executed(lambda: op(chain.make(d)))
            assert got == expected, name
            assert got_sql == expected_sql, name
            for _ in range(2):
                got, got_sql = executed(lambda: op(cached(chain.make(d))))
                assert got == expected, name
                assert all(q in expected_sql for q in got_sql), name  # some of it from the cache


def test_all_chains_in_one_cache(d):
    """Every chain cached side by side, then read again: none is served another's result."""
    def results(prepare):
        return [(outcome(lambda: (sorted if c.random else list)(rows(prepare(c.make(d))))),
                 outcome(lambda: prepare(c.make(d)).count())) for c in CHAINS]
    expected = plain(lambda: results(lambda qs: qs))
    for _ in range(2):
        got = results(cached)
        assert {c.id: r for c, r in zip(CHAINS, got)} == {c.id: r for c, r in zip(CHAINS, expected)}


def test_a_mutated_in_list_does_not_change_the_query(d):
    """Django reads an __in list at the call: changing the list afterwards changes nothing."""
    ids = [d.pa.pk]
    qs = Post.objects.cache().filter(pk__in=ids).order_by('pk')
    ids.append(d.pb.pk)
    assert titles(qs) == ['a']
    ids.append(d.pc.pk)
    assert titles(Post.objects.cache().filter(pk__in=[d.pa.pk]).order_by('pk')) == ['a']


def test_get_after_filter(d):
    def got(**kwargs):
        return lambda: Post.objects.cache().filter(category=d.c1.pk).exclude(title='f').get(**kwargs).title
    assert warm(got(visible=False)) == 'b'
    assert warm(got(pk=d.pa.pk)) == 'a'
    for kwargs, error in [({'title': 'c'}, Post.DoesNotExist),
                          ({}, Post.MultipleObjectsReturned)]:
        with pytest.raises(error) as e:
            got(**kwargs)()
        assert outcome(got(**kwargs)) == plain(lambda: outcome(got(**kwargs))), e


def test_slicing_an_evaluated_queryset_slices_its_results(d):
    qs = All.objects.filter(tag__gte=0).order_by('pk')
    everything = list(qs)
    result, n = queries(lambda: qs[1:3])
    assert n == 0
    assert result == everything[1:3]


def test_slices_with_a_step_and_indexes_read_the_rows(d):
    def stepped():
        return rows(All.objects.exclude(tag=1).order_by('pk')[::2])

    def indexed():
        return row(All.objects.exclude(tag=1).order_by('-pk')[2])
    assert warm(stepped) == plain(stepped)
    assert warm(indexed) == plain(indexed)


# 2. Errors are raised at the call that makes them, as in Django

ERRORS = {
    'unknown field': lambda: Post.objects.filter(nope=1),
    'unknown field in exclude': lambda: Post.objects.exclude(nope=1),
    'unknown field after recorded calls': lambda: Post.objects.filter(title='a').order_by('pk')
    .filter(nope=1),
    'unknown lookup': lambda: Post.objects.filter(title__nope=1),
    'unknown field through a fk': lambda: Post.objects.filter(category__nope=1),
    'unknown field through an m2m': lambda: Gadget.objects.filter(tags__nope=1),
    'no attname for an m2m': lambda: Gadget.objects.filter(tags_id=1),
    'order by unknown field': lambda: Post.objects.order_by('nope'),
    'order by -unknown field': lambda: Post.objects.filter(title='a').order_by('-nope'),
    'order by unknown field after a known one': lambda: Post.objects.order_by('pk', 'nope'),
    'order by an empty name': lambda: Post.objects.order_by(''),
    'order by a lone minus': lambda: Post.objects.order_by('-'),
    'order by a double minus': lambda: Post.objects.order_by('--title'),
    'order by a dotted name': lambda: Post.objects.order_by('title.x'),
    'order by None': lambda: Post.objects.order_by(None),
    'string for an integer pk': lambda: Post.objects.filter(pk='abc'),
    'string for an integer pk, exclude': lambda: Post.objects.exclude(id='abc'),
    'string in an in list': lambda: Post.objects.filter(pk__in=[1, 'x']),
    'list in an in list': lambda: Post.objects.filter(pk__in=[1, [2]]),
    'string for a fk': lambda: Post.objects.filter(category='abc'),
    'string for a fk attname': lambda: Post.objects.filter(category_id__in=['x']),
    'string for an m2m': lambda: Gadget.objects.filter(tags='abc'),
    'string for a float field': lambda: Gadget.objects.filter(rating='x'),
    'bad boolean': lambda: Post.objects.filter(visible='maybe'),
    'bad date': lambda: Assorted.objects.filter(date='nope'),
    'bad datetime': lambda: Assorted.objects.filter(datetime='nope'),
    'bad uuid': lambda: Assorted.objects.filter(uuid='nope'),
    'bad decimal': lambda: Assorted.objects.filter(decimal='abc'),
    'bad time': lambda: Shift.objects.filter(starts='nope'),
    'None for gt': lambda: Assorted.objects.filter(num__gt=None),
    'infinite float for an integer field': lambda: All.objects.filter(tag=float('inf')),
    'infinite float for gte on an integer field': lambda: All.objects.filter(tag__gte=float('inf')),
    'in with a non-iterable': lambda: Post.objects.filter(pk__in=1),
    'filter after a slice': lambda: Post.objects.filter(title='a')[:2].filter(visible=True),
    'exclude after a slice': lambda: Post.objects.order_by('pk')[1:].exclude(title='a'),
    'filter after a slice of a slice': lambda: Post.objects.all()[1:][:2].filter(pk=1),
    'order_by after a slice': lambda: Post.objects.filter(title='a')[:2].order_by('pk'),
    'order_by() after a slice': lambda: Post.objects.order_by('pk')[:2].order_by(),
    'get with kwargs after a slice': lambda: Post.objects.order_by('pk')[:2].get(title='a'),
    'first() after a slice': lambda: Post.objects.filter(visible=True)[:3].first(),
    'last() after a slice': lambda: Post.objects.order_by('pk')[:3].last(),
    'reverse() after a slice': lambda: Post.objects.order_by('pk')[1:3].reverse(),
    'distinct() after a slice': lambda: Post.objects.order_by('pk')[:3].distinct(),
    'update() after a slice': lambda: Post.objects.order_by('pk')[:3].update(text='z'),
    'in_bulk() after a slice': lambda: Post.objects.order_by('pk')[:3].in_bulk(),
    '& with a sliced side': lambda: Post.objects.order_by('pk')[:2] & Post.objects.filter(title='a'),
    'negative index': lambda: Post.objects.filter(title='a')[-1],
    'negative start': lambda: Post.objects.order_by('pk')[-2:],
    'negative stop': lambda: Post.objects.order_by('pk')[:-1],
    'negative stop after a start': lambda: Post.objects.order_by('pk')[1:-1],
    'negative index of a slice': lambda: Post.objects.order_by('pk')[1:4][-1],
    'string index': lambda: Post.objects.order_by('pk')['a'],
    'None index': lambda: Post.objects.filter(visible=True)[None],
    '_connector': lambda: Post.objects.filter(_connector='OR'),
    '_negated': lambda: Post.objects.exclude(_negated=True),
    '_connector with a field': lambda: Post.objects.filter(title='a', _connector='AND'),
    'filter after union': lambda: Post.objects.filter(title='a').union(Post.objects.all())
    .filter(title='b'),
}


def raised(func):
    """(exception class, message) func() raises, None when it raises nothing."""
    try:
        func()
    except Exception as e:
        return type(e), str(e)
    return None


@pytest.mark.parametrize('make', ERRORS.values(), ids=ERRORS.keys())
def test_error_is_raised_at_the_call_as_in_django(make, d):
    expected = plain(lambda: raised(make))
    assert expected is not None, 'Django raises here'
    assert raised(make) == expected


def test_errors_surface_as_the_documented_classes(d):
    with pytest.raises(FieldError):
        Post.objects.filter(title='a').filter(nope=1)
    with pytest.raises(FieldError):
        Post.objects.filter(title='a').order_by('nope')
    with pytest.raises(ValueError, match="expected a number but got 'abc'"):
        Post.objects.filter(title='a').filter(pk='abc')
    with pytest.raises(ValidationError):
        Assorted.objects.filter(label='x').filter(date='nope')
    with pytest.raises(TypeError, match='slice'):
        Post.objects.filter(title='a')[:1].filter(visible=True)
    with pytest.raises(TypeError, match='slice'):
        Post.objects.filter(title='a')[:1].order_by('pk')
    with pytest.raises(ValueError, match='Negative indexing'):
        Post.objects.filter(title='a')[-1:]
    with pytest.raises(TypeError, match='_connector'):
        Post.objects.filter(title='a').filter(_connector='OR')


def test_a_failed_call_leaves_its_queryset_as_it_was(d):
    base = Post.objects.cache().filter(category=d.c1.pk).order_by('title')
    for bad in (lambda: base.filter(nope=1), lambda: base.filter(pk='abc'),
                lambda: base.order_by('nope'), lambda: base[-1:], lambda: base.exclude(_negated=True)):
        with pytest.raises(Exception):
            bad()
    assert titles(base) == ['a', 'b', 'f']
    assert titles(base.filter(visible=True)) == ['a', 'f']
    assert sql(base) == plain(lambda: sql(Post.objects.filter(category=d.c1.pk).order_by('title')))


# 3. Querysets made from one another stay independent

def test_branches_of_one_queryset_are_independent(d):
    base = Category.objects.all()
    a = base.filter(title='one')
    b = base.exclude(title='one').order_by('title')
    c = a.filter(pk=d.c2.pk)
    assert titles(c) == []
    assert titles(b) == ['three', 'two']
    assert titles(a) == ['one']
    assert sorted(titles(base)) == ['one', 'three', 'two']


@pytest.mark.parametrize('built_first', [False, True], ids=['branches not built', 'a built'])
@pytest.mark.parametrize('change', [
    lambda q: q.add_q(Q(title='two')),
    lambda q: q.clear_ordering(force=True),
    lambda q: q.set_limits(0, 1),
    lambda q: q.add_ordering('-pk'),
], ids=['add_q', 'clear_ordering', 'set_limits', 'add_ordering'])
def test_changing_the_base_query_in_place_leaves_its_branches(change, built_first, d):
    def make_base():
        return Category.objects.filter(pk__in=[d.c1.pk, d.c2.pk, d.c3.pk]).order_by('title')

    def changed_base():
        qs = make_base()
        change(qs.query)
        return sql(qs), titles(qs)

    def branch(make):
        return plain(lambda: (sql(make(make_base())), titles(make(make_base()))))
    expected_a = branch(lambda qs: qs.filter(title='one'))
    expected_b = branch(lambda qs: qs.exclude(title='one'))
    expected_base = plain(changed_base)
    base = make_base()
    a = base.filter(title='one')
    b = base.exclude(title='one')
    if built_first:
        a.query  # noqa: B018
    change(base.query)
    assert (sql(a), titles(a)) == expected_a
    assert (sql(b), titles(b)) == expected_b
    assert (sql(base), titles(base)) == expected_base


@pytest.mark.parametrize('change', [
    lambda q: q.add_q(Q(title='two')),
    lambda q: q.clear_ordering(force=True),
    lambda q: q.set_limits(0, 1),
], ids=['add_q', 'clear_ordering', 'set_limits'])
def test_changing_a_branch_query_in_place_leaves_the_base_and_siblings(change, d):
    def make_base():
        return Category.objects.exclude(title='nope').order_by('-title')
    base = make_base()
    a = base.filter(pk__gte=d.c1.pk)
    b = base.filter(pk__gte=d.c1.pk)
    change(a.query)
    assert sql(b) == plain(lambda: sql(make_base().filter(pk__gte=d.c1.pk)))
    assert titles(b) == ['two', 'three', 'one']
    assert sql(base) == plain(lambda: sql(make_base()))
    assert titles(base) == ['two', 'three', 'one']
    assert titles(base.filter(title='one')) == ['one']


def test_filtering_an_inplace_base_leaves_earlier_branches(d):
    base = Category.objects.filter(pk__gte=d.c1.pk)
    a = base.order_by('-title')
    b = base.filter(title='one')
    base.inplace()
    assert base.filter(title='two') is base
    base.exclude(pk=d.c1.pk)
    assert titles(a) == ['two', 'three', 'one']
    assert titles(b) == ['one']
    assert titles(base) == ['two']


@pytest.mark.skipif(not hasattr(QuerySet, '_disable_cloning'),
                    reason="Django's own in-place mode came in Django 6.1")
def test_django_in_place_mode_changes_the_queryset_itself(d):
    """Django 6.1's _disable_cloning(), which its related managers use: "All subsequent
    QuerySet mutations will occur on this instance", as with inplace()."""
    def changed_in_place():
        qs = Post.objects.order_by('pk')._disable_cloning()
        same = (qs.filter(category=d.c1.pk) is qs, qs.exclude(title='b') is qs,
                qs.order_by('-pk') is qs)
        return same, titles(qs)
    assert plain(changed_in_place) == ((True, True, True), ['f', 'a'])
    assert changed_in_place() == ((True, True, True), ['f', 'a'])


def test_inplace_after_recorded_calls_keeps_them(d):
    qs = Post.objects.cache().filter(category=d.c1.pk).order_by('title').inplace()
    qs.filter(visible=True)
    assert titles(qs) == ['a', 'f']
    qs.exclude(title='a')
    assert titles(qs) == ['f']


def test_deepcopy_of_a_recorded_queryset(d):
    def make():
        return Post.objects.filter(category=d.c1.pk).exclude(title='b').order_by('-pk')[:5]
    expected = plain(lambda: sql(make()))
    original = make()
    copied = copy.deepcopy(original)
    assert sql(copied) == expected
    assert titles(copy.deepcopy(original)) == ['f', 'a']
    copied.query.add_q(Q(title='a'))
    assert titles(copied) == ['a']
    assert sql(original) == expected
    assert titles(original) == ['f', 'a']
    again = copy.deepcopy(original)  # of a built one
    original.query.clear_ordering(force=True)
    assert sql(again) == expected


def test_deepcopy_of_a_recorded_query(d):
    qs = Post.objects.filter(category=d.c2.pk).order_by('title')
    query = copy.deepcopy(qs.query)
    fresh = Post.objects.all()
    fresh.query = query
    assert titles(fresh) == ['c', 'd']


def test_pickling_a_recorded_queryset_evaluates_it(d):
    def make():
        return Post.objects.cache().filter(category=d.c1.pk).order_by('-pk')[:5]
    expected_sql = plain(lambda: sql(make()))
    warm(lambda: titles(make()))
    hit = make()
    data, n = queries(lambda: pickle.dumps(hit))
    assert n == 0
    loaded = pickle.loads(data)
    assert titles(loaded) == ['f', 'b', 'a']
    assert sql(loaded) == expected_sql
    data, n = queries(lambda: pickle.dumps(Post.objects.cache().filter(category=d.c2.pk)))
    assert n == 1
    missed = pickle.loads(data)
    assert sorted(titles(missed)) == ['c', 'd']
    assert sorted(titles(missed.filter(title='c'))) == ['c']


def test_pickling_the_query_of_a_recorded_queryset(d):
    query = pickle.loads(pickle.dumps(Post.objects.filter(visible=True).order_by('title')[1:3].query))
    qs = Post.objects.all()
    qs.query = query
    assert titles(qs) == ['c', 'd']


def test_assigning_a_query_replaces_the_recorded_calls(d):
    qs = All.objects.filter(tag=1).order_by('pk')
    qs.query = All.objects.filter(tag=2).query
    assert not is_recorded(qs)
    assert [o.title for o in qs] == ['1.0']
    qs = Post.objects.filter(title='a')
    qs.query = Post.objects.filter(visible=False).order_by('title').values('title').query
    assert list(qs) == [{'title': 'b'}, {'title': 'e'}]


# 4. A hit builds nothing; different chains don't share a cache entry

def test_calls_are_recorded(d):
    qs = Post.objects.filter(category=d.c1.pk)
    assert is_recorded(qs)
    assert is_recorded(qs.order_by('-id'))
    assert is_recorded(qs.order_by('-id')[:5])
    assert is_recorded(qs)


@batches(RECORDED)
def test_recorded_chain_is_pending(batch, d):
    for chain in batch:
        assert is_recorded(chain.make(d)), chain.id
        assert is_recorded(cached(chain.make(d))), chain.id


@pytest.mark.parametrize('chain', BUILT, ids=[c.id for c in BUILT])
def test_other_calls_build_the_query(chain, d):
    assert not pending(chain.make(d))


def test_reading_the_query_builds_it(d):
    qs = Post.objects.filter(category=d.c1.pk).order_by('-pk')
    qs.query  # noqa: B018
    assert not pending(qs)
    assert not pending(qs.filter(visible=True))  # the query was read: Django's way from now on
    assert titles(qs.filter(visible=True)) == ['f', 'a']


@pytest.mark.parametrize('touch', [
    lambda qs: qs.values('pk'), lambda qs: qs.select_related('category'),
    lambda qs: qs.annotate(n=Count('pk')), lambda qs: qs.distinct(), lambda qs: qs.defer('text'),
], ids=['values', 'select_related', 'annotate', 'distinct', 'defer'])
def test_calls_after_other_methods_are_built(touch, d):
    qs = touch(Post.objects.filter(visible=True))
    assert not pending(qs.filter(category=d.c1.pk))
    assert not pending(qs.exclude(category=d.c1.pk))
    assert not pending(qs.order_by('pk'))
    assert not pending(qs[:1])


def test_nothing_is_recorded_with_caching_off(d):
    assert not pending(plain(lambda: Post.objects.filter(category=d.c1.pk).order_by('pk')[:2]))
    assert not pending(NoProfile.objects.filter(title='a'))
    assert not pending(Post.objects.nocache().filter(title='a'))


HIT_OPS = {
    'list': rows,
    'count': lambda qs: qs.count(),
    'exists': lambda qs: qs.exists(),
    'aggregate': lambda qs: qs.aggregate(n=Count('pk'), top=Max('pk')),
}


@pytest.mark.parametrize('op_name', HIT_OPS)
@batches(RECORDED)
def test_a_hit_builds_nothing(batch, op_name, d, _redis):
    for chain in batch:
        op = RANDOM_OPS['list'] if chain.random and op_name == 'list' else HIT_OPS[op_name]
        _redis.flushdb()  # each chain's first call a miss
        expected, expected_queries = plain(lambda: queries(lambda: op(chain.make(d))))
        miss = cached(chain.make(d))
        assert queries(lambda: op(miss)) == (expected, expected_queries), chain.id
        hit = cached(chain.make(d))
        assert queries(lambda: op(hit)) == (expected, 0), chain.id
        assert is_recorded(hit), chain.id
        assert sql(hit) == plain(lambda: sql(chain.make(d))), chain.id  # built when asked for
        assert not pending(hit), chain.id


def test_the_spec_example_is_a_hit_without_building(d):
    def make():
        return Post.objects.cache().filter(category=d.c1.pk).order_by('-id')[:5]
    first = make()
    assert titles(first) == ['f', 'b', 'a']
    second = make()
    result, n = queries(lambda: titles(second))
    assert (result, n) == (['f', 'b', 'a'], 0)
    assert is_recorded(second)
    for op in ('count', 'exists'):
        assert queries(getattr(make(), op))[1] == 1
        qs = make()
        assert queries(getattr(qs, op)) == (3 if op == 'count' else True, 0)
        assert is_recorded(qs)
    assert queries(lambda: make().aggregate(Sum('pk')))[1] == 1
    qs = make()
    assert queries(lambda: qs.aggregate(Sum('pk'))) == ({'pk__sum': d.pa.pk + d.pb.pk + d.pf.pk}, 0)
    assert is_recorded(qs)


DISTINCT = {
    'values': [lambda d: All.objects.filter(tag=1), lambda d: All.objects.filter(tag=2),
               lambda d: All.objects.filter(tag=3), lambda d: All.objects.filter(tag=-1)],
    # equal as Python values, different strings for a CharField
    'equal values of other types': [
        lambda d: All.objects.filter(title=1), lambda d: All.objects.filter(title=True),
        lambda d: All.objects.filter(title=1.0), lambda d: All.objects.filter(title=Decimal('1.00'))],
    'string case and spaces': [lambda d: Post.objects.cache().filter(title='a'),
                               lambda d: Post.objects.cache().filter(title='A'),
                               lambda d: Post.objects.cache().filter(title='a ')],
    'filter or exclude': [lambda d: All.objects.filter(tag=1), lambda d: All.objects.exclude(tag=1)],
    'lookups': [lambda d: All.objects.filter(tag=1), lambda d: All.objects.filter(tag__in=[1]),
                lambda d: All.objects.filter(tag__gt=1), lambda d: All.objects.filter(tag__gte=1),
                lambda d: All.objects.filter(tag__lt=1), lambda d: All.objects.filter(tag__lte=1)],
    'in lists': [lambda d: All.objects.filter(tag__in=[1, 2]),
                 lambda d: All.objects.filter(tag__in=[1, 2, 3]),
                 lambda d: All.objects.filter(tag__in=[2, 1]),
                 lambda d: All.objects.filter(pk__in=long_range(d)),
                 lambda d: All.objects.filter(pk__in=long_range(d)[1:])],
    'None or not': [lambda d: Task.objects.cache().filter(category=None),
                    lambda d: Task.objects.cache().filter(category__isnull=False),
                    lambda d: Task.objects.cache().exclude(category=None)],
    'fields': [lambda d: All.objects.filter(tag=d.c1.pk), lambda d: All.objects.filter(pk=d.c1.pk),
               lambda d: All.objects.filter(category=d.c1.pk)],
    'order': [lambda d: All.objects.order_by('tag', 'pk'), lambda d: All.objects.order_by('-tag', 'pk'),
              lambda d: All.objects.order_by('title', 'pk'), lambda d: All.objects.order_by('pk'),
              lambda d: All.objects.order_by('pk', 'tag')],
    'slices': [lambda d: All.objects.order_by('pk')[:2], lambda d: All.objects.order_by('pk')[1:3],
               lambda d: All.objects.order_by('pk')[2:], lambda d: All.objects.order_by('pk')[:3],
               lambda d: All.objects.order_by('pk')[1:]],
    'm2m joins': [lambda d: Gadget.objects.cache().filter(tags=d.red.pk).filter(tags=d.green.pk),
                  lambda d: Gadget.objects.cache().filter(tags=d.red.pk, tags__in=[d.green.pk]),
                  lambda d: Gadget.objects.cache().filter(tags=d.green.pk).filter(tags=d.blue.pk)],
    'models': [lambda d: Post.objects.cache().filter(pk=d.pa.pk),
               lambda d: ProxyPost.objects.cache().filter(pk=d.pa.pk),
               lambda d: Category.objects.cache().filter(pk=d.pa.pk)],
    'more calls': [lambda d: All.objects.filter(tag=1), lambda d: All.objects.filter(tag=1).order_by('pk'),
                   lambda d: All.objects.filter(tag=1).order_by('pk')[:5]],
}


@pytest.mark.parametrize('makers', DISTINCT.values(), ids=DISTINCT.keys())
def test_different_chains_have_their_own_entries(makers, d):
    expected = [plain(lambda: rows(make(d))) for make in makers]
    for make, result in zip(makers, expected):
        assert queries(lambda: rows(make(d))) == (result, 1)
    for make, result in zip(makers, expected):
        assert queries(lambda: rows(make(d))) == (result, 0)


def test_calls_recorded_on_a_changed_base_have_their_own_entry(d):
    base = Category.objects.cache().order_by('title')
    assert warm(lambda: titles(base.filter(pk__gte=d.c1.pk))) == ['one', 'three', 'two']
    base.query.add_q(Q(title='two'))
    assert queries(lambda: titles(base.all().filter(pk__gte=d.c1.pk))) == (['two'], 1)
    assert queries(lambda: titles(base.all().filter(pk__gte=d.c1.pk))) == (['two'], 0)


def test_values_read_in_the_time_zone_setting_have_an_entry_per_zone(d):
    """An aware datetime for a DateField is a day in TIME_ZONE; a naive one for a
    DateTimeField is a time there."""
    def day_of_late():
        return [a.label for a in Assorted.objects.cache().filter(date=LATE)]

    def naive_noon():
        return [a.label for a in Assorted.objects.cache().filter(datetime=NOON.replace(tzinfo=None))]
    assert warm(day_of_late) == ['y'] == plain(day_of_late)  # Chicago: the day before
    assert warm(naive_noon) == [] == plain(naive_noon)
    with override_settings(TIME_ZONE='UTC'):
        assert queries(day_of_late) == (['x'], 1)
        assert queries(naive_noon) == (['x'], 1)
        assert queries(day_of_late) == (['x'], 0)
    assert queries(day_of_late) == (['y'], 0)


def test_the_same_value_for_the_same_sql_gives_the_same_result(d):
    """1, True and '1' make one query of an integer field: whether or not they share an entry,
    each gets the rows with tag 1."""
    for value in (1, True, '1', 1, True, '1'):
        assert sorted(o.title for o in All.objects.filter(tag=value)) == ['True', 'x']


# 5. Invalidation

def posts_of(cat):
    return Post.objects.cache().filter(category=cat.pk).order_by('-pk')[:5]


def posts_count(cat):
    return Post.objects.cache().filter(category_id=cat.pk).exclude(visible=False).count()


def test_create_invalidates_the_matching_chain_only(d):
    assert warm(lambda: titles(posts_of(d.c1))) == ['f', 'b', 'a']
    assert warm(lambda: posts_count(d.c1)) == 2
    assert warm(lambda: titles(posts_of(d.c2))) == ['d', 'c']
    Post.objects.create(title='new', category=d.c1)
    assert queries(lambda: titles(posts_of(d.c2))) == (['d', 'c'], 0)
    assert queries(lambda: titles(posts_of(d.c1))) == (['new', 'f', 'b', 'a'], 1)
    assert queries(lambda: posts_count(d.c1)) == (3, 1)


def test_save_invalidates_the_chains_of_the_old_and_new_values(d):
    for cat in (d.c1, d.c2, d.c3):
        warm(lambda: titles(posts_of(cat)))
        warm(lambda: posts_count(cat))
    d.pc.category = d.c1
    d.pc.save()
    assert queries(lambda: titles(posts_of(d.c3))) == (['e'], 0)
    assert queries(lambda: posts_count(d.c3)) == (0, 0)
    assert queries(lambda: titles(posts_of(d.c1))) == (['f', 'c', 'b', 'a'], 1)
    assert queries(lambda: titles(posts_of(d.c2))) == (['d'], 1)
    assert queries(lambda: posts_count(d.c1)) == (3, 1)
    assert queries(lambda: posts_count(d.c2)) == (1, 1)


def test_save_of_a_row_that_cannot_match_keeps_the_chain(d):
    warm(lambda: titles(posts_of(d.c1)))
    d.pe.title = 'ee'
    d.pe.save()
    assert queries(lambda: titles(posts_of(d.c1))) == (['f', 'b', 'a'], 0)
    d.pb.title = 'bb'
    d.pb.save()
    assert queries(lambda: titles(posts_of(d.c1))) == (['f', 'bb', 'a'], 1)


def test_delete_invalidates_the_matching_chain_only(d):
    warm(lambda: titles(posts_of(d.c1)))
    warm(lambda: posts_count(d.c1))
    warm(lambda: titles(posts_of(d.c3)))
    d.pd.delete()
    assert queries(lambda: titles(posts_of(d.c1))) == (['f', 'b', 'a'], 0)
    d.pf.delete()
    assert queries(lambda: titles(posts_of(d.c1))) == (['b', 'a'], 1)
    assert queries(lambda: posts_count(d.c1)) == (1, 1)
    assert queries(lambda: titles(posts_of(d.c3))) == (['e'], 0)


@pytest.mark.parametrize('make, write, matches', [
    (lambda d: Post.objects.cache().filter(category__in=[d.c1.pk, d.c2.pk]).order_by('pk'),
     lambda d: Post.objects.create(title='n', category=d.c2), True),
    (lambda d: Post.objects.cache().filter(category__in=[d.c1.pk, d.c2.pk]).order_by('pk'),
     lambda d: Post.objects.create(title='n', category=d.c3), False),
    (lambda d: Task.objects.cache().filter(category__isnull=True).order_by('pk'),
     lambda d: Task.objects.create(title='n', category=None), True),
    (lambda d: Task.objects.cache().filter(category=None).order_by('pk'),
     lambda d: Task.objects.create(title='n', category=d.c1), False),
    (lambda d: Post.objects.cache().filter(pk=d.pa.pk),
     lambda d: Post.objects.filter(pk=d.pa.pk).get().save(), True),
    (lambda d: Post.objects.cache().filter(pk=d.pa.pk),
     lambda d: Post.objects.filter(pk=d.pb.pk).get().save(), False),
    (lambda d: Post.objects.cache().exclude(category=d.c1.pk).order_by('pk'),
     lambda d: Post.objects.create(title='n', category=d.c2), True),
    (lambda d: Post.objects.cache().filter(pk__gt=d.pb.pk).order_by('pk'),
     lambda d: Post.objects.create(title='n', category=d.c3), True),
    (lambda d: All.objects.filter(tag__gte=2).order_by('-tag'),
     lambda d: All.objects.create(tag=5), True),
    (lambda d: All.objects.filter(pk__in=long_range(d)).order_by('pk'),
     lambda d: All.objects.filter(pk=d.all[1].pk).get().save(), True),
    (lambda d: Assorted.objects.cache().filter(uuid=U1),
     lambda d: Assorted.objects.create(uuid=U1), True),
    (lambda d: Assorted.objects.cache().filter(uuid=U1),
     lambda d: Assorted.objects.create(uuid=U2), False),
    (lambda d: Shift.objects.cache().filter(length=datetime.timedelta(hours=8)),
     lambda d: Shift.objects.create(length=datetime.timedelta(hours=8)), True),
    (lambda d: Gadget.objects.cache().filter(tags=d.red.pk).order_by('pk'),
     lambda d: d.g4.tags.add(d.red), True),
    (lambda d: Gadget.objects.cache().filter(tags=d.red.pk).order_by('pk'),
     lambda d: d.g2.tags.remove(d.red), True),
    (lambda d: Brand.objects.cache().filter(labels__in=[d.l1.pk]).order_by('pk'),
     lambda d: d.l1.brands.add(d.b3), True),
    (lambda d: Product.objects.cache().filter(tags=d.blue.pk).order_by('pk'),
     lambda d: ProductTag.objects.create(product=d.pr1, tag=d.blue), True),
], ids=['in, matching', 'in, not matching', 'isnull, matching', 'None, not matching',
        'pk, matching', 'pk, not matching', 'exclude', 'gt', 'gte, ops all', 'long in list',
        'uuid, matching', 'uuid, not matching', 'duration', 'm2m add', 'm2m remove',
        'm2m reverse add', 'm2m through'])
def test_writes_invalidate_recorded_chains(make, write, matches, d):
    before = warm(lambda: rows(make(d)))
    write(d)
    after = plain(lambda: rows(make(d)))
    result, n = queries(lambda: rows(make(d)))
    assert result == after
    if matches:
        assert n == 1
    else:
        assert (n, after) == (0, before)


def test_reads_in_a_transaction_that_wrote_see_the_write(d):
    warm(lambda: titles(posts_of(d.c1)))
    with transaction.atomic():
        Post.objects.create(title='new', category=d.c1)
        assert titles(posts_of(d.c1)) == ['new', 'f', 'b', 'a']
    assert queries(lambda: titles(posts_of(d.c1))) == (['new', 'f', 'b', 'a'], 1)


def test_invalidated_update_after_recorded_filters(d):
    warm(lambda: titles(posts_of(d.c1)))
    warm(lambda: titles(posts_of(d.c2)))
    assert Post.objects.filter(category=d.c1.pk).exclude(visible=False).invalidated_update(title='z') == 2
    assert queries(lambda: titles(posts_of(d.c1))) == (['z', 'b', 'z'], 1)
    assert queries(lambda: titles(posts_of(d.c2))) == (['d', 'c'], 0)


# 6. The rest of the queryset API on top of recorded calls

def test_cache_with_ops_and_timeout(d, _redis):
    def make():
        return Post.objects.cache(ops=['count'], timeout=30).filter(category=d.c1.pk).order_by('pk')
    assert warm(lambda: make().count()) == 3
    for _ in range(2):
        assert queries(lambda: titles(make())) == (['a', 'b', 'f'], 1)  # fetch isn't cached
    # the cache keys (conj keys and stamps live past them)
    ttls = [_redis.ttl(k) for k in redis_keys('*q:*', _redis) if _redis.type(k) == b'string']
    assert ttls and all(0 < ttl <= 30 for ttl in ttls if ttl != -1), ttls
    assert any(0 < ttl <= 30 for ttl in ttls), ttls


def test_nocache_is_never_cached(d):
    for make in (lambda: Post.objects.nocache().filter(category=d.c1.pk).order_by('pk'),
                 lambda: Post.objects.filter(category=d.c1.pk).order_by('pk').nocache(),
                 lambda: All.objects.filter(tag=1).order_by('pk').nocache()):
        for _ in range(2):
            result, n = queries(lambda: rows(make()))
            assert n == 1
            assert result == plain(lambda: rows(make()))
            assert queries(lambda: make().count())[1] == 1


def test_using_default(d):
    assert warm(lambda: titles(Post.objects.cache().using('default').filter(category=d.c2.pk)
                               .order_by('pk'))) == ['c', 'd']
    assert warm(lambda: titles(Post.objects.cache().filter(category=d.c2.pk).using('default')
                               .order_by('-pk'))) == ['d', 'c']


@pytest.mark.django_db(databases=['default', 'slave'])
def test_db_bound_chains_are_cached_per_database():
    DbAgnostic.objects.create(title='a')
    DbAgnostic.objects.using('slave').create(title='a')
    DbAgnostic.objects.using('slave').create(title='a')
    def on_default():
        return DbAgnostic.objects.cache().filter(title='a').count()

    def on_slave():
        return DbAgnostic.objects.cache().filter(title='a').using('slave').count()
    assert warm(on_default) == 1
    assert queries(on_slave, using='slave') == (2, 1)
    assert queries(on_slave, using='slave') == (2, 0)
    assert queries(lambda: DbAgnostic.objects.cache().using('slave').filter(title='a').count(),
                   using='slave') == (2, 0)
    assert queries(on_default) == (1, 0)


def test_related_managers(d):
    assert warm(lambda: titles(d.c1.posts.cache().filter(visible=True).order_by('-pk'))) == ['f', 'a']
    assert warm(lambda: [t.name for t in d.g1.tags.cache().exclude(name='red')]) == ['green']
    Post.objects.create(title='new', category=d.c1)
    assert queries(lambda: titles(d.c1.posts.cache().filter(visible=True).order_by('-pk'))) \
        == (['new', 'f', 'a'], 1)


def test_prefetch_with_a_recorded_queryset(d):
    def prefetched():
        cats = Category.objects.cache().order_by('pk').prefetch_related(
            Prefetch('posts', queryset=Post.objects.cache().filter(visible=True).order_by('-pk')),
            Prefetch('gadgets', queryset=Gadget.objects.cache().exclude(stock=0), to_attr='stocked'),
            Prefetch('posts', queryset=Post.objects.cache().order_by('-title')[:1], to_attr='last'))
        return [(c.title, titles(c.posts.all()), titles(c.stocked), titles(c.last)) for c in cats]
    expected = plain(prefetched)
    assert expected[0] == ('one', ['f', 'a'], ['g1'], ['f'])
    for _ in range(2):
        assert prefetched() == expected


def test_union_and_operators(d):
    def union():
        return rows(Post.objects.cache().filter(category=d.c1.pk).union(
            Post.objects.cache().filter(visible=False)).order_by('-pk'))

    def either():
        return rows((Post.objects.cache().filter(category=d.c2.pk) |
                     Post.objects.cache().filter(title='a')).order_by('pk'))

    def both():
        return rows((Post.objects.cache().filter(category=d.c1.pk) &
                     Post.objects.cache().exclude(title='a')).order_by('pk'))
    for func in (union, either, both):
        assert warm(func) == plain(func)


def test_subqueries_of_recorded_querysets(d):
    inner = Post.objects.filter(visible=False)
    outer = Category.objects.cache().filter(pk__in=inner.values('category')).order_by('pk')
    assert titles(outer) == ['one', 'three']
    inner = Post.objects.filter(category=d.c2.pk)
    assert titles(Post.objects.cache().filter(pk__in=inner).order_by('pk')) == ['c', 'd']
    assert titles(Post.objects.cache().exclude(pk__in=inner).order_by('pk')) == ['a', 'b', 'e', 'f']
    # the inner queryset is still usable, and its own
    assert titles(inner.order_by('-pk')) == ['d', 'c']


def test_update_after_recorded_filters(d):
    qs = Post.objects.filter(category=d.c1.pk).exclude(visible=False)
    assert qs.update(text='upd') == 2
    assert sorted(Post.objects.nocache().filter(text='upd').values_list('title', flat=True)) == ['a', 'f']
    assert All.objects.filter(tag__in=[1, 2]).filter(category=None).update(title='u') == 2
    assert sorted(All.objects.nocache().filter(title='u').values_list('tag', flat=True)) == [1, 2]


def test_delete_after_recorded_filters(d):
    warm(lambda: titles(posts_of(d.c1)))
    deleted, by_model = Post.objects.filter(category=d.c1.pk).filter(visible=True).delete()
    assert (deleted, by_model['tests.Post']) == (2, 2)
    assert sorted(Post.objects.nocache().values_list('title', flat=True)) == ['b', 'c', 'd', 'e']
    assert queries(lambda: titles(posts_of(d.c1))) == (['b'], 1)
    _, by_model = Gadget.objects.filter(tags=d.green.pk).delete()
    assert by_model['tests.Gadget'] == 2
    assert sorted(Gadget.objects.nocache().values_list('title', flat=True)) == ['g2', 'g4']


def test_paginator_pages(d):
    def pages():
        paginator = Paginator(Post.objects.cache().exclude(title='e').order_by('title'), 2)
        return (paginator.count, paginator.num_pages,
                [titles(paginator.page(n)) for n in paginator.page_range])
    expected = plain(pages)
    assert expected == (5, 3, [['a', 'b'], ['c', 'd'], ['f']])
    assert warm(pages) == expected


def test_in_bulk(d):
    def bulk():
        found = Post.objects.cache().filter(category__in=[d.c1.pk, d.c2.pk]).exclude(title='b').in_bulk()
        return sorted((pk, p.title) for pk, p in found.items())

    def bulk_of(ids):
        return lambda: sorted(Post.objects.cache().filter(visible=True).in_bulk(ids))
    assert warm(bulk) == plain(bulk)
    assert warm(bulk_of([d.pa.pk, d.pb.pk, d.pc.pk])) == [d.pa.pk, d.pc.pk]


def test_turning_caching_off_before_a_recorded_queryset_runs(d):
    qs = All.objects.filter(tag=1).order_by('pk')
    other = All.objects.filter(tag=1).order_by('pk')
    warm(lambda: rows(All.objects.filter(tag=1).order_by('pk')))
    with override_settings(CACHEOPS_ENABLED=False):
        assert queries(lambda: [o.title for o in qs]) == (['True', 'x'], 1)
        assert queries(other.count) == (2, 1)


@pytest.mark.skipif(not hasattr(models, 'FETCH_PEERS'), reason='fetch modes came in Django 6.1')
@pytest.mark.parametrize('make', [
    lambda d: Post.objects.fetch_mode(models.FETCH_PEERS).filter(category__in=[d.c1.pk, d.c2.pk])
    .order_by('pk'),
    lambda d: Post.objects.filter(category__in=[d.c1.pk, d.c2.pk]).fetch_mode(models.FETCH_PEERS)
    .order_by('pk')[:10],
    lambda d: Post.objects.cache().fetch_mode(models.FETCH_PEERS).exclude(category=d.c3.pk)
    .order_by('pk'),
], ids=['before the calls', 'between them', 'cached, on a miss'])
def test_fetch_mode_survives_recorded_calls(make, d):
    """FETCH_PEERS: the first post's category is fetched with all its peers', in one query.
    (Hits: tests/test_lazy_chain_edges.py.)"""
    def categories():
        posts = list(make(d))
        return queries(lambda: [p.category.title for p in posts])
    expected = plain(categories)
    assert expected == (['one', 'one', 'two', 'two', 'one'], 1)
    assert categories() == expected


# 7. QuerySet subclasses overriding the chaining methods

class TitleAliasQuerySet(QuerySet):
    """Lets callers write name for Category.title: renames lookups in _filter_or_exclude."""

    def _filter_or_exclude(self, negate, args, kwargs):
        kwargs = {re.sub(r'^name(?=__|$)', 'title', k): v for k, v in kwargs.items()}
        return super()._filter_or_exclude(negate, args, kwargs)


def test_subclass_renaming_lookups_keeps_working(d):
    assert titles(TitleAliasQuerySet(Category).filter(name='one')) == ['one']
    qs = TitleAliasQuerySet(Category).exclude(name__in=['one']).order_by('-title')
    assert not pending(qs)
    assert titles(qs) == ['two', 'three']
    aliased = manager_of(Category, TitleAliasQuerySet)
    assert not pending(aliased.filter(name='two'))
    assert warm(lambda: titles(aliased.cache().filter(name__gt='one').order_by('title'))) \
        == ['three', 'two']
    assert warm(lambda: aliased.cache().filter(name='one').count()) == 1


OVERRIDABLE = ['__init__', '_clone', '_chain', 'filter', 'exclude', '_filter_or_exclude',
               '_filter_or_exclude_inplace', 'order_by', '__getitem__', 'query']


def counting_subclass(name):
    """A QuerySet subclass whose `name` does what QuerySet's does, noting each call."""
    calls = []
    if name == 'query':
        original = QuerySet.query

        def get(self):
            calls.append(name)
            return original.fget(self)
        attrs = {'query': property(get, original.fset)}
    else:
        def method(self, *args, **kwargs):
            calls.append(name)
            return getattr(super(cls, self), name)(*args, **kwargs)
        attrs = {name: method}
    cls = type('Overriding' + name.strip('_').title(), (QuerySet,), attrs)
    return cls, calls


@pytest.mark.parametrize('name', OVERRIDABLE)
def test_subclass_overriding_a_chaining_method_is_not_recorded(name, d):
    cls, calls = counting_subclass(name)

    def make(queryset_class):
        return (queryset_class(Post).filter(category__in=[d.c1.pk, d.c2.pk]).exclude(title='b')
                .order_by('-pk')[:3])
    qs = make(cls)
    assert not pending(qs)
    assert calls
    for partial in (cls(Post).filter(title='a'), cls(Post).order_by('pk'), cls(Post)[:2],
                    manager_of(Post, cls).filter(title='a')):
        assert not pending(partial)
    assert sql(qs) == plain(lambda: sql(make(QuerySet)))
    assert warm(lambda: titles(make(cls).cache())) == ['f', 'd', 'c']


def test_subclass_overriding_nothing_is_recorded(d):
    qs = PlainQuerySet(Post).filter(category=d.c1.pk).order_by('-pk')[:2]
    assert is_recorded(qs)
    assert is_recorded(plain_posts.filter(title='a'))
    assert is_recorded(helper_posts.visible())
    assert warm(lambda: titles(plain_posts.cache().filter(category=d.c1.pk).order_by('-pk')[:2])) \
        == ['f', 'b']
