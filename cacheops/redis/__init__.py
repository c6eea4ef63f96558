"""Redis access: the client built from settings, Lua scripts, and the hand-packed hot
path beside redis-py's command layer.

Bottom up, each module importing only those before it:

    primary.py  whether a new connection reached the server the cache was last trusted on
                (a Sentinel failover's promoted replica may lack acknowledged invalidations)
    client.py   the client from settings, reset when they change; connection failures
    held.py     the connection a thread keeps, its store pool, CLIENT REPLY SKIP found
                out; CACHEOPS_PLAIN_REDIS, which turns all of that and wire.py off
    wire.py     hot reads (GET, MGET) over that connection, commands packed by hand
    scripts.py  Lua scripts run by SHA, started to be read later, sent without a reply
    slots.py    a cluster's multi-key reads split by slot by hand (MGET)

Other modules import from here, not from the modules: these are the package's names.
"""
from ..conf import is_cluster  # noqa: F401 - a settings fact, asked here by invalidation.py
from .client import (  # noqa: F401
    CONNECTION_ERRORS, READ_FAILURES, _handle_connection_failure, check_client, get_client, make_client,
    redis_client,
)
from .held import (  # noqa: F401 - private ones for the tests, which look into the layer
    PLAIN_REDIS, _settle, _skips_replies, _stop_skipping_replies,
    _store_pools, _take_held, _thread_held,
)
from .scripts import (  # noqa: F401
    LUA_DIR, _HeldReply, _PendingReply, _script, run_script, send_script, start_script,
)
from .slots import mget_by_slot  # noqa: F401
from .wire import _pack_plain, _packed_read, read_command  # noqa: F401
