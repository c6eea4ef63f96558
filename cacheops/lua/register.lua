-- Conj-set mode on a Redis Cluster, on a miss, after prepare.lua put the pending marker
-- at the cache key (in its own slot) and before the database is queried: register the
-- key in one table's conjunction sets and record its schemes. One call per table, all
-- keys tagged with the table ({<table>}), so in its slot. prepare.lua does this itself
-- on one Redis. Why the marker goes first: docs/design.md, "Redis Cluster".
--
-- KEYS: the table's schemes set, its n conjunction set keys, then the n reaping sets
--       of those (reaper.py: a member registered again is taken out of them)
-- ARGV: cache key, timeout (seconds), then n schemes (comma-joined column names, in
--       the order of the conj keys)
-- Returns nothing.
local key, timeout = ARGV[1], tonumber(ARGV[2])
local n = (#KEYS - 1) / 2
-- a conjunction set outlives every key it references (see prepare.lua)
local conj_ttl = timeout + 10
for i = 1, n do
    redis.call('sadd', KEYS[1], ARGV[2 + i])
    local conj = KEYS[1 + i]
    local added = redis.pcall('sadd', conj, key)
    if type(added) == 'table' and added['err'] then  -- a stamp left by insideout mode
        redis.call('del', conj)
        redis.call('sadd', conj, key)
    end
    if redis.call('ttl', conj) <= timeout then
        redis.call('expire', conj, conj_ttl)
    end
    redis.call('srem', KEYS[1 + n + i], key)
end
