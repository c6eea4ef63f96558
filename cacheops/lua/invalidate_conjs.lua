-- Invalidate whole conjunction keys (a model or a table at once): delete them and
-- return the cache keys the sets among them (conj-set mode) referenced, for the client
-- to delete; stamps (insideout mode) are just deleted, whichever mode is configured.
-- Reading the members and deleting the sets happen together, so no registration
-- made meanwhile is lost.
-- The cache keys returned are also kept in a handover set, named uniquely per call, for
-- a day: a call run again because its reply was lost finds the sets gone, and hands
-- over the keys its first run found instead of none. The client deletes the set with
-- the keys.
-- On a Redis Cluster the conj keys of one call are one table's, and the handover set
-- carries that table's tag ({<table>}): one slot.
--
-- KEYS: the handover set, then conjunction keys (sets in conj-set mode, stamps in
--       insideout mode)
-- ARGV: none
-- Returns the cache keys to delete.
local handover = KEYS[1]
if redis.call('exists', handover) == 1 then  -- this call ran before: its reply was lost
    return redis.call('smembers', handover)
end
local members = {}
for k = 2, #KEYS do
    local conj = KEYS[k]
    if redis.call('type', conj).ok == 'set' then
        for _, member in ipairs(redis.call('smembers', conj)) do
            members[#members + 1] = member
        end
    end
    redis.call('del', conj)
end
for i = 1, #members, 1000 do
    redis.call('sadd', handover, unpack(members, i, math.min(i + 999, #members)))
end
if #members > 0 then
    redis.call('expire', handover, 86400)
end
return members
