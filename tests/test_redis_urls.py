"""CACHEOPS_REDIS as a unix:// URL, a dict with unix_socket_path, a rediss:// (TLS) URL,
and with a password as a URL or a dict, each against a private redis-server of its own."""
import os
import subprocess
import tempfile

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from django.test import override_settings

import cacheops.redis
from tests.models import All
from tools.redis_server import free_port, private_redis
from .cluster import single_redis

pytestmark = [pytest.mark.django_db, single_redis(
    'the forms of a CACHEOPS_REDIS URL (db numbers, unix sockets, passwords, TLS) on servers '
    'of its own; a cluster run gives CACHEOPS_CLUSTER, which excludes CACHEOPS_REDIS')]


def _answers(**client_kwargs):
    client = redis.Redis(socket_timeout=1, retry=Retry(NoBackoff(), 0), **client_kwargs)

    def ready():
        try:
            return client.ping()
        except (redis.ConnectionError, redis.TimeoutError, OSError):
            return False
    return ready


@pytest.fixture
def unix_socket():
    with tempfile.TemporaryDirectory() as workdir:
        path = os.path.join(workdir, 'redis.sock')
        with private_redis('--port', '0', '--unixsocket', path,
                           ready=_answers(unix_socket_path=path)):
            yield path


@pytest.fixture
def tls_port():
    with tempfile.TemporaryDirectory() as workdir:
        cert, key = os.path.join(workdir, 'cert.pem'), os.path.join(workdir, 'key.pem')
        # a client connecting by IP checks it against the certificate's IP subjectAltName
        subprocess.run(['openssl', 'req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '1',
                        '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1',
                        '-keyout', key, '-out', cert], check=True, capture_output=True)
        port = free_port()
        with private_redis('--port', '0', '--tls-port', str(port), '--tls-cert-file', cert,
                           '--tls-key-file', key, '--tls-ca-cert-file', cert, '--tls-auth-clients', 'no',
                           ready=_answers(host='127.0.0.1', port=port, ssl=True, ssl_ca_certs=cert)):
            yield port, cert


@pytest.fixture
def password_port():
    port = free_port()
    with private_redis('--port', str(port), '--requirepass', 's3cret',
                       ready=_answers(host='127.0.0.1', port=port, password='s3cret')):
        yield port


def _caches_through_the_client(django_assert_num_queries):
    """A miss then a hit, and the entry is in the Redis the setting names."""
    obj = All.objects.create(tag=7)
    with django_assert_num_queries(1):
        assert list(All.objects.filter(tag=7)) == [obj]
    with django_assert_num_queries(0):
        assert list(All.objects.filter(tag=7)) == [obj]
    key = All.objects.filter(tag=7)._cache_key()
    assert cacheops.redis.redis_client.exists(key)


def test_unix_url(unix_socket, django_assert_num_queries):
    with override_settings(CACHEOPS_REDIS='unix://%s?db=2' % unix_socket):
        _caches_through_the_client(django_assert_num_queries)
        assert cacheops.redis.redis_client.connection_pool.connection_kwargs['path'] == unix_socket
    assert redis.Redis(unix_socket_path=unix_socket, db=2).dbsize() > 0


def test_unix_socket_path_in_a_dict(unix_socket, django_assert_num_queries):
    with override_settings(CACHEOPS_REDIS={'unix_socket_path': unix_socket, 'db': 3}):
        _caches_through_the_client(django_assert_num_queries)
    assert redis.Redis(unix_socket_path=unix_socket, db=3).dbsize() > 0


def test_url_with_a_password(password_port, django_assert_num_queries):
    with override_settings(CACHEOPS_REDIS='redis://:s3cret@127.0.0.1:%d/1' % password_port):
        _caches_through_the_client(django_assert_num_queries)
    assert redis.Redis(port=password_port, password='s3cret', db=1).dbsize() > 0


def test_password_in_a_dict(password_port, django_assert_num_queries):
    conf = {'host': '127.0.0.1', 'port': password_port, 'db': 2, 'password': 's3cret',
            'socket_timeout': 3}
    with override_settings(CACHEOPS_REDIS=conf):
        _caches_through_the_client(django_assert_num_queries)
    assert redis.Redis(port=password_port, password='s3cret', db=2).dbsize() > 0


def test_a_wrong_password_is_refused(password_port):
    # redis-py raises the server's WRONGPASS as an AuthenticationError from 4.4 on
    refused = redis.AuthenticationError if redis.VERSION >= (4, 4) else redis.ResponseError
    with override_settings(CACHEOPS_REDIS='redis://:wrong@127.0.0.1:%d/1' % password_port):
        with pytest.raises(refused, match='invalid username-password pair'):
            list(All.objects.filter(tag=7))


def test_rediss_url(tls_port, django_assert_num_queries):
    port, cert = tls_port
    with override_settings(CACHEOPS_REDIS='rediss://127.0.0.1:%d/4?ssl_ca_certs=%s' % (port, cert)):
        _caches_through_the_client(django_assert_num_queries)
        assert issubclass(cacheops.redis.redis_client.connection_pool.connection_class,
                          redis.SSLConnection)
    assert redis.Redis(host='127.0.0.1', port=port, ssl=True, ssl_ca_certs=cert, db=4).dbsize() > 0
