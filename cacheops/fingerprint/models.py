"""Models and fields in a fingerprint."""
from django.apps import apps
from django.db.models import fields
from django.db.models.fields import reverse_related

from ..utils import remember
from .values import Unknown


# Models and fields: by their label and name when they are the ones registered in the
# app registry (a historical model in a migration has the same label, not the same
# columns), else by class and the few attributes that reach SQL.

_registered = {}      # model class: its label, or None if not the registered model
_field_labels = {}    # id(field): (field, its fingerprint), for fields of registered models


def _model(model):
    try:
        label = _registered[model]
    except KeyError:  # historical models too: migrations make them on the fly
        label = remember(_registered, model, _registered_label(model))
    if label is None:
        raise Unknown(model)
    return label


def _registered_label(model):
    meta = getattr(model, '_meta', None)
    if meta is None or meta.apps is not apps:
        return None
    try:
        return meta.label if apps.get_model(meta.label) is model else None
    except LookupError:
        return None


def _field(field):
    entry = _field_labels.get(id(field))
    if entry is not None and entry[0] is field:
        return entry[1]
    if field is None:  # an output field not resolved
        return None
    if type(field) in _REVERSE_RELATIONS:
        label = _reverse_relation_label(field)
    elif 'model' in field.__dict__:
        label = _field_label(field)
    else:
        return _unbound_field(field)
    remember(_field_labels, id(field), (field, label))  # keeps the field alive: its id stays its own
    return label


def _field_label(field):
    model = field.model
    label = _model(model)
    try:
        same = model._meta.get_field(field.name) is field
    except Exception:  # FieldDoesNotExist and the like
        same = False
    if not same:
        raise Unknown(field)
    return '%s.%s' % (label, field.name)


def _reverse_relation_label(rel):
    if rel.field.remote_field is not rel:
        raise Unknown(rel)
    return '%s<%s' % (type(rel).__name__, _field(rel.field))


def _unbound_field(field):
    """An output field made by an expression: its class and what shapes params and casts."""
    cls = type(field)
    name = _UNBOUND_FIELDS.get(cls)
    if name is None:
        raise Unknown(cls)
    get = field.__dict__.get
    return (name, get('max_length'), get('max_digits'), get('decimal_places'))


_REVERSE_RELATIONS = frozenset({
    reverse_related.ManyToOneRel, reverse_related.OneToOneRel, reverse_related.ManyToManyRel})

_UNBOUND_FIELDS = {  # field class: its name
    cls: cls.__name__ for cls in (
        fields.Field, fields.AutoField, fields.BigAutoField, fields.SmallAutoField, fields.IntegerField,
        fields.BigIntegerField, fields.SmallIntegerField, fields.PositiveIntegerField,
        fields.PositiveBigIntegerField, fields.PositiveSmallIntegerField, fields.FloatField,
        fields.DecimalField, fields.BooleanField, fields.CharField, fields.TextField,
        fields.DateField, fields.DateTimeField, fields.TimeField, fields.DurationField,
        fields.UUIDField, fields.BinaryField)
}
