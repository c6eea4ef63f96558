"""Django settings for the test suite.

runtests.py picks the configuration through environment variables:
  CACHEOPS_TEST_DB         sqlite | postgresql | mysql (default sqlite)
  CACHEOPS_TEST_DB_SUFFIX  appended to database names, so parallel runs never share one
  CACHEOPS_REDIS           Redis URL of the run (default redis://127.0.0.1:6379/13)
  CACHEOPS_TEST_PREFIX     '1': key prefix 'p:' through CACHEOPS_PREFIX
  CACHEOPS_TEST_INSIDEOUT  '1': insideout mode
  CACHEOPS_TEST_SENTINEL   'host:port' of a sentinel watching the run's Redis (read by the tests)
  CACHEOPS_TEST_STRICT_KEYS '1': CACHEOPS_STRICT_KEYS = True
  CACHEOPS_TEST_DECLARED_KEYS '1': a test fails if a script touched a key not in its KEYS
                           (tests/declared_keys.py)
  CACHEOPS_TEST_CLUSTER    'host:port,host:port,...': a Redis Cluster's nodes (any of them will do;
                           tools/redis_server.py's cluster_for_run starts one). The run uses
                           CACHEOPS_CLUSTER = {'startup_nodes': [(host, port), ...]}, and
                           CACHEOPS_REDIS is not set: a cluster has db 0 only, so a run needs a
                           cluster of its own
"""
import os
import tempfile
from importlib.util import find_spec

DB = os.environ.get('CACHEOPS_TEST_DB', 'sqlite')
DB_SUFFIX = os.environ.get('CACHEOPS_TEST_DB_SUFFIX', '')

SECRET_KEY = 'cacheops-tests'
USE_TZ = True
DEFAULT_AUTO_FIELD = 'django.db.models.AutoField'

INSTALLED_APPS = [
    'django.contrib.contenttypes',
    'django.contrib.auth',
    'cacheops',
    'tests',
]

if DB == 'mysql':
    import pymysql
    # PyMySQL stands in for mysqlclient, whose version Django checks.
    pymysql.version_info = (2, 2, 7, 'final', 0)
    pymysql.install_as_MySQLdb()


def database(name):
    name = f'cacheops_{name}{DB_SUFFIX}'
    if DB == 'sqlite':
        # Files, not memory: tests that use several processes need to share the database.
        path = os.path.join(tempfile.gettempdir(), name)
        return {
            'ENGINE': 'django.db.backends.sqlite3',
            'NAME': f'{path}.sqlite3',
            'TEST': {'NAME': f'{path}_test.sqlite3'},
        }
    if DB == 'postgresql':
        return {
            'ENGINE': 'django.db.backends.postgresql',
            'NAME': name,
            'USER': 'postgres',
            'HOST': '127.0.0.1',
            'PORT': 5432,
        }
    if DB == 'mysql':
        return {
            'ENGINE': 'django.db.backends.mysql',
            'NAME': name,
            'USER': 'root',
            'PASSWORD': '',
            'HOST': '127.0.0.1',
            'PORT': 3306,
            'OPTIONS': {'charset': 'utf8mb4'},
            'TEST': {'CHARSET': 'utf8mb4', 'COLLATION': 'utf8mb4_unicode_ci'},
        }
    raise ValueError(f'CACHEOPS_TEST_DB={DB!r}: expected sqlite, postgresql or mysql')


# 'slave' is a second database of the same kind, for the multi-db tests.
DATABASES = {
    'default': database('default'),
    'slave': database('slave'),
}

TEMPLATES = [{
    'BACKEND': 'django.template.backends.django.DjangoTemplates',
    'APP_DIRS': True,
    'OPTIONS': {'context_processors': ['django.template.context_processors.request']},
}]
if find_spec('jinja2'):
    TEMPLATES.append({
        'BACKEND': 'django.template.backends.jinja2.Jinja2',
        'APP_DIRS': True,
        'OPTIONS': {'extensions': ['cacheops.jinja2.cache']},
    })

# Importing tests.urls here would import models before the apps are ready: check the file.
if os.path.exists(os.path.join(os.path.dirname(__file__), 'urls.py')):
    ROOT_URLCONF = 'tests.urls'


def cluster_nodes(spec):
    """'host:port,host:port' -> [(host, port), ...]."""
    nodes = []
    for node in spec.split(','):
        host, _, port = node.strip().rpartition(':')
        nodes.append((host, int(port)))
    return nodes


if os.environ.get('CACHEOPS_TEST_CLUSTER'):
    from redis.backoff import ExponentialWithJitterBackoff
    from redis.retry import Retry
    # RedisCluster's own retries (10, backed off up to 1 s each) made every command the
    # tests fail on purpose (test_degrade's outages) wait 1.6 s on average: a tenth of the
    # cluster runs. The tests keep retries, with a backoff of milliseconds.
    CACHEOPS_CLUSTER = {'startup_nodes': cluster_nodes(os.environ['CACHEOPS_TEST_CLUSTER']),
                        'retry': Retry(ExponentialWithJitterBackoff(cap=0.01, base=0.001), 3)}
else:
    CACHEOPS_REDIS = os.environ.get('CACHEOPS_REDIS', 'redis://127.0.0.1:6379/13')

CACHEOPS_DEFAULTS = {'timeout': 60 * 60}
CACHEOPS = {
    'tests.local': {'local_get': True},
    'tests.cacheonsaveprofile': {'cache_on_save': True},
    'tests.dbagnostic': {'db_agnostic': False},
    'tests.dbbinded': {'db_agnostic': False},
    'tests.genericcontainer': {'ops': ('fetch', 'get', 'count')},
    'tests.all': {'ops': 'all'},
    'tests.*': {},
    'tests.noprofile': None,
    'auth.*': {},
}
# The default is 8; the tests that need a small value override it.
CACHEOPS_LONG_DISJUNCTION = 1000
CACHEOPS_DEGRADE_ON_FAILURE = False
CACHEOPS_INSIDEOUT = os.environ.get('CACHEOPS_TEST_INSIDEOUT') == '1'
CACHEOPS_STRICT_KEYS = os.environ.get('CACHEOPS_TEST_STRICT_KEYS') == '1'
# the run's own: records left by an earlier run killed midway (cacheops/spool.py) would be
# done by this one, dropping what its tests cached. Forked workers share it
CACHEOPS_SPOOL_DIR = tempfile.mkdtemp(prefix='cacheops-test-spool-')
if os.environ.get('CACHEOPS_TEST_PREFIX') == '1':
    CACHEOPS_PREFIX = 'tests.settings.test_prefix'


def test_prefix(query):
    return 'p:'


# Profiles for the profile-option tests (tests/test_profile_options.py)
CACHEOPS['tests.cacheonsaveslug'] = {'cache_on_save': 'slug'}
CACHEOPS['tests.locked'] = {'lock': True}
