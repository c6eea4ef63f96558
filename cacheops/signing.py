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
_DATA_START = len(MARK) + TAG_SIZE
MIN_KEY_LENGTH = 16
# the HMAC key is derived from the setting, so that a key shared with another use (a
# project's SECRET_KEY, say) gives MACs that use can't produce, and is shorter than a
# SHA-256 block, as HMAC's padding below takes it
_CONTEXT = b'cacheops.signing\x00'


class BadSignature(ValueError):
    """A value read while signing is on whose HMAC does not verify (or has none)."""


@derived
def _hmac_states():
    """The inner and outer SHA-256 states of HMAC (RFC 2104) keyed by what CACHEOPS_SIGNING_KEY
    derives, fed their padded key only, or None for off: each value is MACed on copies of
    them, which costs a hit a third of what hmac.new() or an hmac object's copy() does."""
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
    block = secret.ljust(hashlib.sha256().block_size, b'\x00')
    return (hashlib.sha256(bytes(b ^ 0x36 for b in block)),
            hashlib.sha256(bytes(b ^ 0x5c for b in block)))


def signing_on():
    """Whether values are signed: CACHEOPS_SIGNING_KEY is set (ImproperlyConfigured if bad)."""
    return _hmac_states() is not None


def _tag(states, key, data):
    key = key.encode()
    inner = states[0].copy()
    # the key's length first: no key and bytes MAC as another key and other bytes
    inner.update(len(key).to_bytes(4, 'big') + key)
    inner.update(data)
    outer = states[1].copy()
    outer.update(inner.digest())
    return outer.digest()[:TAG_SIZE]


def sign(key, data):
    """data (bytes) as stored at key when signing is on: MARK, its HMAC, data."""
    return _signed(_hmac_states(), key, data)


def _signed(states, key, data):
    return MARK + _tag(states, key, data) + data


def verify(key, blob):
    """The bytes signed for key in blob, or None when its HMAC does not verify (signing on)."""
    return _verified(_hmac_states(), key, blob)


def _verified(states, key, blob):
    if blob[:len(MARK)] != MARK:
        return None
    data = blob[_DATA_START:]
    if not hmac.compare_digest(blob[len(MARK):_DATA_START], _tag(states, key, data)):
        return None
    return data


def dumps(key, value):
    """value serialized by CACHEOPS_SERIALIZER to be stored at key, signed when signing is on."""
    data, states = serializer().dumps(value), _hmac_states()
    if states is None:
        return data
    return _signed(states, key, data.encode() if isinstance(data, str) else data)


def loads(key, data):
    """The value in data read at key; BadSignature, before any loads(), when signing is on
    and data is not signed for key with the key in force."""
    states = _hmac_states()
    if states is not None:
        data = _verified(states, key, data)
        if data is None:
            raise BadSignature('not signed for this key with CACHEOPS_SIGNING_KEY')
    return serializer().loads(data)
