-- Insideout mode on a Redis Cluster, after a value was stored: keep one table's
-- conjunction stamps longer than the value (store_insideout.lua does this itself on one
-- Redis, where the stamps share the cache key's slot). A stamp gone is left gone: the
-- value never validates. All keys carry the table's tag ({<table>}), so share its slot.
--
-- KEYS: the table's conjunction stamp keys
-- ARGV: the value's timeout (seconds)
-- Returns nothing.
local timeout = tonumber(ARGV[1])
for i = 1, #KEYS do
    local ttl = redis.call('ttl', KEYS[i])
    if ttl >= 0 and ttl <= timeout then
        redis.call('expire', KEYS[i], timeout + 10)
    end
end
