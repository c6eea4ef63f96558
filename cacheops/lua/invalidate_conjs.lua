-- Invalidate whole conjunction keys (a model or a table at once): delete them and, in
-- conj-set mode, return the cache keys they referenced for the client to delete.
-- Reading the members and deleting the sets happen together, so no registration
-- made meanwhile is lost.
--
-- KEYS: conjunction keys (sets in conj-set mode, stamps in insideout mode)
-- ARGV: mode ('conj' or 'insideout')
-- Returns the cache keys to delete.
local members = {}
for _, conj in ipairs(KEYS) do
    if ARGV[1] == 'conj' and redis.call('type', conj).ok == 'set' then
        for _, member in ipairs(redis.call('smembers', conj)) do
            members[#members + 1] = member
        end
    end
    redis.call('del', conj)
end
return members
