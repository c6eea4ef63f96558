-- Conj-set mode, when computing a missing value failed: remove our pending marker, if
-- it is still ours, and wake dog-pile waiters, so they compute instead of waiting for
-- a value that will not come.
-- Both keys share the cache key's slot on a cluster: the signal key is tagged with it.
--
-- KEYS: cache key, signal list key
-- ARGV: pending marker, '1' to wake dog-pile waiters
-- Returns 1 when the marker was removed, 0 when it was gone or replaced.
local removed = 0
if redis.call('get', KEYS[1]) == ARGV[1] then
    redis.call('del', KEYS[1])
    removed = 1
end
if ARGV[2] == '1' then
    redis.call('rpush', KEYS[2], '1')
    redis.call('expire', KEYS[2], 30)
end
return removed
