"""The targets: what each row's cacheops value is divided by, and the limit it must keep to."""
from .measure import quartiles

# row key, or key prefix ending in '.' -> (the baseline cacheops is divided by, or None for the
# value itself; the comparison; the limit, or {db: limit})
TARGETS = {
    'hit.': ('floor', '<=', 1.3),
    'ahit.get': ('sync', '<=', 1.2),
    'miss.': ('nocache', '<=', 1.6),
    'save.0': ('nocache', '<=', 2.0),
    'save.10': ('nocache', '<=', 2.5),
    'save.1000': ('nocache', '<=', 5.0),
    'mixed.': ('nocache', '>=', {'sqlite': 1.0, 'postgresql': 1.4}),
    'memory.get': (None, '<=', 1.0),
}
BASELINE_NAMES = {'floor': 'floor', 'nocache': 'no cache', 'sync': 'sync hit'}


def target_for(key, db):
    for prefix, (baseline, op, limit) in TARGETS.items():
        if key == prefix or (prefix.endswith('.') and key.startswith(prefix)):
            return baseline, op, limit[db] if isinstance(limit, dict) else limit
    return None


def paired_ratios(row, baseline):
    """Per-round cacheops / baseline ratios."""
    return [a / b for a, b in zip(row['values']['cacheops'], row['values'].get(baseline, [])) if b]


def verdict(row, db):
    """(target text, 'PASS'/'FAIL') for a row, or ('', '') when it has no target."""
    target = target_for(row['key'], db)
    if not target:
        return '', ''
    baseline, op, limit = target
    if baseline:
        text = f'{op.replace("<=", "≤").replace(">=", "≥")} {limit}x {BASELINE_NAMES[baseline]}'
    else:
        text = f'{op.replace("<=", "≤")} {limit} {row["unit"]}'
    return text, 'PASS' if meets(measured(row, baseline), op, limit) else 'FAIL'


def measured(row, baseline):
    """What a row's target judges: the median ratio to baseline, or the value if None."""
    return quartiles(paired_ratios(row, baseline) if baseline else row['values']['cacheops'])[0]


def meets(value, op, limit):
    return value <= limit if op == '<=' else value >= limit
