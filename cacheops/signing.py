"""Signed values (CACHEOPS_SIGNING_KEY): what the cache stores, as bytes, and back.

With a signing key every stored value is MARK, then a 16-byte HMAC-SHA256 of its cache
key and its serialized bytes, then those bytes. A value whose HMAC does not verify - bytes
written by someone who can write to Redis (or the file cache's directory) but does not
know the key, or a signed value copied under another key - is never passed to loads():
loads() raises BadSignature, which readers take for a miss, as any value that can't be
decoded. A value stored unsigned reads as a miss once signing is on, and the reverse
(a signed value is no pickle), so switching it on, off or to another key costs misses.
"""
import hashlib
import hmac

from django.conf import settings as django_settings
from django.core.exceptions import ImproperlyConfigured

from .conf import derived, serializer

MARK = b'\x01s1'  # the format's version; no pickle starts with \x01
TAG_SIZE = 16
MIN_KEY_LENGTH = 16
# the HMAC key is derived from the setting, so that a key shared with another use (a
# project's SECRET_KEY, say) gives MACs that use can't produce
_CONTEXT = b'cacheops.signing\x00'


class BadSignature(ValueError):
    """A value read while signing is on whose HMAC does not verify (or has none)."""


@derived
def _hmac_base():
    """An HMAC of the key CACHEOPS_SIGNING_KEY derives, fed nothing yet (each value is
    MACed on a copy: creating one costs a hit more than copying one), or None for off."""
    value = getattr(django_settings, 'CACHEOPS_SIGNING_KEY', None)
    if value is None:
        return None
    if not isinstance(value, (str, bytes)):
        raise ImproperlyConfigured('CACHEOPS_SIGNING_KEY must be a str or bytes of at least %d '
                                   'characters, or None, got %r' % (MIN_KEY_LENGTH, type(value).__name__))
    if len(value) < MIN_KEY_LENGTH:
        raise ImproperlyConfigured(
            'CACHEOPS_SIGNING_KEY is %d characters long: give it at least %d (random ones), '
            'or None not to sign values' % (len(value), MIN_KEY_LENGTH))
    secret = hashlib.sha256(_CONTEXT + (value.encode() if isinstance(value, str) else value)).digest()
    return hmac.new(secret, digestmod='sha256')


def signing_on():
    """Whether values are signed: CACHEOPS_SIGNING_KEY is set (ImproperlyConfigured if bad)."""
    return _hmac_base() is not None


def _tag(base, key, data):
    key = key.encode()
    mac = base.copy()
    # the key's length first: no key and bytes MAC as another key and other bytes
    mac.update(len(key).to_bytes(4, 'big') + key + data)
    return mac.digest()[:TAG_SIZE]


def sign(key, data):
    """data (bytes) as stored at key when signing is on: MARK, its HMAC, data."""
    return MARK + _tag(_hmac_base(), key, data) + data


def verify(key, blob):
    """The bytes blob signed for key, or None when its HMAC does not verify."""
    if blob[:len(MARK)] != MARK:
        return None
    start = len(MARK) + TAG_SIZE
    data = blob[start:]
    if not hmac.compare_digest(blob[len(MARK):start], _tag(_hmac_base(), key, data)):
        return None
    return data


def dumps(key, value):
    """value serialized by CACHEOPS_SERIALIZER to be stored at key, signed when signing is on."""
    data = serializer().dumps(value)
    if _hmac_base() is None:
        return data
    return sign(key, data.encode() if isinstance(data, str) else data)


def loads(key, data):
    """The value in data read at key; BadSignature, before any loads(), when signing is on
    and data is not signed for key with the key in force."""
    if _hmac_base() is not None:
        data = verify(key, data)
        if data is None:
            raise BadSignature('not signed for this key with CACHEOPS_SIGNING_KEY')
    return serializer().loads(data)
