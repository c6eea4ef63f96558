-- Invalidate whole conjunction keys (a model or a table at once): delete them and
-- return the cache keys the sets among them (conj-set mode) referenced, for the client
-- to delete; stamps (insideout mode) are just deleted, whichever mode is configured.
-- Reading the members and deleting the sets happen together, so no registration
-- made meanwhile is lost.
-- The cache keys returned are also kept in a handover set, named uniquely per call, for
-- a day: a call run again because its reply was lost finds the sets gone, and hands
-- over the keys its first run found instead of none. The client deletes the set with
-- the keys.
-- The members read here are bounded, as in invalidate.lua: a set that would take the
-- count read past the limit is renamed, O(1), to its drain set (<handover set>:<n>, given
-- in KEYS as every key touched here), for the client to empty in bounded steps.
-- On a Redis Cluster the conj keys of one call are one table's, and the handover set
-- carries that table's tag ({<table>}): one slot.
--
-- KEYS: the handover set, the conjunction keys (sets in conj-set mode, stamps in
--       insideout mode), then the drain set of each conjunction key
-- ARGV: the most conj set members to read here
-- Returns {cache keys to delete, drain sets left to the client, conj keys deleted}.
local handover, read_limit = KEYS[1], tonumber(ARGV[1])
local nconjs = (#KEYS - 1) / 2
local function drain_key(n)
    return KEYS[1 + nconjs + n]
end

-- this call ran before (its reply was lost): hand over what its first run left
local drains = {}
for n = 1, nconjs do
    if redis.call('exists', drain_key(n)) == 1 then
        drains[#drains + 1] = drain_key(n)
    end
end
if #drains > 0 or redis.call('exists', handover) == 1 then
    return {redis.call('smembers', handover), drains, 0}
end

local members, read, deleted = {}, 0, 0
for n = 1, nconjs do
    local conj = KEYS[1 + n]
    local size = redis.pcall('scard', conj)  -- an error: a stamp (insideout mode)
    if type(size) == 'number' and size > 0 and read + size > read_limit then
        redis.call('rename', conj, drain_key(n))
        drains[#drains + 1] = drain_key(n)
        deleted = deleted + 1
    else
        if type(size) == 'number' and size > 0 then
            for _, member in ipairs(redis.call('smembers', conj)) do
                members[#members + 1] = member
            end
            read = read + size
        end
        deleted = deleted + redis.call('del', conj)
    end
end
for i = 1, #members, 1000 do
    redis.call('sadd', handover, unpack(members, i, math.min(i + 999, #members)))
end
if #members > 0 then
    redis.call('expire', handover, 86400)
end
return {members, drains, deleted}
