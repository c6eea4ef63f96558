"""manage.py cleanfilecache [path]: remove expired file cache entries."""
from django.core.management.base import BaseCommand

from cacheops.simple import FileCache


class Command(BaseCommand):
    help = ('Remove expired entries from the file cache (run it from cron). '
            'The directory defaults to FILE_CACHE_DIR.')

    def add_arguments(self, parser):
        parser.add_argument('path', nargs='?', default=None,
                            help='the cache directory, if not FILE_CACHE_DIR')

    def handle(self, path=None, **options):
        cache = FileCache(path)
        removed = cache.clean()
        if options['verbosity'] > 0:
            self.stdout.write('Removed %d expired file(s) from %s' % (removed, cache.path))
