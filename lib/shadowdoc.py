"""Pure helpers on shadow documents (JSON values: dict, list, str, number,
bool, None).

Merging a desired or local change into a service's config, working out the
``reported`` update that turns one value into another under AWS merge
semantics, JSON-style equality, and the small selections the shadow sync
needs for ``outkeys`` and ``notifykeys``.  Every function returns new values
and never mutates its arguments.  No I/O, no MQTT, no knowledge of services;
MicroPython-friendly (no imports at all).
"""

DELETE = "DELETE"


def is_delete(value, empty_array_deletes=False):
    """True if ``value`` in a change means "remove this key".

    None and the string "DELETE" always do; ``[]`` does too when the daemon
    runs with --empty-array-as-delete-request.
    """
    if value is None or (isinstance(value, str) and value == DELETE):
        return True
    return empty_array_deletes and isinstance(value, list) and not value


def merge(config, change, empty_array_deletes=False):
    """``config`` with a desired/local ``change`` deep-merged into it.

    In objects a deleting value (see ``is_delete``) removes the key, nested
    objects merge recursively, arrays and scalars replace.  A change that is
    not an object replaces the whole config, except a deleting value, which
    means "no config" and gives None.  An object merged into a non-object
    config starts from ``{}``.  Objects emptied by deletions stay as ``{}``.
    """
    return deep_merge(config, change, lambda value: is_delete(value, empty_array_deletes))


def apply(doc, update):
    """What AWS makes of ``doc`` after it accepts ``update``.

    AWS merge semantics: only None deletes ("DELETE" is a chariotd
    convention, not an AWS one), objects merge, anything else replaces.
    Useful to keep a local copy of ``reported`` in step with what was sent.
    """
    return deep_merge(doc, update, _is_none)


def deep_merge(base, change, deletes=None, share=False):
    """The one deep merge: ``base`` with ``change`` merged into it.

    In objects a value for which ``deletes(value)`` is true removes the key,
    objects merge recursively, anything else replaces.  A change that is not
    an object replaces ``base`` whole, or gives None when it deletes.  An
    object merged into a non-object starts from ``{}``.  Without ``deletes``
    nothing deletes.  The result is new; its values are copies, or with
    ``share`` the change's own values (for a caller done with ``change``).
    """
    deletes = deletes or _never
    take = _same if share else copy
    if not isinstance(change, dict):
        return None if deletes(change) else take(change)
    result = dict(base) if share and isinstance(base, dict) else \
        copy(base) if isinstance(base, dict) else {}
    for key, value in change.items():
        if deletes(value):
            result.pop(key, None)
        elif isinstance(value, dict):
            result[key] = deep_merge(result.get(key), value, deletes, share)
        else:
            result[key] = take(value)
    return result


def _is_none(value):
    return value is None


def _never(_value):
    return False


def _same(value):
    return value


def diff(old, new):
    """The update that turns ``old`` into ``new`` under AWS merge semantics.

    Between objects: changed or added keys with their new values, removed
    keys as None, recursing into objects that are objects on both sides;
    ``{}`` when equal.  Members whose value is None count as absent (and are
    left out of the values sent).  When either side is not an object the
    result is ``new`` itself if the values differ, else ``{}``.  So ``{}``
    is ambiguous when ``new`` is ``{}``: use ``equal`` to decide whether
    anything must be sent.  To diff one service's section, wrap both sides:
    ``diff({key: old}, {key: new})``, which gives ``{key: None}`` when the
    section went away.
    """
    if not (isinstance(old, dict) and isinstance(new, dict)):
        new = strip_nulls(new)
        return {} if equal(strip_nulls(old), new) else new
    update = {}
    for key, value in old.items():
        if value is not None and new.get(key) is None:
            update[key] = None
    for key, value in new.items():
        if value is None:
            continue
        before = old.get(key)
        if isinstance(before, dict) and isinstance(value, dict):
            nested = diff(before, value)
            if nested:  # empty when they differ only by null members
                update[key] = nested
            continue
        value = strip_nulls(value)
        if not equal(strip_nulls(before), value):
            update[key] = value
    return update


def equal(a, b):
    """Deep equality with JSON semantics: 1 == 1.0, but True != 1."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if _is_number(a) and _is_number(b):
        return a == b
    if isinstance(a, dict) and isinstance(b, dict):
        if len(a) != len(b):
            return False
        return all(key in b and equal(value, b[key]) for key, value in a.items())
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        if len(a) != len(b):
            return False
        return all(equal(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b


def strip_nulls(doc):
    """``doc`` without None-valued object members, at every depth.

    None as an array element is kept (removing it would shift positions).
    """
    if isinstance(doc, dict):
        return {k: strip_nulls(v) for k, v in doc.items() if v is not None}
    if isinstance(doc, (list, tuple)):
        return [strip_nulls(v) for v in doc]
    return doc


def select(config, keys):
    """Only the listed subkeys of ``config`` (for ``outkeys``).

    ``keys`` None means "all": ``config`` is returned (copied).  Listed keys
    the config lacks are simply absent.  A config that is not an object has
    no subkeys to choose from and is returned as it is.
    """
    if keys is None or not isinstance(config, dict):
        return copy(config)
    return {k: copy(config[k]) for k in keys if k in config}


def changed_keys(old, new):
    """Sorted top-level subkeys added, removed or changed between configs.

    For ``notifykeys``.  A side that is not an object counts as ``{}``, so a
    whole config appearing or vanishing changes all of its keys.
    """
    old = old if isinstance(old, dict) else {}
    new = new if isinstance(new, dict) else {}
    keys = []
    for key in old:
        if key not in new or not equal(old[key], new[key]):
            keys.append(key)
    for key in new:
        if key not in old:
            keys.append(key)
    return sorted(keys)


def copy(value):
    """A deep copy of a JSON value (tuples become lists)."""
    if isinstance(value, dict):
        return {k: copy(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [copy(v) for v in value]
    return value


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)
