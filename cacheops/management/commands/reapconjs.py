"""manage.py reapconjs [--chunk-size N] [--min-conj-set-size N]"""
import time
from argparse import ArgumentTypeError

from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError

from cacheops.invalidation import REDIS_FAILURES
from cacheops.reaper import reap_conjs

BAR_WIDTH = 30


def _int_at_least(minimum):
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise ArgumentTypeError('%r is not an integer' % text)
        if value < minimum:
            raise ArgumentTypeError('must be at least %d, got %d' % (minimum, value))
        return value
    return parse


class Command(BaseCommand):
    help = ('Remove references to expired cache keys from big conjunction sets '
            '(conj-set mode; insideout mode has none).')

    def add_arguments(self, parser):
        parser.add_argument('--chunk-size', type=_int_at_least(1), default=1000,
                            help='keys or members handled per Redis call (default: %(default)s)')
        parser.add_argument('--min-conj-set-size', type=_int_at_least(0), default=1000,
                            help='only check sets with at least this many members (default: %(default)s)')

    def handle(self, chunk_size, min_conj_set_size, verbosity, **options):
        show = verbosity >= 1 and self.stdout.isatty()
        self.started = time.monotonic()
        try:
            stats = reap_conjs(chunk_size=chunk_size, min_conj_set_size=min_conj_set_size,
                               progress=self._draw if show else None)
        except ImproperlyConfigured as e:
            raise CommandError(str(e))
        except REDIS_FAILURES as e:
            # what was removed stays removed: running it again goes on from there
            raise CommandError('Redis failed, conj sets reaped in part only: %s: %s'
                               % (type(e).__name__, e))
        finally:
            if show:
                self.stdout.write('')  # end the progress line
        if verbosity >= 1:
            self.stdout.write(summary(stats, min_conj_set_size, time.monotonic() - self.started))

    def _draw(self, stats):
        """Redraw the progress line: a count while scanning, then a bar over the members."""
        rate = _per_second(stats.members if stats.total else stats.conj_keys,
                           time.monotonic() - self.started)
        if not stats.total:
            line = 'Scanning: %d conj keys found, %d/s' % (stats.conj_keys, rate)
        else:
            done = min(stats.members, stats.total)
            filled = BAR_WIDTH * done // stats.total
            line = '[%s%s] %3d%% %d/%d members, %d removed from %d sets, %d/s' % (
                '#' * filled, '.' * (BAR_WIDTH - filled), 100 * done // stats.total,
                done, stats.total, stats.removed, stats.trimmed, rate)
        self.stdout.write('\r' + line.ljust(79), ending='')
        self.stdout.flush()


def _per_second(count, seconds):
    return count / seconds if seconds > 0 else 0


def summary(stats, min_conj_set_size, seconds):
    """The line reapconjs ends with."""
    return ('Found %d conj keys, checked %d sets of at least %d members: %d members checked, '
            '%d references to expired keys removed from %d sets, %d sets emptied; '
            '%d sets left by unfinished invalidations drained; in %.1f s.'
            % (stats.conj_keys, stats.sets, min_conj_set_size, stats.members,
               stats.removed, stats.trimmed, stats.emptied, stats.drained, seconds))
