-- Insideout mode, after the database was queried: store the value, prefixed with the
-- checksum of the conjunction stamps read before the query, and keep those stamps
-- longer than the value (a stamp expiring first would make the value a miss early; the
-- margin is prepare.lua's). A stamp gone meanwhile was invalidated: it is left gone, and the value never
-- validates.
-- On a Redis Cluster the stamps live in their tables' slots: this gets no stamp keys
-- (cache key, lock and signal share its slot, the last two tagged with it), and
-- extend_stamps.lua keeps each table's stamps.
--
-- KEYS: cache key, lock key, signal list key, then the conjunction stamp keys
-- ARGV: checksum and serialized value, timeout (seconds), '1' to release the dog-pile
--       lock and wake its waiters, how long the wake-up signal lasts (seconds)
-- Returns nothing.
local timeout = tonumber(ARGV[2])
redis.call('set', KEYS[1], ARGV[1], 'EX', timeout)
for i = 4, #KEYS do
    local ttl = redis.call('ttl', KEYS[i])
    if ttl >= 0 and ttl <= timeout then
        redis.call('expire', KEYS[i], timeout + 10)
    end
end
if ARGV[3] == '1' then
    redis.call('del', KEYS[2])
    redis.call('rpush', KEYS[3], '1')
    redis.call('expire', KEYS[3], ARGV[4])
end
