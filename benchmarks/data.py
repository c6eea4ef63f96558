"""The rows the benchmark reads and writes (tools/bench_app), and the 20-row page query."""
import dataclasses

from .config import LIST_ROWS


@dataclasses.dataclass
class Data:
    items: int
    categories: int
    tags: int
    links: int
    hot_pk: int        # the item the hit rows read
    hot_category: int  # its category
    hot_tag: int       # one of its tags


def create_data(n_items):
    import random
    import uuid
    from datetime import datetime, timedelta, timezone
    from decimal import Decimal

    from django.db import connection
    from django.test.utils import override_settings

    from tools.bench_app.models import Category, Item, Tag

    rng = random.Random(1)
    n_categories, n_tags = max(n_items // 200, 5), 100
    words = 'solid light quick dark blue round tall smart fresh plain'.split()
    start = datetime(2024, 1, 1, tzinfo=timezone.utc)
    with override_settings(CACHEOPS_ENABLED=False):  # no invalidation while loading
        Category.objects.bulk_create(Category(id=c, name=f'Category {c}', slug=f'category-{c}')
                                     for c in range(1, n_categories + 1))
        Tag.objects.bulk_create(Tag(id=t, name=f'tag{t}') for t in range(1, n_tags + 1))
        Item.objects.bulk_create((
            Item(id=i, category_id=i % n_categories + 1,
                 title=f'{" ".join(rng.sample(words, 4)).capitalize()} item number {i}', slug=f'item-{i}',
                 price=Decimal(rng.randrange(100, 100_000)) / 100, stock=rng.randrange(1000),
                 rating=round(rng.uniform(0, 5), 2), is_active=rng.random() < 0.9,
                 created=start + timedelta(minutes=7 * i + rng.randrange(5)),
                 code=uuid.UUID(int=rng.getrandbits(128)))
            for i in range(1, n_items + 1)), batch_size=1000)
        through = Item.tags.through
        links = [through(item_id=i, tag_id=t) for i in range(1, n_items + 1)
                 for t in {i % n_tags + 1, (7 * i + 3) % n_tags + 1}]
        through.objects.bulk_create(links, batch_size=5000)
        with connection.cursor() as cursor:  # fresh statistics, and no autovacuum in the middle of a run
            cursor.execute('ANALYZE' if connection.vendor == 'sqlite' else 'VACUUM ANALYZE')
        hot = Item.objects.filter(is_active=True, id__gte=n_items // 2).order_by('id').first()
        hot_tag = hot.tags.order_by('id').first().id
    return Data(n_items, n_categories, n_tags, len(links), hot.pk, hot.category_id, hot_tag)


def page(category, offset=0):
    """A 20-row page of a category's newest active items."""
    from tools.bench_app.models import Item
    return Item.objects.filter(category_id=category, is_active=True).order_by('-created')[offset:offset + LIST_ROWS]
