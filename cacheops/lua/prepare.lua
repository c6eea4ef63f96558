-- Conj-set mode, on a miss, before the database is queried: put a pending marker at
-- the cache key and register the key in its conjunction sets, so that an invalidation
-- between now and the store deletes the marker and the store is dropped.
-- On a Redis Cluster the conj sets live in their tables' slots: this is called with the
-- cache key and its signal key only (the signal tagged with the cache key, keys.beside),
-- and register.lua then registers the key table by table, before the query.
--
-- KEYS: cache key, signal list key, then for each table: its schemes set, then its
--       conjunction set keys
-- ARGV: pending marker (a prefix + a random token), timeout (seconds),
--       then for each table: the number n of its conjunctions, then n schemes
--       (comma-joined column names, in the order of the conj keys)
-- Returns {'hit', data} when a value is stored already,
--         {'mine', marker} when we placed the marker and registered the key,
--         {'other', marker} when somebody else's marker is there (reuse it; with a
--         lock, wait for its owner instead of querying).
local key = KEYS[1]
-- a marker is the 18-byte getset.PENDING followed by a token
local marker_prefix = string.sub(ARGV[1], 1, 18)

local current = redis.call('get', key)
if current then
    if string.sub(current, 1, 18) == marker_prefix then
        return {'other', current}
    end
    return {'hit', current}
end

local timeout = tonumber(ARGV[2])
-- a conjunction set outlives every key it references: by a margin, as TTL counts whole
-- seconds (one reported as the timeout may be a little less)
local conj_ttl = timeout + 10
redis.call('set', key, ARGV[1], 'EX', timeout)
redis.call('del', KEYS[2])

local k, a = 3, 3
while a <= #ARGV do
    local schemes_key = KEYS[k]
    local n = tonumber(ARGV[a])
    k, a = k + 1, a + 1
    for i = 1, n do
        redis.call('sadd', schemes_key, ARGV[a])
        local conj = KEYS[k]
        local added = redis.pcall('sadd', conj, key)
        if type(added) == 'table' and added['err'] then  -- a stamp left by insideout mode
            redis.call('del', conj)
            redis.call('sadd', conj, key)
        end
        if redis.call('ttl', conj) <= timeout then
            redis.call('expire', conj, conj_ttl)
        end
        k, a = k + 1, a + 1
    end
end
return {'mine', ARGV[1]}
