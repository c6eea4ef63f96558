"""Redis Cluster connection settings: CACHEOPS_CLUSTER, or CACHEOPS_REDIS (a URL or a
dict) with CACHEOPS_CLIENT_CLASS = 'redis.cluster.RedisCluster', each reaching a real
cluster; the client rebuilt when they change. With redis-py 4.0, which has no cluster
client, each way is refused by name. The bad combinations are in test_config_errors.py.

The cluster is the run's (CACHEOPS_TEST_CLUSTER) or, for the other runs, one of 3
primaries started for this module.
"""
import os
from importlib.util import find_spec

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings

import cacheops.redis
from cacheops.apps import check_settings
from cacheops.conf import is_cluster
from tools.redis_server import cluster_for_run
from .settings import cluster_nodes

HAS_CLUSTER = find_spec('redis.cluster') is not None  # redis-py 4.1 and newer
WAYS = ['CACHEOPS_CLUSTER', 'url', 'dict']


@pytest.fixture(scope='module')
def nodes():
    if os.environ.get('CACHEOPS_TEST_CLUSTER'):
        yield cluster_nodes(os.environ['CACHEOPS_TEST_CLUSTER'])
    elif not HAS_CLUSTER:
        yield [('127.0.0.1', 7000)]  # refused before any connection
    else:
        with cluster_for_run(primaries=3, replicas=0) as spec:
            yield cluster_nodes(spec)


def settings_for(way, nodes, **options):
    """The settings of one way to give the cluster; options go to RedisCluster."""
    host, port = nodes[0]
    by_class = {'CACHEOPS_CLUSTER': {}, 'CACHEOPS_CLIENT_CLASS': 'redis.cluster.RedisCluster'}
    if way == 'CACHEOPS_CLUSTER':
        return {'CACHEOPS_REDIS': {}, 'CACHEOPS_CLUSTER': {'startup_nodes': nodes, **options}}
    if way == 'url':
        query = '&'.join(f'{k}={v}' for k, v in options.items())
        return {**by_class, 'CACHEOPS_REDIS': f'redis://{host}:{port}' + (f'?{query}' if query else '')}
    return {**by_class, 'CACHEOPS_REDIS': {'host': host, 'port': port, **options}}


@pytest.mark.parametrize('way', WAYS)
def test_each_way_reaches_the_cluster(way, nodes):
    with override_settings(**settings_for(way, nodes)):
        if not HAS_CLUSTER:
            with pytest.raises(ImproperlyConfigured, match='4.1'):
                cacheops.redis.make_client()
            return
        assert check_settings() == []
        assert is_cluster()
        client = cacheops.redis.get_client()
        assert {(node.host, node.port) for node in client.get_nodes()} == set(nodes)
        keys = [f'cluster-connection:{i}' for i in range(30)]  # spread over the slots
        try:
            for n, key in enumerate(keys):
                client.set(key, n)
            assert [int(client.get(key)) for key in keys] == list(range(30))
        finally:
            client.delete(*keys)


@pytest.mark.parametrize('way', WAYS)
def test_the_cluster_clients_options_are_passed_on(way, nodes):
    if not HAS_CLUSTER:
        return test_each_way_reaches_the_cluster(way, nodes)  # refused as there
    with override_settings(**settings_for(way, nodes, client_name='cacheops-test')):
        assert cacheops.redis.get_client().client_getname() == 'cacheops-test'


def test_startup_nodes_may_be_redis_pys_cluster_nodes(nodes):
    if not HAS_CLUSTER:
        return test_each_way_reaches_the_cluster('CACHEOPS_CLUSTER', nodes)
    from redis.cluster import ClusterNode
    conf = {'startup_nodes': [ClusterNode(host, port) for host, port in nodes]}
    with override_settings(CACHEOPS_REDIS={}, CACHEOPS_CLUSTER=conf):
        assert check_settings() == []
        assert {(node.host, node.port) for node in cacheops.redis.get_client().get_nodes()} == set(nodes)


def test_the_client_follows_cacheops_cluster(nodes):
    """A change of CACHEOPS_CLUSTER alone (CACHEOPS_REDIS set aside before) rebuilds the client."""
    if not HAS_CLUSTER:
        return test_each_way_reaches_the_cluster('CACHEOPS_CLUSTER', nodes)
    with override_settings(CACHEOPS_REDIS={}, CACHEOPS_CLUSTER={}):
        plain = cacheops.redis.get_client()
        assert not hasattr(plain, 'get_nodes') and not is_cluster()
        with override_settings(CACHEOPS_CLUSTER={'startup_nodes': nodes}):
            cluster = cacheops.redis.get_client()
            assert hasattr(cluster, 'get_nodes') and is_cluster()
        assert cacheops.redis.get_client() is not cluster
        assert not is_cluster()
