"""The report: the markdown table of every row, and the summary bench.py --readme puts into README.rst."""
import os
import sys

from .measure import quartiles
from .targets import measured, meets, paired_ratios, target_for, verdict


def fmt_value(values, unit):
    if not values:
        return '–'
    median, p25, p75 = quartiles(values)
    if unit == 'us':
        digits = 0 if median >= 100 else 1
        return f'{median:.{digits}f} µs [{p25:.{digits}f}–{p75:.{digits}f}]'
    if unit == 'ops/s':
        return f'{median:,.0f} ops/s [{p25:,.0f}–{p75:,.0f}]'
    return f'{median:.3f} {unit} [{p25:.3f}–{p75:.3f}]'


def fmt_ratio(ratios):
    if not ratios:
        return '–'
    median, p25, p75 = quartiles(ratios)
    return f'{median:.2f}x [{p25:.2f}–{p75:.2f}]'


def on_cluster(result):
    """What a database's label gets for its run on a Redis Cluster (bench.py --cluster)."""
    return ' (cluster)' if result.get('redis') == 'cluster' else ''


def render_table(results):
    header = ['DB', 'mode', 'measurement', 'cacheops', 'floor', 'no cache', 'sync hit',
              'cacheops ÷ floor', 'cacheops ÷ no cache', 'cacheops ÷ sync hit', 'target', 'result']
    lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
    counts = {'PASS': 0, 'FAIL': 0}
    for result in results:
        db = result['db']
        for row in result['rows']:
            target, outcome = verdict(row, db)
            if outcome:
                counts[outcome] += 1
            values = row['values']
            cells = [db + on_cluster(result), row['mode'], row['label'],
                     fmt_value(values.get('cacheops'), row['unit']),
                     fmt_value(values.get('floor'), row['unit']),
                     fmt_value(values.get('nocache'), row['unit']),
                     fmt_value(values.get('sync'), row['unit']),
                     fmt_ratio(paired_ratios(row, 'floor')),
                     fmt_ratio(paired_ratios(row, 'nocache')),
                     fmt_ratio(paired_ratios(row, 'sync')),
                     target, f'**{outcome}**' if outcome == 'FAIL' else outcome]
            lines.append('| ' + ' | '.join(cells) + ' |')
    return lines, counts


def signing_costs(results):
    """What signing values adds to a hit (the signed row less its unsigned hit, per round), a
    line per database and mode, and a blank line; nothing if no run had the row."""
    costs = []
    for result in results:
        for row in result['rows']:
            if row['key'] == 'signed.get':
                median, p25, p75 = quartiles([a - b for a, b in zip(row['values']['cacheops'],
                                                                    row['values']['sync'])])
                costs.append(f'{result["db"]}{on_cluster(result)} {row["mode"]} {median:.1f} µs '
                             f'[{p25:.1f}–{p75:.1f}]')
    if not costs:
        return []
    return ['Signing (CACHEOPS_SIGNING_KEY) adds to a get(pk) hit, the median of per-round '
            'differences [IQR] (aim: ≤ 5 µs): ' + '; '.join(costs) + '.', '']


# Short labels of the targeted rows, in the summary's order
SUMMARY_ROWS = {
    'hit.get': 'get(pk) hit ÷ floor', 'hit.list': '20-row list hit ÷ floor',
    'hit.count': 'count() hit ÷ floor', 'hit.exists': 'exists() hit ÷ floor',
    'hit.aggregate': 'aggregate() hit ÷ floor', 'ahit.get': 'async get(pk) hit ÷ sync hit',
    'miss.get': 'get(pk) miss + store ÷ no cache', 'miss.list': '20-row list miss + store ÷ no cache',
    'save.0': 'save(), 0 dependents ÷ no cache', 'save.10': 'save(), 10 dependents ÷ no cache',
    'save.1000': 'save(), 1000 dependents ÷ no cache',
    'mixed.1': 'mixed 95/5, 1 process ÷ no cache', 'mixed.2': 'mixed 95/5, 2 processes ÷ no cache',
    'memory.get': 'Redis KiB per cached get(pk)',
}
README_START, README_END = '.. bench-summary-start', '.. bench-summary-end'
DB_NAMES = {'sqlite': 'SQLite', 'postgresql': 'PostgreSQL'}


def render_summary(results):
    """An RST table of the targeted rows' medians (ratios, or KiB), a column per database
    and mode, failing ones marked, and the targets."""
    columns, cells, targets = [], {}, {}
    for result in results:
        db = result['db']
        for row in result['rows']:
            target = target_for(row['key'], db)
            if row['key'] not in SUMMARY_ROWS or not target:
                continue
            column = f'{DB_NAMES[db]} {row["mode"]}{on_cluster(result)}'
            if column not in columns:
                columns.append(column)
            baseline, op, limit = target
            value = measured(row, baseline)
            text, outcome = verdict(row, db)
            shown = f'{value:.2f}'
            if outcome == 'FAIL' and meets(float(shown), op, limit):
                shown = f'{value:.3f}'  # 0.997 would show as 1.00, a pass
            cells[row['key'], column] = shown + (' ✗' if outcome == 'FAIL' else '')
            targets.setdefault(row['key'], {})[db] = text
    table = [['measurement', *columns, 'target'],
             *[[label, *[cells.get((key, c), '–') for c in columns], _target_text(targets[key])]
               for key, label in SUMMARY_ROWS.items() if key in targets]]
    widths = [max(len(line[i]) for line in table) for i in range(len(table[0]))]
    rule = '  '.join('=' * w for w in widths)
    lines = [rule, '  '.join(cell.ljust(w) for cell, w in zip(table[0], widths)).rstrip(), rule]
    lines += ['  '.join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip() for line in table[1:]]
    return [*lines, rule]


def _target_text(by_db):
    """A row's target, told per database where they differ."""
    if len(set(by_db.values())) == 1:
        return next(iter(by_db.values()))
    return ', '.join(f'{text} ({DB_NAMES[db]})' for db, text in by_db.items())


def update_readme(path, summary, command):
    """Replace what lies between the summary markers of README.rst."""
    text = path.read_text()
    start, end = text.index(README_START), text.index(README_END)
    failed = sum(line.count('✗') for line in summary)
    block = [README_START, '', f'Medians of one run of ``{command}``, on the machine',
             f'`BENCHMARKS.md <BENCHMARKS.md>`_ describes (✗: a target missed, {failed} of them):', '',
             *summary, '']
    path.write_text(text[:start] + '\n'.join(block) + '\n' + text[end:])


def render_report(results, notes, elapsed):
    env = results[0]['env']
    lines = ['# cacheops benchmark', '',
             f'- command: `{" ".join(["python3 bench.py", *sys.argv[1:]])}`',
             f'- Python {env["python"]}, Django {env["django"]}, redis-py {env["redis_py"]} '
             f'(hiredis: {"yes" if env["hiredis"] else "no"}), Redis server {env["redis_server"]} '
             f'at {env["redis_url"]} (memory rows: a private redis-server {env["memory_redis_server"]}), '
             f'{os.cpu_count()} CPUs',
             *[f'- {r["db"]}{on_cluster(r)}: {r["env"]["db_version"]}; {r["env"]["data"]}'
               + (f'; Redis Cluster {r["env"]["redis_server"]} at {r["env"]["redis_url"]}'
                  if on_cluster(r) else '') for r in results],
             f'- {results[0]["env"]["sizes"]}',
             f'- total time {elapsed:.0f} s',
             *[f'- {note}' for note in notes], '']
    table, counts = render_table(results)
    lines += table
    lines += ['', f'{counts["PASS"]} targets passed, {counts["FAIL"]} failed.', '',
              *signing_costs(results),
              'Times are per op: median over rounds [interquartile range]. Ratios are the median of '
              'per-round ratios (each system ran in the same round) [IQR]. floor = a raw redis-py GET '
              'of the bytes cacheops stored for that query + pickle.loads (insideout: minus the '
              '40-byte checksum). no cache = CACHEOPS_ENABLED=False (the thin cacheops wrappers still run). '
              'Memory = growth of INFO used_memory '
              'of a private redis-server per entry: cache keys, conj sets or stamps, schemes sets and the '
              'keyspace tables together; "keys" is the part MEMORY USAGE gives for the keys. Mixed: '
              'throughput, so higher is better; "reads hit" is the share of cached reads that made no '
              'database query, over all cacheops runs of that row.']
    return '\n'.join(lines)
