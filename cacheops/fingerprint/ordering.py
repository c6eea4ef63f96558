"""Ordering in a fingerprint: which order_by() names are known to compile alike."""
from django.db.models import expressions

from ..utils import remember
from .values import Unknown, _fingerprint


# Ordering: order_by() keeps names and expressions as given, for the compiler to resolve.
# A name may end in a transform (order_by('created__date')), and some transforms read
# the current time zone: only names of fields and relations (whose models' Meta.ordering
# is itself plain) are known. Expressions other than F() are not: the compiler matches
# them against the selected ones by equality, which depends on how they were built.

def _ordering(items, attrs):
    return tuple([_ordering_item(item, attrs) for item in items])


def _ordering_item(item, attrs):
    cls = type(item)
    if cls is str:
        name = item
    elif cls is expressions.F:
        name = item.name
    elif cls is expressions.OrderBy and type(item.expression) is expressions.F:
        name = item.expression.name
    else:
        raise Unknown(item)
    bare = name[1:] if name.startswith('-') else name
    if bare not in attrs.get('annotations', ()) and bare not in attrs.get('extra', ()) \
            and not plain_ordering_name(attrs['model'], name):
        raise Unknown(name)
    return _fingerprint(item)


_plain_names = {}  # (model, ordering name): whether it names fields and relations only


def plain_ordering_name(model, name):
    try:
        return _plain_names[model, name]
    except KeyError:  # names may come from requests
        return remember(_plain_names, (model, name), _fields_path(model, name, frozenset()))


def _fields_path(model, name, visiting):
    if name == '?':  # random
        return True
    pieces = (name[1:] if name.startswith('-') else name).split('__')
    meta = model._meta
    for position, piece in enumerate(pieces, start=1):
        last = position == len(pieces)
        try:
            field = meta.pk if piece == 'pk' else meta.get_field(piece)
        except Exception:  # FieldDoesNotExist: a transform, or an error compiling will raise
            return False
        if not field.is_relation:
            return last  # anything after a column is a transform
        if field.related_model is None:  # a generic foreign key
            return False
        if last:
            # by a relation's column, or else by its model's ordering (as the compiler does)
            return piece in ('pk', getattr(field, 'attname', None)) or \
                _plain_ordering(field.related_model, visiting)
        meta = field.related_model._meta
    return True


_plain_orderings = {}  # model: whether its Meta.ordering is plain


def _plain_ordering(model, visiting=frozenset()):
    """Whether a model's Meta.ordering is made of names of fields and relations only."""
    try:
        return _plain_orderings[model]
    except KeyError:
        pass
    ordering = model._meta.ordering
    if not ordering or model in visiting:  # a cycle: the compiler refuses it
        return True
    inner = visiting | {model}
    plain = all(type(item) is str and _fields_path(model, item, inner) for item in ordering)
    if not visiting:  # what a cycle assumed is not known
        remember(_plain_orderings, model, plain)
    return plain
