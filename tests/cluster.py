"""What the tests need to know of a Redis Cluster run (CACHEOPS_TEST_CLUSTER): whether it
is one, skipping what only one Redis has, and reading keys on every primary."""
import os

import pytest

ON_CLUSTER = bool(os.environ.get('CACHEOPS_TEST_CLUSTER'))


def single_redis(why):
    """Skip a test (or a module, as pytestmark) on a cluster run, saying why it needs one Redis."""
    return pytest.mark.skipif(ON_CLUSTER, reason='needs one Redis, not a cluster: ' + why)


def cluster_only(why):
    """Skip a test on one Redis, saying why it needs a cluster."""
    return pytest.mark.skipif(not ON_CLUSTER, reason='a Redis Cluster only: ' + why)


def redis_keys(pattern='*', client=None):
    """The keys matching pattern, as KEYS gives them on one Redis, from every primary of a
    cluster (KEYS asks one node there): SCAN, without the repeats it may give."""
    if client is None:
        from cacheops.redis import redis_client as client
    return list(dict.fromkeys(client.scan_iter(match=pattern, count=1000)))


def client_class():
    """The class of the client cacheops makes for the run, whose methods a test may hook."""
    if ON_CLUSTER:
        from redis.cluster import RedisCluster
        return RedisCluster
    import redis
    return redis.Redis


def own_client():
    """A client of the run's Redis (or cluster) of the test's own, outside cacheops."""
    from django.conf import settings
    if ON_CLUSTER:
        from redis.cluster import ClusterNode, RedisCluster
        return RedisCluster(startup_nodes=[ClusterNode(host, port) for host, port
                                           in settings.CACHEOPS_CLUSTER['startup_nodes']])
    import redis
    return redis.Redis.from_url(settings.CACHEOPS_REDIS)


def with_client_options(**options):
    """Settings giving the run's Redis (or cluster) with these client options, for override_settings."""
    from django.conf import settings
    if ON_CLUSTER:
        return {'CACHEOPS_CLUSTER': {**settings.CACHEOPS_CLUSTER, **options}}
    url = settings.CACHEOPS_REDIS
    return {'CACHEOPS_REDIS': url + ('&' if '?' in url else '?')
            + '&'.join('%s=%s' % item for item in options.items())}
