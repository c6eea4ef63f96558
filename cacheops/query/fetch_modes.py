"""Django 6.1's fetch modes: instances read from the cache fetch as a database read's would."""
import weakref

from django.db.models.query import ModelIterable

try:
    from django.db.models.fetch_modes import FETCH_ONE  # Django 6.1+
except ImportError:
    FETCH_ONE = None


def _track_peers(qs, objs=None):
    """Instances of a result (qs's, or objs) fetch as a database read's would (Django 6.1's
    fetch modes): in the mode of the queryset reading them, whichever stored them, and
    knowing their peers as FETCH_PEERS expects (pickles drop the weak references)."""
    mode = qs.__dict__.get('_fetch_mode')
    objs = qs._result_cache if objs is None else objs
    if mode is None or not objs or qs._iterable_class is not ModelIterable:
        return
    state = objs[0]._state
    if state.__dict__.get('fetch_mode', FETCH_ONE) is mode and not (mode.track_peers and not state.peers):
        return  # read from the database, or stored in this mode with no peers to know
    # the Query as it stands: recorded calls never change select_related
    _set_fetch_mode(objs, mode, qs._recorded()[0].select_related)


def _set_fetch_mode(objs, mode, select_related):
    """Give objs and the instances select_related() brought with them this fetch mode;
    peers are those at one path, as each of Django's related populators makes them."""
    seen = {id(obj) for obj in objs}
    groups = [(objs, select_related)]
    while groups:
        group, related = groups.pop()
        peers = [weakref.ref(obj) for obj in group] if mode.track_peers else None
        below = {}
        for obj in group:
            state = obj._state
            state.fetch_mode = mode
            if peers is not None:
                state.peers = peers
            if not related:
                continue
            # select_related=True follows every relation it can, a dict the ones it names
            for name, rel_obj in state.fields_cache.items():
                if rel_obj is not None and id(rel_obj) not in seen and (related is True or name in related):
                    seen.add(id(rel_obj))
                    below.setdefault(name, []).append(rel_obj)
        groups.extend((rel_objs, related is True or related[name]) for name, rel_objs in below.items())
