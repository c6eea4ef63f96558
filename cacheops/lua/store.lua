-- Conj-set mode, after the database was queried: store the value only if the pending
-- marker placed before the query is still there (compare-and-set). An invalidation
-- in between deleted it, and then the value may be stale: drop it.
-- The value keeps the marker's expiry, so it never outlives its conjunction sets.
-- Both keys share the cache key's slot on a cluster: the signal key is tagged with it.
--
-- KEYS: cache key, signal list key
-- ARGV: pending marker, serialized value, '1' to wake dog-pile waiters
-- Returns 1 when stored, 0 when dropped.
local stored = 0
if redis.call('get', KEYS[1]) == ARGV[1] then
    redis.call('set', KEYS[1], ARGV[2], 'KEEPTTL')
    stored = 1
end
if ARGV[3] == '1' then
    -- waiters wake up even when the store was dropped, and then query themselves
    redis.call('rpush', KEYS[2], '1')
    redis.call('expire', KEYS[2], 30)
end
return stored
